//! The ban list: temporary bans of client addresses and networks, with
//! escalating durations, an allowlist that is never banned, and a state
//! file so bans survive restarts.
//!
//! Every request asks [`BanList::check`], so a check never waits on a
//! write: bans live in a sharded concurrent map (one O(1) insert per ban,
//! one or two O(1) look-ups per check), the list is bounded, and the state
//! file is written in the background ([`BanList::save_if_changed`], called
//! by a background task; atomic: a temporary file, then a rename), never
//! under a lock that requests take.
//!
//! An IPv6 client is banned by its /64 (`bans.ipv6_prefix`): one subscriber
//! holds a whole /64, so banning a single address would hand an attacker
//! 2^64 fresh starts. The admin API can ban any network (`198.51.100.0/24`).
//!
//! The list is process-wide and outlives policy reloads (a reload must not
//! free the attackers); the ladder and allowlist come from the policy and
//! are updated on reload.

use crate::util::net::{canonical, net_text, parse_net};
use crate::util::time::{now_secs, rfc3339};
use arc_swap::ArcSwap;
use dashmap::DashMap;
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Bans held at most; past it the bans ending soonest make room.
pub const MAX_BANS: usize = 100_000;
/// Longest ban (ten years): a longer one is refused (an admin typo, or an
/// overflow attempt), never wrapped around into the past.
pub const MAX_BAN: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Why a ban was not placed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BanError {
    #[error("{0} is on the ban allowlist and is never banned")]
    Allowlisted(IpNet),
    #[error("a ban may last at most ten years")]
    TooLong,
}

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The banned network: one address (/32, /128) or a prefix.
    pub net: IpNet,
    /// Seconds since the Unix epoch.
    pub until: u64,
    pub reason: String,
    /// 1 for a first ban, 2 for the next (longer) one...
    pub level: u32,
}

impl Ban {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ip": net_text(&self.net),
            "until": rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(self.until)),
            "reason": self.reason,
            "level": self.level,
        })
    }

    fn to_state(&self) -> serde_json::Value {
        serde_json::json!({
            "ip": net_text(&self.net),
            "until": self.until,
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
    /// The network an IPv6 client is banned by (64: its subscriber network).
    pub ipv6_prefix: u8,
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
            ipv6_prefix: 64,
        }
    }
}

impl BanPolicy {
    /// The network a ban of this client covers.
    pub fn net_of(&self, ip: IpAddr) -> IpNet {
        match canonical(ip) {
            IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
            IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), self.ipv6_prefix.min(128))
                .map_or(IpNet::from(IpAddr::V6(v6)), |n| n.trunc()),
        }
    }

    fn allowlisted(&self, net: &IpNet) -> bool {
        self.allowlist
            .iter()
            .any(|a| a.contains(net) || a.contains(&net.addr()))
    }
}

/// Metric label for a ban reason: the known automatic reasons, else `manual`.
fn reason_label(reason: &str) -> &'static str {
    match reason {
        "rate_limit" => "rate_limit",
        "brute_force" => "brute_force",
        "card_testing" => "card_testing",
        "scanner" => "scanner",
        "not_found_flood" => "not_found_flood",
        "waf" => "waf",
        _ => "manual",
    }
}

/// Prefix lengths in use, one bit each: checks look up only those.
#[derive(Default)]
struct Lengths {
    v4: AtomicU64,
    v6: [AtomicU64; 3],
}

impl Lengths {
    fn add(&self, net: &IpNet) {
        let len = u32::from(net.prefix_len());
        match net {
            IpNet::V4(_) => {
                self.v4.fetch_or(1 << len, Ordering::Relaxed);
            }
            IpNet::V6(_) => {
                self.v6[(len / 64) as usize].fetch_or(1 << (len % 64), Ordering::Relaxed);
            }
        }
    }

