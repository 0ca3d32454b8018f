//! Background work, as pingora background services: the alert engine's
//! clock and its webhook, saving bans, sweeping idle rate-limit keys,
//! reloading on SIGHUP.

use crate::admin::Reload;
use crate::edge::upstream::{UpstreamPool, UpstreamSection};
use crate::observe::alerts::{Alert, AlertEngine};
use crate::observe::stats::Stats;
use crate::policy::store::PolicyStore;
use crate::shield::bans::BanList;
use crate::util::limiter::Registry;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// Every slot, hands the closed slot to the alert engine; delivers alerts
/// to the webhook from the same runtime.
pub struct AlertDriver {
    pub stats: Arc<Stats>,
    pub engine: Arc<AlertEngine>,
    pub policy: Arc<PolicyStore>,
    pub pool: Arc<UpstreamPool>,
    pub inbox: Mutex<Option<tokio::sync::mpsc::Receiver<Alert>>>,
}

#[async_trait]
impl BackgroundService for AlertDriver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Some(inbox) = self.inbox.lock().take() {
            tokio::spawn(crate::observe::alerts::deliver(self.engine.clone(), inbox));
        }
        let mut next = self.stats.current_index();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.stats.slot_duration() / 4) => {}
                _ = shutdown.changed() => return,
            }
            let now = self.stats.current_index();
            while next < now {
                let summary = self.stats.closed_slot(next);
                let snapshot = self.policy.current();
                let flips: Vec<(String, u64)> = snapshot
                    .get::<UpstreamSection>()
                    .map(|u| u.servers.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .map(|s| (s.name.clone(), self.pool.state(s).flips()))
                    .collect();
                self.engine.observe(&summary, &flips);
                next += 1;
            }
        }
    }
}

/// Drops idle keys of every rate limiter, so that a flood of addresses
/// leaves no lasting memory behind.
pub struct LimiterSweep {
    pub limiters: Arc<Registry>,
    pub every: Duration,
}

#[async_trait]
impl BackgroundService for LimiterSweep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.changed() => return,
            }
            let limiters = self.limiters.clone();
            let _ = tokio::task::spawn_blocking(move || limiters.sweep()).await;
        }
    }
}

/// Writes the ban state file in the background, at most once a second and
/// only after a change, so that placing a ban never waits on the disk.
pub struct BanSaver(pub Arc<BanList>);

#[async_trait]
impl BackgroundService for BanSaver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => {
                    self.0.save_if_changed();
                    return;
                }
            }
            let bans = self.0.clone();
            let _ = tokio::task::spawn_blocking(move || bans.save_if_changed()).await;
        }
    }
}

/// Reloads on SIGHUP.
pub struct SignalReload(pub Arc<dyn Reload>);

#[async_trait]
impl BackgroundService for SignalReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot listen for SIGHUP; reload through the admin API only");
            return;
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    tracing::info!("SIGHUP: reloading the policy");
                    self.0.reload();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
