//! Header work on the way in and out: size limits, hop-by-hop stripping,
//! forwarding headers and request ids.

use http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
];

/// Headers by which a proxy tells the origin about the client, the scheme or
/// the URL it was asked for. Only the trusted proxies in front of Rempart may
/// set them: from anyone else they are removed (WordPress plugins, PHP
/// frameworks and web servers believe them, and the answer may be cached).
/// `X-Forwarded-For`, `-Proto`, `-Host` and `X-Real-IP` are written by
/// Rempart itself.
pub const PROXY_RESERVED: &[&str] = &[
    "forwarded",
    "x-forwarded-port",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-forwarded-server",
    "x-forwarded-prefix",
    "x-forwarded-protocol",
    "x-forwarded-uri",
    "x-url-scheme",
    "front-end-https",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-host",
    "x-original-host",
    "x-http-host-override",
    "true-client-ip",
    "cf-connecting-ip",
    "cf-visitor",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "x-real-ip",
];

/// Total size (names, values and separators) and count of a header block.
pub fn header_size(headers: &HeaderMap) -> (usize, usize) {
    let bytes = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    (bytes, headers.len())
}

/// The hop-by-hop headers of a message: the standard ones and those named in
/// `Connection`. A protocol upgrade (websocket) keeps `Upgrade` and
/// `Connection`, which pingora needs to tunnel it. `Transfer-Encoding` is left
/// to pingora, which frames bodies itself.
pub fn hop_by_hop(headers: &HeaderMap, keep_upgrade: bool) -> Vec<HeaderName> {
    let named = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim().to_ascii_lowercase()).ok());
    let standard = HOP_BY_HOP.iter().map(|n| HeaderName::from_static(n));
    let mut names: Vec<HeaderName> = named
        .chain(standard)
        .filter(|n| *n != http::header::TRANSFER_ENCODING)
        .filter(|n| {
            !(keep_upgrade && (*n == http::header::UPGRADE || *n == http::header::CONNECTION))
        })
        .filter(|n| headers.contains_key(n))
        .collect();
    names.dedup();
    names
}

/// Whether a request asks for a protocol upgrade (websocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::UPGRADE)
        && headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// A client's `x-request-id` if it is sane, else a fresh random one.
pub fn request_id(incoming: Option<&HeaderValue>) -> String {
    if let Some(id) = incoming.and_then(|v| v.to_str().ok()) {
        let sane = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if sane {
            return id.to_string();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 12] = rand::thread_rng().gen();
    let mut id = String::with_capacity(24);
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::try_from(*k).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn strips_listed_and_standard_hop_headers() {
        let mut h = map(&[
            ("connection", "close, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("accept", "text/html"),
        ]);
        for n in hop_by_hop(&h, false) {
            h.remove(n);
        }
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn keeps_websocket_upgrade() {
        let h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&h));
        assert!(hop_by_hop(&h, true).is_empty());
    }

    #[test]
    fn request_ids_are_propagated_only_when_sane() {
        let good = HeaderValue::from_static("abc-123");
        assert_eq!(request_id(Some(&good)), "abc-123");
        let bad = HeaderValue::from_static("<script>");
        let fresh = request_id(Some(&bad));
        assert_eq!(fresh.len(), 24);
        assert_ne!(request_id(None), request_id(None));
    }

    #[test]
    fn sizes() {
        let h = map(&[("a", "bc")]);
        assert_eq!(header_size(&h), (7, 1));
    }
}