    fn each(&self, ip: IpAddr, mut f: impl FnMut(u8) -> bool) -> bool {
        let words: Vec<(u64, u32)> = match ip {
            IpAddr::V4(_) => vec![(self.v4.load(Ordering::Relaxed), 0)],
            IpAddr::V6(_) => (0..3)
                .map(|i| (self.v6[i].load(Ordering::Relaxed), i as u32 * 64))
                .collect(),
        };
        // Longest prefix first: an address ban is the most likely.
        for (bits, base) in words.into_iter().rev() {
            let mut bits = bits;
            while bits != 0 {
                let top = 63 - bits.leading_zeros();
                bits &= !(1u64 << top);
                let len = (base + top) as u8;
                if f(len) {
                    return true;
                }
            }
        }
        false
    }
}

/// The ban list.
pub struct BanList {
    bans: DashMap<IpNet, Ban>,
    /// Last level reached and when that ban ended, for escalation.
    history: DashMap<IpNet, (u32, u64)>,
    lengths: Lengths,
    policy: ArcSwap<BanPolicy>,
    file: Option<PathBuf>,
    /// Set by every change, cleared by a save.
    changed: AtomicBool,
    /// Seconds since the epoch; a test clock in tests, the wall clock otherwise
    /// (bans are saved to disk, so they are wall-clock times).
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
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
        let list = BanList {
            bans: DashMap::new(),
            history: DashMap::new(),
            lengths: Lengths::default(),
            policy: ArcSwap::from_pointee(policy),
            file,
            changed: AtomicBool::new(false),
            clock,
        };
        list.restore();
        list
    }

    /// Reads the state file, leniently: an entry that cannot be read is
    /// skipped, never a reason not to start.
    fn restore(&self) {
        let Some(file) = &self.file else { return };
        let Ok(bytes) = std::fs::read(file) else {
            return;
        };
        let state: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("ban state file unreadable, starting empty: {e}");
                return;
            }
        };
        let now = (self.clock)();
        // Entries are a list (this version) or a map keyed by address (earlier ones).
        let entries = |key: &str| -> Vec<serde_json::Value> {
            match state.get(key) {
                Some(serde_json::Value::Array(a)) => a.clone(),
                Some(serde_json::Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| {
                        let mut v = v.clone();
                        if let Some(o) = v.as_object_mut() {
                            o.entry("ip").or_insert_with(|| k.clone().into());
                        } else {
                            v = serde_json::json!({ "ip": k, "entry": v });
                        }
                        v
                    })
                    .collect(),
                _ => Vec::new(),
            }
        };
        for e in entries("bans").into_iter().take(MAX_BANS) {
            let ban = (|| {
                Some(Ban {
                    net: parse_net(e.get("ip")?.as_str()?).ok()?,
                    until: e.get("until")?.as_u64()?,
                    reason: e.get("reason")?.as_str()?.chars().take(200).collect(),
                    level: u32::try_from(e.get("level")?.as_u64()?).ok()?,
                })
            })();
            if let Some(ban) = ban.filter(|b| b.until > now) {
                self.lengths.add(&ban.net);
                self.bans.insert(ban.net, ban);
            }
        }
        for e in entries("history").into_iter().take(MAX_BANS) {
            let item = (|| {
                let net = parse_net(e.get("ip")?.as_str()?).ok()?;
                // Earlier versions stored `[level, ended]`.
                let (level, ended) = match e.get("entry") {
                    Some(pair) => (pair.get(0)?.as_u64()?, pair.get(1)?.as_u64()?),
                    None => (e.get("level")?.as_u64()?, e.get("ended")?.as_u64()?),
                };
                Some((net, (u32::try_from(level).ok()?, ended)))
            })();
            if let Some((net, entry)) = item {
                self.history.insert(net, entry);
            }
        }
        if !self.bans.is_empty() {
            tracing::info!(bans = self.bans.len(), "bans restored from the state file");
        }
    }

    /// New ladder and allowlist (on reload). Allowlisted addresses are freed.
    pub fn set_policy(&self, policy: BanPolicy) {
        let before = self.bans.len();
        self.bans.retain(|net, _| !policy.allowlisted(net));
        if self.bans.len() != before {
            self.changed.store(true, Ordering::Relaxed);
        }
        self.policy.store(Arc::new(policy));
    }

    /// The ban in force on `ip` (on the address itself or a network holding it).
    pub fn check(&self, ip: IpAddr) -> Option<Ban> {
        let ip = canonical(ip);
        let now = (self.clock)();
        let mut found = None;
        self.lengths.each(ip, |len| {
            let Ok(net) = IpNet::new(ip, len) else {
                return false;
            };
            match self.bans.get(&net.trunc()) {
                Some(ban) if ban.until > now => {
                    found = Some(ban.clone());
                    true
                }
                _ => false,
            }
        });
        found
    }

    /// Bans the client `ip` (its network for IPv6, see [`BanPolicy::net_of`])
    /// for `duration`, or for the next step of the ladder when `duration` is
    /// `None` (repeat offenders get longer bans).
    pub fn ban(
        &self,
        ip: IpAddr,
        duration: Option<Duration>,
        reason: &str,
    ) -> Result<Ban, BanError> {
        let policy = self.policy.load();
        if policy.allowlisted(&IpNet::from(canonical(ip))) {
            return Err(BanError::Allowlisted(IpNet::from(ip)));
        }
        self.ban_net(policy.net_of(ip), duration, reason)
    }

    /// Bans a network as given (the admin API).
    pub fn ban_net(
        &self,
        net: IpNet,
        duration: Option<Duration>,
        reason: &str,
    ) -> Result<Ban, BanError> {
        let net = net.trunc();
        let policy = self.policy.load();
        if policy.allowlisted(&net) {
            return Err(BanError::Allowlisted(net));
        }
        if duration.is_some_and(|d| d > MAX_BAN) {
            return Err(BanError::TooLong);
        }
        let now = (self.clock)();
        let previous = self
            .history
            .get(&net)
            .filter(|e| now.saturating_sub(e.1) < policy.memory.as_secs())
            .map_or(0, |e| e.0);
        let current = self
            .bans
            .get(&net)
            .filter(|b| b.until > now)
            .map_or(0, |b| b.level);
        let level = previous.max(current).saturating_add(1);
        let step = usize::try_from(level - 1)
            .unwrap_or(usize::MAX)
            .min(policy.ladder.len().saturating_sub(1));
        let length = duration
            .unwrap_or_else(|| {
                policy
                    .ladder
                    .get(step)
                    .copied()
                    .unwrap_or(Duration::from_secs(3600))
            })
            .min(MAX_BAN);
        let ban = Ban {
            net,
            until: now.saturating_add(length.as_secs().max(1)),
            reason: reason.to_string(),
            level,
        };
        if self.bans.len() >= MAX_BANS && !self.bans.contains_key(&net) {
            self.make_room(now);
        }
        if self.history.len() >= MAX_BANS && !self.history.contains_key(&net) {
            let memory = policy.memory.as_secs();
            self.history.retain(|_, e| now.saturating_sub(e.1) < memory);
            if self.history.len() >= MAX_BANS {
                self.history.clear();
            }
        }
        self.history.insert(net, (level, ban.until));
        self.lengths.add(&net);
        self.bans.insert(net, ban.clone());
        self.changed.store(true, Ordering::Relaxed);
        crate::observe::metrics::BANS
            .with_label_values(&[reason_label(reason)])
            .inc();
        let shown = if policy.anonymize_logs {
            crate::util::net::anonymize(net.addr()).to_string()
        } else {
            net_text(&net)
        };
        tracing::warn!(target: "rempart::audit", event = "ban", client_ip = %shown, ban_level = level, seconds = length.as_secs(), reason, "address banned");
        Ok(ban)
    }

    /// Drops expired bans and, when the list is still full, the tenth that
    /// ends soonest (amortised: one scan per many bans).
    fn make_room(&self, now: u64) {
        self.bans.retain(|_, b| b.until > now);
        if self.bans.len() < MAX_BANS {
            return;
        }
        let mut ends: Vec<(u64, IpNet)> = self.bans.iter().map(|b| (b.until, b.net)).collect();
        ends.sort_unstable();
        for (_, net) in ends.iter().take(MAX_BANS / 10) {
            self.bans.remove(net);
        }
        tracing::warn!(
            dropped = MAX_BANS / 10,
            "the ban list is full: the bans ending soonest were dropped"
        );
    }

    /// Lifts the bans on a network given exactly, or, for one address, every
    /// ban that covers it. Returns what was lifted.
    pub fn unban(&self, target: IpNet) -> Vec<Ban> {
        let target = target.trunc();
        let mut lifted = Vec::new();
        if let Some((_, ban)) = self.bans.remove(&target) {
            lifted.push(ban);
        }
        if lifted.is_empty() && target.prefix_len() == target.max_prefix_len() {
            let covering: Vec<IpNet> = self
                .bans
                .iter()
                .filter(|b| b.net.contains(&target.addr()))
                .map(|b| b.net)
                .collect();
            for net in covering {
                if let Some((_, ban)) = self.bans.remove(&net) {
                    lifted.push(ban);
                }
            }
        }
        if !lifted.is_empty() {
            self.changed.store(true, Ordering::Relaxed);
            let anonymize = self.policy.load().anonymize_logs;
            for ban in &lifted {
                let shown = if anonymize {
                    crate::util::net::anonymize(ban.net.addr()).to_string()
                } else {
                    net_text(&ban.net)
                };
                tracing::info!(target: "rempart::audit", event = "unban", client_ip = %shown, "ban lifted");
            }
        }
        lifted
    }

    /// Whether `ip` is on the allowlist (never banned, never challenged).
    pub fn is_allowlisted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.policy.load().allowlist.iter().any(|n| n.contains(&ip))
    }

    /// Bans in force, soonest to end first.
    pub fn list(&self) -> Vec<Ban> {
        let now = (self.clock)();
        let mut bans: Vec<Ban> = self
            .bans
            .iter()
            .filter(|b| b.until > now)
            .map(|b| b.clone())
            .collect();
        bans.sort_by_key(|b| (b.until, b.net));
        bans
    }

    /// Writes the state file if anything changed since the last save, and
    /// drops expired bans. Called by a background task (and at exit): never
    /// on a request's path.
    pub fn save_if_changed(&self) {
        let now = (self.clock)();
        let before = self.bans.len();
        self.bans.retain(|_, b| b.until > now);
        if self.bans.len() != before {
            self.changed.store(true, Ordering::Relaxed);
        }
        if !self.changed.swap(false, Ordering::Relaxed) {
            return;
        }
        let Some(file) = &self.file else { return };
        let memory = self.policy.load().memory.as_secs();
        let bans: Vec<serde_json::Value> = self.list().iter().map(Ban::to_state).collect();
        let history: Vec<serde_json::Value> = self
            .history
            .iter()
            .filter(|e| now.saturating_sub(e.value().1) < memory)
            .map(|e| serde_json::json!({ "ip": net_text(e.key()), "level": e.value().0, "ended": e.value().1 }))
            .collect();
        let state = serde_json::json!({ "bans": bans, "history": history });
        let tmp = file.with_extension("tmp");
        let result = serde_json::to_vec_pretty(&state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = result {
            // Try again on the next round.
            self.changed.store(true, Ordering::Relaxed);
            tracing::error!(file = %file.display(), "cannot save bans: {e}");
        }
    }
}

