//! The host a request names: the `Host` header, or the authority of an
//! HTTP/2 (`:authority`) or absolute-form request, which nginx hands to
//! PHP and ModSecurity as `Host`.
//!
//! Rempart reads it once, normalised (lower case, without the scheme's
//! default port), keys the cache with it and forwards exactly that to the
//! origin, so a stored page can never depend on a spelling the key ignores.

use std::borrow::Cow;

/// Why a host cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the request names no host")]
    Missing,
    #[error("the host is not a valid name or address")]
    Invalid,
}

/// The host as the request gives it: the `Host` header, else the request
/// target's authority (HTTP/2 `:authority`, HTTP/1.1 absolute form).
pub fn raw(req: &pingora::http::RequestHeader) -> Option<&[u8]> {
    req.headers
        .get(http::header::HOST)
        .map(|h| h.as_bytes())
        .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()))
}

/// `Shop.Example:443` → `shop.example`; `[::1]:8080` stays `[::1]:8080`.
///
/// Refused, as nginx refuses them (400): an empty host, control characters,
/// white space, `/`, `\`, `@` (user info) and `..`.
pub fn normalise(host: &[u8]) -> Result<Cow<'_, str>, HostError> {
    if host.is_empty() {
        return Err(HostError::Missing);
    }
    let valid = host.iter().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'.' | b'-'
                    | b'_'
                    | b':'
                    | b'['
                    | b']'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            )
    });
    if !valid || host.windows(2).any(|w| w == b"..") || host[0] == b'.' {
        return Err(HostError::Invalid);
    }
    let text = std::str::from_utf8(host).map_err(|_| HostError::Invalid)?;
    let bare = text
        .strip_suffix(":80")
        .or_else(|| text.strip_suffix(":443"))
        .unwrap_or(text);
    // A trailing `:` (empty port) means the default port too.
    let bare = bare.strip_suffix(':').unwrap_or(bare);
    if bare.is_empty() || bare.starts_with(':') {
        return Err(HostError::Invalid);
    }
    if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(bare.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(bare))
    }
}

/// The host without its port: `[::1]:8080` → `[::1]`, `shop.example:8080` → `shop.example`.
pub fn without_port(host: &str) -> &str {
    match host.find(']') {
        Some(end) if host.starts_with('[') => &host[..=end],
        _ => host.split(':').next().unwrap_or(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised_as_the_cache_keys_them() {
        for (given, expected) in [
            ("Shop.Example", "shop.example"),
            ("shop.example:80", "shop.example"),
            ("shop.example:443", "shop.example"),
            ("shop.example:", "shop.example"),
            ("shop.example:8080", "shop.example:8080"),
            ("[::1]:8080", "[::1]:8080"),
            ("[::1]:443", "[::1]"),
            ("127.0.0.1", "127.0.0.1"),
        ] {
            assert_eq!(normalise(given.as_bytes()).unwrap(), expected, "{given}");
        }
    }

    #[test]
    fn hostile_hosts_are_refused() {
        for bad in [
            "",
            "a/b",
            "a\\b",
            "a b",
            "user@shop",
            "../x",
            "shop..example",
            ".shop",
            ":80",
            "shop\u{1}",
            "café.example",
        ] {
            assert!(normalise(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ports_are_dropped() {
        assert_eq!(without_port("shop.example:8080"), "shop.example");
        assert_eq!(without_port("[::1]:8080"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
    }
}
