#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! The page cache: hits, the cart-leak guard, coalescing, stale pages when the
//! shop is down, purges, size bounds, HEAD/Range and compression.

mod common;

use common::*;
use std::io::Read;
use std::time::Duration;

/// An origin and Rempart with the WooCommerce preset's cache block (plus `extra`).
async fn setup(extra: &str) -> (TestOrigin, Rempart) {
    setup_with(&preset_block("woocommerce.yaml", "cache"), extra).await
}

async fn setup_with(cache: &str, extra: &str) -> (TestOrigin, Rempart) {
    shop_behind_rempart(&format!("{cache}{extra}")).await
}

struct Page {
    status: u16,
    x_cache: String,
    seq: u64,
    body: String,
    headers: reqwest::header::HeaderMap,
}

async fn get(proxy: &Rempart, path: &str, headers: &[(&str, &str)]) -> Page {
    let mut req = client().get(proxy.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    page(req.send().await.unwrap()).await
}

async fn page(resp: reqwest::Response) -> Page {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let x_cache = headers
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.text().await.unwrap();
    let seq = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(0);
    Page {
        status,
        x_cache,
        seq,
        body,
        headers,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalogue_page_is_a_hit_after_a_miss_and_the_origin_is_asked_once() {
    let (origin, proxy) = setup("").await;
    let first = get(&proxy, "/product/hoodie/", &[]).await;
    assert_eq!((first.status, first.x_cache.as_str()), (200, "MISS"));
    let second = get(&proxy, "/product/hoodie/", &[]).await;
    assert_eq!((second.status, second.x_cache.as_str()), (200, "HIT"));
    assert_eq!(second.body, first.body);
    assert!(second.headers.contains_key("age"), "a hit carries Age");
    assert_eq!(origin.hits_for("/product/hoodie/"), 1);
    // Marketing parameters and parameter order do not split the cache.
    get(&proxy, "/shop/?b=2&a=1&utm_source=news", &[]).await;
    let again = get(&proxy, "/shop/?a=1&b=2&fbclid=xyz", &[]).await;
    assert_eq!(again.x_cache, "HIT");
    assert_eq!(origin.hits_for("/shop/"), 1);
    // An anonymous visitor with analytics cookies still gets the cached page.
    let with_ga = get(
        &proxy,
        "/product/hoodie/",
        &[("cookie", "_ga=GA1.2.3; sbjs_current=typ%3Dorganic")],
    )
    .await;
    assert_eq!(with_ga.x_cache, "HIT");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_preset_session_cookie_and_personal_path_bypasses_the_cache() {
    let (origin, proxy) = setup("").await;
    let cookies = [
        "woocommerce_items_in_cart=1",
        "woocommerce_cart_hash=abc",
        "wp_woocommerce_session_0123abcd=1%7C%7C2",
        "wordpress_logged_in_0123abcd=joe%7C1700000000%7Ctok",
        "wordpress_sec_0123abcd=joe%7C1%7C2",
        "wp-postpass_0123abcd=%24P%24B",
        "comment_author_0123abcd=Joe",
    ];
    for (i, cookie) in cookies.iter().enumerate() {
        let path = format!("/product/p{i}/");
        for _ in 0..2 {
            let p = get(&proxy, &path, &[("cookie", cookie)]).await;
            assert_eq!(p.x_cache, "BYPASS", "{cookie}");
        }
        assert_eq!(
            origin.hits_for(&path),
            2,
            "{cookie} must reach the origin every time"
        );
    }
    let paths = [
        "/cart/",
        "/checkout/",
        "/checkout/order-received/12/",
        "/my-account/",
        "/my-account/orders/",
        "/wp-admin/",
        "/wp-admin/admin-ajax.php",
        "/wp-login.php",
        "/wp-json/wc/store/v1/cart",
        "/xmlrpc.php",
        "/?add-to-cart=12",
        "/?wc-ajax=get_refreshed_fragments",
        "/shop/?add-to-cart=12&quantity=2",
    ];
    for path in paths {
        for _ in 0..2 {
            let p = get(&proxy, path, &[]).await;
            assert_eq!(p.x_cache, "BYPASS", "{path}");
        }
        let prefix = path.split('?').next().unwrap();
        assert!(
            origin.hits_for(prefix) >= 2,
            "{path} must reach the origin every time"
        );
    }
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("rempart_cache_bypass_total{reason=\"cookie\"} 14"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rempart_cache_bypass_total{reason=\"path\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rempart_cache_bypass_total{reason=\"query\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn personal_responses_are_never_stored() {
    let (origin, proxy) = setup("").await;
    for (path, reason) in [
        (
            "/a/?h=set-cookie%3Awoocommerce_items_in_cart%3D1%3B%20path%3D%2F",
            "set-cookie",
        ),
        (
            "/b/?h=cache-control%3Aprivate%2C%20max-age%3D600",
            "private",
        ),
        ("/c/?h=cache-control%3Ano-store", "no-store"),
        ("/d/?h=cache-control%3Ano-cache", "no-cache"),
        ("/e/?h=vary%3ACookie", "vary cookie"),
    ] {
        let first = get(&proxy, path, &[]).await;
        let second = get(&proxy, path, &[]).await;
        assert_eq!(second.x_cache, "BYPASS", "{reason}");
        assert_ne!(
            first.seq, second.seq,
            "{reason}: the second answer must come from the origin"
        );
    }
    assert_eq!(origin.hits(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logged_in_page_is_never_served_to_an_anonymous_client() {
    let (_origin, proxy) = setup("").await;
    // The origin echoes request headers, so a page rendered for Joe contains his cookie.
    let joe = [(
        "cookie",
        "wordpress_logged_in_abc=joe%7C1%7Csecret; woocommerce_items_in_cart=1",
    )];
    let mine = get(&proxy, "/product/hoodie/", &joe).await;
    assert!(mine.body.contains("joe"));
    for _ in 0..3 {
        let anon = get(&proxy, "/product/hoodie/", &[]).await;
        assert!(
            !anon.body.contains("joe") && !anon.body.contains("secret"),
            "leaked: {}",
            anon.body
        );
    }
    // And the anonymous cached page is not served to Joe either.
    let again = get(&proxy, "/product/hoodie/", &joe).await;
    assert_eq!(again.x_cache, "BYPASS");
    assert!(again.body.contains("joe"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_misses_send_one_request_to_the_origin() {
    let (origin, proxy) = setup("").await;
    let url = proxy.url("/product/launch/?ms=400");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { page(client().get(url).send().await.unwrap()).await })
        })
        .collect();
    let mut seqs = std::collections::HashSet::new();
    for t in tasks {
        let p = t.await.unwrap();
        assert_eq!(p.status, 200);
        seqs.insert(p.seq);
    }
    assert_eq!(origin.hits_for("/product/launch/"), 1, "coalescing failed");
    assert_eq!(seqs.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_while_revalidate_serves_the_old_page_and_refreshes_it_once() {
    let (origin, proxy) = setup("").await;
    let path = "/product/swr/?h=cache-control%3Amax-age%3D1%2C%20stale-while-revalidate%3D60";
    let first = get(&proxy, path, &[]).await;
    assert_eq!(first.x_cache, "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut stale = 0;
    for _ in 0..5 {
        let p = get(&proxy, path, &[]).await;
        if p.x_cache == "STALE" {
            stale += 1;
            assert_eq!(p.seq, first.seq, "a stale answer is the old page");
        }
    }
    assert!(stale >= 1, "expired page was not served stale");
    let refreshed = eventually(Duration::from_secs(5), || async {
        origin.hits_for("/product/swr/") == 2
    })
    .await;
    assert!(refreshed, "background refresh did not happen");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        origin.hits_for("/product/swr/"),
        2,
        "refreshed more than once"
    );
    let fresh = get(&proxy, path, &[]).await;
    assert_eq!(fresh.x_cache, "HIT");
    assert_ne!(fresh.seq, first.seq);
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_shop_is_down_the_last_page_is_served_until_it_recovers() {
    let (origin, proxy) = setup("").await;
    let path = "/product/sie/?h=cache-control%3Amax-age%3D1";
    let first = get(&proxy, path, &[]).await;
    assert_eq!(first.x_cache, "MISS");
    let addr = origin.addr;
    origin.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..3 {
        let p = get(&proxy, path, &[]).await;
        assert_eq!(p.status, 200, "the shop must stay up");
        assert_eq!(p.x_cache, "STALE");
        assert_eq!(p.seq, first.seq);
    }
    // A page never cached gets the clean error page.
    assert_eq!(get(&proxy, "/product/never-seen/", &[]).await.status, 502);
    let back = TestOrigin::start_on("shop-again", addr).await;
    let recovered = eventually(Duration::from_secs(10), || async {
        let p = get(&proxy, path, &[]).await;
        p.status == 200 && p.body.contains("shop-again")
    })
    .await;
    assert!(
        recovered,
        "fresh pages did not come back after the origin recovered"
    );
    drop(back);
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_url_prefix_tag_and_all() {
    let (_origin, proxy) = setup("").await;
    let pages = [
        "/product/a/?h=x-cache-tags%3Aproduct-1%20cat-9",
        "/product/b/?h=x-cache-tags%3Aproduct-2",
        "/category/c/?h=x-cache-tags%3Acat-9",
        "/about/",
    ];
    let warm = || async {
        for p in pages {
            get(&proxy, p, &[]).await;
            assert_eq!(get(&proxy, p, &[]).await.x_cache, "HIT", "{p}");
        }
    };
    let purge = |body: serde_json::Value| {
        let url = proxy.admin_url("/cache/purge");
        async move {
            let r = client().post(url).json(&body).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let host = proxy.listen.to_string();

    warm().await;
    let (status, body) = purge(serde_json::json!({ "url": format!("http://{host}/product/b/?h=x-cache-tags%3Aproduct-2") })).await;
    assert_eq!((status, body["purged"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(get(&proxy, pages[1], &[]).await.x_cache, "MISS");
    assert_eq!(get(&proxy, pages[0], &[]).await.x_cache, "HIT");

    let (_, body) =
        purge(serde_json::json!({ "prefix": format!("https://{host}/product/") })).await;
    assert_eq!(body["purged"], 2);
    assert_eq!(get(&proxy, pages[0], &[]).await.x_cache, "MISS");
    assert_eq!(get(&proxy, pages[2], &[]).await.x_cache, "HIT");

    warm().await;
    let (_, body) = purge(serde_json::json!({ "tag": "cat-9" })).await;
    assert_eq!(body["purged"], 2);
    assert_eq!(get(&proxy, pages[2], &[]).await.x_cache, "MISS");
    assert_eq!(get(&proxy, pages[1], &[]).await.x_cache, "HIT");

    warm().await;
    let (_, body) = purge(serde_json::json!({ "all": true })).await;
    assert_eq!(body["purged"], 4);
    assert_eq!(get(&proxy, pages[3], &[]).await.x_cache, "MISS");

    for bad in [
        serde_json::json!({}),
        serde_json::json!({ "url": "/no-host" }),
        serde_json::json!({ "url": "a", "tag": "b" }),
        serde_json::json!({ "tag": " " }),
        serde_json::json!({ "colour": "red" }),
    ] {
        let (status, body) = purge(bad.clone()).await;
        assert_eq!(status, 400, "{bad} -> {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let r = client()
        .post(proxy.admin_url("/cache/purge"))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .post(proxy.admin_url("/cache/purge"))
        .body(r#"{"all": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "a mutation without a token must be JSON");
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_needs_the_token_when_one_is_set() {
    let origin = TestOrigin::start("shop").await;
    let (listen, admin) = (free_addr(), free_addr());
    let text = policy(
        listen,
        admin,
        &[origin.addr],
        &preset_block("woocommerce.yaml", "cache"),
    );
    let proxy = Rempart::start_with(
        &text,
        listen,
        admin,
        &[],
        &[("REMPART_ADMIN_TOKEN", "t0ken")],
    )
    .await;
    let url = proxy.admin_url("/cache/purge");
    let r = client()
        .post(&url)
        .json(&serde_json::json!({ "all": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(&url)
        .bearer_auth("t0ken")
        .json(&serde_json::json!({ "all": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_stays_within_its_byte_bound() {
    let cache = "cache:\n  max_size: 2MiB\n  max_object_size: 256KiB\n  default_ttl: 10m\n";
    let (_origin, proxy) = setup_with(cache, "").await;
    for i in 0..60 {
        let p = get(&proxy, &format!("/big/{i}/?size=100000"), &[]).await;
        assert_eq!(p.status, 200);
        assert!(p.body.len() >= 100_000);
    }
    let metrics = proxy.metrics().await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(
        value("rempart_cache_bytes") <= (2 << 20) as f64,
        "{metrics}"
    );
    assert!(value("rempart_cache_entries") >= 1.0, "{metrics}");
    assert!(value("rempart_cache_evictions_total") >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_over_the_size_limit_stream_through_uncached() {
    let cache = "cache:\n  max_size: 8MiB\n  max_object_size: 100KiB\n  default_ttl: 10m\n";
    let (origin, proxy) = setup_with(cache, "").await;
    for _ in 0..2 {
        let p = get(&proxy, "/download/?size=400000", &[]).await;
        assert_eq!(p.status, 200);
        assert!(p.body.len() >= 400_000, "truncated body: {}", p.body.len());
        assert_ne!(p.x_cache, "HIT");
    }
    assert_eq!(origin.hits_for("/download/"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn head_and_range_requests_behave() {
    let (origin, proxy) = setup("").await;
    let head = client()
        .head(proxy.url("/product/h/"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let full = get(&proxy, "/product/h/", &[]).await;
    assert!(
        full.body.starts_with('{') && full.body.ends_with('}'),
        "a HEAD miss must not store an empty body: {:?}",
        full.body
    );
    assert_eq!(origin.hits_for("/product/h/"), 1);
    let head = client()
        .head(proxy.url("/product/h/"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["x-cache"], "HIT");
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        full.body.len().to_string()
    );

    let r = client()
        .get(proxy.url("/product/h/"))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.text().await.unwrap(), full.body[..10]);
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_and_uncompressed_clients_both_get_the_right_body() {
    let (origin, proxy) = setup("").await;
    let plain = get(&proxy, "/product/z/?size=20000", &[]).await;
    assert!(plain.headers.get("content-encoding").is_none());
    for encoding in ["gzip", "br", "gzip, deflate, br"] {
        let r = client()
            .get(proxy.url("/product/z/?size=20000"))
            .header("accept-encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-cache"], "HIT");
        let used = r.headers()["content-encoding"]
            .to_str()
            .unwrap()
            .to_string();
        let bytes = r.bytes().await.unwrap();
        assert!(
            bytes.len() < plain.body.len() / 2,
            "{encoding}: not compressed"
        );
        let text = match used.as_str() {
            "gzip" => {
                let mut s = String::new();
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_string(&mut s)
                    .unwrap();
                s
            }
            "br" => {
                // No brotli decoder in the tests: check the size only, then the
                // identity client below proves the stored entry is intact.
                plain.body.clone()
            }
            other => panic!("unexpected encoding {other}"),
        };
        assert_eq!(text, plain.body, "{encoding}");
    }
    let again = get(
        &proxy,
        "/product/z/?size=20000",
        &[("accept-encoding", "identity")],
    )
    .await;
    assert_eq!(again.body, plain.body);
    assert_eq!(origin.hits_for("/product/z/"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_vary_headers_are_keyed() {
    let cache = preset_block("woocommerce.yaml", "cache")
        .replace("vary_allow: []", "vary_allow: [accept-language]");
    let (origin, proxy) = setup_with(&cache, "").await;
    let path = "/product/v/?h=vary%3AAccept-Language";
    let fr = get(&proxy, path, &[("accept-language", "fr")]).await;
    let en = get(&proxy, path, &[("accept-language", "en")]).await;
    assert_ne!(fr.seq, en.seq);
    assert_eq!(
        get(&proxy, path, &[("accept-language", "fr")]).await.seq,
        fr.seq
    );
    assert_eq!(
        get(&proxy, path, &[("accept-language", "en")]).await.seq,
        en.seq
    );
    assert_eq!(origin.hits_for("/product/v/"), 2);
}
