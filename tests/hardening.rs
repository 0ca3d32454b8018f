#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! Rempart reads every request as the shop will: each test attacks one class
//! of disagreement between the proxy and nginx + PHP + WordPress through the
//! real binary, with an origin that records what it receives.
//!
//! Tests that load the shipped WooCommerce preset need the OWASP CRS and its
//! WordPress plugin (`REMPART_CRS_DIR`, `REMPART_CRS_PLUGINS_DIR`, or
//! `../shared/` next to the repository) and say so when they are missing.

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FORM: &str = "application/x-www-form-urlencoded";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

/// A client that sends what a browser sends, from 127.0.0.N.
fn browser(ip: [u8; 4]) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("user-agent", CHROME.parse().unwrap());
    h.insert(
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
            .parse()
            .unwrap(),
    );
    h.insert("accept-language", "fr-FR,fr;q=0.9".parse().unwrap());
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from(ip))
        .default_headers(h)
        .build()
        .unwrap()
}

/// The shipped WooCommerce preset's blocks (CRS and WordPress plugin
/// loaded), with `extra` blocks, in front of `origin`.
async fn woocommerce(origin: SocketAddr, blocks: &[&str], extra: &str) -> Rempart {
    let mut text = String::new();
    for b in blocks {
        text.push_str(&preset_block("woocommerce.yaml", b));
    }
    text.push_str(extra);
    let (listen, admin) = (free_addr(), free_addr());
    let env = crs_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        policy(listen, admin, &[origin], &text),
    )
    .unwrap();
    Rempart::launch(dir, listen, admin, &[], &env).await
}

