#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! The WAF through the real proxy with the policy's own rules (no CRS needed):
//! block, score and log actions, detect-only mode with its audit record,
//! bounded and malformed bodies, per-rule metrics, and a broken rules file
//! that `check` reports with file and line while a reload keeps the running rules.

mod common;

use common::*;
use std::time::Duration;

const RULES: &str = "\
waf:
  mode: block
  inbound_threshold: 5
  body_limit: 1KiB
  debug_header: true
  rules:
    - id: 1000001
      message: Environment file requested
      phase: request_headers
      targets: [REQUEST_FILENAME]
      transforms: [urlDecodeUni, normalizePath, lowercase]
      operator: \"@rx (?:^|/)\\\\.env$\"
      action: block
    - id: 1000002
      message: SQL keywords in a field
      targets: [ARGS, REQUEST_BODY]
      transforms: [urlDecodeUni, lowercase]
      operator: \"@rx union\\\\s+select\"
      action: score
      severity: warning
    - id: 1000003
      message: SQL comment in a field
      targets: [ARGS]
      operator: \"@contains --\"
      action: score
      severity: warning
    - id: 1000004
      message: Old client
      phase: request_headers
      targets: [REQUEST_HEADERS:User-Agent]
      operator: \"@contains MSIE 6\"
      action: log
";

fn with(extra: &str) -> String {
    format!("{RULES}{extra}")
}

