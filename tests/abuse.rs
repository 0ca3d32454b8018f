#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! Rate limits: per-client buckets, 429 with Retry-After, origin-only limits
//! that leave cached browsing alone, and limits that ban.

mod common;

use common::*;
use std::process::Command;

const LOGIN_LIMIT: &str = "\
rate_limits:
  limits:
    - name: login
      paths: [\"/wp-login.php\"]
      methods: [POST]
      key: [ip]
      rate: 3/m
      burst: 3
";

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_then_429_with_retry_after_per_client() {
    let (origin, proxy) = shop_behind_rempart(LOGIN_LIMIT).await;
    let a = client_from([127, 0, 0, 2]);
    for _ in 0..3 {
        assert_eq!(
            a.post(proxy.url("/wp-login.php"))
                .body("log=x&pwd=y")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let r = a
        .post(proxy.url("/wp-login.php"))
        .body("log=x&pwd=y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.headers()["x-rempart-limit"], "login");
    assert!(r.text().await.unwrap().contains("Too many requests"));
    // JSON for API and XHR clients.
    let r = a
        .post(proxy.url("/wp-login.php"))
        .header("x-requested-with", "XMLHttpRequest")
        .body("log=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited");
    // Another client, and other pages, are not affected.
    let b = client_from([127, 0, 0, 3]);
    assert_eq!(
        b.post(proxy.url("/wp-login.php"))
            .body("log=x")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        a.get(proxy.url("/wp-login.php"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(origin.hits_for("/wp-login.php"), 5);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("rempart_ratelimit_limited_total{limit=\"login\"} 2"),
        "{metrics}"
    );
    assert!(
        eventually(std::time::Duration::from_secs(3), || async {
            proxy.log().contains("rule=\"login\"") || proxy.log().contains("rule=login")
        })
        .await,
        "{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_limit_never_throttles_cached_browsing() {
    let extra = format!(
        "{}rate_limits:\n  limits:\n    - name: origin_protection\n      key: [ip]\n      rate: 2/m\n      burst: 2\n      scope: origin\n",
        preset_block("woocommerce.yaml", "cache")
    );
    let (origin, proxy) = shop_behind_rempart(&extra).await;
    let c = client_from([127, 0, 0, 4]);
    for i in 0..30 {
        let r = c.get(proxy.url("/product/popular/")).send().await.unwrap();
        assert_eq!(r.status(), 200, "cached page throttled at request {i}");
    }
    assert_eq!(origin.hits_for("/product/popular/"), 1);
    // Pages that reach the origin count: the first one above used one token.
    assert_eq!(
        c.get(proxy.url("/cart/")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(proxy.url("/cart/")).send().await.unwrap().status(),
        429
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_with_action_ban_bans_the_client() {
    let extra = LOGIN_LIMIT.replace("      burst: 3\n", "      burst: 3\n      action: ban\n")
        + "bans:\n  allowlist: [\"127.0.0.9\"]\n";
    let (_origin, proxy) = shop_behind_rempart(&extra).await;
    for ip in [[127, 0, 0, 5], [127, 0, 0, 9]] {
        let c = client_from(ip);
        for _ in 0..3 {
            c.post(proxy.url("/wp-login.php"))
                .body("log=a")
                .send()
                .await
                .unwrap();
        }
        assert_eq!(
            c.post(proxy.url("/wp-login.php"))
                .body("log=a")
                .send()
                .await
                .unwrap()
                .status(),
            429
        );
    }
    // The offender is banned everywhere; the allowlisted address never is.
    let r = client_from([127, 0, 0, 5])
        .get(proxy.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-rempart-reason"], "banned");
    assert_eq!(
        client_from([127, 0, 0, 9])
            .get(proxy.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let bans: serde_json::Value = client()
        .get(proxy.admin_url("/bans"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bans["bans"][0]["reason"], "rate_limit");
    assert!(proxy
        .metrics()
        .await
        .contains("rempart_bans_total{reason=\"rate_limit\"} 1"));
}

#[test]
fn check_refuses_invalid_rates_and_keys_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.yaml");
    std::fs::write(
        &path,
        "upstream:\n  servers: [\"127.0.0.1:1\"]\nrate_limits:\n  limits:\n    - name: a\n      key: [ip, colour]\n      rate: 10/fortnight\n    - name: b\n      key: [\"cookie:\"]\n      rate: 0/s\n      burst: 0\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    let name = path.display();
    for expected in [
        format!("{name}:6:17: unknown key `colour`"),
        format!("{name}:7:13: unknown rate unit `fortnight`"),
        format!("{name}:9:13: unknown key `cookie:`"),
        format!("{name}:10:13: `0` in `0/s` must be a whole number above zero"),
        format!("{name}:11:14: `burst` must be at least 1"),
    ] {
        assert!(text.contains(&expected), "missing `{expected}` in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scanners_are_refused_and_banned_while_browsers_pass() {
    let extra = "bots:\n  allow_user_agents: [\"nessus-internal\"]\n";
    let (origin, proxy) = shop_behind_rempart(extra).await;
    let scanner = client_from([127, 0, 0, 20]);
    let r = scanner
        .get(proxy.url("/wp-config.php.bak"))
        .header("user-agent", "sqlmap/1.7.2#stable")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-rempart-reason"], "bad_bot");
    // Banned: even with a browser's user agent now.
    let r = scanner
        .get(proxy.url("/"))
        .header("user-agent", "Mozilla/5.0 Firefox/133.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-rempart-reason"], "banned");
    let browser = client_from([127, 0, 0, 21]);
    let r = browser
        .get(proxy.url("/"))
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let audit = client_from([127, 0, 0, 22]);
    let r = audit
        .get(proxy.url("/"))
        .header("user-agent", "Nessus-Internal scan")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the allow list wins");
    assert_eq!(origin.hits(), 2);
    assert!(proxy
        .metrics()
        .await
        .contains("rempart_bans_total{reason=\"scanner\"} 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_flood_gets_the_client_banned() {
    let extra = "bots:\n  not_found_flood:\n    rate: 5/m\n    burst: 5\n";
    let (_origin, proxy) = shop_behind_rempart(extra).await;
    let prober = client_from([127, 0, 0, 30]);
    for i in 0..6 {
        let r = prober
            .get(proxy.url(&format!("/status/404/{i}.sql")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = prober.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-rempart-reason"], "banned");
    // A shopper who hits a few dead links is fine.
    let shopper = client_from([127, 0, 0, 31]);
    for i in 0..3 {
        shopper
            .get(proxy.url(&format!("/status/404/{i}")))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        shopper.get(proxy.url("/")).send().await.unwrap().status(),
        200
    );
}

const LOGINS: &str = "\
brute_force:
  logins:
    - name: wp_login
      paths: [\"/wp-login.php\"]
      username_field: log
      failure_status: [200]
      max_per_ip: 3
      max_per_user: 5
      window: 10m
    - name: xmlrpc
      paths: [\"/xmlrpc.php\"]
      xmlrpc: true
      max_per_ip: 10
      window: 10m
";

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_lead_to_a_ban_and_successful_ones_do_not_count() {
    let (_origin, proxy) = shop_behind_rempart(LOGINS).await;
    let owner = client_from([127, 0, 0, 40]);
    for _ in 0..6 {
        let r = owner
            .post(proxy.url("/wp-login.php"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("log=owner&pwd=right")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
    }
    for _ in 0..2 {
        assert_eq!(
            owner
                .post(proxy.url("/wp-login.php"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("log=owner&pwd=typo")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        owner.get(proxy.url("/")).send().await.unwrap().status(),
        200,
        "the shop owner is not banned"
    );

    let stuffer = client_from([127, 0, 0, 41]);
    for i in 0..4 {
        let r = stuffer
            .post(proxy.url("/wp-login.php"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("log=admin&pwd=guess{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = stuffer.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-rempart-reason"], "banned");
    let bans: serde_json::Value = client()
        .get(proxy.admin_url("/bans"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bans["bans"][0]["reason"], "brute_force");
    assert!(proxy
        .metrics()
        .await
        .contains("rempart_bruteforce_failures_total{login=\"wp_login\"} 6"));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_username_tried_from_many_addresses_gets_them_banned() {
    let (_origin, proxy) = shop_behind_rempart(LOGINS).await;
    // Two guesses each from four addresses: under the per-address limit, over the per-user one.
    for ip in 50..54u8 {
        let c = client_from([127, 0, 0, ip]);
        for _ in 0..2 {
            c.post(proxy.url("/wp-login.php"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("log=Admin&pwd=x")
                .send()
                .await
                .unwrap();
        }
    }
    let banned = client_from([127, 0, 0, 53])
        .get(proxy.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        banned.status(),
        403,
        "the address that pushed `admin` past its limit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_xmlrpc_multicall_counts_every_password_guess() {
    let (_origin, proxy) = shop_behind_rempart(LOGINS).await;
    let call = "<value><struct><member><name>methodName</name><value><string>wp.getUsersBlogs</string></value></member><member><name>params</name><value><array><data><value><string>admin</string></value><value><string>pass</string></value></data></array></value></member></struct></value>";
    let body = format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>system.multicall</methodName><params><param><value><array><data>{}</data></array></value></param></params></methodCall>",
        call.repeat(50)
    );
    let c = client_from([127, 0, 0, 60]);
    let r = c
        .post(proxy.url("/xmlrpc.php"))
        .header("content-type", "text/xml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the request itself went through");
    let r = c.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 403, "50 guesses in one request are 50 attempts");
}

const CARD_TESTING: &str = "\
card_testing:
  checkouts:
    - name: checkout
      paths: [\"/wp-json/wc/store/v1/checkout\", \"~[?&]wc-ajax=checkout\"]
      failure_status: [402]
      failure_body: \"declined\"
      session_cookie: \"wp_woocommerce_session_*\"
      max_per_ip: 3
      max_per_user: 4
      window: 1h
";

#[tokio::test(flavor = "multi_thread")]
async fn declined_payments_past_the_limit_ban_the_card_tester() {
    let (_origin, proxy) = shop_behind_rempart(CARD_TESTING).await;
    // A buyer whose payments go through is never counted.
    let buyer = client_from([127, 0, 0, 70]);
    for _ in 0..6 {
        let r = buyer
            .post(proxy.url("/?wc-ajax=checkout"))
            .body("card=4242&outcome=ok")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        buyer.get(proxy.url("/")).send().await.unwrap().status(),
        200
    );
    // A tester: the origin answers 200 with "declined" in the body, as
    // WooCommerce's AJAX checkout does (a 402 from the Store API is judged by
    // status; see the unit tests).
    let tester = client_from([127, 0, 0, 71]);
    for i in 0..4 {
        tester
            .post(proxy.url("/?wc-ajax=checkout"))
            .body(format!("card=400000000000000{i}&outcome=declined"))
            .send()
            .await
            .unwrap();
    }
    let r = tester.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let bans: serde_json::Value = client()
        .get(proxy.admin_url("/bans"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bans["bans"][0]["reason"], "card_testing");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_cart_session_declined_from_many_addresses_is_caught() {
    let (_origin, proxy) = shop_behind_rempart(CARD_TESTING).await;
    for ip in 80..85u8 {
        client_from([127, 0, 0, ip])
            .post(proxy.url("/?wc-ajax=checkout"))
            .header("cookie", "wp_woocommerce_session_ab12=SESSION-1")
            .body("card=x&outcome=declined")
            .send()
            .await
            .unwrap();
    }
    // The fifth declined attempt on the same session crossed max_per_user.
    assert_eq!(
        client_from([127, 0, 0, 84])
            .get(proxy.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        client_from([127, 0, 0, 80])
            .get(proxy.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
