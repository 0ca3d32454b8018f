//! Temporary bans of client addresses, with escalating durations, an
//! allowlist that is never banned, and a state file so bans survive restarts.
//!
//! The list is process-wide and outlives policy reloads (a reload must not
//! free the attackers); the ladder and allowlist come from the policy and are
//! updated on reload.

use crate::stats::rfc3339;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Why a ban was not placed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BanError {
    #[error("{0} is on the ban allowlist and is never banned")]
    Allowlisted(IpAddr),
}

/// One ban.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ban {
    pub ip: IpAddr,
    /// Seconds since the Unix epoch.
    pub until: u64,
    pub reason: String,
    /// 1 for a first ban, 2 for the next (longer) one...
    pub level: u32,
}

impl Ban {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ip": self.ip.to_string(),
            "until": rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(self.until)),
            "reason": self.reason,
            "level": self.level,
        })
    }
}

/// Ban settings from the policy.
#[derive(Debug, Clone)]
pub struct BanPolicy {
    /// Durations of the first, second... ban of one address.
    pub ladder: Vec<Duration>,
    pub allowlist: Vec<IpNet>,
    /// How long a past ban still counts towards the next level.
    pub memory: Duration,
    /// Log addresses cut to /24 or /48 (`server.anonymize_ips`).
    pub anonymize_logs: bool,
}

