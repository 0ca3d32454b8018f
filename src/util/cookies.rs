//! Request cookies as PHP reads them into `$_COOKIE`
//! (`php_default_treat_data`, `PARSE_COOKIE`), byte for byte: every
//! `Cookie` header (HTTP/2 sends one per cookie; nginx joins them with
//! `; `), split on `;`, leading white space skipped, names not decoded but
//! filed under PHP's variable name (`wp.woocommerce.session.x` is
//! `wp_woocommerce_session_x`), values raw-url-decoded, and the *first*
//! cookie of a name is the one PHP keeps.
//!
//! The cache's cart-leak guard, per-session limits, card-testing counters
//! and the challenge pass all read cookies here, so a cookie the shop sees
//! is never one Rempart missed (a non-ASCII byte, a dotted name).

use std::borrow::Cow;

/// One cookie: its name as PHP files it, and its value as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie<'a> {
    pub name: Cow<'a, [u8]>,
    /// Still percent-encoded; [`Cookie::value`] decodes it as PHP does.
    pub raw_value: &'a [u8],
}

impl Cookie<'_> {
    /// The value PHP sees (`php_raw_url_decode`).
    pub fn value(&self) -> Cow<'_, [u8]> {
        super::php::raw_url_decode(self.raw_value)
    }

    /// The name as text (bytes that are not UTF-8 become U+FFFD).
    pub fn name_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }
}

/// Every cookie of every `Cookie` header, in order, repeated names included.
pub fn all(headers: &http::HeaderMap) -> impl Iterator<Item = Cookie<'_>> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| parse(v.as_bytes()))
}

/// The cookies of one header value.
pub fn parse(header: &[u8]) -> impl Iterator<Item = Cookie<'_>> {
    // A NUL ends the C string PHP splits.
    let header = header.split(|b| *b == 0).next().unwrap_or_default();
    header.split(|b| *b == b';').filter_map(|part| {
        let start = part
            .iter()
            .position(|b| !is_space(*b))
            .unwrap_or(part.len());
        let part = &part[start..];
        let (name, raw_value) = match part.iter().position(|b| *b == b'=') {
            // `=value` (no name) is skipped, as PHP skips it.
            Some(0) => return None,
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &b""[..]),
        };
        if name.is_empty() {
            return None;
        }
        let name = super::php::variable_name(name)?;
        Some(Cookie { name, raw_value })
    })
}

/// `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The cookie PHP keeps (the first) among those whose name `matches`.
pub fn first<'a>(
    headers: &'a http::HeaderMap,
    mut matches: impl FnMut(&str) -> bool,
) -> Option<Cookie<'a>> {
    all(headers).find(|c| matches(&c.name_text()))
}

/// The value of the cookie named exactly `name` (the first one), decoded.
pub fn value_of(headers: &http::HeaderMap, name: &str) -> Option<Vec<u8>> {
    first(headers, |n| n == name).map(|c| c.value().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(header: &[u8]) -> Vec<String> {
        parse(header).map(|c| c.name_text().into_owned()).collect()
    }

    #[test]
    fn cookies_as_php_reads_them() {
        assert_eq!(
            names(b"_ga=1; wp.woocommerce.session.ab=42%7C%7Cx;\tb ;=x; ;c=d=e"),
            ["_ga", "wp_woocommerce_session_ab", "b_", "c"]
        );
        let c: Vec<_> = parse(b"a=1%7C2+3; a=second").collect();
        assert_eq!(&*c[0].value(), b"1|2+3");
        assert_eq!(
            c.len(),
            2,
            "both are listed; `first` gives the one PHP keeps"
        );
    }

    #[test]
    fn non_ascii_bytes_do_not_hide_a_session() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            http::HeaderValue::from_bytes("pref=caf\u{e9}; wordpress_logged_in_x=joe".as_bytes())
                .unwrap(),
        );
        h.append(
            http::header::COOKIE,
            http::HeaderValue::from_bytes(b"\xff\xfe=1; woocommerce_items_in_cart=1").unwrap(),
        );
        let found: Vec<String> = all(&h).map(|c| c.name_text().into_owned()).collect();
        assert!(
            found.contains(&"wordpress_logged_in_x".to_string()),
            "{found:?}"
        );
        assert!(
            found.contains(&"woocommerce_items_in_cart".to_string()),
            "{found:?}"
        );
        assert_eq!(
            value_of(&h, "wordpress_logged_in_x").as_deref(),
            Some(&b"joe"[..])
        );
    }

    #[test]
    fn the_first_cookie_of_a_name_wins() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, "s=first; s=second".parse().unwrap());
        assert_eq!(value_of(&h, "s").as_deref(), Some(&b"first"[..]));
    }
}
