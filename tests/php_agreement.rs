#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! Rempart's readers against PHP itself: the same query strings, cookies,
//! url-encoded and multipart bodies and JSON documents are given to
//! `php-cgi` (Debian's, as shops run it) and to `rempart::util`, and the
//! variables each sees must agree. The inputs are the tricky spellings of
//! the hardening work plus generated ones.
//!
//! Needs `php-cgi` (`scripts/setup.sh --for-tests` installs it).

use proptest::prelude::*;
use rempart::util::{cookies, form, json, php, query};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

const SCRIPT: &str = r#"<?php
// Names and values as hex: bytes compare exactly, UTF-8 or not.
function hex_vars($vars) {
    $out = [];
    foreach ($vars as $k => $v) {
        $out[bin2hex((string) $k)] = is_string($v) ? bin2hex($v) : null;
    }
    return (object) $out;
}
$out = ['get' => hex_vars($_GET), 'post' => hex_vars($_POST), 'cookie' => hex_vars($_COOKIE), 'files' => array_keys($_FILES)];
if (getenv('JSON_MODE')) {
    $j = json_decode(file_get_contents('php://input'), true);
    $out['json_ok'] = !($j === null && json_last_error() !== JSON_ERROR_NONE);
}
echo json_encode($out, JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR);
"#;

struct Php {
    _dir: tempfile::TempDir,
    script: std::path::PathBuf,
}

impl Php {
    fn new() -> Php {
        assert!(
            Command::new("php-cgi").arg("-v").output().is_ok(),
            "php-cgi is missing: run scripts/setup.sh --for-tests (Debian package php-cgi)"
        );
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("dump.php");
        std::fs::write(&script, SCRIPT).unwrap();
        Php { _dir: dir, script }
    }

    /// What PHP makes of a request.
    fn run(
        &self,
        query: &[u8],
        cookie: &[u8],
        content_type: &[u8],
        body: &[u8],
        json: bool,
    ) -> Value {
        use std::os::unix::ffi::OsStrExt;
        let os = |b: &[u8]| std::ffi::OsStr::from_bytes(b).to_owned();
        let mut cmd = Command::new("php-cgi");
        cmd.env_clear()
            .env("REDIRECT_STATUS", "200")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("REQUEST_METHOD", "POST")
            .env("SCRIPT_FILENAME", &self.script)
            .env("QUERY_STRING", os(query))
            .env("CONTENT_TYPE", os(content_type))
            .env("CONTENT_LENGTH", body.len().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if !cookie.is_empty() {
            cmd.env("HTTP_COOKIE", os(cookie));
        }
        if json {
            cmd.env("JSON_MODE", "1");
        }
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(body).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = out.stdout;
        let start = text
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |p| p + 4);
        serde_json::from_slice(&text[start..])
            .unwrap_or_else(|e| panic!("php said {}: {e}", String::from_utf8_lossy(&text)))
    }
}

