#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! The dashboard in headless Chromium (Debian's `chromium`, driven by
//! playwright-core): it loads with live data, its charts draw, unban and purge
//! work, there are no console errors, and a screenshot is saved to
//! `target/dashboard.png`. `scripts/setup.sh` installs Chromium and the
//! driver; without them this test fails and says what is missing.

mod common;

use common::*;
use std::path::Path;

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_live_data_and_its_actions_work_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let origin = TestOrigin::start("shop").await;
    let (listen, admin) = (free_addr(), free_addr());
    let text = policy(
        listen,
        admin,
        &[origin.addr],
        &format!(
            "{}stats:\n  slot: 1s\n",
            preset_block("woocommerce.yaml", "cache")
        ),
    );
    let proxy = Rempart::start_with(
        &text,
        listen,
        admin,
        &[],
        &[("REMPART_ADMIN_TOKEN", "dash-t0ken")],
    )
    .await;
    // Traffic to chart: pages, hits, a 404, a personal page.
    for i in 0..30 {
        client()
            .get(proxy.url(&format!("/product/{}/", i % 5)))
            .send()
            .await
            .unwrap();
    }
    client().get(proxy.url("/status/404")).send().await.unwrap();
    client().get(proxy.url("/cart/")).send().await.unwrap();
    let r = client()
        .post(proxy.admin_url("/bans"))
        .bearer_auth("dash-t0ken")
        .json(&serde_json::json!({"ip": "198.51.100.7", "duration": "1h", "reason": "scanner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let screenshot = root.join("target/dashboard.png");
    let url = format!("http://{}/", proxy.admin);
    let screenshot = screenshot.display().to_string();
    let run = browser_script(
        "dashboard.mjs",
        &[
            "--url",
            &url,
            "--token",
            "dash-t0ken",
            "--expect-ban",
            "198.51.100.7",
            "--screenshot",
            &screenshot,
        ],
    )
    .await;
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert!(
        run.ok,
        "dashboard test failed:\n{stdout}\n{stderr}\nrempart log:\n{}",
        proxy.log()
    );
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    assert!(root.join("target/dashboard.png").is_file());
    // The unban and the purge really happened on the server.
    let bans: serde_json::Value = client()
        .get(proxy.admin_url("/bans"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(bans["bans"].as_array().unwrap().is_empty(), "{bans}");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("rempart_cache_entries 0"),
        "the purge did not empty the cache"
    );
}
