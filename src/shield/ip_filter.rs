//! IP allow and deny lists (CIDR), the first filter of the request phase.
//!
//! `deny` refuses the listed networks. `allow`, when not empty, refuses every
//! address outside it (a staging shop, an admin-only site). Deny is checked first.

use crate::filter::{Reply, RequestFilter, RequestInfo, Verdict};
use ipnet::IpNet;
use std::net::IpAddr;

/// Compiled allow/deny lists.
#[derive(Debug, Default)]
pub struct IpFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpFilter {
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        IpFilter { allow, deny }
    }

    /// True when neither list has an entry: the filter would never answer.
    pub fn is_noop(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    fn decide(&self, ip: IpAddr) -> Verdict {
        let ip = canonical(ip);
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return Verdict::Respond(Reply::new(
                403,
                "ip_denied",
                "Access from your network is blocked.",
            ));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&ip)) {
            return Verdict::Respond(Reply::new(
                403,
                "ip_not_allowed",
                "This site is not open to your network.",
            ));
        }
        Verdict::Continue
    }
}

impl RequestFilter for IpFilter {
    fn name(&self) -> &'static str {
        "ip_filter"
    }
    fn check(&self, req: &RequestInfo<'_>) -> Verdict {
        self.decide(req.client_ip)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are matched as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (one host).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{text}` is not an IP address or CIDR network"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_net(s).unwrap()).collect()
    }

    fn status(f: &IpFilter, ip: &str) -> Option<u16> {
        match f.decide(ip.parse().unwrap()) {
            Verdict::Continue => None,
            Verdict::Respond(r) => Some(r.status),
        }
    }

    #[test]
    fn deny_list() {
        let f = IpFilter::new(
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
        let f = IpFilter::new(nets(&["10.0.0.0/8"]), nets(&["10.9.9.9"]));
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
