#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! Policies: `rempart check` points at every problem; reloads apply good
//! policies and refuse bad ones without disturbing traffic.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(binary())
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn every_shipped_policy_passes_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (ok, text) = check(&path);
            assert!(ok, "{} fails check:\n{text}", path.display());
            assert!(text.contains("policy OK"));
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected woocommerce, prestashop and demo policies"
    );
}

#[test]
fn check_reports_every_problem_with_its_line_and_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        "\
server:
  listen: [\"0.0.0.0:8080\"]
  admin_lisen: \"127.0.0.1:9090\"
upstream:
  servers: [\"127.0.0.1:8081\"]
  balance: fastest
ip_filter:
  deny:
    - 10.0.0.0/8
    - 10.0.0.0/99
  allow: [\"not-an-ip\"]
limits:
  max_body_bytes: 12 parsecs
",
    )
    .unwrap();
    let (ok, text) = check(&path);
    assert!(!ok, "a broken policy must fail check:\n{text}");
    let name = path.display().to_string();
    for expected in [
        format!("{name}:3:3: unknown key `admin_lisen`"),
        "did you mean `admin_listen`?".to_string(),
        format!("{name}:6:12: unknown value `fastest`"),
        format!("{name}:10:7: `10.0.0.0/99` is not an IP address or CIDR network"),
        format!("{name}:11:11: `not-an-ip` is not an IP address"),
        format!("{name}:13:"),
        "unknown size unit".to_string(),
    ] {
        assert!(text.contains(&expected), "missing `{expected}` in:\n{text}");
    }
    assert!(text.contains("5 problem(s)"), "{text}");
}

#[test]
fn check_explains_a_missing_file_and_yaml_syntax_errors() {
    let (ok, text) = check(std::path::Path::new("/nonexistent/policy.yaml"));
    assert!(!ok);
    assert!(
        text.contains("/nonexistent/policy.yaml:1:1: cannot read policy"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syntax.yaml");
    std::fs::write(&path, "server:\n  listen: [\"0.0.0.0:80\"\nupstream: {\n").unwrap();
    let (ok, text) = check(&path);
    assert!(!ok);
    assert!(text.contains(&format!("{}:", path.display())), "{text}");
}

fn reload_status(proxy: &Rempart) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Handle::current();
    let url = proxy.admin_url("/reload");
    tokio::task::block_in_place(|| {
        rt.block_on(async {
            let r = client()
                .post(url)
                .header("content-type", "application/json")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_a_good_policy_and_refuses_a_bad_one_while_traffic_flows() {
    let origin = TestOrigin::start("a").await;
    let (listen, admin) = (free_addr(), free_addr());
    let good = policy(listen, admin, &[origin.addr], "");
    let proxy = Rempart::start(&good, listen, admin).await;
    let c = client_from([127, 0, 0, 7]);
    assert_eq!(c.get(proxy.url("/")).send().await.unwrap().status(), 200);

    // A good policy that denies 127.0.0.7 is applied.
    proxy.write_policy(&policy(
        listen,
        admin,
        &[origin.addr],
        "ip_filter:\n  deny: [\"127.0.0.7\"]\n",
    ));
    let (status, body) = reload_status(&proxy);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "applied");
    assert_eq!(c.get(proxy.url("/")).send().await.unwrap().status(), 403);

    // A bad one is refused with its line, and the running policy stays.
    proxy.write_policy(&policy(
        listen,
        admin,
        &[origin.addr],
        "ip_filter:\n  deny: [\"127.0.0.300\"]\n",
    ));
    let (status, body) = reload_status(&proxy);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["status"], "refused");
    let problems = body["problems"].to_string();
    assert!(problems.contains("policy.yaml:"), "{problems}");
    assert!(problems.contains("127.0.0.300"), "{problems}");
    assert_eq!(
        c.get(proxy.url("/")).send().await.unwrap().status(),
        403,
        "old policy must stay"
    );
    assert_eq!(
        client().get(proxy.url("/")).send().await.unwrap().status(),
        200
    );

    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("rempart_config_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rempart_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_policy() {
    let origin = TestOrigin::start("a").await;
    let (listen, admin) = (free_addr(), free_addr());
    let proxy = Rempart::start(&policy(listen, admin, &[origin.addr], ""), listen, admin).await;
    let c = client_from([127, 0, 0, 8]);
    assert_eq!(c.get(proxy.url("/")).send().await.unwrap().status(), 200);
    proxy.write_policy(&policy(
        listen,
        admin,
        &[origin.addr],
        "ip_filter:\n  deny: [\"127.0.0.8\"]\n",
    ));
    proxy.signal("HUP");
    let denied = eventually(Duration::from_secs(5), || async {
        c.get(proxy.url("/"))
            .send()
            .await
            .map(|r| r.status() == 403)
            .unwrap_or(false)
    })
    .await;
    assert!(
        denied,
        "SIGHUP did not apply the new policy:\n{}",
        proxy.log()
    );
    // A broken file on SIGHUP is refused and logged.
    proxy.write_policy("server: [oops\n");
    proxy.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            proxy.log().contains("reload refused")
        })
        .await
    );
    assert_eq!(c.get(proxy.url("/")).send().await.unwrap().status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_token_guards_reload() {
    let origin = TestOrigin::start("a").await;
    let (listen, admin) = (free_addr(), free_addr());
    let proxy = Rempart::start_with(
        &policy(listen, admin, &[origin.addr], ""),
        listen,
        admin,
        &[],
        &[("REMPART_ADMIN_TOKEN", "s3cret")],
    )
    .await;
    let r = client()
        .post(proxy.admin_url("/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(proxy.admin_url("/reload"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(proxy.admin_url("/reload"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Read-only endpoints stay open for probes and Prometheus.
    assert_eq!(
        client()
            .get(proxy.admin_url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(proxy.admin_url("/reload"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        client()
            .get(proxy.admin_url("/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[test]
fn a_public_admin_listener_without_a_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    let (listen, admin) = (
        free_addr(),
        std::net::SocketAddr::from(([0, 0, 0, 0], free_port())),
    );
    std::fs::write(&path, policy(listen, admin, &[free_addr()], "")).unwrap();
    let out = Command::new(binary())
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("REMPART_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("REMPART_ADMIN_TOKEN"));
}

#[test]
fn command_line_flags_override_the_file() {
    // The shipped preset listens on :80/:443; flags move it to loopback ports.
    let preset = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/woocommerce.yaml");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let origin = TestOrigin::start("a").await;
        let (listen, admin) = (free_addr(), free_addr());
        let dir = tempfile::tempdir().unwrap();
        // No TLS in this copy: certificates are not what this test is about.
        let text = std::fs::read_to_string(&preset).unwrap();
        let without_tls = strip_block(&text, "tls");
        std::fs::write(dir.path().join("policy.yaml"), without_tls).unwrap();
        let listen_s = listen.to_string();
        let admin_s = admin.to_string();
        let up = origin.addr.to_string();
        let proxy = Rempart::launch(
            dir,
            listen,
            admin,
            &[
                "--listen",
                &listen_s,
                "--admin-listen",
                &admin_s,
                "--upstream",
                &up,
            ],
            &[],
        )
        .await;
        let r = client().get(proxy.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-origin"], "a");
    });
}

/// Removes a top-level block from a YAML text.
fn strip_block(text: &str, key: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with(&format!("{key}:")) {
            skipping = true;
            continue;
        }
        if skipping && (line.starts_with(' ') || line.starts_with('#') || line.is_empty()) {
            continue;
        }
        skipping = false;
        out.push_str(line);
        out.push('\n');
    }
    out
}