impl Drop for BanList {
    fn drop(&mut self) {
        self.save_if_changed();
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
        assert_eq!(list.unban(parse_net("198.51.100.7").unwrap()).len(), 1);
        assert!(list.check(ip("198.51.100.7")).is_none());
        assert!(list.unban(parse_net("198.51.100.7").unwrap()).is_empty());
    }

    #[test]
    fn an_ipv6_client_is_banned_by_its_network() {
        let list = BanList::open(None, BanPolicy::default());
        let ban = list.ban(ip("2001:db8:1:2::7"), None, "scanner").unwrap();
        assert_eq!(net_text(&ban.net), "2001:db8:1:2::/64");
        assert!(list.check(ip("2001:db8:1:2:ffff::1")).is_some());
        assert!(list.check(ip("2001:db8:1:3::1")).is_none());
        // Lifting by one address lifts the network that holds it.
        assert_eq!(list.unban(parse_net("2001:db8:1:2::9").unwrap()).len(), 1);
        assert!(list.check(ip("2001:db8:1:2::7")).is_none());
    }

    #[test]
    fn networks_can_be_banned() {
        let list = BanList::open(None, BanPolicy::default());
        list.ban_net(
            parse_net("203.0.113.0/24").unwrap(),
            Some(Duration::from_secs(60)),
            "manual",
        )
        .unwrap();
        assert!(list.check(ip("203.0.113.200")).is_some());
        assert!(list.check(ip("::ffff:203.0.113.9")).is_some());
        assert!(list.check(ip("203.0.114.1")).is_none());
        assert_eq!(net_text(&list.list()[0].net), "203.0.113.0/24");
    }

