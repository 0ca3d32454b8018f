//! Client addresses and networks, one implementation each: the canonical
//! address (an IPv4-mapped IPv6 address is its IPv4 address), the
//! subscriber a client belongs to (IPv4 address, IPv6 /64), networks as
//! the policy writes them, and the address logs may show.

use ipnet::IpNet;
use std::net::IpAddr;

/// `::ffff:1.2.3.4` is `1.2.3.4`: one client, one reading.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (one host), the
/// network truncated to its prefix.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(|ip| IpNet::from(canonical(ip)))
        .map_err(|_| format!("`{text}` is not an IP address or CIDR network"))
}

/// `198.51.100.7` for one address, `2001:db8::/64` for a network.
pub fn net_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// The client's network: `/24` for IPv4, `/64` for IPv6, as text.
pub fn prefix_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The subscriber, as text: an IPv4 address, or an IPv6 /64 (one
/// subscriber holds a whole /64, so counting single IPv6 addresses would
/// give an attacker 2^64 fresh starts).
pub fn subscriber_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        v6 => prefix_key(v6),
    }
}

/// The address as logs may show it when the policy asks for anonymised IPs:
/// IPv4 cut to its /24, IPv6 to its /48 (it still tells networks apart, not
/// people).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_ipv4() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(subscriber_key(mapped), "192.0.2.7");
    }

    #[test]
    fn networks_and_keys() {
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(net_text(&parse_net("2001:db8::7").unwrap()), "2001:db8::7");
        assert!(parse_net("300.1.1.1").is_err());
        let v6: IpAddr = "2001:db8:1:2:3::9".parse().unwrap();
        assert_eq!(subscriber_key(v6), "2001:db8:1:2::/64");
        assert_eq!(prefix_key("10.1.2.3".parse().unwrap()), "10.1.2.0/24");
        assert_eq!(anonymize(v6), "2001:db8:1::".parse::<IpAddr>().unwrap());
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
}