// ---------------------------------------------------------------------------
// 0. HTTP/2: the host travels in :authority
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn http2_requests_carry_their_host_to_the_waf_and_the_cache() {
    let origin = TestOrigin::start("shop").await;
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(binary())
        .args(["cert", "--dev", "shop.test", "--dir"])
        .arg(dir.path().join("certs"))
        .status()
        .unwrap();
    assert!(status.success());
    let (listen, admin, https) = (free_addr(), free_addr(), free_addr());
    let mut blocks = String::new();
    for b in ["limits", "cache", "waf"] {
        blocks.push_str(&preset_block("woocommerce.yaml", b));
    }
    blocks.push_str(&format!(
        "tls:\n  listen: [\"{https}\"]\n  certs_dir: certs\n  http2: true\n"
    ));
    std::fs::write(
        dir.path().join("policy.yaml"),
        policy(listen, admin, &[origin.addr], &blocks),
    )
    .unwrap();
    let env = crs_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let proxy = Rempart::launch(dir, listen, admin, &[], &env).await;

    for h2 in [true, false] {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .resolve("shop.test", https)
            .user_agent(CHROME);
        if !h2 {
            builder = builder.http1_only();
        }
        let c = builder.build().unwrap();
        let page = format!("https://shop.test:{}/product/h2-{h2}/", https.port());
        let first = c.get(&page).send().await.unwrap();
        assert_eq!(
            first.version(),
            if h2 {
                reqwest::Version::HTTP_2
            } else {
                reqwest::Version::HTTP_11
            }
        );
        assert_eq!(first.status(), 200, "a shop page over h2={h2}");
        assert_eq!(first.headers()["x-cache"], "MISS");
        let seen: serde_json::Value = first.json().await.unwrap();
        assert_eq!(
            seen["headers"]["host"],
            format!("shop.test:{}", https.port())
        );
        let again = c.get(&page).send().await.unwrap();
        assert_eq!(again.status(), 200);
        assert_eq!(again.headers()["x-cache"], "HIT", "cached over h2={h2}");
        let attack = c
            .get(format!(
                "https://shop.test:{}/?s=1%27%20union%20select%20user_pass%20from%20wp_users--",
                https.port()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(attack.status(), 403, "an attack over h2={h2}");
        assert_eq!(attack.headers()["x-rempart-reason"], "waf");
    }

    // A real browser, which negotiates h2.
    let url = format!("https://shop.test:{}/product/in-chromium/", https.port());
    let run = browser_script("shop_h2.mjs", &["--url", &url, "--expect", "in-chromium"]).await;
    assert!(
        run.ok && run.stdout.contains("\"protocol\":\"h2\""),
        "{}\n{}\n{}",
        run.stdout,
        run.stderr,
        proxy.log()
    );
}

// ---------------------------------------------------------------------------
// 1. Request framing: one well-framed request per client request
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_origin_receives_exactly_one_well_framed_request_per_request() {
    let waf = "waf:\n  rules:\n    - id: 1000001\n      targets: [ARGS]\n      operator: \"@contains evil\"\n      action: block\n";
    for extra in ["", waf] {
        let origin = RawOrigin::start().await;
        let (listen, admin) = (free_addr(), free_addr());
        let proxy =
            Rempart::start(&policy(listen, admin, &[origin.addr], extra), listen, admin).await;
        let host = "host: shop.test\r\n";
        let requests: Vec<Vec<u8>> = vec![
            format!("POST /a HTTP/1.1\r\n{host}transfer-encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes(),
            format!("POST /b HTTP/1.1\r\n{host}transfer-encoding: chunked\r\ncontent-type: {FORM}\r\n\r\n3\r\na=1\r\n0\r\n\r\n").into_bytes(),
            format!("POST /c HTTP/1.1\r\n{host}content-length: 3\r\ncontent-type: {FORM}\r\n\r\nb=2").into_bytes(),
            format!("POST /d HTTP/1.1\r\n{host}content-length: 0\r\n\r\n").into_bytes(),
            format!("GET /e HTTP/1.1\r\n{host}\r\n").into_bytes(),
        ];
        // Three rounds on one client connection; the proxy reuses its
        // pooled connections to the origin.
        let mut all = Vec::new();
        for _ in 0..3 {
            all.extend(requests.iter().cloned());
        }
        let answers = raw_requests(proxy.listen, &all).await;
        assert_eq!(
            answers.len(),
            all.len(),
            "every request answered: {answers:?}"
        );
        assert!(answers.iter().all(|(s, _)| s == "200"), "{answers:?}");
        let seen = origin.requests();
        assert_eq!(seen.len(), all.len(), "waf={}: {seen:?}", !extra.is_empty());
        assert!(
            origin.garbage().is_empty(),
            "bytes left on a pooled connection: {:?}",
            origin.garbage()
        );
        let bodies: Vec<&[u8]> = seen.iter().map(|r| r.body.as_slice()).collect();
        assert_eq!(&bodies[..5], &[&b""[..], b"a=1", b"b=2", b"", b""]);
        assert!(
            seen.iter().map(|r| r.connection).max() < Some(all.len()),
            "origin connections were reused"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Cookies as PHP reads them: the cart-leak guard sees every session
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_session_cookie_is_seen_however_it_is_written() {
    let (origin, proxy) = shop_behind_rempart(&preset_block("woocommerce.yaml", "cache")).await;
    let c = client();
    let cookies: [&[u8]; 4] = [
        b"pref=caf\xc3\xa9; woocommerce_items_in_cart=1",
        b"pref=caf\xe9; wordpress_logged_in_abc=joe",
        b"wp.woocommerce.session.abc=42%7C%7Cx",
        b" wp woocommerce_session_abc=1",
    ];
    for (i, cookie) in cookies.iter().enumerate() {
        let path = format!("/product/personal-{i}/");
        let r = c
            .get(proxy.url(&path))
            .header(
                "cookie",
                reqwest::header::HeaderValue::from_bytes(cookie).unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["x-cache"],
            "BYPASS",
            "{}",
            String::from_utf8_lossy(cookie)
        );
        // Nothing personal was stored: an anonymous visitor gets a fresh page.
        let anon = c.get(proxy.url(&path)).send().await.unwrap();
        assert_eq!(anon.headers()["x-cache"], "MISS");
    }
    // Two Cookie headers (HTTP/2 sends one per cookie): both are read.
    let r = c
        .get(proxy.url("/product/two-headers/"))
        .header("cookie", "_ga=GA1.1.1")
        .header("cookie", "woocommerce_cart_hash=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "BYPASS");
    assert_eq!(origin.hits(), 9);
}

// ---------------------------------------------------------------------------
// 3. The cache key and what the origin receives agree
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_origin_receives_the_host_and_query_the_cache_keys() {
    let (_origin, proxy) = shop_behind_rempart(&preset_block("woocommerce.yaml", "cache")).await;
    let c = client();
    let r = c
        .get(proxy.url("/product/x/?utm_source=news&b=2&fbclid=zz&a=1"))
        .header("host", "Shop.Example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        seen["headers"]["host"], "shop.example",
        "no default port, lower case"
    );
    assert_eq!(seen["headers"]["x-forwarded-host"], "shop.example");
    assert_eq!(
        seen["path"], "/product/x/?b=2&a=1",
        "marketing parameters dropped"
    );
    let status = |path: &'static str| {
        let r = c.get(proxy.url(path)).header("host", "shop.example").send();
        async move {
            r.await.unwrap().headers()["x-cache"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    // The same page under the other spellings the key folds together.
    assert_eq!(status("/product/x/?b=2&a=1&utm_medium=mail").await, "HIT");
    // Repeated names keep their order: PHP keeps the last value.
    assert_eq!(status("/search/?s=good&s=evil").await, "MISS");
    assert_eq!(
        status("/search/?s=evil&s=good").await,
        "MISS",
        "another page for PHP"
    );
    // A host nginx refuses is refused.
    let bad = raw_exchange(
        proxy.listen,
        b"GET / HTTP/1.1\r\nhost: shop/../x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
}

// ---------------------------------------------------------------------------
// 5. Abuse controls match every spelling the shop serves
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn limits_count_every_spelling_of_a_protected_action() {
    let limits = "\
rate_limits:
  limits:
    - name: login
      paths: [\"/wp-login.php\", \"/my-account\"]
      forms: [[login, username, password]]
      methods: [POST]
      key: [client]
      rate: 1/h
      burst: 2
    - name: checkout
      paths: [\"/checkout\", \"/wp-json/wc/store/checkout\", \"/wp-json/wc/store/v1/checkout\", \"~[?&]wc-ajax=checkout\"]
      forms: [[woocommerce_checkout_place_order]]
      methods: [POST]
      key: [client]
      rate: 1/h
      burst: 2
";
    let (origin, proxy) = shop_behind_rempart(limits).await;
    // Each group: three spellings of one action from one client; the third is refused.
    let groups: Vec<(u8, Vec<(&str, &str)>)> = vec![
        (
            20,
            vec![
                ("//wp-login.php", "log=a&pwd=b"),
                ("/wp-login%2ephp", "log=a&pwd=b"),
                ("/x/../wp-login.php", "log=a&pwd=b"),
            ],
        ),
        (
            21,
            vec![
                ("/", "login=1&username=a&password=b"),
                ("/some-page/", "login=1&username=a&password=b"),
                ("/My-Account/", "username=a&password=b"),
            ],
        ),
        (
            22,
            vec![
                ("/?wc-ajax=%63heckout", "x=1"),
                ("/?wc-ajax=check%2541out", "x=1"),
                ("/", "woocommerce.checkout.place.order=1"),
            ],
        ),
        (
            23,
            vec![
                ("/index.php/wp-json/wc/store/v1/checkout", "{}"),
                ("/?rest_route=/wc/store/checkout", "{}"),
                ("/wp-json/WC/Store/V1/Checkout", "{}"),
            ],
        ),
        (
            24,
            vec![
                ("/", "rest_route=/wc/store/v1/checkout"),
                ("/wp-json/wc/store/v1/checkout?_method=POST", ""),
                ("/wp-json/wc/store/v1/checkout", ""),
            ],
        ),
    ];
    for (ip, spellings) in groups {
        let c = client_from([127, 0, 0, ip]);
        let mut statuses = Vec::new();
        for (path, body) in &spellings {
            let method = if body.is_empty() && path.contains("_method") {
                reqwest::Method::GET
            } else {
                reqwest::Method::POST
            };
            let r = c
                .request(method, proxy.url(path))
                .header("content-type", FORM)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        assert_eq!(statuses, [200, 200, 429], "{spellings:?}");
    }
    // A batch of Store API requests is read for the routes it runs.
    let c = client_from([127, 0, 0, 25]);
    let batch = r#"{"requests":[{"method":"POST","path":"/wc/store/v1/checkout","body":{}}]}"#;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = c
            .post(proxy.url("/wp-json/wc/store/v1/batch"))
            .header("content-type", "application/json")
            .body(batch)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429], "a checkout inside a batch");
    assert!(origin.hits() >= 12);
}

// ---------------------------------------------------------------------------
// 6. Failed logins count whatever the body looks like
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_count_whatever_the_body_looks_like() {
    let logins = "\
brute_force:
  logins:
    - name: wp_login
      paths: [\"/wp-login.php\"]
      username_field: log
      failure_status: [200]
      max_per_ip: 2
      max_per_user: 100
      window: 10m
";
    let (_origin, proxy) = shop_behind_rempart(logins).await;
    let multipart = |user: &str| {
        format!("--B\r\nContent-Disposition: form-data; name=\"log\"\r\n\r\n{user}\r\n--B\r\nContent-Disposition: form-data; name=\"pwd\"\r\n\r\nguess\r\n--B--\r\n")
    };
    let padded = |user: &str| format!("pad={}&log={user}&pwd=guess", "p".repeat(70_000));
    type Body = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(u8, &str, Body)> = vec![
        (30, "multipart/form-data; boundary=B", Box::new(multipart)),
        (31, FORM, Box::new(padded)),
    ];
    for (ip, ct, body) in cases {
        let c = client_from([127, 0, 0, ip]);
        for i in 0..3 {
            let r = c
                .post(proxy.url("/wp-login.php"))
                .header("content-type", ct)
                .body(body(&format!("user{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{ct}");
        }
        let r = c.get(proxy.url("/")).send().await.unwrap();
        assert_eq!(
            r.status(),
            403,
            "{ct}: three failures past a maximum of two"
        );
        assert_eq!(r.headers()["x-rempart-reason"], "banned");
    }
}

// ---------------------------------------------------------------------------
// 7. XML-RPC read as WordPress reads it
// ---------------------------------------------------------------------------

fn multicall(calls: usize) -> String {
    let call = "<value><struct><member><name>methodName</name><value><string>wp.getUsers<!---->Blogs</string></value></member><member><name>params</name><value><array><data><value><string>admin</string></value><value><string>guess</string></value></data></array></value></member></struct></value>";
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>system<!---->.multicall</methodName><params><param><value><array><data>{}</data></array></value></param></params></methodCall>",
        call.repeat(calls)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_xmlrpc_multicall_hidden_behind_comments_counts_every_guess() {
    let logins = "\
brute_force:
  logins:
    - name: xmlrpc
      paths: [\"/xmlrpc.php\"]
      xmlrpc: true
      max_per_ip: 20
      window: 10m
";
    let (_origin, proxy) = shop_behind_rempart(logins).await;
    let c = client_from([127, 0, 0, 35]);
    let r = c
        .post(proxy.url("/xmlrpc.php"))
        .header("content-type", "text/xml")
        .body(multicall(50))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 403, "50 guesses in one request, past 20");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("rempart_bruteforce_failures_total{login=\"xmlrpc\"} 50"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_presets_multicall_patch_reads_through_comments() {
    let origin = TestOrigin::start("shop").await;
    let proxy = woocommerce(origin.addr, &["waf"], "").await;
    for ct in ["text/xml", FORM, "text/plain"] {
        let r = browser([127, 0, 0, 36])
            .post(proxy.url("/xmlrpc.php"))
            .header("content-type", ct)
            .body(multicall(3))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{ct}");
    }
    assert_eq!(origin.hits(), 0);
}

// ---------------------------------------------------------------------------
// 8, 9. Limits never stop counting; IPv6 clients are counted and banned by /64
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_full_limit_table_still_refuses_newcomers() {
    let extra = "\
client_ip:
  trusted_proxies: [\"127.0.0.1/32\"]
rate_limits:
  max_keys: 100
  limits:
    - name: login
      paths: [\"/wp-login.php\"]
      key: [ip]
      rate: 1/h
      burst: 1
      action: ban
";
    let (_origin, proxy) = shop_behind_rempart(extra).await;
    let c = client();
    let post = |ip: String| {
        c.post(proxy.url("/wp-login.php"))
            .header("x-forwarded-for", ip)
            .body("log=a")
            .send()
    };
    // `max_keys` is at least 100.
    for i in 0..100 {
        assert_eq!(post(format!("198.51.100.{i}")).await.unwrap().status(), 200);
    }
    // The table is full: newcomers share one bucket, which still refuses.
    let statuses = [
        post("203.0.113.1".into()).await.unwrap().status().as_u16(),
        post("203.0.113.2".into()).await.unwrap().status().as_u16(),
        post("203.0.113.3".into()).await.unwrap().status().as_u16(),
    ];
    assert_eq!(statuses, [200, 429, 429]);
    // Refused from the shared bucket, not banned (it cannot tell who is to blame).
    assert!(proxy.bans().await.is_empty());
    assert!(proxy
        .metrics()
        .await
        .contains("rempart_ratelimit_overflow_total{limit=\"login\"}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ipv6_client_is_counted_and_banned_by_its_network() {
    let extra = "\
client_ip:
  trusted_proxies: [\"127.0.0.1/32\"]
rate_limits:
  limits:
    - name: login
      paths: [\"/wp-login.php\"]
      key: [client]
      rate: 1/h
      burst: 2
      action: ban
";
    let (_origin, proxy) = shop_behind_rempart(extra).await;
    let c = client();
    let from = |ip: &str, path: &str| {
        c.post(proxy.url(path))
            .header("x-forwarded-for", ip.to_string())
            .body("log=a")
            .send()
    };
    // Two addresses of one /64 share the bucket: the third request is refused and bans.
    assert_eq!(
        from("2001:db8:1:2::1", "/wp-login.php")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        from("2001:db8:1:2::2", "/wp-login.php")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        from("2001:db8:1:2::3", "/wp-login.php")
            .await
            .unwrap()
            .status(),
        429
    );
    // The ban covers the /64, not just one address.
    let r = from("2001:db8:1:2:ffff::9", "/").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-rempart-reason"], "banned");
    assert_eq!(from("2001:db8:1:3::1", "/").await.unwrap().status(), 200);
    assert_eq!(proxy.bans().await[0]["ip"], "2001:db8:1:2::/64");
}

// ---------------------------------------------------------------------------
// 12. Too many arguments are refused before they cost CPU
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_form_of_thousands_of_fields_is_refused() {
    let waf = "waf:\n  max_args: 500\n  rules:\n    - id: 1000001\n      targets: [ARGS]\n      operator: \"@contains evil\"\n      action: block\n";
    let (origin, proxy) = shop_behind_rempart(waf).await;
    let body: String = (0..20_000).map(|i| format!("f{i}=x&")).collect();
    let r = client()
        .post(proxy.url("/"))
        .header("content-type", FORM)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "over the inspection limit first");
    let body: String = (0..600).map(|i| format!("f{i}=x&")).collect();
    let r = client()
        .post(proxy.url("/"))
        .header("content-type", FORM)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-rempart-reason"], "waf_too_many_args");
    let query: String = (0..600).map(|i| format!("q{i}=x&")).collect();
    let r = client()
        .get(proxy.url(&format!("/?{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(origin.hits(), 0);
}

// ---------------------------------------------------------------------------
// 13, 17. The admin API
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_refuses_cross_site_requests_and_foreign_hosts() {
    let (_origin, proxy) = shop_behind_rempart("").await;
    let c = client();
    let own = format!("http://{}", proxy.admin);
    // A cross-site form can post text/plain without a preflight: refused.
    let r = c
        .post(proxy.admin_url("/bans"))
        .header("content-type", "text/plain")
        .body(r#"{"ip":"198.51.100.1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = c
        .post(proxy.admin_url("/reload"))
        .header("content-type", "application/json")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .delete(proxy.admin_url("/bans/198.51.100.1"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // DNS rebinding: a page whose name resolves to the admin address sends its own Host.
    for path in ["/stats", "/"] {
        let r = c
            .get(proxy.admin_url(path))
            .header("host", format!("evil.example:{}", proxy.admin.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 421, "{path}");
    }
    let r = c
        .get(proxy.admin_url("/stats"))
        .header("host", format!("localhost:{}", proxy.admin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "localhost on a loopback listener");
    // The dashboard's own requests pass.
    let r = c
        .post(proxy.admin_url("/bans"))
        .header("origin", own.as_str())
        .json(&serde_json::json!({"ip": "198.51.100.1", "duration": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A duration that would wrap around is refused with a reason.
    for duration in ["99999999999999d", "3651d"] {
        let r = c
            .post(proxy.admin_url("/bans"))
            .json(&serde_json::json!({"ip": "198.51.100.2", "duration": duration}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{duration}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(!body["error"].as_str().unwrap().is_empty());
    }
    // A network can be banned and lifted.
    let r = c
        .post(proxy.admin_url("/bans"))
        .json(&serde_json::json!({"ip": "2001:db8:5::/48", "duration": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .delete(proxy.admin_url("/bans/2001:db8:5::/48"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// ---------------------------------------------------------------------------
// 14. Proxy-reserved headers
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn proxy_reserved_headers_from_clients_never_reach_the_shop() {
    let (_origin, proxy) = shop_behind_rempart("").await;
    let reserved = [
        "forwarded",
        "x-forwarded-port",
        "x-forwarded-scheme",
        "x-original-url",
        "x-rewrite-url",
        "x-host",
        "x-original-host",
        "true-client-ip",
        "cf-connecting-ip",
        "x-client-ip",
    ];
    let mut req = client().get(proxy.url("/page/"));
    for h in reserved {
        req = req.header(h, "evil.example");
    }
    let r = req
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .unwrap();
    let seen: serde_json::Value = r.json().await.unwrap();
    for h in reserved {
        assert!(
            seen["headers"].get(h).is_none(),
            "{h} reached the shop: {seen}"
        );
    }
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-real-ip"], "127.0.0.1");
    assert_ne!(seen["headers"]["x-forwarded-host"], "evil.example");
}

// ---------------------------------------------------------------------------
// 15. Slow heads and connection floods
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn slow_heads_and_connection_floods_are_cut() {
    let (_origin, proxy) =
        shop_behind_rempart("limits:\n  header_timeout: 1s\n  max_connections_per_ip: 4\n").await;
    // A head trickled a line at a time is answered 408 and closed.
    let mut slow = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let trickle = async {
        let mut buf = vec![0u8; 1024];
        let mut got = Vec::new();
        for _ in 0..20 {
            if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(400), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(15), trickle)
        .await
        .expect("the slow head was never cut");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"),
        "{got:?}"
    );
    // Keep-alive idle time is not head time: a second request after a pause works.
    let answers = raw_requests(
        proxy.listen,
        &[b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()],
    )
    .await;
    assert_eq!(answers[0].0, "200");

    // Past the per-client cap, a connection gets a 429 and is closed.
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(tokio::net::TcpStream::connect(proxy.listen).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = raw_exchange(
        proxy.listen,
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.contains("too_many_connections"));
    drop(open);
    assert!(
        eventually(Duration::from_secs(5), || async {
            raw_exchange(
                proxy.listen,
                b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
                Duration::from_secs(2),
            )
            .await
            .starts_with("HTTP/1.1 200")
        })
        .await,
        "closed connections free their places"
    );
}

// ---------------------------------------------------------------------------
// 16, 19. User enumeration in every spelling; the block editor is left alone
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn user_enumeration_is_refused_in_every_spelling() {
    let origin = TestOrigin::start("shop").await;
    let proxy = woocommerce(origin.addr, &["waf"], "").await;
    let c = browser([127, 0, 0, 60]);
    let refused = [
        ("GET", "/?author=1", ""),
        ("POST", "/", "author=1"),
        ("GET", "/wp-json/wp/v2/users", ""),
        ("GET", "/wp-json/WP/V2/Users/", ""),
        ("GET", "/index.php/wp-json/wp/v2/users", ""),
        ("GET", "//wp-json//wp/v2/users/1", ""),
        ("GET", "/?rest_route=/wp/v2/users", ""),
        ("GET", "/?rest.route=/wp/v2/users", ""),
        ("POST", "/", "rest_route=/wp/v2/users"),
        ("GET", "/wp-sitemap-users-1.xml", ""),
        ("GET", "/?sitemap=users", ""),
    ];
    for (method, path, body) in refused {
        let r = c
            .request(method.parse().unwrap(), proxy.url(path))
            .header("content-type", FORM)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{method} {path} {body}");
    }
    assert_eq!(origin.hits(), 0);
    // WordPress refuses these to anonymous clients itself; the editor sends them.
    for path in [
        "/wp-json/wp/v2/users?who=authors&per_page=100&_fields=id,name",
        "/wp-json/wp/v2/users?capabilities=edit_posts&per_page=100",
        "/wp-json/wp/v2/users/me?context=edit",
        "/wp-json/wp/v2/users?context=edit",
    ] {
        let r = c.get(proxy.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

// ---------------------------------------------------------------------------
// 18. One Rempart per address
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_second_rempart_on_a_taken_address_refuses_to_start() {
    let (_origin, proxy) = shop_behind_rempart("").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, policy(proxy.listen, free_addr(), &[free_addr()], "")).unwrap();
    let out = Command::new(binary())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{} is already in use", proxy.listen)) && err.contains("--upgrade"),
        "{err}"
    );
    // The first one still serves.
    assert_eq!(
        client().get(proxy.url("/")).send().await.unwrap().status(),
        200
    );
}

// ---------------------------------------------------------------------------
// 20. The audit log keeps shop text readable
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn audit_records_keep_accented_text() {
    let origin = TestOrigin::start("shop").await;
    let (listen, admin) = (free_addr(), free_addr());
    // The transformations of the CRS's XSS rules: UTF-8 turned into %uXXXX,
    // then decoded to one byte per character.
    let waf = "waf:\n  mode: detect\n  rules:\n    - id: 1000001\n      targets: [ARGS]\n      transforms: [utf8toUnicode, urlDecodeUni, htmlEntityDecode]\n      operator: \"@rx <script>.*\"\n      action: block\n";
    let text = policy(listen, admin, &[origin.addr], waf)
        .replace("  threads: 2\n", "  threads: 2\n  audit_log: audit.log\n");
    let proxy = Rempart::start(&text, listen, admin).await;
    let r = client()
        .post(proxy.url("/wp-comments-post.php"))
        .header("content-type", FORM)
        .body("comment=%3Cscript%3Ealert(%22cr%C3%A8me%20br%C3%BBl%C3%A9e%20%C3%A0%20l%27%C3%A9t%C3%A9%22)")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let audit = proxy.dir.path().join("audit.log");
    assert!(
        eventually(Duration::from_secs(5), || async {
            std::fs::read_to_string(&audit).is_ok_and(|s| s.contains("1000001"))
        })
        .await
    );
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(log.contains("crème brûlée à l'été"), "{log}");
    assert!(!log.contains('\u{fffd}'), "{log}");
}

// ---------------------------------------------------------------------------
// 19. Theme and core files are the same for everyone: cached for staff too
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn theme_and_core_files_are_cached_for_logged_in_staff_too() {
    let (origin, proxy) = shop_behind_rempart(&preset_block("woocommerce.yaml", "cache")).await;
    let staff = "wordpress_logged_in_0f1e=admin%7C1716200000%7Cabc; wp-settings-1=editor%3Dhtml";
    let get = |path: &'static str, cookie: Option<&'static str>| {
        let mut r = client().get(proxy.url(path));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    for path in [
        "/wp-content/themes/storefront/style.css?ver=4.6.0",
        "/wp-includes/js/dist/block-editor.min.js?ver=6.7",
        "/wp-admin/load-scripts.php?c=1&load%5Bchunk_0%5D=jquery-core,utils&ver=6.7",
    ] {
        let first = get(path, Some(staff)).await.unwrap();
        assert_eq!(first.headers()["x-cache"], "MISS", "{path}");
        let again = get(path, Some(staff)).await.unwrap();
        assert_eq!(again.headers()["x-cache"], "HIT", "{path}: staff");
        let anon = get(path, None).await.unwrap();
        assert_eq!(anon.headers()["x-cache"], "HIT", "{path}: anonymous");
    }
    // Pages and PHP files stay personal.
    for path in [
        "/wp-admin/post.php?post=1&action=edit",
        "/wp-content/plugins/x/ajax.php",
        "/product/x/",
    ] {
        let r = get(path, Some(staff)).await.unwrap();
        assert_eq!(r.headers()["x-cache"], "BYPASS", "{path}");
    }
    assert_eq!(origin.hits(), 6);
}
