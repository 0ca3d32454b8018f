//! Cost of WAF inspection on typical shop requests, with the full OWASP CRS.
//!
//! `cargo bench --bench waf` (CRS from `REMPART_CRS_DIR`, else `../shared/crs`).
//! Each iteration is one whole request: phase 1 on the head, body parsing,
//! phase 2 and the anomaly evaluation, exactly as the proxy runs it.
//! Every iteration is a new visitor: the session cookie, the checkout nonce
//! and the payment id change, so per-value memos only help where real
//! traffic repeats itself (User-Agent, Accept, Referer...).

use std::path::PathBuf;

use criterion::{criterion_group, BenchmarkId, Criterion};
use rempart::waf::{self, CrsSource, Head, Malformed, Mode, Overflow, Waf, WafSettings};

/// The allocator the `rempart` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn crs_dir() -> PathBuf {
    let dir = std::env::var_os("REMPART_CRS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/crs"));
    if !dir.join("rules").is_dir() {
        eprintln!(
            "OWASP CRS not found at {}: set REMPART_CRS_DIR to a CRS v4 release folder",
            dir.display()
        );
        std::process::exit(2);
    }
    dir
}

fn load(paranoia: u8) -> Waf {
    let settings = WafSettings {
        mode: Mode::Block,
        paranoia,
        threshold: 5,
        body_limit: 128 << 10,
        overflow: Overflow::InspectPrefix,
        malformed: Malformed::InspectRaw,
        max_args: 2000,
        debug_header: false,
        ban_on_block: false,
        crs: Some(CrsSource {
            path: crs_dir(),
            ..CrsSource::default()
        }),
        exclusions: Vec::new(),
    };
    match Waf::build(settings, Vec::new()) {
        Ok(w) => w,
        Err(problems) => panic!("CRS does not load: {problems:?}"),
    }
}

const BROWSER: &[(&str, &str)] = &[
    ("Host", "shop.example.com"),
    ("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
    ("Accept-Language", "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Referer", "https://shop.example.com/category/clothing/"),
    ("Cookie", "woocommerce_items_in_cart=1; wp_woocommerce_session_3f2a=t_8f1e2d%7C%7C1732900000%7C%7C1732896400%7C%7Cabcdef0123456789; sbjs_current=typ%3Dorganic%7C%7C%7Csrc%3Dgoogle%7C%7C%7Cmdm%3Dorganic%7C%7C%7Ccmp%3D%28none%29; sbjs_udata=vst%3D2%7C%7C%7Cuip%3D%28none%29%7C%7C%7Cuag%3DMozilla%2F5.0"),
];

struct Case {
    name: &'static str,
    method: &'static str,
    uri: &'static str,
    content_type: Option<&'static str>,
    body: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "product_page_get",
        method: "GET",
        uri: "/product/organic-cotton-t-shirt/?attribute_pa_color=blue&utm_source=newsletter&utm_medium=email",
        content_type: None,
        body: "",
    },
    Case {
        name: "search_get",
        method: "GET",
        uri: "/?s=men%27s+slim+jeans+%2250%25+off%22&post_type=product",
        content_type: None,
        body: "",
    },
    Case {
        name: "checkout_post_form",
        method: "POST",
        uri: "/?wc-ajax=checkout",
        content_type: Some("application/x-www-form-urlencoded; charset=UTF-8"),
        body: "billing_first_name=Se%C3%A1n&billing_last_name=O%27Brien&billing_company=&billing_country=FR&billing_address_1=12+Rue+de+l%27%C3%89glise&billing_address_2=&billing_postcode=75011&billing_city=Paris&billing_phone=%2B33+6+12+34+56+78&billing_email=sean.obrien%40example.com&order_comments=Please+ring+twice%2C+door+code+%234521&shipping_method%5B0%5D=flat_rate%3A1&payment_method=stripe&terms=on&terms-field=1&woocommerce-process-checkout-nonce=4f9c2d1e8a&_wp_http_referer=%2F%3Fwc-ajax%3Dupdate_order_review",
    },
    Case {
        name: "store_api_json_post",
        method: "POST",
        uri: "/wp-json/wc/store/v1/checkout?_locale=user",
        content_type: Some("application/json"),
        body: r#"{"billing_address":{"first_name":"Seán","last_name":"O'Brien","company":"","address_1":"12 Rue de l'Église","address_2":"","city":"Paris","state":"","postcode":"75011","country":"FR","email":"sean.obrien@example.com","phone":"+33 6 12 34 56 78"},"shipping_address":{"first_name":"Seán","last_name":"O'Brien","company":"","address_1":"12 Rue de l'Église","address_2":"","city":"Paris","state":"","postcode":"75011","country":"FR","phone":""},"customer_note":"Leave it with the neighbour (flat 2B) if I'm out.","create_account":false,"payment_method":"stripe","payment_data":[{"key":"wc-stripe-payment-method","value":"pm_1PQxyz"}],"extensions":{"woocommerce/order-attribution":{"source_type":"organic","referrer":"https://www.google.com/"}}}"#,
    },
];