impl Default for BanPolicy {
    fn default() -> Self {
        BanPolicy {
            ladder: vec![
                Duration::from_secs(60),
                Duration::from_secs(600),
                Duration::from_secs(3600),
                Duration::from_secs(86_400),
            ],
            allowlist: Vec::new(),
            memory: Duration::from_secs(86_400),
            anonymize_logs: false,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    bans: HashMap<IpAddr, Ban>,
    /// Last level reached and when that ban ended, for escalation.
    #[serde(default)]
    history: HashMap<IpAddr, (u32, u64)>,
}

/// Metric label for a ban reason: the known automatic reasons, else `manual`.
fn reason_label(reason: &str) -> &'static str {
    match reason {
        "rate_limit" => "rate_limit",
        "brute_force" => "brute_force",
        "card_testing" => "card_testing",
        "scanner" => "scanner",
        "not_found_flood" => "not_found_flood",
        _ => "manual",
    }
}

/// The ban list.
pub struct BanList {
    state: Mutex<State>,
    policy: Mutex<BanPolicy>,
    file: Option<PathBuf>,
    /// Seconds since the epoch; a test clock in tests, the wall clock otherwise
    /// (bans are saved to disk, so they are wall-clock times).
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl BanList {
    /// Loads the state file if there is one (expired bans are dropped).
    pub fn open(file: Option<PathBuf>, policy: BanPolicy) -> Self {
        Self::with_clock(file, policy, Box::new(now_secs))
    }

    /// Like [`Self::open`], with the clock given (tests move time by hand).
    pub fn with_clock(
        file: Option<PathBuf>,
        policy: BanPolicy,
        clock: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        let mut state: State = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|bytes| match serde_json::from_slice(&bytes) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("ban state file unreadable, starting empty: {e}");
                    None
                }
            })
            .unwrap_or_default();
        let now = clock();
        state.bans.retain(|_, b| b.until > now);
        if !state.bans.is_empty() {
            tracing::info!(bans = state.bans.len(), "bans restored from the state file");
        }
        BanList {
            state: Mutex::new(state),
            policy: Mutex::new(policy),
            file,
            clock,
        }
    }

    /// New ladder and allowlist (on reload). Allowlisted addresses are freed.
    pub fn set_policy(&self, policy: BanPolicy) {
        if let Ok(mut state) = self.state.lock() {
            let before = state.bans.len();
            state
                .bans
                .retain(|ip, _| !policy.allowlist.iter().any(|n| n.contains(ip)));
            if state.bans.len() != before {
                self.save(&state);
            }
        }
        if let Ok(mut p) = self.policy.lock() {
            *p = policy;
        }
    }

    /// The ban on `ip`, if one is in force.
    pub fn check(&self, ip: IpAddr) -> Option<Ban> {
        let state = self.state.lock().ok()?;
        let ip = crate::ipfilter::canonical(ip);
        state
            .bans
            .get(&ip)
            .filter(|b| b.until > (self.clock)())
            .cloned()
    }

    /// Bans `ip` for `duration`, or for the next step of the ladder when
    /// `duration` is `None` (repeat offenders get longer bans).
    pub fn ban(
        &self,
        ip: IpAddr,
        duration: Option<Duration>,
        reason: &str,
    ) -> Result<Ban, BanError> {
        let ip = crate::ipfilter::canonical(ip);
        let policy = self.policy.lock().map(|p| p.clone()).unwrap_or_default();
        if policy.allowlist.iter().any(|n| n.contains(&ip)) {
            return Err(BanError::Allowlisted(ip));
        }
        let Ok(mut state) = self.state.lock() else {
            return Err(BanError::Allowlisted(ip));
        };
        let now = (self.clock)();
        let previous = state
            .history
            .get(&ip)
            .filter(|(_, ended)| now.saturating_sub(*ended) < policy.memory.as_secs())
            .map_or(0, |(level, _)| *level);
        let current = state
            .bans
            .get(&ip)
            .filter(|b| b.until > now)
            .map_or(0, |b| b.level);
        let level = previous.max(current) + 1;
        let step = usize::try_from(level - 1)
            .unwrap_or(usize::MAX)
            .min(policy.ladder.len().saturating_sub(1));
        let length = duration.unwrap_or_else(|| {
            policy
                .ladder
                .get(step)
                .copied()
                .unwrap_or(Duration::from_secs(3600))
        });
        let ban = Ban {
            ip,
            until: now + length.as_secs().max(1),
            reason: reason.to_string(),
            level,
        };
        state.history.insert(ip, (level, ban.until));
        state.bans.insert(ip, ban.clone());
        state
            .history
            .retain(|_, (_, ended)| now.saturating_sub(*ended) < policy.memory.as_secs());
        state.bans.retain(|_, b| b.until > now);
        self.save(&state);
        crate::metrics::BANS
            .with_label_values(&[reason_label(reason)])
            .inc();
        let shown = if policy.anonymize_logs {
            crate::client_ip::anonymize(ip)
        } else {
            ip
        };
        tracing::warn!(target: "rempart::audit", event = "ban", client_ip = %shown, ban_level = level, seconds = length.as_secs(), reason, "address banned");
        Ok(ban)
    }

    /// Lifts the ban on `ip`; false if there was none.
    pub fn unban(&self, ip: IpAddr) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let ip = crate::ipfilter::canonical(ip);
        let removed = state.bans.remove(&ip).is_some();
        if removed {
            self.save(&state);
            let anonymize = self
                .policy
                .lock()
                .map(|p| p.anonymize_logs)
                .unwrap_or(false);
            let shown = if anonymize {
                crate::client_ip::anonymize(ip)
            } else {
                ip
            };
            tracing::info!(target: "rempart::audit", event = "unban", client_ip = %shown, "ban lifted");
        }
        removed
    }

    /// Whether `ip` is on the allowlist (never banned, never challenged).
    pub fn is_allowlisted(&self, ip: IpAddr) -> bool {
        let ip = crate::ipfilter::canonical(ip);
        self.policy
            .lock()
            .map(|p| p.allowlist.iter().any(|n| n.contains(&ip)))
            .unwrap_or(false)
    }

    /// Bans in force, soonest to end first.
    pub fn list(&self) -> Vec<Ban> {
        let now = (self.clock)();
        let mut bans: Vec<Ban> = self
            .state
            .lock()
            .map(|s| s.bans.values().filter(|b| b.until > now).cloned().collect())
            .unwrap_or_default();
        bans.sort_by_key(|b| (b.until, b.ip));
        bans
    }

    /// Writes the state atomically (temporary file, then rename).
    fn save(&self, state: &State) {
        let Some(file) = &self.file else {
            return;
        };
        let tmp = file.with_extension("tmp");
        let result = serde_json::to_vec_pretty(state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = result {
            tracing::error!(file = %file.display(), "cannot save bans: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bans_escalate_and_can_be_lifted() {
        let list = BanList::open(None, BanPolicy::default());
        let a = list.ban(ip("198.51.100.7"), None, "test").unwrap();
        assert_eq!(a.level, 1);
        assert!(a.until - now_secs() <= 60);
        let b = list.ban(ip("198.51.100.7"), None, "again").unwrap();
        assert_eq!(b.level, 2);
        assert!(b.until - now_secs() > 60);
        assert!(list.check(ip("198.51.100.7")).is_some());
        assert!(list.check(ip("198.51.100.8")).is_none());
        assert!(list.unban(ip("198.51.100.7")));
        assert!(list.check(ip("198.51.100.7")).is_none());
        assert!(!list.unban(ip("198.51.100.7")));
    }

    #[test]
    fn bans_expire_and_escalation_is_forgotten_after_the_memory() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let now = Arc::new(AtomicU64::new(1_000_000));
        let t = now.clone();
        let list = BanList::with_clock(
            None,
            BanPolicy::default(),
            Box::new(move || t.load(Ordering::SeqCst)),
        );
        let ip = ip("198.51.100.9");
        let step = |secs: u64| now.fetch_add(secs, Ordering::SeqCst);
        assert_eq!(list.ban(ip, None, "x").unwrap().level, 1);
        step(59);
        assert!(
            list.check(ip).is_some(),
            "a 1 minute ban holds for a minute"
        );
        step(2);
        assert!(list.check(ip).is_none(), "and then expires");
        let second = list.ban(ip, None, "x").unwrap();
        assert_eq!(
            (second.level, second.until - now.load(Ordering::SeqCst)),
            (2, 600)
        );
        step(600);
        assert_eq!(list.ban(ip, None, "x").unwrap().level, 3);
        assert_eq!(list.ban(ip, None, "x").unwrap().level, 4);
        let fifth = list.ban(ip, None, "x").unwrap();
        assert_eq!(
            fifth.until - now.load(Ordering::SeqCst),
            86_400,
            "the ladder tops out at its last step"
        );
        step(86_400 + 86_400 + 1);
        assert!(list.check(ip).is_none());
        assert_eq!(
            list.ban(ip, None, "x").unwrap().level,
            1,
            "a day later the address starts again at level 1"
        );
    }

    #[test]
    fn the_allowlist_is_never_banned() {
        let policy = BanPolicy {
            allowlist: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        };
        let list = BanList::open(None, policy);
        assert_eq!(
            list.ban(ip("10.1.2.3"), None, "x"),
            Err(BanError::Allowlisted(ip("10.1.2.3")))
        );
    }

    #[test]
    fn bans_survive_a_restart_through_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bans.json");
        let list = BanList::open(Some(file.clone()), BanPolicy::default());
        list.ban(ip("2001:db8::1"), Some(Duration::from_secs(600)), "manual")
            .unwrap();
        drop(list);
        let again = BanList::open(Some(file), BanPolicy::default());
        assert_eq!(again.list().len(), 1);
        assert_eq!(again.list()[0].reason, "manual");
    }
}
