#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! The proxy forwards requests faithfully and answers bad ones cleanly.

mod common;

use common::*;
use std::time::Duration;

async fn setup(extra: &str) -> (TestOrigin, Rempart) {
    let origin = TestOrigin::start("a").await;
    let (listen, admin) = (free_addr(), free_addr());
    let proxy = Rempart::start(&policy(listen, admin, &[origin.addr], extra), listen, admin).await;
    (origin, proxy)
}

async fn echo(resp: reqwest::Response) -> serde_json::Value {
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not an echo: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn get_is_forwarded_with_forwarding_headers_and_a_request_id() {
    let (_origin, proxy) = setup("").await;
    let resp = client()
        .get(proxy.url("/product/beanie/?color=blue"))
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must-not-pass")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!request_id.is_empty());
    let seen = echo(resp).await;
    let h = &seen["headers"];
    assert_eq!(seen["path"], "/product/beanie/?color=blue");
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], proxy.listen.to_string());
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-request-id"], request_id.as_str());
    assert!(h.get("x-hop").is_none(), "hop-by-hop header leaked: {h}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_request_id_is_propagated_and_returned() {
    let (_origin, proxy) = setup("").await;
    let resp = client()
        .get(proxy.url("/"))
        .header("x-request-id", "order-42.abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "order-42.abc");
    assert_eq!(echo(resp).await["headers"]["x-request-id"], "order-42.abc");
}

#[tokio::test(flavor = "multi_thread")]
async fn post_bodies_reach_the_origin_intact() {
    let (origin, proxy) = setup("").await;
    let form =
        "billing_first_name=O%27Brien&billing_address=12+rue+de+l%27%C3%89glise&".repeat(2000);
    let resp = client()
        .post(proxy.url("/checkout/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = echo(resp).await;
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], form.as_str());
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_or_too_many_headers_get_431() {
    let (origin, proxy) =
        setup("limits:\n  max_header_bytes: 16KiB\n  max_header_count: 50\n").await;
    let resp = client()
        .get(proxy.url("/"))
        .header("cookie", "x".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let mut req = client().get(proxy.url("/"));
    for i in 0..60 {
        req = req.header(format!("x-h{i}"), "v");
    }
    assert_eq!(req.send().await.unwrap().status(), 431);
    assert_eq!(
        origin.hits(),
        0,
        "refused requests must not reach the origin"
    );
    // A normal request still goes through.
    assert_eq!(
        client().get(proxy.url("/")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_get_413_declared_or_streamed() {
    let (origin, proxy) = setup("limits:\n  max_body_bytes: 64KiB\n").await;
    let big = vec![b'a'; 100 * 1024];
    let resp = client()
        .post(proxy.url("/upload"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(origin.hits(), 0);

    // Chunked, so the size is only known while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let stream = futures_stream(chunks);
    let resp = client()
        .post(proxy.url("/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    match resp {
        Ok(r) => assert_eq!(r.status(), 413),
        // The proxy may close while the client is still sending: also a refusal.
        Err(e) => assert!(e.is_request() || e.is_body(), "unexpected error: {e}"),
    }
}

fn futures_stream(
    items: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    tokio_stream::iter(items)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_ip_gets_403_with_the_request_id_while_others_pass() {
    let (origin, proxy) = setup("ip_filter:\n  deny: [\"127.0.0.2/32\"]\n").await;
    let resp = client_from([127, 0, 0, 2])
        .get(proxy.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(resp.headers()["x-rempart-reason"], "ip_denied");
    let body = resp.text().await.unwrap();
    assert!(
        body.contains(&id),
        "403 page must quote the request id: {body}"
    );
    assert_eq!(origin.hits(), 0);
    let resp = client_from([127, 0, 0, 3])
        .get(proxy.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_ip_comes_from_trusted_proxies_only() {
    let extra = "client_ip:\n  trusted_proxies: [\"127.0.0.1/32\"]\n  header: x-forwarded-for\nip_filter:\n  deny: [\"203.0.113.0/24\"]\n";
    let (_origin, proxy) = setup(extra).await;
    // From the trusted proxy (127.0.0.1), the header is believed.
    let resp = client()
        .get(proxy.url("/"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = client()
        .get(proxy.url("/"))
        .header("x-forwarded-for", "198.51.100.4")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = echo(resp).await;
    assert_eq!(seen["headers"]["x-real-ip"], "198.51.100.4");
    assert_eq!(
        seen["headers"]["x-forwarded-for"],
        "198.51.100.4, 127.0.0.1"
    );
    // A CDN that terminated TLS says so; the origin is told the same.
    let resp = client()
        .get(proxy.url("/"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(echo(resp).await["headers"]["x-forwarded-proto"], "https");
    // From an untrusted peer (127.0.0.5), the same header is ignored.
    let resp = client_from([127, 0, 0, 5])
        .get(proxy.url("/"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(echo(resp).await["headers"]["x-forwarded-for"], "127.0.0.5");
    let resp = client_from([127, 0, 0, 5])
        .get(proxy.url("/"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(echo(resp).await["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_request_line_gets_400_and_the_proxy_keeps_serving() {
    let (_origin, proxy) = setup("").await;
    for garbage in [
        &b"NOT A REQUEST\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"G\x00T / HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    ] {
        let answer = raw_exchange(proxy.listen, garbage, Duration::from_secs(5)).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "for {garbage:?} got {answer:?}"
        );
    }
    assert_eq!(
        client().get(proxy.url("/")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_origin_gets_a_clean_502_page() {
    let dead = free_addr();
    let (listen, admin) = (free_addr(), free_addr());
    let text = policy(listen, admin, &[dead], "").replace("  health_check:\n    path: /healthz\n    interval: 200ms\n    timeout: 500ms\n    healthy_threshold: 1\n    unhealthy_threshold: 1\n", "");
    let proxy = Rempart::start(&text, listen, admin).await;
    let resp = client().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let body = resp.text().await.unwrap();
    assert!(body.contains("temporarily unreachable"));
    for internal in [
        "refused",
        &dead.port().to_string(),
        "Peer",
        "pingora",
        "Error",
    ] {
        assert!(
            !body.contains(internal),
            "502 page leaks `{internal}`: {body}"
        );
    }
    let resp = client()
        .get(proxy.url("/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "origin_unreachable");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_origin_gets_504_after_the_read_timeout() {
    let origin = TestOrigin::start("slow").await;
    let (listen, admin) = (free_addr(), free_addr());
    let extra = format!(
        "upstream:\n  servers: [\"{}\"]\n  timeouts:\n    read: 300ms\n",
        origin.addr
    );
    let proxy = Rempart::start(&policy(listen, admin, &[], &extra), listen, admin).await;
    let resp = client()
        .get(proxy.url("/slow?ms=2000"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["x-rempart-reason"], "origin_timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_has_one_json_line_per_request() {
    let (_origin, proxy) = {
        let origin = TestOrigin::start("a").await;
        let (listen, admin) = (free_addr(), free_addr());
        let text = policy(listen, admin, &[origin.addr], "")
            .replace("  threads: 2\n", "  threads: 2\n  log_format: json\n");
        (origin, Rempart::start(&text, listen, admin).await)
    };
    let resp = client().get(proxy.url("/some/page")).send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(5), || async {
            proxy.log().contains(&id)
        })
        .await,
        "no access log line:\n{}",
        proxy.log()
    );
    let line = proxy
        .log()
        .lines()
        .find(|l| l.contains(&id))
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["target"], "rempart::access");
    assert_eq!(v["path"], "/some/page");
    assert_eq!(v["status"], 200);
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert_eq!(v["decided_by"], "origin");
    assert!(v["duration_ms"].as_f64().is_some());
    assert!(v["upstream"].as_str().unwrap().starts_with("127.0.0.1:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_by_status_class_and_decision() {
    let (_origin, proxy) = setup("ip_filter:\n  deny: [\"127.0.0.2/32\"]\n").await;
    for _ in 0..3 {
        client().get(proxy.url("/")).send().await.unwrap();
    }
    client_from([127, 0, 0, 2])
        .get(proxy.url("/"))
        .send()
        .await
        .unwrap();
    let text = proxy.metrics().await;
    assert!(
        text.contains("rempart_proxy_requests_total{decision=\"origin\",route_class=\"page\",status_class=\"2xx\"} 3"),
        "{text}"
    );
    assert!(
        text.contains(
            "rempart_proxy_requests_total{decision=\"ip_filter\",route_class=\"page\",status_class=\"4xx\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("rempart_proxy_request_duration_seconds_bucket"));
    assert!(text.contains("rempart_upstream_response_duration_seconds_bucket"));
    assert!(text.contains("rempart_upstream_healthy{upstream="));
}
