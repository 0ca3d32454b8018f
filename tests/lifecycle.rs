#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! Start, drain and stop.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_requests_in_flight_finish_then_exits() {
    let origin = TestOrigin::start("a").await;
    let (listen, admin) = (free_addr(), free_addr());
    let text =
        policy(listen, admin, &[origin.addr], "").replace("grace_period: 1s", "grace_period: 3s");
    let mut proxy = Rempart::start(&text, listen, admin).await;
    let url = proxy.url("/slow?ms=1500");
    let in_flight =
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.signal("TERM");
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the request in flight was cut:\n{}",
        proxy.log()
    );
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(15)));
    assert!(
        status.is_some(),
        "rempart did not exit after SIGTERM:\n{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_keeps_the_policy_it_started_with_across_a_reload() {
    // The request starts under a policy without HSTS... there is no TLS here, so
    // use the upstream Host override, read when the request is forwarded: a
    // request already waiting on the origin was forwarded with the old value,
    // and the next one uses the new value.
    let origin = TestOrigin::start("a").await;
    let (listen, admin) = (free_addr(), free_addr());
    let with_host = |host: &str| {
        format!(
            "upstream:\n  servers: [\"{}\"]\n  host_header: {host}\n",
            origin.addr
        )
    };
    let proxy = Rempart::start(
        &policy(listen, admin, &[], &with_host("old.test")),
        listen,
        admin,
    )
    .await;
    let url = proxy.url("/slow?ms=800");
    let slow = tokio::spawn(async move {
        client()
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.write_policy(&policy(listen, admin, &[], &with_host("new.test")));
    let r = client()
        .post(proxy.admin_url("/reload"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = slow.await.unwrap();
    assert_eq!(seen["headers"]["host"], "old.test");
    let fresh: serde_json::Value = client()
        .get(proxy.url("/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fresh["headers"]["host"], "new.test");
}
