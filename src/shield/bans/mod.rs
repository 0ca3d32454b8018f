//! Bans: the `bans` block (ladder, allowlist, state file), the filter that
//! refuses banned clients, and the ban list other slices ban through (as
//! [`crate::filter::Bans`]).

pub mod list;

pub use list::{Ban, BanError, BanList, BanPolicy, MAX_BAN, MAX_BANS};

use crate::filter::{BanReason, Bans, Decider, Filter, Reason, Reply, RequestState, Verdict};
use crate::policy::server::ServerSection;
use crate::policy::units::{Dur, NonZeroDur};
use crate::policy::{Compiler, Section};
use async_trait::async_trait;
use pingora::prelude::Session;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The `bans` block.
pub struct BansSection;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BansBlock {
    pub ladder: Option<Spanned<Vec<NonZeroDur>>>,
    #[serde(default)]
    pub ipv6_prefix: Option<Spanned<u8>>,
    pub allowlist: Vec<Spanned<String>>,
    pub memory: Option<Dur>,
    pub state_file: Option<Spanned<String>>,
}

/// The compiled `bans` block.
#[derive(Debug, Clone)]
pub struct BanSettings {
    pub policy: BanPolicy,
    /// Where bans are saved to survive restarts (fixed at start-up).
    pub state_file: Option<PathBuf>,
}

impl Section for BansSection {
    const KEY: &'static str = "bans";
    type Raw = BansBlock;
    type Compiled = BanSettings;

    fn compile(raw: Option<BansBlock>, c: &mut Compiler<'_>) -> Option<BanSettings> {
        let anonymize_logs = c.get::<ServerSection>().is_some_and(|s| s.anonymize_ips);
        let Some(b) = raw else {
            return Some(BanSettings {
                policy: BanPolicy {
                    anonymize_logs,
                    ..BanPolicy::default()
                },
                state_file: None,
            });
        };
        let mut policy = BanPolicy {
            allowlist: c.nets(&b.allowlist),
            anonymize_logs,
            ..BanPolicy::default()
        };
        if let Some(ladder) = &b.ladder {
            if ladder.value.is_empty() {
                c.error(
                    ladder,
                    "`bans.ladder` is empty",
                    Some("e.g. `[1m, 10m, 1h, 24h]`"),
                );
            } else {
                policy.ladder = ladder.value.iter().map(|d| d.0).collect();
            }
        }
        if let Some(m) = b.memory {
            policy.memory = m.0;
        }
        if let Some(len) = &b.ipv6_prefix {
            if (32..=128).contains(&len.value) {
                policy.ipv6_prefix = len.value;
            } else {
                c.error(
                    len,
                    "`bans.ipv6_prefix` must be between 32 and 128",
                    Some("64 bans the network one subscriber holds; 128 a single address"),
                );
            }
        }
        let state_file = b.state_file.as_ref().map(|f| c.base().join(&f.value));
        Some(BanSettings { policy, state_file })
    }
}

impl Bans for BanList {
    fn ban(&self, ip: IpAddr, reason: BanReason) {
        // Allowlisted clients are refused the request but never banned.
        let _ = BanList::ban(self, ip, None, reason.as_str());
    }

    fn is_banned(&self, ip: IpAddr) -> bool {
        self.check(ip).is_some()
    }

    fn is_allowlisted(&self, ip: IpAddr) -> bool {
        BanList::is_allowlisted(self, ip)
    }
}

/// Refuses banned clients, saying when to come back.
pub struct BanFilter {
    list: Arc<BanList>,
}

impl BanFilter {
    pub fn new(list: Arc<BanList>) -> Self {
        BanFilter { list }
    }
}

#[async_trait]
impl Filter for BanFilter {
    fn name(&self) -> Decider {
        Decider::Bans
    }

    async fn request(&self, _session: &mut Session, st: &mut RequestState) -> Verdict {
        let Some(ban) = self.list.check(st.client.ip) else {
            return Verdict::Continue;
        };
        let mut reply = Reply::new(
            403,
            Reason::Banned,
            "Access from your address is blocked for a while.",
        );
        let wait = ban.until.saturating_sub(crate::util::time::now_secs());
        reply
            .headers
            .push((http::header::RETRY_AFTER, wait.to_string()));
        Verdict::Respond(reply)
    }
}
