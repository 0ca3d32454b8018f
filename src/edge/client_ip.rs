//! The real client address. When Rempart sits behind a CDN or load balancer,
//! the TCP peer is that proxy; the client is then read from a header that only
//! trusted proxies may set (X-Forwarded-For, CF-Connecting-IP, X-Real-IP...).

use crate::shield::ip_filter::canonical;
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use std::net::IpAddr;

/// Which peers are trusted to say who the client is, and in which header.
#[derive(Debug, Clone)]
pub struct ClientIpResolver {
    pub trusted: Vec<IpNet>,
    pub header: HeaderName,
}

impl ClientIpResolver {
    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address for a request from `peer`. Headers are believed only
    /// when the peer is trusted; the list is walked from the right (nearest hop)
    /// and the first address that is not a trusted proxy is the client.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all(&self.header)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip;
                    if !self.is_trusted(ip) {
                        break;
                    }
                }
                // A garbled hop: stop at the last address we could trust.
                None => break,
            }
        }
        client
    }
}

/// The address as logs may show it when the policy asks for anonymised IPs:
/// IPv4 cut to its /24, IPv6 to its /48 (the GDPR-friendly choice: it still
/// tells networks apart, not people).
pub fn anonymize(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

/// Reads one hop: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(trusted: &[&str]) -> ClientIpResolver {
        ClientIpResolver {
            trusted: trusted.iter().map(|s| s.parse().unwrap()).collect(),
            header: HeaderName::from_static("x-forwarded-for"),
        }
    }

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn anonymised_addresses() {
        assert_eq!(
            anonymize("203.0.113.77".parse().unwrap()).to_string(),
            "203.0.113.0"
        );
        assert_eq!(
            anonymize("2001:db8:abcd:12::1".parse().unwrap()).to_string(),
            "2001:db8:abcd::"
        );
        assert_eq!(
            anonymize("::ffff:198.51.100.9".parse().unwrap()).to_string(),
            "198.51.100.0"
        );
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let r = resolver(&["10.0.0.0/8"]);
        let ip = r.resolve("198.51.100.1".parse().unwrap(), &headers("1.1.1.1"));
        assert_eq!(ip.to_string(), "198.51.100.1");
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let r = resolver(&["10.0.0.0/8"]);
        let ip = r.resolve(
            "10.0.0.1".parse().unwrap(),
            &headers("6.6.6.6, 203.0.113.5, 10.0.0.2"),
        );
        assert_eq!(ip.to_string(), "203.0.113.5");
    }

    #[test]
    fn garbage_stops_the_walk() {
        let r = resolver(&["10.0.0.0/8"]);
        let ip = r.resolve(
            "10.0.0.1".parse().unwrap(),
            &headers("203.0.113.5, <script>"),
        );
        assert_eq!(ip.to_string(), "10.0.0.1");
        let ip = r.resolve("10.0.0.1".parse().unwrap(), &headers("[2001:db8::1]:443"));
        assert_eq!(ip.to_string(), "2001:db8::1");
    }
}
