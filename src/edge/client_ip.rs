//! The real client address. When Rempart sits behind a CDN or load balancer,
//! the TCP peer is that proxy; the client is then read from a header that only
//! trusted proxies may set (X-Forwarded-For, CF-Connecting-IP, X-Real-IP...).

use crate::policy::{Compiler, Section};
use crate::util::net::canonical;
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::net::IpAddr;

/// The `client_ip` block.
pub struct ClientIpSection;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientIpBlock {
    pub trusted_proxies: Vec<Spanned<String>>,
    pub header: Option<Spanned<String>>,
}

impl Section for ClientIpSection {
    const KEY: &'static str = "client_ip";
    type Raw = ClientIpBlock;
    type Compiled = ClientIpResolver;

    fn compile(raw: Option<ClientIpBlock>, c: &mut Compiler<'_>) -> Option<ClientIpResolver> {
        let ci = raw.unwrap_or_default();
        let trusted = c.nets(&ci.trusted_proxies);
        let header = match &ci.header {
            Some(h) => match HeaderName::try_from(h.value.to_ascii_lowercase()) {
                Ok(name) => name,
                Err(_) => {
                    c.error(
                        h,
                        format!("`{}` is not a valid header name", h.value),
                        Some("e.g. `x-forwarded-for`, `cf-connecting-ip`, `x-real-ip`"),
                    );
                    HeaderName::from_static("x-forwarded-for")
                }
            },
            None => HeaderName::from_static("x-forwarded-for"),
        };
        Some(ClientIpResolver { trusted, header })
    }
}

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
