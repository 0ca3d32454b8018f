//! What a request asks the shop to do, read as the shop's stack reads it,
//! for the rules that protect actions (rate limits, failed-login and
//! payment counting, the step-up challenge, the cache's bypass rules).
//!
//! Every spelling the shop still serves reaches the same reading:
//! - the path as the web server resolves it (`//wp-login.php`,
//!   `/wp-login%2ephp`);
//! - the WordPress REST route whichever way it is given: `/wp-json/<route>`,
//!   `/index.php/wp-json/<route>`, `?rest_route=<route>` on any URL, a form
//!   body's `rest_route`, and the routes of a REST batch request;
//! - query parameters under PHP's names and decoded values, with
//!   WordPress's `sanitize_text_field` applied (`?wc-ajax=%63heckout`,
//!   `check%2541out` are `checkout`);
//! - the methods a REST route runs as (`?_method=`,
//!   `X-HTTP-Method-Override`);
//! - form fields, once the body is read (WooCommerce's form handlers run on
//!   any URL: a login is `login` + `username` + `password` wherever it is
//!   posted).
//!
//! Rules match paths case-insensitively (WordPress pages and REST routes
//! are): a spelling that is not served is at worst counted too.

use std::borrow::Cow;

/// The reading of one request.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The resolved path, then the routes the request also reaches.
    paths: Vec<String>,
    /// `name=value&...`: PHP's names, decoded and sanitised values.
    query_text: String,
    /// The request method, then the methods it may run as.
    methods: Vec<http::Method>,
    /// Query variables (PHP's names, decoded values).
    query_fields: Vec<(String, Vec<u8>)>,
    /// Form fields (PHP's names) and their values, once the body is read.
    fields: Vec<(String, Vec<u8>)>,
    /// The body has been read (fields are final).
    pub body_read: bool,
}

impl Target {
    /// The reading of a request head.
    pub fn new(method: &http::Method, raw_target: &[u8], headers: &http::HeaderMap) -> Target {
        let (raw_path, query) = match raw_target.iter().position(|b| *b == b'?') {
            Some(q) => (&raw_target[..q], &raw_target[q + 1..]),
            None => (raw_target, &b""[..]),
        };
        // An absolute-form target: the path starts after the authority.
        let raw_path = absolute_form_path(raw_path);
        let path = String::from_utf8_lossy(&super::path::normalise(raw_path)).into_owned();
        let mut t = Target {
            paths: vec![path.clone()],
            methods: vec![method.clone()],
            ..Target::default()
        };
        // WordPress: `index.php/wp-json/...` (the rewrite rule's `.` is any character).
        let b = path.as_bytes();
        if b.len() > 10
            && b[..6].eq_ignore_ascii_case(b"/index")
            && b[7..10].eq_ignore_ascii_case(b"php")
            && b[10] == b'/'
        {
            t.add_path(path[10..].to_string());
        }
        let mut parts = Vec::new();
        for pair in super::query::pairs(query) {
            let Some(name) = pair.name() else { continue };
            let name = String::from_utf8_lossy(&name).into_owned();
            let decoded = pair.value();
            let value = sanitize_text(&decoded);
            parts.push(format!("{name}={value}"));
            if t.query_fields.len() < super::form::MAX_FIELDS {
                let kept = &decoded[..decoded.len().min(super::form::MAX_VALUE)];
                t.query_fields.push((name.clone(), kept.to_vec()));
            }
            match name.as_str() {
                "rest_route" => {
                    let route = format!("/wp-json/{}", value.trim_start_matches('/'));
                    t.add_path(route);
                }
                "_method" => t.add_method(&value),
                _ => {}
            }
        }
        t.query_text = parts.join("&");
        if let Some(over) = headers
            .get("x-http-method-override")
            .and_then(|v| v.to_str().ok())
        {
            t.add_method(over);
        }
        t
    }

    fn add_path(&mut self, path: String) {
        if !self.paths.contains(&path) {
            self.paths.push(path);
        }
    }

    fn add_method(&mut self, name: &str) {
        if let Ok(m) = http::Method::from_bytes(name.trim().to_ascii_uppercase().as_bytes()) {
            if !self.methods.contains(&m) {
                self.methods.push(m);
            }
        }
    }

    /// Adds what the body says: its form fields, a `rest_route` given in
    /// the body, and the routes of a REST batch.
    pub fn add_body(&mut self, body: &super::form::FormFields) {
        self.body_read = true;
        self.fields = body.fields().to_vec();
        if let Some(route) = body.value("rest_route") {
            let route = sanitize_text(route);
            self.add_path(format!("/wp-json/{}", route.trim_start_matches('/')));
        }
        for route in body.batch_paths() {
            let route = route.split('?').next().unwrap_or_default();
            self.add_path(format!("/wp-json/{}", route.trim_start_matches('/')));
        }
    }

    /// The resolved path.
    pub fn path(&self) -> &str {
        &self.paths[0]
    }

