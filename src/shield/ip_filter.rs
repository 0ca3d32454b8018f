//! IP allow and deny lists (CIDR): the `ip_filter` block and its filter.
//!
//! `deny` refuses the listed networks. `allow`, when not empty, refuses every
//! address outside it (a staging shop, an admin-only site). Deny is checked
//! first. Lists written in several files (`include:`) add up.

use crate::filter::{Decider, Filter, Reason, Reply, RequestState, Verdict};
use crate::policy::{Block, Compiler, Section};
use async_trait::async_trait;
use ipnet::IpNet;
use pingora::prelude::Session;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::net::IpAddr;

/// The `ip_filter` block.
pub struct IpFilterSection;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpFilterBlock {
    pub allow: Vec<Spanned<String>>,
    pub deny: Vec<Spanned<String>>,
}

/// Compiled allow/deny lists.
#[derive(Debug, Default)]
pub struct IpLists {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpLists {
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        IpLists { allow, deny }
    }

    fn decide(&self, ip: IpAddr) -> Verdict {
        let ip = crate::util::net::canonical(ip);
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return Verdict::Respond(Reply::new(
                403,
                Reason::IpDenied,
                "Access from your network is blocked.",
            ));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&ip)) {
            return Verdict::Respond(Reply::new(
                403,
                Reason::IpNotAllowed,
                "This site is not open to your network.",
            ));
        }
        Verdict::Continue
    }
}

impl Section for IpFilterSection {
    const KEY: &'static str = "ip_filter";
    const ADDS_UP: bool = true;
    type Raw = IpFilterBlock;
    type Compiled = IpLists;

    fn compile(raw: Option<IpFilterBlock>, c: &mut Compiler<'_>) -> Option<IpLists> {
        let block = raw?;
        Some(IpLists::new(c.nets(&block.allow), c.nets(&block.deny)))
    }

    /// Every file's lists, each problem reported in its own file.
    fn compile_blocks(blocks: Vec<Block<IpFilterBlock>>, c: &mut Compiler<'_>) -> Option<IpLists> {
        let (mut allow, mut deny) = (Vec::new(), Vec::new());
        for block in blocks {
            c.file = block.file;
            allow.extend(c.nets(&block.value.allow));
            deny.extend(c.nets(&block.value.deny));
        }
        (!allow.is_empty() || !deny.is_empty()).then(|| IpLists::new(allow, deny))
    }
}

/// Refuses clients the lists exclude.
pub struct IpFilter;

#[async_trait]
impl Filter for IpFilter {
    fn name(&self) -> Decider {
        Decider::IpFilter
    }

    async fn request(&self, _session: &mut Session, st: &mut RequestState) -> Verdict {
        match st.policy.get::<IpFilterSection>() {
            Some(lists) => lists.decide(st.client.ip),
            None => Verdict::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::net::parse_net;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_net(s).unwrap()).collect()
    }

    fn status(f: &IpLists, ip: &str) -> Option<u16> {
        match f.decide(ip.parse().unwrap()) {
            Verdict::Continue => None,
            Verdict::Respond(r) => Some(r.status),
        }
    }

    #[test]
    fn deny_list() {
        let f = IpLists::new(
            vec![],
            nets(&["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]),
        );
        assert_eq!(status(&f, "203.0.113.9"), Some(403));
        assert_eq!(status(&f, "::ffff:203.0.113.9"), Some(403));
        assert_eq!(status(&f, "2001:db8::1"), Some(403));
        assert_eq!(status(&f, "198.51.100.7"), Some(403));
        assert_eq!(status(&f, "198.51.100.8"), None);
    }

    #[test]
    fn allow_list_refuses_the_rest_and_deny_wins() {
        let f = IpLists::new(nets(&["10.0.0.0/8"]), nets(&["10.9.9.9"]));
        assert_eq!(status(&f, "10.1.2.3"), None);
        assert_eq!(status(&f, "192.0.2.1"), Some(403));
        assert_eq!(status(&f, "10.9.9.9"), Some(403));
    }

    #[test]
    fn parse_errors_are_explained() {
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("not-an-ip").unwrap_err().contains("not an IP"));
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
    }
}
