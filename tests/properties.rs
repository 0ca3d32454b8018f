#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! Property tests of the readers every slice relies on (body parsers,
//! cookies, paths, queries) and of the policy loader: on any input they
//! never panic, stay bounded, and read a body the same however it is cut
//! into chunks.

use proptest::prelude::*;
use rempart::util::{cookies, form, json, multipart, path, query, target, xml};

/// Bytes that look like the input under test more often than random bytes do.
fn soup(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(alphabet.to_vec()),
            1 => any::<u8>(),
        ],
        0..max,
    )
}

const MULTIPART: &[u8] = b"-\r\n:;=\"' \tBXname filename Content-Disposition form-data\\";
const URLENCODED: &[u8] = b"a=&%2+[]. b0F";
const JSON: &[u8] = b"{}[]\":,0123456789.eE+-truefalsnul \\u\t\n";
const XML: &[u8] = b"<>/!-?[]CDATA&#x;amp a=\"' methodName";
const PATHS: &[u8] = b"/.%2eFf?#a";
const COOKIE: &[u8] = b";= .[]%a\t";

/// Cuts `body` at the given points (taken modulo its length).
fn chunks(body: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| if body.is_empty() { 0 } else { c % body.len() })
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        out.push(body[at..p].to_vec());
        at = p;
    }
    out.push(body[at..].to_vec());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn multipart_reads_the_same_however_the_body_is_cut(
        body in soup(MULTIPART, 600),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        boundary in prop::sample::select(vec![&b"B"[..], b"XX", b"--"]),
    ) {
        let (whole, _) = multipart::parse_all(&body, boundary, 1 << 20);
        let mut p = multipart::Parser::new(boundary, 1 << 20);
        let mut events = Vec::new();
        for c in chunks(&body, &cuts) {
            p.feed(&c, &mut events);
        }
        p.finish(&mut events);
        prop_assert_eq!(events, whole);
    }

    #[test]
    fn multipart_forms_read_the_same_however_they_are_cut(
        body in arb_multipart(),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let (whole, _) = multipart::parse_all(&body, b"B", 1 << 20);
        let mut p = multipart::Parser::new(b"B", 1 << 20);
        let mut events = Vec::new();
        for c in chunks(&body, &cuts) {
            p.feed(&c, &mut events);
        }
        p.finish(&mut events);
        prop_assert_eq!(&events, &whole);
        let form = form::read(Some(b"multipart/form-data; boundary=B"), &body);
        let fields = whole
            .iter()
            .filter(|e| matches!(e, multipart::Event::Field { .. }))
            .count();
        prop_assert!(form.fields().len() <= fields);
    }

    #[test]
    fn multipart_boundaries_never_panic(ct in soup(b"boundary=\";, Bb", 80)) {
        if let Some(b) = multipart::boundary(&ct) {
            prop_assert!(!b.is_empty() && b.len() <= 5116);
        }
    }

    #[test]
    fn json_never_panics_and_stays_bounded(body in soup(JSON, 400)) {
        if let Ok(leaves) = json::flatten(&body, 50) {
            prop_assert!(leaves.len() <= 50);
            prop_assert!(leaves.iter().all(|(k, _)| k.starts_with("json")));
        }
    }

    #[test]
    fn json_reads_what_serde_writes(value in arb_json()) {
        let text = serde_json::to_vec(&value).unwrap();
        let leaves = json::flatten(&text, 100_000).unwrap();
        prop_assert_eq!(leaves.len(), scalars(&value));
    }

    #[test]
    fn xml_never_panics_and_stays_bounded(body in soup(XML, 400)) {
        if let Ok(values) = xml::parse(&body, 20) {
            prop_assert!(values.texts.len() <= 20 && values.attributes.len() <= 20);
        }
    }

    #[test]
    fn urlencoded_forms_read_the_same_however_the_body_is_cut(
        body in soup(URLENCODED, 600),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let ct = Some(&b"application/x-www-form-urlencoded"[..]);
        let whole = form::read(ct, &body);
        let mut r = form::FormReader::new(ct);
        for c in chunks(&body, &cuts) {
            r.feed(&c);
        }
        let parts = r.finish();
        prop_assert_eq!(parts.fields(), whole.fields());
        // PHP's names never hold a space or a dot before an array bracket.
        for (name, _) in whole.fields() {
            prop_assert!(!name.is_empty() && !name.contains(' ') && !name.contains('.'));
        }
        let _ = rempart::waf::body::urlencoded(&body);
        let _: Vec<_> = query::pairs(&body).map(|p| (p.name(), p.value())).collect();
    }

    #[test]
    fn cookies_never_panic_and_names_are_php_names(header in soup(COOKIE, 200)) {
        for c in cookies::parse(&header) {
            let name = c.name_text();
            prop_assert!(!name.is_empty() && !name.contains(' ') && !name.contains('.'));
            let _ = c.value();
        }
    }

    #[test]
    fn paths_resolve_to_clean_absolute_paths(raw in soup(PATHS, 120)) {
        let p = path::normalise(&raw);
        prop_assert!(p.starts_with(b"/"));
        let decoded_dots = !raw.contains(&b'%');
        if decoded_dots {
            // Without escapes: no empty, `.` or `..` segment is left.
            let inner = &p[1..];
            prop_assert!(!inner.split(|b| *b == b'/').rev().skip(1).any(|s| s.is_empty() || s == b"." || s == b".."));
            prop_assert_eq!(path::normalise(&p).into_owned(), p.into_owned(), "idempotent");
        }
    }

    #[test]
    fn request_readings_never_panic(raw in soup(b"/?&=%.wc-ajax=rest_route_method[]", 200)) {
        let t = target::Target::new(&http::Method::POST, &raw, &http::HeaderMap::new());
        prop_assert!(t.path().starts_with('/'));
        let _ = t.paths_with_query().count();
        let _ = target::sanitize_text(&raw);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The policy loader reports, never panics, on any damage to a real policy.
    #[test]
    fn the_policy_loader_never_panics(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0usize..3), 1..12),
    ) {
        let base = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/demo.yaml"),
        )
        .unwrap();
        let mut text = base.clone();
        for (at, byte, kind) in edits {
            if text.is_empty() {
                break;
            }
            let at = at % text.len();
            match kind {
                0 => text[at] = byte,
                1 => {
                    text.remove(at);
                }
                _ => text.insert(at, byte),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, &text).unwrap();
        let started = std::time::Instant::now();
        let result = rempart::app::check(&file);
        prop_assert!(started.elapsed() < std::time::Duration::from_secs(20));
        if let Err(diags) = result {
            prop_assert!(!diags.to_string().is_empty(), "every refusal says why");
        }
    }
}

