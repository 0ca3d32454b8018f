//! Reloading the policy (SIGHUP, `POST /reload`): the new snapshot is
//! compiled and checked against what is running, swapped in, and the
//! long-lived state takes its new settings (certificates, the ban ladder,
//! alert thresholds, the cache's tag header).

use crate::admin::Reload;
use crate::cache::{CacheSection, PageStore};
use crate::edge::tls::{SniResolver, TlsSection};
use crate::observe::alerts::{AlertEngine, AlertsSection};
use crate::observe::metrics;
use crate::policy::server::ServerSection;
use crate::policy::store::{PolicyStore, ReloadOutcome};
use crate::policy::Snapshot;
use crate::shield::bans::{BanList, BansSection};
use std::sync::Arc;

/// Reloads the policy, and the certificates with it.
pub struct Reloader {
    pub store: Arc<PolicyStore>,
    pub certs: Option<Arc<SniResolver>>,
    pub cache: Option<&'static PageStore>,
    pub bans: Arc<BanList>,
    pub alerts: Arc<AlertEngine>,
}

impl Reload for Reloader {
    /// Re-reads the policy; its certificates come with it (loaded and
    /// checked while compiling), so both are applied or neither.
    fn reload(&self) -> ReloadOutcome {
        let outcome = self.store.reload_checked(
            |running, new| {
                let tls = new.get::<TlsSection>().filter(|t| !t.listen.is_empty());
                if let (Some(_), Some(t)) = (&self.certs, tls) {
                    if t.certs.is_none() {
                        return Err(new.warnings.clone());
                    }
                }
                warn_about_restart_only_changes(running, new);
                Ok(())
            },
            |snapshot| self.apply(snapshot),
        );
        let label = match outcome {
            ReloadOutcome::Applied { .. } => "ok",
            ReloadOutcome::Refused(_) => "failed",
        };
        metrics::RELOADS.with_label_values(&[label]).inc();
        outcome
    }
}

impl Reloader {
    fn apply(&self, snapshot: &Snapshot) {
        let table = snapshot.get::<TlsSection>().and_then(|t| t.certs.clone());
        if let (Some(resolver), Some(table)) = (&self.certs, table) {
            resolver.replace(table);
        }
        if let (Some(store), Some(cache)) = (self.cache, snapshot.get::<CacheSection>()) {
            store.set_tag_header(cache.rules.tag_header.clone());
        }
        if let Some(bans) = snapshot.get::<BansSection>() {
            self.bans.set_policy(bans.policy.clone());
        }
        if let Some(alerts) = snapshot.get::<AlertsSection>() {
            self.alerts.set_policy(alerts.clone());
        }
    }
}

/// Listeners, threads, shutdown timings, log format and HTTP/2 are fixed at
/// start-up; say so when a reload changes them.
fn warn_about_restart_only_changes(old: &Snapshot, new: &Snapshot) {
    let tls = |s: &Snapshot| s.get::<TlsSection>().map(|t| (t.listen.clone(), t.http2));
    let (Some(o), Some(n)) = (old.get::<ServerSection>(), new.get::<ServerSection>()) else {
        return;
    };
    if o.listen != n.listen
        || o.admin_listen != n.admin_listen
        || o.threads != n.threads
        || o.grace_period != n.grace_period
        || o.shutdown_timeout != n.shutdown_timeout
        || o.log_format != n.log_format
        || tls(old) != tls(new)
    {
        tracing::warn!("listeners, threads, grace period, shutdown timeout, log format and TLS listeners change only on restart; the new values wait until then");
    }
}