#[tokio::test(flavor = "multi_thread")]
async fn block_rules_answer_403_with_the_request_id() {
    let (origin, proxy) = shop_behind_rempart(RULES).await;
    let r = client()
        .get(proxy.url("/shop/%2E%65nv"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-rempart-reason"], "waf");
    assert_eq!(r.headers()["x-rempart-waf"], "1000001");
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    assert!(body.contains(&id), "the page quotes the request id: {body}");
    assert_eq!(origin.hits(), 0, "a blocked request never reaches the shop");
    let fine = client()
        .get(proxy.url("/shop/environment"))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn scores_add_up_to_the_threshold_and_log_rules_only_record() {
    let (_origin, proxy) = shop_behind_rempart(RULES).await;
    // One warning (3) stays under the threshold of 5...
    let one = client()
        .get(proxy.url("/?q=1+union+select+2"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(one.headers()["x-rempart-waf"], "1000002");
    // ...two warnings (6) reach it.
    let two = client()
        .get(proxy.url("/?q=1+union+select+2--"))
        .send()
        .await
        .unwrap();
    assert_eq!(two.status(), 403);
    let logged = client()
        .get(proxy.url("/"))
        .header("user-agent", "Mozilla/4.0 (compatible; MSIE 6.0)")
        .send()
        .await
        .unwrap();
    assert_eq!(logged.status(), 200);
    assert_eq!(logged.headers()["x-rempart-waf"], "1000004");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("rempart_waf_rule_hits_total{rule=\"1000002\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rempart_waf_requests_total{outcome=\"blocked\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("decision=\"waf\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn form_and_json_bodies_are_inspected_before_the_origin_sees_them() {
    let (origin, proxy) = shop_behind_rempart(RULES).await;
    let form = client()
        .post(proxy.url("/?wc-ajax=checkout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("billing_last_name=x%27+union+select+1--")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 403);
    let json = client()
        .post(proxy.url("/wp-json/wc/store/v1/checkout"))
        .header("content-type", "application/json")
        .body(r#"{"billing_address":{"last_name":"x' union select 1--"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 403);
    assert_eq!(origin.hits(), 0);
    let good = client()
        .post(proxy.url("/wp-json/wc/store/v1/checkout"))
        .header("content-type", "application/json")
        .body(r#"{"billing_address":{"last_name":"O'Brien","address_1":"12 Rue de l'Église"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    let echoed: serde_json::Value = good.json().await.unwrap();
    assert!(
        echoed["body"].as_str().unwrap().contains("O'Brien"),
        "the body reaches the origin whole"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_past_the_limit_are_refused_never_passed_half_read() {
    let (origin, proxy) = shop_behind_rempart(RULES).await;
    let padding = "a".repeat(2000);
    let post = |ct: &'static str, body: String| {
        client()
            .post(proxy.url("/"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    // Within the limit: inspected whole.
    let early = post(
        "application/x-www-form-urlencoded",
        "q=union+select+1--&pad=x".into(),
    )
    .await
    .unwrap();
    assert_eq!(early.status(), 403);
    // Over the limit, a form, JSON or XML body is refused, clean or not:
    // its tail could never be read as the shop reads it.
    for (ct, body) in [
        (
            "application/x-www-form-urlencoded",
            format!("pad={padding}"),
        ),
        (
            "application/x-www-form-urlencoded",
            format!("pad={padding}&q=union+select+1--"),
        ),
        ("application/json", format!(r#"{{"pad":"{padding}"}}"#)),
        (
            "text/plain, application/json",
            format!(r#"{{"pad":"{padding}"}}"#),
        ),
        ("text/xml", format!("<a>{padding}</a>")),
        ("application/octet-stream", padding.clone()),
    ] {
        let r = post(ct, body).await.unwrap();
        assert_eq!(r.status(), 413, "{ct}");
        assert_eq!(r.headers()["x-rempart-reason"], "waf_body_too_large");
    }
    assert_eq!(origin.hits(), 0, "nothing reached the shop");
    let small = client()
        .post(proxy.url("/"))
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    drop((origin, proxy));

    // A raw body (no form parser) may be inspected by its first KiB.
    let (_origin, proxy) = shop_behind_rempart(&with("  body_overflow: inspect_prefix\n")).await;
    let raw = client()
        .post(proxy.url("/"))
        .header("content-type", "application/octet-stream")
        .body(padding.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    let form = client()
        .post(proxy.url("/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("pad={padding}"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 413, "never for a form");
}

/// A multipart upload: every field is inspected whole, files stream
/// through, and a field after a large file is still read before the body
/// ends.
#[tokio::test(flavor = "multi_thread")]
async fn multipart_uploads_are_read_field_by_field_as_they_stream() {
    let (origin, proxy) = shop_behind_rempart(RULES).await;
    let file = "\u{1}".repeat(300_000);
    let form = |after: &str| {
        format!(
            "--B\r\nContent-Disposition: form-data; name=\"_wpnonce\"\r\n\r\nabc\r\n\
             --B\r\nContent-Disposition: form-data; name=\"async-upload\"; filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n{file}\r\n\
             --B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n{after}\r\n--B--\r\n"
        )
    };
    let upload = |body: String| {
        client()
            .post(proxy.url("/wp-admin/async-upload.php"))
            .header("content-type", "multipart/form-data; boundary=B")
            .body(body)
            .send()
    };
    let r = upload(form("holiday")).await.unwrap();
    assert_eq!(r.status(), 200);
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        echoed["body"].as_str().unwrap().len(),
        form("holiday").len(),
        "the upload reaches the shop whole"
    );
    let hits = origin.hits();
    let r = upload(form("1 union select password from wp_users--"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a field after the file is inspected");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(origin.hits(), hits, "the shop never ran the request");
    // A field (not a file) over the limit is refused.
    let long = format!(
        "--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n{}\r\n--B--\r\n",
        "n".repeat(5000)
    );
    assert_eq!(upload(long).await.unwrap().status(), 413);
    // PHP's boundary: `boundary=A,B` is `A`; a `boundary` inside another
    // parameter comes first. Fields under either reading are inspected.
    for ct in [
        "multipart/form-data; boundary=A,B",
        "multipart/form-data; xboundary=A; boundary=B",
        "multipart/form-data,boundary=A",
    ] {
        let body = "--A\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\nunion select 1 --\r\n--A--\r\n";
        let r = client()
            .post(proxy.url("/"))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{ct}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_are_refused_or_inspected_raw() {
    let broken = r#"{"note": "union select 1", "#;
    let (origin, proxy) = shop_behind_rempart(RULES).await;
    // JSON PHP would not read: refused by default.
    let refused = client()
        .post(proxy.url("/wp-json/x"))
        .header("content-type", "application/json")
        .body(broken)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.headers()["x-rempart-reason"], "waf_malformed_body");
    // JSON PHP reads is read: huge numbers, deep nesting (511 levels).
    for ok in [
        r#"{"price": 1e400, "note": "fine"}"#.to_string(),
        format!("{}1{}", "[".repeat(500), "]".repeat(500)),
    ] {
        let r = client()
            .post(proxy.url("/wp-json/x"))
            .header("content-type", "application/json")
            .body(ok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let attack_past_big_number = client()
        .post(proxy.url("/wp-json/x"))
        .header("content-type", "application/json")
        .body(r#"{"price": 1e400, "note": "1 union select 2--"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(attack_past_big_number.status(), 403);
    let multipart = client()
        .post(proxy.url("/upload"))
        .header("content-type", "multipart/form-data; boundary=XX")
        .body("--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end in sight")
        .send()
        .await
        .unwrap();
    assert_eq!(
        multipart.status(),
        200,
        "a form PHP reads to its end is read too"
    );
    let bad_encoding = client()
        .get(proxy.url("/?q=%zz%u12%"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_encoding.status(), 200);
    let hits = origin.hits();
    assert_eq!(hits, 4);
    drop(proxy);

    let (_origin, proxy) = shop_behind_rempart(&with("  malformed_body: inspect_raw\n")).await;
    // Unparsable JSON: the raw text is inspected (REQUEST_BODY).
    let raw = client()
        .post(proxy.url("/wp-json/x"))
        .header("content-type", "application/json")
        .body(broken)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["x-rempart-waf"], "1000002");
}

#[tokio::test(flavor = "multi_thread")]
async fn detect_only_lets_attacks_through_and_records_them() {
    let origin = TestOrigin::start("shop").await;
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let text = policy(
        listen,
        admin,
        &[origin.addr],
        &RULES.replace("mode: block", "mode: detect"),
    )
    .replace(
        "  threads: 2\n",
        &format!("  threads: 2\n  audit_log: \"{}\"\n", audit.display()),
    );
    let proxy = Rempart::start(&text, listen, admin).await;
    let r = client()
        .post(proxy.url("/my-account/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=bob&password=x%27+union+select+1--")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "detect-only never blocks");
    assert_eq!(origin.hits(), 1);
    assert!(
        eventually(Duration::from_secs(5), || async {
            std::fs::read_to_string(&audit).is_ok_and(|t| t.contains("\"event\":\"waf\""))
        })
        .await
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["event"], "waf");
    assert_eq!(line["outcome"], "detected");
    let detail: serde_json::Value = serde_json::from_str(line["waf"].as_str().unwrap()).unwrap();
    assert_eq!(
        detail["blocking_rule"], 0,
        "the anomaly threshold would have blocked"
    );
    assert_eq!(detail["rules"], serde_json::json!([1000002, 1000003]));
    assert_eq!(detail["matches"][0]["target"], "ARGS:password");
    assert_eq!(
        detail["matches"][0]["fragment"], "********",
        "passwords never reach a log"
    );
    assert!(!text.contains("union select"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_rules_file_is_reported_and_a_reload_keeps_the_running_rules() {
    let origin = TestOrigin::start("shop").await;
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let crs = dir.path().join("crs");
    std::fs::create_dir_all(crs.join("rules")).unwrap();
    let rules = crs.join("rules/REQUEST-901-TEST.conf");
    std::fs::write(
        &rules,
        "SecRule ARGS \"@rx evil\" \"id:900001,phase:2,deny,status:403,msg:'evil'\"\nSecAction \"id:900003,phase:1,pass,initcol:ip=%{remote_addr}\"\n",
    )
    .unwrap();
    let waf = format!(
        "waf:\n  debug_header: true\n  crs:\n    path: \"{}\"\n",
        crs.display()
    );
    let proxy = Rempart::start_in(
        dir,
        &policy(listen, admin, &[origin.addr], &waf),
        listen,
        admin,
    )
    .await;
    assert_eq!(
        client()
            .get(proxy.url("/?q=evil"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // What cannot run is reported at start-up with file, line and rule id.
    let log = proxy.log();
    assert!(log.contains("WAF loaded"), "{log}");
    assert!(
        log.contains("REQUEST-901-TEST.conf:2")
            && log.contains("rule 900003")
            && log.contains("initcol"),
        "{log}"
    );

    // A rule that does not parse: `check` names the file, the line and the rule.
    std::fs::write(
        &rules,
        "SecRule ARGS \"@rx evil\" \"id:900001,phase:2,deny,status:403\"\n\nSecRule ARGS \"@rx x\" \"id:900002,phase:2,frobnicate\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(binary())
        .args(["check", "--config"])
        .arg(&proxy.policy)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("REQUEST-901-TEST.conf:3"), "{report}");
    assert!(
        report.contains("900002") && report.contains("frobnicate"),
        "{report}"
    );

    // A reload is refused and the running rules stay.
    proxy.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            proxy
                .metrics()
                .await
                .contains("rempart_config_reloads_total{result=\"failed\"} 1")
        })
        .await,
        "{}",
        proxy.log()
    );
    assert_eq!(
        client()
            .get(proxy.url("/?q=evil"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        client()
            .get(proxy.url("/?q=fine"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_flow_whole_to_the_origin() {
    let (_origin, proxy) = shop_behind_rempart(&with("  body_overflow: inspect_prefix\n")).await;
    for size in [5_000usize, 300_000] {
        let body = "b".repeat(size);
        let r = client()
            .post(proxy.url("/wp-admin/async-upload.php"))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{size} bytes");
        let echoed: serde_json::Value = r.json().await.unwrap();
        assert_eq!(echoed["body"].as_str().unwrap().len(), size);
    }
}