/// A multipart body with boundary `B`, made of well-formed and odd parts:
/// values holding the boundary mid-line or after a bare LF, files, parts
/// without a disposition, quoted and escaped names, a close delimiter in
/// the middle, a missing end.
fn arb_multipart() -> impl Strategy<Value = Vec<u8>> {
    let value = soup(b"ab\r\n-B ", 40);
    let name = soup(b"nx\"';\\ .[]", 8);
    let part = (0u8..6, name, value, any::<bool>());
    (
        prop::collection::vec(part, 0..6),
        soup(b"ab\r\n-", 12),
        any::<bool>(),
    )
        .prop_map(|(parts, preamble, close)| {
            let mut body = preamble;
            for (kind, name, value, crlf) in parts {
                let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
                body.extend_from_slice(match kind {
                    5 => b"--B--",
                    4 => b"--Bjunk",
                    _ => b"--B",
                });
                body.extend_from_slice(eol);
                match kind {
                    0 => body.extend_from_slice(b"Content-Disposition: form-data; name=\""),
                    1 => body.extend_from_slice(
                        b"Content-Disposition: form-data; filename=\"f\"; name=\"",
                    ),
                    2 => body.extend_from_slice(b"Content-Type: text/plain"),
                    _ => body.extend_from_slice(b"content-disposition: form-data; name="),
                }
                body.extend_from_slice(&name);
                body.extend_from_slice(b"\"");
                body.extend_from_slice(eol);
                body.extend_from_slice(eol);
                body.extend_from_slice(&value);
                body.extend_from_slice(eol);
            }
            if close {
                body.extend_from_slice(b"--B--\r\n");
            }
            body
        })
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        ".*".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".*", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn scalars(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => a.iter().map(scalars).sum(),
        serde_json::Value::Object(o) => o.values().map(scalars).sum(),
        _ => 1,
    }
}
