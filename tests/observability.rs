#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! What the operator sees: metrics, /stats, alerts, bans, anonymised logs,
//! and the deploy files.

mod common;

use common::*;
use std::time::Duration;

async fn stats(proxy: &Rempart) -> serde_json::Value {
    client()
        .get(proxy.admin_url("/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_present_and_grow_with_traffic() {
    let origin = TestOrigin::start("shop").await;
    let (listen, admin) = (free_addr(), free_addr());
    let proxy = Rempart::start(
        &policy(
            listen,
            admin,
            &[origin.addr],
            &preset_block("woocommerce.yaml", "cache"),
        ),
        listen,
        admin,
    )
    .await;
    let count = |text: &str, needle: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = proxy.metrics().await;
    for path in [
        "/product/a/",
        "/product/a/",
        "/checkout/",
        "/wp-content/style.css",
    ] {
        client().get(proxy.url(path)).send().await.unwrap();
    }
    let after = proxy.metrics().await;
    for name in [
        "rempart_proxy_requests_total",
        "rempart_proxy_request_duration_seconds_count",
        "rempart_upstream_response_duration_seconds_count",
        "rempart_cache_lookups_total",
    ] {
        assert!(
            count(&after, name) > count(&before, name),
            "{name} did not grow:\n{after}"
        );
    }
    for labels in [
        "rempart_proxy_requests_total{decision=\"origin\",route_class=\"page\",status_class=\"2xx\"} 1",
        "rempart_proxy_requests_total{decision=\"cache\",route_class=\"page\",status_class=\"2xx\"} 1",
        "rempart_proxy_requests_total{decision=\"origin\",route_class=\"checkout\",status_class=\"2xx\"} 1",
        "rempart_proxy_requests_total{decision=\"origin\",route_class=\"static\",status_class=\"2xx\"} 1",
        "rempart_upstream_healthy{upstream=",
        "rempart_config_reloads_total{result=\"failed\"} 0",
        "rempart_cache_entries",
    ] {
        assert!(after.contains(labels), "missing {labels}:\n{after}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_percentiles_follow_the_latency_injected_at_the_origin() {
    let (_origin, proxy) = shop_behind_rempart("stats:\n  slot: 1s\n").await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let url = proxy.url(&format!("/product/{i}/?ms=150"));
            tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // The client may have its answer a moment before the proxy logs it.
    let counted = eventually(Duration::from_secs(5), || async {
        stats(&proxy).await["windows"]["1m"]["requests"] == 20
    })
    .await;
    let doc = stats(&proxy).await;
    let w = &doc["windows"]["1m"];
    assert!(counted, "{doc}");
    assert_eq!(w["requests"], 20, "{doc}");
    let p50 = w["latency_ms"]["p50"].as_f64().unwrap();
    let p99 = w["latency_ms"]["p99"].as_f64().unwrap();
    let up50 = w["upstream_latency_ms"]["p50"].as_f64().unwrap();
    // Every request waited 150 ms at the origin: no percentile can be lower.
    assert!(
        p50 >= 148.0 && up50 >= 148.0,
        "p50 {p50} ms, upstream p50 {up50} ms"
    );
    assert!(p99 >= p50);
    assert!(p50 < 5_000.0, "p50 {p50} ms is not the injected latency");
    assert_eq!(w["availability"], 1.0);
    assert_eq!(w["status"]["2xx"], 20);
    assert!(doc["series"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["rps"].as_f64().unwrap() > 0.0));
    assert_eq!(doc["upstreams"][0]["healthy"], true);
}

/// Alerts on a fast clock: 200 ms slots, short warm-up.
const FAST_ALERTS: &str = "stats:\n  slot: 200ms\nalerts:\n  warmup_slots: 5\n  min_requests: 2\n  latency_floor: 50ms\n  cooldown: 1h\n  spike_min_rpm: 100000\n";

async fn drive(proxy: &Rempart, millis: impl Fn(usize) -> u64, slots: usize) {
    for slot in 0..slots {
        let ms = millis(slot);
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let url = proxy.url(&format!("/product/p{i}/?ms={ms}"));
                tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200u64.saturating_sub(ms))).await;
    }
}

async fn alert_kinds(proxy: &Rempart) -> Vec<String> {
    let v: serde_json::Value = client()
        .get(proxy.admin_url("/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowing_origin_raises_a_latency_alert_and_steady_traffic_does_not() {
    let origin = TestOrigin::start("shop").await;
    let (listen, admin) = (free_addr(), free_addr());
    let steady = Rempart::start(
        &policy(listen, admin, &[origin.addr], FAST_ALERTS),
        listen,
        admin,
    )
    .await;
    drive(&steady, |_| 5, 25).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        alert_kinds(&steady).await.is_empty(),
        "steady traffic raised {:?}",
        alert_kinds(&steady).await
    );
    drop(steady);

    let (listen, admin) = (free_addr(), free_addr());
    let slowing = Rempart::start(
        &policy(listen, admin, &[origin.addr], FAST_ALERTS),
        listen,
        admin,
    )
    .await;
    drive(&slowing, |_| 5, 12).await;
    // The origin slows down a little more every slot.
    drive(&slowing, |slot| 40 * (slot as u64 + 1), 10).await;
    let raised = eventually(Duration::from_secs(3), || async {
        alert_kinds(&slowing)
            .await
            .contains(&"latency_rising".to_string())
    })
    .await;
    assert!(raised, "no latency alert; log:\n{}", slowing.log());
    assert!(
        slowing.log().contains("rempart::alert"),
        "alert not in the log"
    );
    let doc = stats(&slowing).await;
    assert_eq!(doc["alerts"][0]["kind"], "latency_rising");
    assert_eq!(doc["alerts"][0]["route_class"], "page");
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_reach_a_webhook_and_a_dead_webhook_does_not_hold_the_proxy() {
    let origin = TestOrigin::start("shop").await;
    let receiver = TestOrigin::start("hook").await;
    // A webhook that accepts connections and never answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole = black_hole.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = black_hole.accept().await {
            held.push(s);
        }
    });
    for (hook, expect_delivery) in [
        (format!("http://{}/hook", receiver.addr), true),
        (format!("http://{hole}/hook"), false),
    ] {
        let (listen, admin) = (free_addr(), free_addr());
        let extra = format!("{FAST_ALERTS}  webhook: \"{hook}\"\n  max_per_hour: 100\n");
        let proxy = Rempart::start(
            &policy(listen, admin, &[origin.addr], &extra),
            listen,
            admin,
        )
        .await;
        drive(&proxy, |_| 5, 12).await;
        // Errors everywhere: an alert per slot would be raised without the cooldown.
        for _ in 0..8 {
            for i in 0..4 {
                let r = client()
                    .get(proxy.url(&format!("/status/503/{i}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    r.status(),
                    503,
                    "the proxy keeps answering while alerts are sent"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let raised = eventually(Duration::from_secs(3), || async {
            alert_kinds(&proxy)
                .await
                .contains(&"errors_rising".to_string())
        })
        .await;
        assert!(raised, "no error alert; log:\n{}", proxy.log());
        if expect_delivery {
            let delivered = eventually(Duration::from_secs(5), || async {
                receiver.hits_for("/hook") >= 1
            })
            .await;
            assert!(delivered, "the webhook got nothing");
        }
        // The proxy still serves promptly-enough requests after the alert (the dead
        // webhook holds one background task, never a request).
        assert_eq!(
            client()
                .get(proxy.url("/product/after/"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bans_can_be_listed_added_and_lifted_through_the_admin_api() {
    let origin = TestOrigin::start("shop").await;
    let (listen, admin) = (free_addr(), free_addr());
    let proxy = Rempart::start_with(
        &policy(
            listen,
            admin,
            &[origin.addr],
            "bans:\n  allowlist: [\"127.0.0.9\"]\n",
        ),
        listen,
        admin,
        &[],
        &[("REMPART_ADMIN_TOKEN", "s3cret")],
    )
    .await;
    let c = client();
    let bans = || c.post(proxy.admin_url("/bans"));
    assert_eq!(
        bans()
            .json(&serde_json::json!({"ip": "127.0.0.6"}))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = bans()
        .bearer_auth("s3cret")
        .json(&serde_json::json!({"ip": "127.0.0.6", "duration": "10m", "reason": "scanner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let from6 = client_from([127, 0, 0, 6]);
    let r = from6.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-rempart-reason"], "banned");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        client_from([127, 0, 0, 5])
            .get(proxy.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for bad in [
        serde_json::json!({"ip": "not-an-ip"}),
        serde_json::json!({"ip": "127.0.0.7", "duration": "forever"}),
        serde_json::json!({"ip": "127.0.0.9"}),
        serde_json::json!({"address": "127.0.0.7"}),
    ] {
        let r = bans()
            .bearer_auth("s3cret")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(!body["error"].as_str().unwrap().is_empty());
    }
    let listed: serde_json::Value = c
        .get(proxy.admin_url("/bans"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["bans"][0]["ip"], "127.0.0.6");
    assert_eq!(listed["bans"][0]["reason"], "scanner");
    assert_eq!(
        c.delete(proxy.admin_url("/bans/127.0.0.6"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.delete(proxy.admin_url("/bans/127.0.0.6"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        from6.get(proxy.url("/")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.delete(proxy.admin_url("/bans/nope"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    // The dashboard never carries the token.
    let page = c
        .get(proxy.admin_url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<html") && !page.contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bans_survive_a_restart() {
    let origin = TestOrigin::start("shop").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("bans.json");
    let extra = format!("bans:\n  state_file: \"{}\"\n", state.display());
    let (listen, admin) = (free_addr(), free_addr());
    let proxy = Rempart::start(
        &policy(listen, admin, &[origin.addr], &extra),
        listen,
        admin,
    )
    .await;
    let r = client()
        .post(proxy.admin_url("/bans"))
        .json(&serde_json::json!({"ip": "127.0.0.6", "duration": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The state file is written in the background, within a second.
    assert!(
        eventually(Duration::from_secs(5), || async {
            std::fs::read_to_string(&state).is_ok_and(|s| s.contains("127.0.0.6"))
        })
        .await
    );
    drop(proxy);
    let (listen, admin) = (free_addr(), free_addr());
    let again = Rempart::start(
        &policy(listen, admin, &[origin.addr], &extra),
        listen,
        admin,
    )
    .await;
    assert_eq!(
        client_from([127, 0, 0, 6])
            .get(again.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_ips_are_anonymised_in_every_log_when_asked() {
    let origin = TestOrigin::start("shop").await;
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let text = policy(
        listen,
        admin,
        &[origin.addr],
        "ip_filter:\n  deny: [\"127.0.0.66\"]\n",
    )
    .replace(
        "  threads: 2\n",
        &format!(
            "  threads: 2\n  anonymize_ips: true\n  log_format: json\n  audit_log: \"{}\"\n",
            audit.display()
        ),
    );
    let proxy = Rempart::start(&text, listen, admin).await;
    client_from([127, 0, 0, 55])
        .get(proxy.url("/product/x/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        client_from([127, 0, 0, 66])
            .get(proxy.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            proxy.log().matches("rempart::access").count() >= 2
        })
        .await
    );
    let log = proxy.log();
    assert!(
        !log.contains("127.0.0.55") && !log.contains("127.0.0.66"),
        "full address in the log:\n{log}"
    );
    assert!(log.contains("\"client_ip\":\"127.0.0.0\""), "{log}");
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let line: serde_json::Value = serde_json::from_str(audit_text.lines().next().unwrap()).unwrap();
    assert_eq!(line["event"], "refused");
    assert_eq!(line["reason"], "ip_denied");
    assert_eq!(line["client_ip"], "127.0.0.0");
    let doc = stats(&proxy).await;
    assert_eq!(
        doc["windows"]["1m"]["top_offending_ips"][0]["ip"],
        "127.0.0.0"
    );
}

#[test]
fn every_deploy_file_parses_and_the_unit_verifies() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut checked = 0;
    let mut stack = vec![deploy.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            match path.extension().and_then(|e| e.to_str()) {
                Some("yaml" | "yml") => {
                    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    assert!(!docs.is_empty(), "{} is empty", path.display());
                    checked += 1;
                }
                Some("json") => {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    checked += 1;
                }
                _ => {}
            }
        }
    }
    assert!(
        checked >= 4,
        "expected compose, kubernetes, grafana files; found {checked}"
    );
    let unit = deploy.join("rempart.service");
    assert!(unit.is_file());
    match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
    {
        Err(_) => {
            eprintln!("systemd-analyze is not installed here: unit not verified (parsed only)")
        }
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            // The binary and user exist only on a deployed host; anything else is a defect.
            let problems: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .filter(|l| {
                    !l.contains("/usr/local/bin/rempart")
                        && !l.contains("User=")
                        && !l.contains("Group=")
                        && !l.contains("is not executable")
                        && !l.contains("Failed to resolve user")
                        && !l.contains("Failed to resolve group")
                })
                .collect();
            assert!(problems.is_empty(), "systemd-analyze verify: {text}");
        }
    }
}