/// Top-level names PHP keeps, with their value when it is a scalar string,
/// as bytes.
fn php_vars(v: &Value) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let unhex = |h: &str| -> Vec<u8> {
        (0..h.len() / 2)
            .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
            .collect()
    };
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (unhex(k), v.as_str().map(unhex)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Names PHP drops although they are well formed: a mangled `__Host-` or
/// `__Secure-` prefix (CVE-2022-31629).
fn forbidden(name: &[u8]) -> bool {
    name.starts_with(b"__Host-") || name.starts_with(b"__Secure-")
}

/// One variable as Rempart reads it: whether its value is comparable (a
/// plain name, not an array), its PHP name and its value.
type Reading = Vec<(bool, Vec<u8>, Vec<u8>)>;

/// Compares PHP's variables with Rempart's reading; `last` says which of
/// repeated names PHP keeps.
fn agree(
    what: &str,
    input: &[u8],
    php: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ours: &Reading,
    last: bool,
) {
    let mut mine: BTreeMap<Vec<u8>, (bool, Vec<u8>)> = BTreeMap::new();
    for (plain, name, value) in ours {
        if last || !mine.contains_key(name) {
            mine.insert(name.clone(), (*plain, value.clone()));
        }
    }
    let input = String::from_utf8_lossy(input);
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for (name, value) in php {
        let Some((plain, mine_value)) = mine.get(name) else {
            panic!(
                "{what}: PHP sees `{}`, Rempart does not, in {input:?}",
                show(name)
            );
        };
        if let (Some(v), true) = (value, plain) {
            assert_eq!(
                show(v),
                show(mine_value),
                "{what}: value of `{}` in {input:?}",
                show(name)
            );
        }
    }
    for name in mine.keys() {
        assert!(
            php.contains_key(name) || forbidden(name),
            "{what}: Rempart sees `{}`, PHP does not, in {input:?}",
            show(name)
        );
    }
}

fn query_reading(q: &[u8]) -> Reading {
    query::pairs(q)
        .filter_map(|p| {
            let raw = php::url_decode(p.raw_name).into_owned();
            let plain = !raw
                .split(|b| *b == 0)
                .next()
                .unwrap_or_default()
                .contains(&b'[');
            Some((plain, p.name()?.into_owned(), p.value().into_owned()))
        })
        .collect()
}

fn cookie_reading(c: &[u8]) -> Reading {
    cookies::parse(c)
        .map(|k| (true, k.name.to_vec(), k.value().into_owned()))
        .collect()
}

fn check_query_and_cookies(php_bin: &Php, q: &[u8], c: &[u8]) {
    let seen = php_bin.run(q, c, b"text/plain", b"", false);
    agree("query", q, &php_vars(&seen["get"]), &query_reading(q), true);
    // Cookies: the first of a name wins; an array cookie has no comparable value.
    let php_cookies: BTreeMap<Vec<u8>, Option<Vec<u8>>> = php_vars(&seen["cookie"])
        .into_keys()
        .map(|k| (k, None))
        .collect();
    agree("cookie", c, &php_cookies, &cookie_reading(c), false);
}

fn check_form(php_bin: &Php, ct: &[u8], body: &[u8]) {
    let seen = php_bin.run(b"", b"", ct, body, false);
    let fields = form::read(Some(ct), body);
    // Form names are kept as text (bytes that are not UTF-8 as U+FFFD):
    // compared as text on both sides.
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned().into_bytes();
    let ours: Reading = fields
        .fields()
        .iter()
        .map(|(n, v)| (true, n.clone().into_bytes(), v.clone()))
        .collect();
    let php: BTreeMap<Vec<u8>, Option<Vec<u8>>> = php_vars(&seen["post"])
        .into_iter()
        .map(|(k, v)| (lossy(&k), v))
        .collect();
    agree("form", body, &php, &ours, true);
}

fn check_json(php_bin: &Php, body: &[u8]) {
    let seen = php_bin.run(b"", b"", b"application/json", body, true);
    let php_ok = seen["json_ok"].as_bool().unwrap();
    let ours = json::flatten(body, 1 << 20).is_ok();
    assert_eq!(
        ours,
        php_ok,
        "json_decode and Rempart disagree on {:?}",
        String::from_utf8_lossy(body)
    );
}

#[test]
fn tricky_spellings_read_alike() {
    let php = Php::new();
    for q in [
        &b"a=1&a=2&b[]=3&b[]=4&c.d=5&e f=6&g[h=7&%20i=8&j%00k=9&=10&[x]=11"[..],
        b"wc-ajax=%63heckout&add%2Dto%2Dcart=5&rest.route=/wp/v2/users&rest[route=x",
        b"z=1&z[]=2&w[]=1&w=2&s]=1&uu[a]b[c]=1&x[ ]=1&%5Bk%5D=2&f%5B%5D=2&e[%5D=1",
        b"a=%zz+%41&b=%2541&c=%%41&d=%4&..Host-x=1&_.Secure-y=2",
    ] {
        check_query_and_cookies(&php, q, b"");
    }
    for c in [
        &b"a=1; a=2; b=1+2%20%2B; d%20e=1; f g=1; h.i=1; h_i=2; =j; k; \t l=1;;; m = 2 ; n=\"q;r\""
            [..],
        b"wp.woocommerce.session.x=1; wordpress_logged_in_abc=joe; pref=caf\xc3\xa9",
        b"pref=caf\xe9; woocommerce_items_in_cart=1; a[x]=1; a=2",
    ] {
        check_query_and_cookies(&php, b"", c);
    }
    let form = b"application/x-www-form-urlencoded";
    check_form(&php, form, b"log=a&pwd=b&log=c&wp.x=1&a;b=2");
    check_form(
        &php,
        b"application/x-www-form-urlencoded,text/plain",
        b"a=1",
    );
    check_form(
        &php,
        b"APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8",
        b"a=1",
    );
    for (ct, body) in [
        (&b"multipart/form-data; boundary=B"[..], &b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nfoo--B bar\r\n--B\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n2\r\n--B--\r\n--B\r\nContent-Disposition: form-data; name=\"evil\"\r\n\r\nv\r\n--B--"[..]),
        (b"multipart/form-data; boundary=A,B", b"--A\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\n1\r\n--A--\r\n"),
        (b"multipart/form-data; xboundary=A; boundary=B", b"--A\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\n1\r\n--A--\r\n"),
        (b"multipart/form-data,boundary=A", b"--A\r\nContent-Disposition: attachment; NaMe=d e\r\n\r\n1\r\n--A--\r\n"),
        (b"multipart/form-data; boundary=\"A\"x", b"preamble\r\n--A\r\nContent-Disposition: form-data; name='j k'; name=\"o\"junk\r\n\r\nv\r\n--Ajunk\r\nhidden\r\n--A\r\nContent-Disposition: form-data; name=\"p.q[r\"\r\n\r\nw\r\n--A--"),
        (b"multipart/form-data; boundary=A", b"--A\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv1\r\nmore"),
    ] {
        check_form(&php, ct, body);
    }
    for body in [
        &b"1e400"[..],
        b"[1e400, -1e400, 1e-400]",
        b"9223372036854775808",
        b"\"\\ud800\"",
        b"{\"a\":1,\"a\":2}",
        b"{\"\":1}",
        b"[1,]",
        b"\x0c1",
        b" \t\r\n[]",
        b"\"\\u0000\"",
    ] {
        check_json(&php, body);
    }
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes();
    check_json(&php, &deep(511));
    check_json(&php, &deep(512));
}

fn soup(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(alphabet.to_vec()),
            1 => any::<u8>().prop_filter("no NUL", |b| *b != 0),
        ],
        0..max,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn generated_queries_and_cookies_read_alike(
        q in soup(b"a=&%2+[]. _bB5", 60),
        c in soup(b"a=;%2+[]. _bB\t", 60),
    ) {
        let php = Php::new();
        check_query_and_cookies(&php, &q, &c);
    }

    #[test]
    fn generated_json_is_accepted_alike(body in soup(b"{}[]\":,019.eE+-tnul \\\\u", 40)) {
        let php = Php::new();
        check_json(&php, &body);
    }

    #[test]
    fn generated_multipart_reads_alike(parts in prop::collection::vec((0u8..4, soup(b"nx\"' .[", 6), soup(b"ab\r\n-B", 20), any::<bool>()), 0..5), close in any::<bool>()) {
        let mut body = Vec::new();
        for (kind, name, value, crlf) in parts {
            let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            body.extend_from_slice(if kind == 3 { b"--B--" } else { b"--B" });
            body.extend_from_slice(eol);
            body.extend_from_slice(if kind == 2 { b"Content-Type: x" } else { b"Content-Disposition: form-data; name=\"" });
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
        let php = Php::new();
        check_form(&php, b"multipart/form-data; boundary=B", &body);
    }
}
