#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! Bots: the proof-of-work challenge (solved by a script and by headless
//! Chromium), signed passes that cannot be forged or moved, and crawlers
//! verified by reverse and forward DNS (a fixed resolver stands in for DNS).

mod common;

use common::*;

const BOTS: &str = "\
bots:
  score_threshold: 5
  crawlers:
    static_records:
      \"127.0.0.66\": \"crawl-127-0-0-66.googlebot.com\"
  challenge:
    mode: score
    difficulty: 12
    pass_ttl: 1h
    exempt_paths: [\"~[?&]wc-api=\", \"/wc-api/\"]
bans:
  allowlist: [\"127.0.0.90\"]
";

async fn setup(extra: &str) -> (TestOrigin, Rempart) {
    shop_behind_rempart(extra).await
}

/// A scripted client: no user agent, no Accept-Language (score 5).
fn script(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from(ip))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn seed_of(page: &str) -> String {
    let start = page.find("name=\"seed\" value=\"").unwrap() + 19;
    page[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// Solves the challenge like the page's JavaScript; returns the pass cookie.
async fn solve(c: &reqwest::Client, proxy: &Rempart, path: &str) -> String {
    let r = c.get(proxy.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-rempart-reason"], "challenge");
    let page = r.text().await.unwrap();
    assert!(
        page.contains("<noscript>"),
        "clients without JavaScript are told what to do"
    );
    let seed = seed_of(&page);
    let nonce = rempart::shield::bots::challenge::solve(&seed, 12);
    let r = c
        .post(proxy.url("/.rempart/challenge"))
        .form(&[
            ("seed", seed.as_str()),
            ("nonce", nonce.as_str()),
            ("return_to", path),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], path);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    cookie.split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scripted_client_that_does_the_work_gets_through_and_the_pass_cannot_move() {
    let (origin, proxy) = setup(BOTS).await;
    let c = script([127, 0, 0, 2]);
    let pass = solve(&c, &proxy, "/product/x/").await;
    let r = c
        .get(proxy.url("/product/x/"))
        .header("cookie", &pass)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(origin.hits_for("/product/x/"), 1);
    // Same network (/24), same browser: the pass holds.
    let neighbour = script([127, 0, 0, 3]);
    assert_eq!(
        neighbour
            .get(proxy.url("/"))
            .header("cookie", &pass)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Another network: refused. A forged pass: refused.
    let elsewhere = script([127, 0, 1, 5]);
    let r = elsewhere
        .get(proxy.url("/"))
        .header("cookie", &pass)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-rempart-reason"], "challenge");
    let (name_value, sig) = pass.rsplit_once('.').unwrap();
    let forged = format!("{}9.{sig}", name_value);
    let r = c
        .get(proxy.url("/"))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-rempart-reason"], "challenge");
    // A wrong answer is refused.
    let r = c
        .post(proxy.url("/.rempart/challenge"))
        .form(&[("seed", "1:x:y.z"), ("nonce", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-rempart-reason"], "challenge_failed");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("rempart_bot_challenges_total{outcome=\"passed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn browsers_webhooks_allowlisted_addresses_and_real_crawlers_are_never_challenged() {
    let (_origin, proxy) = setup(BOTS).await;
    let browser = client_from([127, 0, 0, 10]);
    let r = browser
        .get(proxy.url("/"))
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        )
        .header("accept", "text/html")
        .header("accept-language", "fr-FR")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c = script([127, 0, 0, 11]);
    assert_eq!(
        c.post(proxy.url("/?wc-api=WC_Gateway_Paypal"))
            .body("ipn")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        script([127, 0, 0, 90])
            .get(proxy.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    let real = script([127, 0, 0, 66])
        .get(proxy.url("/"))
        .header("user-agent", googlebot)
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), 200, "a verified Googlebot is let through");
    let fake = script([127, 0, 0, 67])
        .get(proxy.url("/"))
        .header("user-agent", googlebot)
        .send()
        .await
        .unwrap();
    assert_eq!(fake.status(), 403);
    assert_eq!(fake.headers()["x-rempart-reason"], "fake_crawler");
    // Treated as a bad bot: banned.
    let again = script([127, 0, 0, 67])
        .get(proxy.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["x-rempart-reason"], "banned");
}

#[tokio::test(flavor = "multi_thread")]
async fn step_up_challenges_only_risky_actions() {
    let extra = BOTS.replace(
        "    mode: score\n",
        "    mode: step_up\n    risky_paths: [\"/wp-login.php\", \"/checkout\"]\n",
    );
    let (_origin, proxy) = setup(&extra).await;
    let c = script([127, 0, 0, 12]);
    assert_eq!(
        c.get(proxy.url("/product/x/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c
        .post(proxy.url("/wp-login.php"))
        .body("log=a&pwd=b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-rempart-reason"], "challenge");
}

#[tokio::test(flavor = "multi_thread")]
async fn headless_chromium_solves_the_challenge_end_to_end() {
    // Headless Chromium says so in its user agent: a threshold of 3 challenges it.
    let (_origin, proxy) = setup(&BOTS.replace("score_threshold: 5", "score_threshold: 3")).await;
    let url = proxy.url("/product/solved/");
    let run = browser_script(
        "challenge.mjs",
        &["--url", &url, "--expect", "\"origin\":\"shop\""],
    )
    .await;
    assert!(run.ok, "{}\n{}\n{}", run.stdout, run.stderr, proxy.log());
    assert!(run.stdout.contains("\"ok\":true"));
}