    /// Every path the request reaches.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(String::as_str)
    }

    /// Every path, each followed by `?` and the query text (built only
    /// when a regex rule asks: most requests meet prefix rules only).
    pub fn paths_with_query(&self) -> impl Iterator<Item = Cow<'_, str>> {
        self.paths.iter().map(|p| {
            if self.query_text.is_empty() {
                Cow::Borrowed(p.as_str())
            } else {
                Cow::Owned(format!("{p}?{}", self.query_text))
            }
        })
    }

    /// Whether the request runs as one of `methods` (any, when empty).
    pub fn runs_as(&self, methods: &[http::Method]) -> bool {
        methods.is_empty() || self.methods.iter().any(|m| methods.contains(m))
    }

    /// Whether the request carries the field (`name`, or `name=value`), in
    /// the body or the query (PHP's `$_REQUEST`).
    pub fn has_field(&self, spec: &str) -> bool {
        let (name, value) = match spec.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (spec, None),
        };
        self.fields
            .iter()
            .chain(self.query_fields.iter())
            .any(|(n, v)| {
                n == name && value.is_none_or(|want| sanitize_text(v).eq_ignore_ascii_case(want))
            })
    }

    /// The value PHP's `$_REQUEST` holds for a field: the body's last, else
    /// the query's last.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        fn last<'a>(list: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
            list.iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
        }
        last(&self.fields, name).or_else(|| last(&self.query_fields, name))
    }
}

/// `http://host/path` → `/path`.
fn absolute_form_path(raw: &[u8]) -> &[u8] {
    if raw.first() == Some(&b'/') {
        return raw;
    }
    let Some(scheme_end) = memchr::memmem::find(raw, b"://") else {
        return raw;
    };
    let after = &raw[scheme_end + 3..];
    match after.iter().position(|b| *b == b'/') {
        Some(p) => &after[p..],
        None => b"/",
    }
}

/// WordPress's `sanitize_text_field`, as WooCommerce applies it to
/// `wc-ajax`: tags stripped, white space runs made one space, trimmed, and
/// the `%XX` sequences left after decoding removed until none remain.
pub fn sanitize_text(value: &[u8]) -> Cow<'_, str> {
    let text = String::from_utf8_lossy(value);
    let plain = !text
        .bytes()
        .any(|b| matches!(b, b'<' | b'%' | b'\t' | b'\r' | b'\n' | 0) || b == b' ');
    if plain {
        return text;
    }
    // Tags: `<...>` removed (an unclosed `<` and what follows too).
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            c => out.push(c),
        }
    }
    // `%XX` octets removed until none remain.
    loop {
        let bytes = out.as_bytes();
        let at = (0..bytes.len().saturating_sub(2)).find(|&i| {
            bytes[i] == b'%' && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit()
        });
        match at {
            Some(i) => {
                out.replace_range(i..i + 3, "");
            }
            None => break,
        }
    }
    let collapsed: Vec<&str> = out
        .split([' ', '\t', '\r', '\n'])
        .filter(|s| !s.is_empty())
        .collect();
    let joined = collapsed.join(" ");
    Cow::Owned(
        joined
            .trim_matches(|c: char| c == '\0' || c.is_ascii_whitespace())
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: &str, uri: &str) -> Target {
        Target::new(
            &http::Method::from_bytes(method.as_bytes()).unwrap(),
            uri.as_bytes(),
            &http::HeaderMap::new(),
        )
    }

    #[test]
    fn spellings_of_one_action_read_alike() {
        for uri in [
            "//wp-login.php",
            "/wp-login%2ephp",
            "/x/../wp-login.php",
            "/./wp-login.php?x=1",
        ] {
            assert_eq!(target("POST", uri).path(), "/wp-login.php", "{uri}");
        }
        let rest = target("GET", "/?rest_route=/wc/store/v1/checkout&_method=POST");
        assert!(rest.paths().any(|p| p == "/wp-json/wc/store/v1/checkout"));
        assert!(rest.runs_as(&[http::Method::POST]));
        let info = target("POST", "/index.php/wp-json/wc/store/v1/checkout");
        assert!(info.paths().any(|p| p == "/wp-json/wc/store/v1/checkout"));
        let ajax = target("POST", "/?wc-ajax=check%2541out");
        assert!(
            ajax.paths_with_query()
                .any(|p| p.contains("wc-ajax=checkout")),
            "{ajax:?}"
        );
        let cart = target("GET", "/shop/?add%2Dto%2Dcart=12");
        assert!(cart
            .paths_with_query()
            .any(|p| p.contains("add-to-cart=12")));
        let absolute = target("GET", "http://shop.example/wp-login.php");
        assert_eq!(absolute.path(), "/wp-login.php");
    }

    #[test]
    fn sanitize_text_as_wordpress() {
        for (given, expected) in [
            ("checkout", "checkout"),
            ("check%41out", "checkout"),
            (" checkout\t", "checkout"),
            ("<b>checkout", "checkout"),
            ("check<x>out", "checkout"),
            ("checkout\0", "checkout"),
            ("a  b", "a b"),
        ] {
            assert_eq!(sanitize_text(given.as_bytes()), expected, "{given:?}");
        }
    }
}