/// `visitor` makes the session cookie unique.
fn head(case: &Case, visitor: u64) -> Head {
    let mut headers: Vec<(String, Vec<u8>)> = BROWSER
        .iter()
        .map(|(k, v)| {
            let v = v.replace("t_8f1e2d", &format!("t_{visitor:06x}"));
            (k.to_string(), v.into_bytes())
        })
        .collect();
    if let Some(ct) = case.content_type {
        headers.push(("Content-Type".into(), ct.as_bytes().to_vec()));
        headers.push((
            "Content-Length".into(),
            body(case, visitor).len().to_string().into_bytes(),
        ));
    }
    Head {
        method: case.method.into(),
        raw_uri: case.uri.as_bytes().to_vec(),
        protocol: "HTTP/1.1".into(),
        headers,
        remote_addr: "203.0.113.7".into(),
        remote_port: 51234,
        server_port: 443,
        request_id: "4f2a9c0d1e3b5a7c9e0f1a2b".into(),
    }
}

/// The body with this visitor's nonce and payment id.
fn body(case: &Case, visitor: u64) -> Vec<u8> {
    case.body
        .replace("4f9c2d1e8a", &format!("{visitor:010x}"))
        .replace("pm_1PQxyz", &format!("pm_{visitor:x}"))
        .into_bytes()
}

/// One request through both phases; returns the score so nothing is optimised away.
fn inspect(waf: &Waf, case: &Case, visitor: u64) -> i64 {
    let mut tx = waf.transaction(head(case, visitor));
    tx.run_phase(1);
    let body = body(case, visitor);
    let length = body.len();
    tx.set_body(body, length);
    tx.run_phase(2);
    tx.evaluate_score(waf.settings.paranoia, waf.settings.threshold);
    // At PL1 the full CRS must let shop traffic through even without the
    // shop pack; from PL2 on the pack's exclusions are needed (sbjs cookies).
    assert!(
        waf.settings.paranoia > 1 || tx.blocked().is_none(),
        "{} was blocked: {:?}",
        case.name,
        tx.matches()
    );
    tx.score(waf.settings.paranoia)
}

fn bench(c: &mut Criterion) {
    for paranoia in [1u8, 2] {
        let waf = load(paranoia);
        let mut group = c.benchmark_group(format!("waf_pl{paranoia}"));
        for case in CASES {
            group.bench_with_input(BenchmarkId::from_parameter(case.name), case, |b, case| {
                let mut visitor = 0u64;
                b.iter(|| {
                    visitor += 1;
                    inspect(&waf, case, visitor)
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);

/// With `WAF_BENCH_COUNT=N` (and `WAF_BENCH_CASE`, `WAF_BENCH_PARANOIA`):
/// no criterion, N inspections of one case and nothing else, for counting
/// instructions under valgrind (`load-tests/waf-instructions.sh`), a figure
/// that does not move with the machine's load. It also prints the mean time
/// per inspection, for a quick comparison of two builds run in turn.
fn main() {
    let Some(count) = std::env::var("WAF_BENCH_COUNT")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    else {
        benches();
        Criterion::default().configure_from_args().final_summary();
        return;
    };
    let paranoia = std::env::var("WAF_BENCH_PARANOIA")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let name = std::env::var("WAF_BENCH_CASE").unwrap_or_default();
    let Some(case) = CASES.iter().find(|c| c.name == name) else {
        let names: Vec<_> = CASES.iter().map(|c| c.name).collect();
        eprintln!("WAF_BENCH_CASE must be one of {names:?}");
        std::process::exit(2);
    };
    let waf = load(paranoia);
    // The same warm-up for every count: the memos filled as in a running proxy.
    for visitor in 0..200 {
        inspect(&waf, case, 1_000_000 + visitor);
    }
    let started = std::time::Instant::now();
    for visitor in 0..count {
        std::hint::black_box(inspect(&waf, case, visitor));
    }
    if count > 0 {
        let each = started.elapsed().as_secs_f64() * 1e6 / count as f64;
        eprintln!("{name} PL{paranoia}: {each:.1} µs per inspection over {count}");
    }
}

// Keeps the crate path in use when the bench is only type-checked.
#[allow(dead_code)]
fn _uses(_: waf::Mode) {}
