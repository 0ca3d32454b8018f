//! Query strings and url-encoded form bodies as PHP reads them into `$_GET`
//! and `$_POST`: split on `&` (empty parts skipped), name and value
//! `php_url_decode`d, the name filed under PHP's variable name, and the
//! *last* value of a name is the one PHP keeps.

use std::borrow::Cow;

/// One `name=value` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair<'a> {
    /// The pair as sent (`utm%5Fsource=x`).
    pub raw: &'a [u8],
    pub raw_name: &'a [u8],
    pub raw_value: &'a [u8],
}

impl<'a> Pair<'a> {
    /// The variable PHP files the pair under (`None`: PHP ignores it).
    pub fn name(&self) -> Option<Cow<'a, [u8]>> {
        match super::php::url_decode(self.raw_name) {
            Cow::Borrowed(b) => super::php::variable_name(b),
            Cow::Owned(o) => super::php::variable_name(&o).map(|n| Cow::Owned(n.into_owned())),
        }
    }

    /// The decoded value.
    pub fn value(&self) -> Cow<'a, [u8]> {
        super::php::url_decode(self.raw_value)
    }
}

/// The pairs of a query string or url-encoded body, in order.
pub fn pairs(query: &[u8]) -> impl Iterator<Item = Pair<'_>> {
    query
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|raw| {
            let (raw_name, raw_value) = match raw.iter().position(|b| *b == b'=') {
                Some(eq) => (&raw[..eq], &raw[eq + 1..]),
                None => (raw, &b""[..]),
            };
            Pair {
                raw,
                raw_name,
                raw_value,
            }
        })
}

/// The value PHP keeps for `name` (the last pair of that name), decoded.
pub fn value_of<'a>(query: &'a [u8], name: &str) -> Option<Cow<'a, [u8]>> {
    pairs(query)
        .filter(|p| p.name().is_some_and(|n| *n == *name.as_bytes()))
        .last()
        .map(|p| p.value())
}

/// Whether PHP sees a variable named `name`.
pub fn has(query: &[u8], name: &str) -> bool {
    pairs(query).any(|p| p.name().is_some_and(|n| *n == *name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_php_reads_them() {
        let q = b"wc-ajax=%63heckout&add%2Dto%2Dcart=5&&x&s=a+b&s=last";
        assert_eq!(value_of(q, "wc-ajax").as_deref(), Some(&b"checkout"[..]));
        assert_eq!(value_of(q, "add-to-cart").as_deref(), Some(&b"5"[..]));
        assert_eq!(value_of(q, "s").as_deref(), Some(&b"last"[..]));
        assert_eq!(value_of(q, "x").as_deref(), Some(&b""[..]));
        assert!(has(b"utm.source=1", "utm_source"));
        assert!(has(b"a[b]=1", "a"));
        assert!(!has(b"=1", ""));
    }
}