    #[test]
    fn absurd_durations_are_refused_not_wrapped() {
        let list = BanList::open(None, BanPolicy::default());
        assert_eq!(
            list.ban(ip("198.51.100.1"), Some(Duration::from_secs(u64::MAX)), "x"),
            Err(BanError::TooLong)
        );
        let long = list.ban(ip("198.51.100.1"), Some(MAX_BAN), "x").unwrap();
        assert!(long.until > now_secs());
    }

    #[test]
    fn bans_expire_and_escalation_is_forgotten_after_the_memory() {
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
        assert!(matches!(
            list.ban(ip("10.1.2.3"), None, "x"),
            Err(BanError::Allowlisted(_))
        ));
        assert!(list
            .ban_net(parse_net("10.0.0.0/16").unwrap(), None, "x")
            .is_err());
    }

    #[test]
    fn bans_survive_a_restart_through_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bans.json");
        let list = BanList::open(Some(file.clone()), BanPolicy::default());
        list.ban(ip("2001:db8::1"), Some(Duration::from_secs(600)), "manual")
            .unwrap();
        list.ban(ip("198.51.100.3"), None, "scanner").unwrap();
        drop(list);
        let again = BanList::open(Some(file), BanPolicy::default());
        assert_eq!(again.list().len(), 2);
        assert!(again.check(ip("2001:db8::77")).is_some());
        assert_eq!(again.ban(ip("198.51.100.3"), None, "x").unwrap().level, 2);
    }

    #[test]
    fn the_state_file_of_earlier_versions_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bans.json");
        let until = now_secs() + 600;
        std::fs::write(
            &file,
            format!(
                r#"{{"bans":{{"198.51.100.7":{{"ip":"198.51.100.7","until":{until},"reason":"manual","level":1}}}},"history":{{"198.51.100.7":[1,{until}]}}}}"#
            ),
        )
        .unwrap();
        let list = BanList::open(Some(file.clone()), BanPolicy::default());
        assert!(list.check(ip("198.51.100.7")).is_some());
        std::fs::write(
            &file,
            b"{\"bans\": [{\"ip\": 7}, \"junk\"], \"history\": 3}",
        )
        .unwrap();
        assert!(BanList::open(Some(file), BanPolicy::default())
            .list()
            .is_empty());
    }

    #[test]
    fn many_bans_stay_bounded_and_checks_stay_cheap() {
        let list = BanList::open(None, BanPolicy::default());
        for i in 0..(MAX_BANS as u32 + 500) {
            let b = i.to_be_bytes();
            list.ban(IpAddr::from([10, b[1], b[2], b[3]]), None, "x")
                .unwrap();
        }
        assert!(list.list().len() <= MAX_BANS);
        assert!(list.check(IpAddr::from([10, 1, 135, 0])).is_some());
    }
}
