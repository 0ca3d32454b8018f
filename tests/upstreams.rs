#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! Several origin servers: load spread, health checks, failover and retries.

mod common;

use common::*;
use std::time::Duration;

async fn ready_json(proxy: &Rempart) -> (u16, serde_json::Value) {
    let r = client()
        .get(proxy.admin_url("/ready"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_uses_both_origins() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let (listen, admin) = (free_addr(), free_addr());
    let proxy = Rempart::start(&policy(listen, admin, &[a.addr, b.addr], ""), listen, admin).await;
    for _ in 0..10 {
        assert_eq!(
            client().get(proxy.url("/")).send().await.unwrap().status(),
            200
        );
    }
    assert!(
        a.hits() >= 3 && b.hits() >= 3,
        "a={} b={}",
        a.hits(),
        b.hits()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn least_connections_avoids_the_busy_origin() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let (listen, admin) = (free_addr(), free_addr());
    let text = policy(listen, admin, &[a.addr, b.addr], "")
        .replace("  servers:", "  balance: least_connections\n  servers:");
    let proxy = Rempart::start(&text, listen, admin).await;
    // Occupy one origin with slow requests, then send quick ones.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = proxy.url("/slow?ms=1500");
            tokio::spawn(async move {
                client()
                    .get(url)
                    .send()
                    .await
                    .map(|r| r.headers()["x-origin"].to_str().unwrap().to_string())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut quick = Vec::new();
    for _ in 0..6 {
        let r = client().get(proxy.url("/")).send().await.unwrap();
        quick.push(r.headers()["x-origin"].to_str().unwrap().to_string());
    }
    let busy: Vec<String> = futures_join(slow).await;
    // Both slow requests went somewhere; at least one origin is busy, and the quick
    // requests all went to an origin with fewer requests in flight.
    if busy[0] == busy[1] {
        assert!(
            quick.iter().all(|o| *o != busy[0]),
            "quick={quick:?} busy={busy:?}"
        );
    } else {
        // One slow request on each: quick requests still succeed on both.
        assert_eq!(quick.len(), 6);
    }
}

async fn futures_join(
    handles: Vec<tokio::task::JoinHandle<reqwest::Result<String>>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn when_one_origin_dies_traffic_fails_over_and_ready_reports_it() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let (listen, admin) = (free_addr(), free_addr());
    let proxy = Rempart::start(&policy(listen, admin, &[a.addr, b.addr], ""), listen, admin).await;
    let (status, body) = ready_json(&proxy).await;
    assert_eq!(status, 200, "{body}");

    let dead = a.addr;
    a.stop();
    // Every request succeeds, including those sent before the health check
    // notices (connect failures are retried on the other origin).
    for _ in 0..20 {
        let r = client().get(proxy.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-origin"], "b");
    }
    let marked = eventually(Duration::from_secs(5), || async {
        let (_, body) = ready_json(&proxy).await;
        body["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["upstream"] == dead.to_string() && u["healthy"] == false)
    })
    .await;
    assert!(marked, "the dead origin was never marked unhealthy");
    let (status, _) = ready_json(&proxy).await;
    assert_eq!(status, 200, "one healthy origin is enough to be ready");

    // The origin comes back on the same port: it is used again.
    let back = TestOrigin::start_on("a2", dead).await;
    let used = eventually(Duration::from_secs(5), || async {
        client().get(proxy.url("/")).send().await.unwrap();
        back.hits() > 0
    })
    .await;
    assert!(used, "the recovered origin was not used again");
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_every_origin_down_ready_is_503_and_clients_get_502() {
    let a = TestOrigin::start("a").await;
    let (listen, admin) = (free_addr(), free_addr());
    let proxy = Rempart::start(&policy(listen, admin, &[a.addr], ""), listen, admin).await;
    a.stop();
    let unready = eventually(Duration::from_secs(5), || async {
        ready_json(&proxy).await.0 == 503
    })
    .await;
    assert!(unready);
    let r = client().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(&format!(
            "rempart_upstream_healthy{{upstream=\"{}\"}} 0",
            a_addr(&proxy)
        )),
        "{metrics}"
    );
}

fn a_addr(proxy: &Rempart) -> String {
    let text = std::fs::read_to_string(&proxy.policy).unwrap();
    let start = text.find("servers: [\"").unwrap() + 11;
    text[start..].split('"').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn non_idempotent_requests_are_not_retried_on_another_origin() {
    // Without health checks, the dead origin stays in rotation until marked.
    let b = TestOrigin::start("b").await;
    let dead = free_addr();
    let (listen, admin) = (free_addr(), free_addr());
    let extra = format!("upstream:\n  servers: [\"{dead}\", \"{}\"]\n  retries: 1\n  passive:\n    max_failures: 100\n", b.addr);
    let proxy = Rempart::start(&policy(listen, admin, &[], &extra), listen, admin).await;
    let mut posts = Vec::new();
    let mut gets = Vec::new();
    for _ in 0..6 {
        posts.push(
            client()
                .post(proxy.url("/checkout"))
                .body("x=1")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    for _ in 0..6 {
        gets.push(
            client()
                .get(proxy.url("/"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(
        gets.iter().all(|s| *s == 200),
        "GETs are retried elsewhere: {gets:?}"
    );
    assert!(
        posts.contains(&502) && posts.contains(&200),
        "POSTs are not retried: {posts:?}"
    );
}
