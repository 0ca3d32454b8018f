//! Demo Shop: a built-in sample WooCommerce-like shop origin.
//!
//! `rempart demo` starts this shop on loopback behind the proxy so an operator
//! can see the proxy working within a minute; tests and k6 load tests target it
//! too. This module is only the pure request -> response logic: the HTTP server
//! plumbing lives elsewhere and is expected to sleep for [`ShopResponse::delay`],
//! set `content-length` and strip the body of HEAD responses.
//!
//! The shop mimics what matters to an edge proxy in front of WordPress and
//! WooCommerce: cacheable catalogue pages without `cache-control`, personal
//! pages marked `no-store`, WooCommerce cart/session cookies, WordPress login
//! cookies and a `wp-login.php` that answers 200 on failure and 302 on success.
//!
//! Pages:
//!
//! | Path                          | Methods    | Content                                         |
//! |-------------------------------|------------|-------------------------------------------------|
//! | `/`                           | GET        | product listing; `?s=` search; `?add-to-cart=`  |
//! | `/product/<slug>/`            | GET        | product page with an add-to-cart form           |
//! | `/product-category/<slug>/`   | GET        | category listing (`clothing`, `accessories`)    |
//! | `/cart/`                      | GET, POST  | cart from the `demo_cart` cookie; POST adds     |
//! | `/checkout/`                  | GET, POST  | billing form; POST places the order             |
//! | `/my-account/`                | GET        | greeting and orders, or a login form            |
//! | `/wp-login.php`               | GET, POST  | login (`demo` / `demo-password`), `?action=logout` |
//! | `/slow/`                      | GET        | answers after a 2 second delay                  |
//! | `/healthz`                    | GET        | `ok` for the proxy's health check               |
//! | `/wp-json/wc/store/v1/cart`   | GET        | the cart as JSON (WooCommerce Store API style)  |
//!
//! Everything else is a 404 page; methods other than GET, HEAD and POST get 405.
//! The shop keeps no per-user state: the cart lives in cookies and login
//! cookies are trusted as-is, so this is a demonstration, not authentication.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SHOP_NAME: &str = "Demo Shop";
/// Stand-in for WordPress' `COOKIEHASH` (the md5 of the site URL).
const COOKIE_HASH: &str = "5f4dcc3b5aa765d61d8327deb882cf99";
const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password";
const MAX_QTY: u32 = 99;
/// Like PHP's `max_input_vars`: further form fields are ignored.
const MAX_FORM_FIELDS: usize = 1000;
const SLOW_DELAY: Duration = Duration::from_secs(2);
const LOGIN_LIFETIME_SECS: u64 = 2 * 24 * 3600;
const STORE_CART_PATH: &str = "/wp-json/wc/store/v1/cart";

const HTML: &str = "text/html; charset=utf-8";
const NO_STORE: &str = "no-store";
const NO_STORE_PRIVATE: &str = "no-store, private";
/// What WordPress' `nocache_headers()` sends.
const WP_NOCACHE: &str = "no-cache, must-revalidate, max-age=0, no-store, private";
const COOKIE_ATTRS: &str = "Path=/; HttpOnly; SameSite=Lax";

const CART_COOKIE: &str = "demo_cart";
const ITEMS_COOKIE: &str = "woocommerce_items_in_cart";
const CART_HASH_COOKIE: &str = "woocommerce_cart_hash";
const SESSION_PREFIX: &str = "wp_woocommerce_session_";
const LOGGED_IN_PREFIX: &str = "wordpress_logged_in_";
const SEC_PREFIX: &str = "wordpress_sec_";

/// One catalogue entry.
struct Product {
    slug: &'static str,
    name: &'static str,
    price_cents: u32,
    category: &'static str,
    description: &'static str,
}

/// One product category.
struct Category {
    slug: &'static str,
    name: &'static str,
}

const CATEGORIES: &[Category] = &[
    Category {
        slug: "clothing",
        name: "Clothing",
    },
    Category {
        slug: "accessories",
        name: "Accessories",
    },
];

const PRODUCTS: &[Product] = &[
    Product {
        slug: "hoodie-with-logo",
        name: "Hoodie with Logo",
        price_cents: 4500,
        category: "clothing",
        description: "A warm cotton hoodie with an embroidered logo on the chest.",
    },
    Product {
        slug: "t-shirt",
        name: "T-Shirt",
        price_cents: 1800,
        category: "clothing",
        description: "A soft organic cotton t-shirt with a classic fit.",
    },
    Product {
        slug: "long-sleeve-tee",
        name: "Long Sleeve Tee",
        price_cents: 2500,
        category: "clothing",
        description: "A lightweight long sleeve tee for cool mornings.",
    },
    Product {
        slug: "polo",
        name: "Polo",
        price_cents: 2000,
        category: "clothing",
        description: "A breathable piqué polo shirt.",
    },
    Product {
        slug: "beanie",
        name: "Beanie",
        price_cents: 1800,
        category: "accessories",
        description: "A ribbed knit beanie that keeps your ears warm.",
    },
    Product {
        slug: "belt",
        name: "Belt",
        price_cents: 5500,
        category: "accessories",
        description: "A full-grain leather belt with a brushed steel buckle.",
    },
    Product {
        slug: "cap",
        name: "Cap",
        price_cents: 1600,
        category: "accessories",
        description: "A six-panel cotton cap with an adjustable strap.",
    },
    Product {
        slug: "sunglasses",
        name: "Sunglasses",
        price_cents: 9000,
        category: "accessories",
        description: "Polarised sunglasses with a light acetate frame.",
    },
];

/// A request as seen by the shop; header names may come in any case.
#[derive(Debug, Clone, Copy)]
pub struct ShopRequest<'a> {
    /// Request method, e.g. `GET` (case-sensitive, as in HTTP).
    pub method: &'a str,
    /// Request target in origin form, e.g. `/?s=hoodie`.
    pub path_and_query: &'a str,
    /// Request headers as (name, value) pairs.
    pub headers: &'a [(String, String)],
    /// Request body (urlencoded forms for POST).
    pub body: &'a [u8],
}

/// A response; the caller adds `content-length` and drops the body for HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers with lowercase names, in order (`set-cookie` may repeat).
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
    /// How long the caller must wait before answering (non-zero only for `/slow/`).
    pub delay: Duration,
}

/// The sample shop; cheap to share between connection handlers (`Send + Sync`).
#[derive(Debug)]
pub struct Shop {
    seed: u64,
    sessions: AtomicU64,
    orders: AtomicU64,
}

impl Default for Shop {
    fn default() -> Self {
        Self::new()
    }
}

impl Shop {
    /// Creates a shop with a fresh random seed for session ids and tokens.
    #[must_use]
    pub fn new() -> Self {
        Shop {
            seed: random_seed(),
            sessions: AtomicU64::new(1),
            orders: AtomicU64::new(1001),
        }
    }

    /// Answers one request; never panics, whatever the input.
    #[must_use]
    pub fn handle(&self, req: &ShopRequest) -> ShopResponse {
        let (path, query) = split_target(req.path_and_query);
        match req.method {
            "GET" | "HEAD" => self.handle_get(req, path, query),
            "POST" => self.handle_post(req, path),
            _ => method_not_allowed("GET, HEAD, POST"),
        }
    }

    fn handle_get(&self, req: &ShopRequest, path: &str, query: &str) -> ShopResponse {
        let params = parse_form(query);
        match path {
            "/healthz" => healthz(),
            "/robots.txt" => robots(),
            "/" => self.home(req, &params),
            "/cart/" => match param(&params, "add-to-cart") {
                Some(slug) => self.add_to_cart(req, slug, param(&params, "quantity")),
                None => cart_page(req),
            },
            "/checkout/" => checkout_page(req),
            "/my-account/" => my_account(req),
            "/wp-login.php" => login_get(&params),
            "/slow/" => slow_page(),
            STORE_CART_PATH => store_cart(req),
            _ => catalogue_or_not_found(path, query),
        }
    }

    fn handle_post(&self, req: &ShopRequest, path: &str) -> ShopResponse {
        let form = parse_form(&String::from_utf8_lossy(req.body));
        match path {
            "/cart/" => match param(&form, "add-to-cart") {
                Some(slug) => self.add_to_cart(req, slug, param(&form, "quantity")),
                None => redirect(302, "/cart/").header("cache-control", NO_STORE),
            },
            "/checkout/" => self.place_order(req, &form),
            "/wp-login.php" => self.login_post(&form),
            _ if is_get_only(path) => method_not_allowed("GET, HEAD"),
            _ => not_found(),
        }
    }

    fn home(&self, req: &ShopRequest, params: &[(String, String)]) -> ShopResponse {
        if let Some(slug) = param(params, "add-to-cart") {
            return self.add_to_cart(req, slug, param(params, "quantity"));
        }
        match param(params, "s") {
            Some(query) => search_page(query),
            None => home_page(),
        }
    }

    /// Adds to the cart cookie and redirects to `/cart/`, like WooCommerce.
    fn add_to_cart(&self, req: &ShopRequest, slug: &str, quantity: Option<&str>) -> ShopResponse {
        let Some(product) = find_product(slug) else {
            return not_found();
        };
        let qty = quantity.map_or(Some(1), parse_qty).unwrap_or(1);
        let mut cart = Cart::from_request(req);
        cart.add(product, qty);
        let resp = redirect(302, "/cart/").header("cache-control", NO_STORE);
        if cart.is_empty() {
            return resp;
        }
        let encoded = cart.encode();
        let cart_hash = format!("{:016x}", fnv1a(encoded.as_bytes()));
        let session_name = format!("{SESSION_PREFIX}{COOKIE_HASH}");
        let session = match cookie(req, &session_name) {
            Some(existing) if existing.len() <= 128 && is_cookie_value(existing) => {
                existing.to_string()
            }
            _ => format!("t_{:016x}", self.next_id()),
        };
        resp.set_cookie(CART_COOKIE, &encoded)
            .set_cookie(ITEMS_COOKIE, "1")
            .set_cookie(CART_HASH_COOKIE, &cart_hash)
            .set_cookie(&session_name, &session)
    }

    fn place_order(&self, req: &ShopRequest, form: &[(String, String)]) -> ShopResponse {
        let cart = Cart::from_request(req);
        let first_name = param(form, "billing_first_name").unwrap_or("").trim();
        if first_name.is_empty() {
            let error = "<ul class=\"woocommerce-error\" role=\"alert\"><li><strong>Billing First name</strong> is a required field.</li></ul>";
            return checkout_form(&cart, error, form).header("cache-control", NO_STORE);
        }
        let order = self.orders.fetch_add(1, Ordering::Relaxed);
        let summary = if cart.is_empty() {
            String::new()
        } else {
            cart_table(&cart)
        };
        let content = format!(
            "<h1>Order received</h1><p class=\"woocommerce-thankyou-order-received\">Thank you, {}. Your order #{order} has been received.</p>{summary}",
            escape_html(first_name)
        );
        html_page(200, "Order received", &content)
            .header("cache-control", NO_STORE)
            .expire_cookie(CART_COOKIE)
            .expire_cookie(ITEMS_COOKIE)
            .expire_cookie(CART_HASH_COOKIE)
    }

    fn login_post(&self, form: &[(String, String)]) -> ShopResponse {
        let user = param(form, "log").unwrap_or("").trim();
        let pass = param(form, "pwd").unwrap_or("");
        match login_error(user, pass) {
            Some(error) => login_page(&format!("<div id=\"login_error\">{error}</div>"), user),
            None => self.login_success(),
        }
    }

    /// Sets WordPress-like auth cookies: `user|expiration|token|hmac`.
    fn login_success(&self) -> ShopResponse {
        let expiry = unix_now().saturating_add(LOGIN_LIFETIME_SECS);
        let token = format!("{:016x}{:016x}", self.next_id(), self.next_id());
        let payload = format!("{DEMO_USER}|{expiry}|{token}");
        let mac = fnv1a(format!("{payload}|{}", self.seed).as_bytes());
        let value = format!("{payload}|{mac:016x}");
        redirect(302, "/my-account/")
            .header("cache-control", WP_NOCACHE)
            .set_cookie(&format!("{SEC_PREFIX}{COOKIE_HASH}"), &value)
            .set_cookie(&format!("{LOGGED_IN_PREFIX}{COOKIE_HASH}"), &value)
    }

    /// Unique, hard-to-guess id: a bijective mix of the seeded session counter.
    fn next_id(&self) -> u64 {
        mix64(self.seed ^ self.sessions.fetch_add(1, Ordering::Relaxed))
    }
}

impl ShopResponse {
    /// A response with a content type and the `x-demo-origin` marker.
    fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        ShopResponse {
            status,
            headers: vec![
                ("content-type".to_string(), content_type.to_string()),
                ("x-demo-origin".to_string(), "1".to_string()),
            ],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn set_cookie(self, name: &str, value: &str) -> Self {
        self.header("set-cookie", format!("{name}={value}; {COOKIE_ATTRS}"))
    }

    fn expire_cookie(self, name: &str) -> Self {
        self.header("set-cookie", format!("{name}=; Max-Age=0; {COOKIE_ATTRS}"))
    }
}

// ---------------------------------------------------------------------------
// Pages

fn healthz() -> ShopResponse {
    ShopResponse::new(200, "text/plain; charset=utf-8", "ok").header("cache-control", NO_STORE)
}

/// Like WordPress's virtual robots.txt: cheap, so the shop presets use it as
/// their health check path.
fn robots() -> ShopResponse {
    ShopResponse::new(200, "text/plain; charset=utf-8", "User-agent: *\nDisallow: /wp-admin/\nDisallow: /cart/\nDisallow: /checkout/\nDisallow: /my-account/\n")
}

fn home_page() -> ShopResponse {
    let categories: String = CATEGORIES
        .iter()
        .map(|c| {
            format!(
                "<li><a href=\"/product-category/{}/\">{}</a></li>",
                c.slug,
                escape_html(c.name)
            )
        })
        .collect();
    let content = format!(
        "<h1>Shop</h1><ul class=\"product-categories\">{categories}</ul>{}",
        product_grid(PRODUCTS.iter())
    );
    html_page(200, "Shop", &content)
}

fn search_page(query: &str) -> ShopResponse {
    let needle = query.trim().to_lowercase();
    let hits: Vec<&'static Product> = PRODUCTS
        .iter()
        .filter(|p| p.name.to_lowercase().contains(&needle))
        .collect();
    let results = if hits.is_empty() {
        "<p class=\"woocommerce-info\">No products were found matching your selection.</p>"
            .to_string()
    } else {
        product_grid(hits)
    };
    let content = format!(
        "<h1>Search results: &ldquo;{}&rdquo;</h1>{results}",
        escape_html(query)
    );
    html_page(
        200,
        &format!("Search results for \u{201c}{query}\u{201d}"),
        &content,
    )
}

fn product_page(product: &Product) -> ShopResponse {
    let category = find_category(product.category).map_or("", |c| c.name);
    let content = format!(
        "<nav class=\"woocommerce-breadcrumb\"><a href=\"/\">Home</a> / <a href=\"/product-category/{cat_slug}/\">{cat}</a> / {name}</nav>\
         <div class=\"product\"><h1 class=\"product_title\">{name}</h1><p class=\"price\">{price}</p><p>{desc}</p>\
         <form class=\"cart\" method=\"post\" action=\"/cart/\">\
         <input type=\"hidden\" name=\"add-to-cart\" value=\"{slug}\">\
         <label>Quantity <input type=\"number\" name=\"quantity\" value=\"1\" min=\"1\" max=\"{MAX_QTY}\"></label> \
         <button type=\"submit\" class=\"single_add_to_cart_button button\">Add to cart</button></form></div>",
        cat_slug = product.category,
        cat = escape_html(category),
        name = escape_html(product.name),
        price = format_price(u64::from(product.price_cents)),
        desc = escape_html(product.description),
        slug = escape_html(product.slug),
    );
    html_page(200, product.name, &content)
}

fn category_page(category: &Category) -> ShopResponse {
    let products = PRODUCTS.iter().filter(|p| p.category == category.slug);
    let content = format!(
        "<h1>{}</h1>{}",
        escape_html(category.name),
        product_grid(products)
    );
    html_page(200, category.name, &content)
}

fn cart_page(req: &ShopRequest) -> ShopResponse {
    let cart = Cart::from_request(req);
    let content = if cart.is_empty() {
        "<h1>Cart</h1><p class=\"cart-empty\">Your cart is currently empty.</p>\
         <p><a class=\"button\" href=\"/\">Return to shop</a></p>"
            .to_string()
    } else {
        format!(
            "<h1>Cart</h1>{}<p><a class=\"button checkout-button\" href=\"/checkout/\">Proceed to checkout</a></p>",
            cart_table(&cart)
        )
    };
    html_page(200, "Cart", &content).header("cache-control", NO_STORE_PRIVATE)
}

fn checkout_page(req: &ShopRequest) -> ShopResponse {
    let cart = Cart::from_request(req);
    if cart.is_empty() {
        return redirect(302, "/cart/").header("cache-control", NO_STORE);
    }
    checkout_form(&cart, "", &[]).header("cache-control", NO_STORE_PRIVATE)
}

/// The billing form, prefilled from `values` (escaped) and preceded by `error_html`.
fn checkout_form(cart: &Cart, error_html: &str, values: &[(String, String)]) -> ShopResponse {
    const FIELDS: &[(&str, &str, &str)] = &[
        ("billing_first_name", "First name", "text"),
        ("billing_last_name", "Last name", "text"),
        ("billing_address_1", "Street address", "text"),
        ("billing_email", "Email address", "email"),
    ];
    let fields: String = FIELDS
        .iter()
        .map(|(name, label, kind)| {
            let value = escape_html(param(values, name).unwrap_or(""));
            format!("<p><label for=\"{name}\">{label}</label> <input type=\"{kind}\" name=\"{name}\" id=\"{name}\" value=\"{value}\"></p>")
        })
        .collect();
    let summary = if cart.is_empty() {
        String::new()
    } else {
        cart_table(cart)
    };
    let content = format!(
        "<h1>Checkout</h1>{error_html}<form name=\"checkout\" method=\"post\" class=\"checkout woocommerce-checkout\" action=\"/checkout/\">\
         <h2>Billing details</h2>{fields}<h2>Your order</h2>{summary}\
         <button type=\"submit\" id=\"place_order\">Place order</button></form>"
    );
    html_page(200, "Checkout", &content)
}

fn my_account(req: &ShopRequest) -> ShopResponse {
    let content = match logged_in_user(req) {
        Some(user) => account_dashboard(&user),
        None => format!("<h1>My account</h1><h2>Login</h2>{}", login_form("")),
    };
    html_page(200, "My account", &content).header("cache-control", NO_STORE_PRIVATE)
}

fn account_dashboard(user: &str) -> String {
    let user = escape_html(user);
    format!(
        "<h1>My account</h1><p>Hello {user} (not {user}? <a href=\"/wp-login.php?action=logout\">Log out</a>)</p>\
         <h2>Orders</h2><table class=\"woocommerce-orders-table\"><thead><tr><th>Order</th><th>Date</th><th>Status</th><th>Total</th></tr></thead>\
         <tbody><tr><td>#1000</td><td>2024-03-02</td><td>Completed</td><td>{}</td></tr>\
         <tr><td>#987</td><td>2024-01-15</td><td>Completed</td><td>{}</td></tr></tbody></table>",
        format_price(6300),
        format_price(1800)
    )
}

fn login_get(params: &[(String, String)]) -> ShopResponse {
    if param(params, "action") == Some("logout") {
        return redirect(302, "/wp-login.php?loggedout=true")
            .header("cache-control", WP_NOCACHE)
            .expire_cookie(&format!("{SEC_PREFIX}{COOKIE_HASH}"))
            .expire_cookie(&format!("{LOGGED_IN_PREFIX}{COOKIE_HASH}"));
    }
    let notice = if param(params, "loggedout") == Some("true") {
        "<p class=\"message\">You are now logged out.</p>"
    } else {
        ""
    };
    login_page(notice, "")
}

/// The login page; answers 200 both when shown and when a login fails, like WordPress.
fn login_page(notice_html: &str, user: &str) -> ShopResponse {
    let content = format!(
        "<h1>Log In</h1>{notice_html}{}<p class=\"demo-hint\">Demo credentials: <code>{DEMO_USER}</code> / <code>{DEMO_PASSWORD}</code></p>",
        login_form(user)
    );
    html_page(200, "Log In", &content).header("cache-control", WP_NOCACHE)
}

fn login_form(user: &str) -> String {
    format!(
        "<form name=\"loginform\" id=\"loginform\" action=\"/wp-login.php\" method=\"post\">\
         <p><label for=\"user_login\">Username or Email Address</label> <input type=\"text\" name=\"log\" id=\"user_login\" value=\"{}\" autocomplete=\"username\"></p>\
         <p><label for=\"user_pass\">Password</label> <input type=\"password\" name=\"pwd\" id=\"user_pass\" autocomplete=\"current-password\"></p>\
         <p class=\"submit\"><input type=\"submit\" name=\"wp-submit\" id=\"wp-submit\" value=\"Log In\"></p></form>",
        escape_html(user)
    )
}

/// WordPress' error text for a failed login, or `None` when the credentials are right.
fn login_error(user: &str, pass: &str) -> Option<String> {
    let shown = escape_html(user);
    if user.is_empty() {
        Some("<strong>Error:</strong> The username field is empty.".to_string())
    } else if pass.is_empty() {
        Some("<strong>Error:</strong> The password field is empty.".to_string())
    } else if user != DEMO_USER {
        Some(format!(
            "<strong>Error:</strong> The username <strong>{shown}</strong> is not registered on this site. If you are unsure of your username, try your email address instead."
        ))
    } else if pass != DEMO_PASSWORD {
        Some(format!(
            "<strong>Error:</strong> The password you entered for the username <strong>{shown}</strong> is incorrect."
        ))
    } else {
        None
    }
}

fn slow_page() -> ShopResponse {
    let content = format!(
        "<h1>Slow page</h1><p>The origin waits {} seconds before answering this page, like an uncached WordPress page under load.</p>",
        SLOW_DELAY.as_secs()
    );
    let mut resp = html_page(200, "Slow page", &content);
    resp.delay = SLOW_DELAY;
    resp
}

fn store_cart(req: &ShopRequest) -> ShopResponse {
    let cart = Cart::from_request(req);
    let items: Vec<String> = cart
        .lines
        .iter()
        .map(|(p, qty)| {
            format!(
                "{{\"key\":\"{slug}\",\"name\":\"{name}\",\"quantity\":{qty},\"prices\":{{\"price\":\"{price}\",\"currency_code\":\"EUR\",\"currency_minor_unit\":2}}}}",
                slug = escape_json(p.slug),
                name = escape_json(p.name),
                price = p.price_cents
            )
        })
        .collect();
    let body = format!(
        "{{\"items\":[{}],\"items_count\":{},\"totals\":{{\"total_price\":\"{}\",\"currency_code\":\"EUR\"}}}}",
        items.join(","),
        cart.items_count(),
        cart.total_cents()
    );
    ShopResponse::new(200, "application/json", body).header("cache-control", NO_STORE)
}

fn not_found() -> ShopResponse {
    let content = "<h1>Oops! That page can&rsquo;t be found.</h1>\
                   <p>It looks like nothing was found at this location. Maybe try a search?</p>";
    html_page(404, "Page not found", content).header("cache-control", WP_NOCACHE)
}

fn method_not_allowed(allow: &str) -> ShopResponse {
    ShopResponse::new(405, "text/plain; charset=utf-8", "Method Not Allowed").header("allow", allow)
}

/// A redirect; control characters are dropped from the location (no header injection).
fn redirect(status: u16, location: &str) -> ShopResponse {
    let location: String = location.chars().filter(|c| !c.is_control()).collect();
    ShopResponse::new(status, HTML, Vec::new()).header("location", location)
}

// ---------------------------------------------------------------------------
// Routing helpers

/// A catalogue page resolved from its path.
enum Catalogue {
    Product(&'static Product),
    Category(&'static Category),
}

/// Resolves `/product/<slug>/` and `/product-category/<slug>/`; the flag is
/// false when the trailing slash is missing.
fn resolve_catalogue(path: &str) -> Option<(Catalogue, bool)> {
    if let Some(rest) = path.strip_prefix("/product/") {
        let (slug, canonical) = split_trailing_slash(rest);
        return find_product(slug).map(|p| (Catalogue::Product(p), canonical));
    }
    let rest = path.strip_prefix("/product-category/")?;
    let (slug, canonical) = split_trailing_slash(rest);
    find_category(slug).map(|c| (Catalogue::Category(c), canonical))
}

fn split_trailing_slash(rest: &str) -> (&str, bool) {
    match rest.strip_suffix('/') {
        Some(slug) => (slug, true),
        None => (rest, false),
    }
}

/// Catalogue pages, WordPress-style 301s to add a missing slash, or 404.
fn catalogue_or_not_found(path: &str, query: &str) -> ShopResponse {
    match resolve_catalogue(path) {
        Some((Catalogue::Product(p), true)) => product_page(p),
        Some((Catalogue::Category(c), true)) => category_page(c),
        Some((_, false)) => add_slash(path, query),
        None if matches!(path, "/cart" | "/checkout" | "/my-account" | "/slow") => {
            add_slash(path, query)
        }
        None => not_found(),
    }
}

fn add_slash(path: &str, query: &str) -> ShopResponse {
    if query.is_empty() {
        redirect(301, &format!("{path}/"))
    } else {
        redirect(301, &format!("{path}/?{query}"))
    }
}

/// Pages that exist but do not accept POST.
fn is_get_only(path: &str) -> bool {
    matches!(
        path,
        "/" | "/healthz" | "/robots.txt" | "/my-account/" | "/slow/" | STORE_CART_PATH
    ) || matches!(resolve_catalogue(path), Some((_, true)))
}

fn find_product(slug: &str) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| p.slug == slug)
}

fn find_category(slug: &str) -> Option<&'static Category> {
    CATEGORIES.iter().find(|c| c.slug == slug)
}

// ---------------------------------------------------------------------------
// Cart

/// Cart contents, stored in the `demo_cart` cookie as `slug:qty|slug:qty`.
#[derive(Default)]
struct Cart {
    lines: Vec<(&'static Product, u32)>,
}

impl Cart {
    fn from_request(req: &ShopRequest) -> Self {
        cookie(req, CART_COOKIE)
            .map(Cart::parse)
            .unwrap_or_default()
    }

    /// Parses a cookie value; unknown products and bad quantities are skipped.
    /// Accepts `,` as well as `|` between items.
    fn parse(value: &str) -> Self {
        let decoded = percent_decode(value, false);
        let mut cart = Cart::default();
        for entry in decoded.split([',', '|']) {
            let Some((slug, qty)) = entry.split_once(':') else {
                continue;
            };
            if let (Some(product), Some(qty)) = (find_product(slug.trim()), parse_qty(qty)) {
                cart.add(product, qty);
            }
        }
        cart
    }

    fn add(&mut self, product: &'static Product, qty: u32) {
        if qty == 0 {
            return;
        }
        match self.lines.iter_mut().find(|(p, _)| p.slug == product.slug) {
            Some(line) => line.1 = line.1.saturating_add(qty).min(MAX_QTY),
            None => self.lines.push((product, qty.min(MAX_QTY))),
        }
    }

    /// Cookie-safe encoding (`|` is a valid cookie octet, `,` is not).
    fn encode(&self) -> String {
        let parts: Vec<String> = self
            .lines
            .iter()
            .map(|(p, q)| format!("{}:{q}", p.slug))
            .collect();
        parts.join("|")
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    fn items_count(&self) -> u32 {
        self.lines.iter().map(|(_, q)| *q).sum()
    }

    fn total_cents(&self) -> u64 {
        self.lines
            .iter()
            .map(|(p, q)| u64::from(p.price_cents) * u64::from(*q))
            .sum()
    }
}

fn cart_table(cart: &Cart) -> String {
    let rows: String = cart
        .lines
        .iter()
        .map(|(p, q)| {
            format!(
                "<tr class=\"cart_item\"><td class=\"product-name\"><a href=\"/product/{}/\">{}</a></td><td class=\"product-price\">{}</td><td class=\"product-quantity\">{q}</td><td class=\"product-subtotal\">{}</td></tr>",
                p.slug,
                escape_html(p.name),
                format_price(u64::from(p.price_cents)),
                format_price(u64::from(p.price_cents) * u64::from(*q))
            )
        })
        .collect();
    format!(
        "<table class=\"shop_table cart\"><thead><tr><th>Product</th><th>Price</th><th>Quantity</th><th>Subtotal</th></tr></thead>\
         <tbody>{rows}</tbody><tfoot><tr class=\"order-total\"><th colspan=\"3\">Total</th><td>{}</td></tr></tfoot></table>",
        format_price(cart.total_cents())
    )
}

/// A quantity: digits only, saturating, capped at [`MAX_QTY`].
fn parse_qty(raw: &str) -> Option<u32> {
    let digits = raw.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = digits.bytes().fold(0u32, |acc, b| {
        acc.saturating_mul(10).saturating_add(u32::from(b - b'0'))
    });
    Some(n.min(MAX_QTY))
}

// ---------------------------------------------------------------------------
// Cookies

/// All (name, value) cookie pairs from every `cookie` header.
fn cookies<'a>(req: &ShopRequest<'a>) -> impl Iterator<Item = (&'a str, &'a str)> {
    let headers: &'a [(String, String)] = req.headers;
    headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, value)| value.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim(), value.trim().trim_matches('"')))
        })
}

fn cookie<'a>(req: &ShopRequest<'a>, name: &str) -> Option<&'a str> {
    cookies(req).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// The user named by a `wordpress_logged_in_*=<user>|...` cookie (not verified).
fn logged_in_user(req: &ShopRequest) -> Option<String> {
    let (_, value) = cookies(req).find(|(n, _)| n.starts_with(LOGGED_IN_PREFIX))?;
    let decoded = percent_decode(value, false);
    let (user, _) = decoded.split_once('|')?;
    let user = user.trim();
    (!user.is_empty()).then(|| user.to_string())
}

/// True when every byte is an RFC 6265 cookie-octet.
fn is_cookie_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E))
}

// ---------------------------------------------------------------------------
// Query strings and forms

/// Splits a request target into path and query (fragment dropped).
fn split_target(target: &str) -> (&str, &str) {
    let target = target.split_once('#').map_or(target, |(before, _)| before);
    target.split_once('?').unwrap_or((target, ""))
}

/// Parses `a=1&b=2` into decoded pairs (at most [`MAX_FORM_FIELDS`]).
fn parse_form(input: &str) -> Vec<(String, String)> {
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .take(MAX_FORM_FIELDS)
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name, true), percent_decode(value, true))
        })
        .collect()
}

/// The first value of a form field.
fn param<'f>(form: &'f [(String, String)], name: &str) -> Option<&'f str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Percent-decodes; invalid escapes stay literal, invalid UTF-8 becomes U+FFFD.
fn percent_decode(input: &str, plus_as_space: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|h| hex_value(*h));
            let lo = bytes.get(i + 2).and_then(|l| hex_value(*l));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(if plus_as_space && b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// HTML and JSON output

/// Wraps page content in the shared layout (title is escaped here).
fn html_page(status: u16, title: &str, content: &str) -> ShopResponse {
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} &ndash; {SHOP_NAME}</title>\n<style>{STYLE}</style>\n</head>\n\
         <body class=\"woocommerce\">\n<header class=\"site-header\"><a class=\"site-title\" href=\"/\">{SHOP_NAME}</a>\n\
         <nav><a href=\"/\">Shop</a> <a href=\"/product-category/clothing/\">Clothing</a> <a href=\"/cart/\">Cart</a> \
         <a href=\"/my-account/\">My account</a> <a href=\"/checkout/\">Checkout</a></nav>\n\
         <form role=\"search\" method=\"get\" action=\"/\"><input type=\"search\" name=\"s\" placeholder=\"Search products\"> <button type=\"submit\">Search</button></form>\n\
         </header>\n<main>\n{content}\n</main>\n<footer>{SHOP_NAME} &ndash; a sample shop served by <code>rempart demo</code></footer>\n</body>\n</html>\n",
        title = escape_html(title)
    );
    ShopResponse::new(status, HTML, body)
}

const STYLE: &str = "body{font-family:sans-serif;max-width:60rem;margin:0 auto;padding:1rem;color:#222}\
header{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;border-bottom:1px solid #ddd;padding-bottom:.5rem}\
.site-title{font-weight:bold;font-size:1.4rem;text-decoration:none;color:#7f54b3}\
nav a{margin-right:.75rem}ul.products{display:grid;grid-template-columns:repeat(auto-fill,minmax(12rem,1fr));gap:1rem;list-style:none;padding:0}\
li.product{border:1px solid #eee;padding:1rem}.price{color:#77a464;font-weight:bold}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eee;padding:.4rem;text-align:left}\
#login_error,.woocommerce-error{border-left:4px solid #d63638;padding:.5rem 1rem;list-style:none}\
footer{margin-top:2rem;color:#777;font-size:.9rem}";

fn product_grid<I: IntoIterator<Item = &'static Product>>(products: I) -> String {
    let items: String = products.into_iter().map(product_card).collect();
    format!("<ul class=\"products\">{items}</ul>")
}

fn product_card(p: &Product) -> String {
    format!(
        "<li class=\"product\"><a href=\"/product/{slug}/\"><h2 class=\"woocommerce-loop-product__title\">{name}</h2>\
         <span class=\"price\">{price}</span></a> \
         <a class=\"button add_to_cart_button\" href=\"/?add-to-cart={slug}\" rel=\"nofollow\">Add to cart</a></li>",
        slug = p.slug,
        name = escape_html(p.name),
        price = format_price(u64::from(p.price_cents))
    )
}

fn format_price(cents: u64) -> String {
    format!("&euro;{}.{:02}", cents / 100, cents % 100)
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn escape_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            _ => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Ids and hashing

fn random_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    hasher.finish()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// SplitMix64 finaliser: a bijection, so distinct inputs give distinct ids.
fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, for cart hashes and the demo cookie "MAC".
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(shop: &Shop, method: &str, target: &str, cookie: &str, body: &[u8]) -> ShopResponse {
        let headers = if cookie.is_empty() {
            Vec::new()
        } else {
            vec![("cookie".to_string(), cookie.to_string())]
        };
        let req = ShopRequest {
            method,
            path_and_query: target,
            headers: &headers,
            body,
        };
        shop.handle(&req)
    }

    fn get(shop: &Shop, target: &str) -> ShopResponse {
        send(shop, "GET", target, "", b"")
    }

    fn text(resp: &ShopResponse) -> String {
        String::from_utf8(resp.body.clone()).unwrap()
    }

    fn headers<'r>(resp: &'r ShopResponse, name: &str) -> Vec<&'r str> {
        resp.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn header<'r>(resp: &'r ShopResponse, name: &str) -> Option<&'r str> {
        headers(resp, name).first().copied()
    }

    /// What a browser would send back after this response.
    fn jar(resp: &ShopResponse) -> String {
        headers(resp, "set-cookie")
            .iter()
            .filter(|c| !c.contains("Max-Age=0"))
            .filter_map(|c| c.split(';').next())
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn shop_is_send_sync_and_default() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Shop>();
        let resp = get(&Shop::default(), "/healthz");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"ok");
        assert_eq!(
            header(&resp, "content-type"),
            Some("text/plain; charset=utf-8")
        );
    }

    #[test]
    fn home_lists_products() {
        let resp = get(&Shop::new(), "/");
        assert_eq!(resp.status, 200);
        assert_eq!(
            header(&resp, "content-type"),
            Some("text/html; charset=utf-8")
        );
        let body = text(&resp);
        assert!(PRODUCTS.len() >= 6);
        for p in PRODUCTS {
            assert!(
                body.contains(&format!("href=\"/product/{}/\"", p.slug)),
                "{}",
                p.slug
            );
        }
        for link in [
            "/product-category/clothing/",
            "/cart/",
            "/my-account/",
            "/checkout/",
        ] {
            assert!(body.contains(&format!("href=\"{link}\"")));
        }
        assert!(body.contains("Demo Shop"));
    }

    #[test]
    fn catalogue_pages_have_no_cache_control() {
        let shop = Shop::new();
        for target in [
            "/",
            "/product/beanie/",
            "/product-category/accessories/",
            "/?s=cap",
        ] {
            let resp = get(&shop, target);
            assert_eq!(resp.status, 200, "{target}");
            assert_eq!(header(&resp, "cache-control"), None, "{target}");
        }
    }

    #[test]
    fn every_response_is_marked_and_has_no_content_length() {
        let shop = Shop::new();
        for (method, target) in [
            ("GET", "/"),
            ("GET", "/nope"),
            ("PUT", "/"),
            ("POST", "/cart/"),
            ("GET", "/healthz"),
        ] {
            let resp = send(&shop, method, target, "", b"");
            assert_eq!(
                header(&resp, "x-demo-origin"),
                Some("1"),
                "{method} {target}"
            );
            assert!(!resp
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length")));
        }
    }

    #[test]
    fn product_page_and_unknown_product() {
        let shop = Shop::new();
        let resp = get(&shop, "/product/hoodie-with-logo/");
        assert_eq!(resp.status, 200);
        let body = text(&resp);
        assert!(body.contains("Hoodie with Logo"));
        assert!(body.contains("<form class=\"cart\" method=\"post\" action=\"/cart/\">"));
        assert!(body.contains("name=\"add-to-cart\" value=\"hoodie-with-logo\""));

        let missing = get(&shop, "/product/no-such-thing/");
        assert_eq!(missing.status, 404);
        assert!(text(&missing).contains("<html"));
        assert_eq!(get(&shop, "/product-category/shoes/").status, 404);
        assert_eq!(get(&shop, "/product/beanie/extra/").status, 404);
    }

    #[test]
    fn category_lists_only_its_products() {
        let body = text(&get(&Shop::new(), "/product-category/clothing/"));
        assert!(body.contains("/product/hoodie-with-logo/"));
        assert!(!body.contains("/product/sunglasses/"));
    }

    #[test]
    fn missing_trailing_slash_redirects() {
        let resp = get(&Shop::new(), "/product/cap?x=1");
        assert_eq!(resp.status, 301);
        assert_eq!(header(&resp, "location"), Some("/product/cap/?x=1"));
        assert_eq!(
            header(&get(&Shop::new(), "/cart"), "location"),
            Some("/cart/")
        );
    }

    #[test]
    fn search_finds_and_escapes() {
        let shop = Shop::new();
        let body = text(&get(&shop, "/?s=HOODIE"));
        assert!(body.contains("/product/hoodie-with-logo/"));
        assert!(!body.contains("/product/belt/"));

        let body = text(&get(&shop, "/?s=%3Cscript%3Ealert(1)%3C/script%3E+x"));
        assert!(!body.contains("<script>"));
        assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt; x"));
        assert!(body.contains("No products were found"));

        let body = text(&get(&shop, "/?s=\"><img src=x onerror=alert(1)>"));
        assert!(!body.contains("<img"));
    }

    #[test]
    fn add_to_cart_then_cart_page() {
        let shop = Shop::new();
        let resp = send(
            &shop,
            "POST",
            "/cart/",
            "",
            b"add-to-cart=beanie&quantity=2",
        );
        assert_eq!(resp.status, 302);
        assert_eq!(header(&resp, "location"), Some("/cart/"));
        let cookies = headers(&resp, "set-cookie");
        assert!(cookies.contains(&"demo_cart=beanie:2; Path=/; HttpOnly; SameSite=Lax"));
        assert!(cookies.contains(&"woocommerce_items_in_cart=1; Path=/; HttpOnly; SameSite=Lax"));
        assert!(cookies
            .iter()
            .any(|c| c.starts_with("woocommerce_cart_hash=")));
        assert!(cookies
            .iter()
            .any(|c| c.starts_with("wp_woocommerce_session_") && c.contains("=t_")));

        let again = send(&shop, "GET", "/?add-to-cart=cap", &jar(&resp), b"");
        assert_eq!(again.status, 302);
        let session = |r: &ShopResponse| {
            headers(r, "set-cookie")
                .into_iter()
                .find(|c| c.starts_with(SESSION_PREFIX))
                .map(String::from)
        };
        assert_eq!(session(&resp), session(&again), "session id is kept");

        let cart = send(&shop, "GET", "/cart/", &jar(&again), b"");
        assert_eq!(cart.status, 200);
        assert_eq!(header(&cart, "cache-control"), Some("no-store, private"));
        let body = text(&cart);
        assert!(body.contains("Beanie") && body.contains("Cap"));
        assert!(body.contains("&euro;52.00"), "2 x 18 + 16");

        let json = send(&shop, "GET", STORE_CART_PATH, &jar(&again), b"");
        assert_eq!(header(&json, "content-type"), Some("application/json"));
        assert_eq!(header(&json, "cache-control"), Some("no-store"));
        let body = text(&json);
        assert!(body.starts_with("{\"items\":[{\"key\":\"beanie\""));
        assert!(body.contains("\"items_count\":3"));
    }

    #[test]
    fn empty_cart_and_bad_cart_input() {
        let shop = Shop::new();
        assert!(text(&get(&shop, "/cart/")).contains("Your cart is currently empty"));
        assert_eq!(
            send(&shop, "POST", "/cart/", "", b"add-to-cart=nope").status,
            404
        );
        let huge = send(
            &shop,
            "POST",
            "/cart/",
            "",
            b"add-to-cart=belt&quantity=99999999999999999999",
        );
        assert!(jar(&huge).contains("demo_cart=belt:99"));
        let garbage = "demo_cart=belt:x,::,cap:3,cap:1|zzz:4|%ZZ";
        let json = text(&send(&shop, "GET", STORE_CART_PATH, garbage, b""));
        assert_eq!(json.matches("\"key\"").count(), 1);
        assert!(json.contains("\"items_count\":4"));
        assert!(get(&shop, STORE_CART_PATH)
            .body
            .starts_with(b"{\"items\":[],\"items_count\":0"));
    }

    #[test]
    fn checkout_flow() {
        let shop = Shop::new();
        let empty = get(&shop, "/checkout/");
        assert_eq!(empty.status, 302);
        assert_eq!(header(&empty, "location"), Some("/cart/"));

        let form = send(&shop, "GET", "/checkout/", "demo_cart=t-shirt:1", b"");
        assert_eq!(form.status, 200);
        let body = text(&form);
        for field in [
            "billing_first_name",
            "billing_last_name",
            "billing_address_1",
            "billing_email",
        ] {
            assert!(body.contains(&format!("name=\"{field}\"")));
        }
        assert!(body.contains("action=\"/checkout/\""));

        let order = send(
            &shop,
            "POST",
            "/checkout/",
            "demo_cart=t-shirt:1",
            b"billing_first_name=%3Cb%3EAda&billing_last_name=L&billing_email=a%40b.c",
        );
        assert_eq!(order.status, 200);
        assert_eq!(header(&order, "cache-control"), Some("no-store"));
        let body = text(&order);
        assert!(body.contains("Thank you, &lt;b&gt;Ada. Your order #1001 has been received."));
        let cookies = headers(&order, "set-cookie");
        assert!(cookies
            .iter()
            .any(|c| c.starts_with("demo_cart=;") && c.contains("Max-Age=0")));
        assert!(cookies
            .iter()
            .any(|c| c.starts_with("woocommerce_items_in_cart=;") && c.contains("Max-Age=0")));

        let second = send(&shop, "POST", "/checkout/", "", b"billing_first_name=Bob");
        assert!(text(&second).contains("Your order #1002 has been received."));
        let missing = send(&shop, "POST", "/checkout/", "", b"billing_last_name=x");
        assert!(text(&missing).contains("is a required field"));
    }

    #[test]
    fn login_success() {
        let shop = Shop::new();
        let form = get(&shop, "/wp-login.php");
        assert_eq!(form.status, 200);
        assert!(text(&form).contains("name=\"log\"") && text(&form).contains("name=\"pwd\""));

        let resp = send(
            &shop,
            "POST",
            "/wp-login.php",
            "",
            b"log=demo&pwd=demo-password&wp-submit=Log+In",
        );
        assert_eq!(resp.status, 302);
        assert_eq!(header(&resp, "location"), Some("/my-account/"));
        let cookies = headers(&resp, "set-cookie");
        let logged_in = cookies
            .iter()
            .find(|c| c.starts_with(LOGGED_IN_PREFIX))
            .unwrap();
        assert!(logged_in.contains("=demo|") && logged_in.contains("Path=/; HttpOnly"));
        assert!(cookies.iter().any(|c| c.starts_with(SEC_PREFIX)));

        let account = send(&shop, "GET", "/my-account/", &jar(&resp), b"");
        assert!(text(&account).contains("Hello demo"));
    }

    #[test]
    fn login_failure() {
        let shop = Shop::new();
        let wrong = send(&shop, "POST", "/wp-login.php", "", b"log=demo&pwd=nope");
        assert_eq!(wrong.status, 200);
        assert!(headers(&wrong, "set-cookie").is_empty());
        assert!(text(&wrong).contains(
            "<div id=\"login_error\"><strong>Error:</strong> The password you entered for the username <strong>demo</strong> is incorrect.</div>"
        ));
        let unknown = send(&shop, "POST", "/wp-login.php", "", b"log=%3Cx%3E&pwd=a");
        assert_eq!(unknown.status, 200);
        let body = text(&unknown);
        assert!(body.contains("<strong>&lt;x&gt;</strong> is not registered on this site"));
        assert!(!body.contains("<x>"));
        assert!(text(&send(&shop, "POST", "/wp-login.php", "", b""))
            .contains("The username field is empty."));
    }

    #[test]
    fn my_account_needs_logged_in_cookie() {
        let shop = Shop::new();
        let anon = get(&shop, "/my-account/");
        assert_eq!(anon.status, 200);
        let body = text(&anon);
        assert!(!body.contains("Hello"));
        assert!(body.contains("action=\"/wp-login.php\""));

        let cookie = "other=1; wordpress_logged_in_abc=%3Cmallory%3E%7C123%7Ctok";
        let resp = send(&shop, "GET", "/my-account/", cookie, b"");
        assert_eq!(header(&resp, "cache-control"), Some("no-store, private"));
        let body = text(&resp);
        assert!(body.contains("Hello &lt;mallory&gt;"));
        assert!(body.contains("Orders"));
        assert!(!text(&send(
            &shop,
            "GET",
            "/my-account/",
            "wordpress_logged_in_x=|1|t",
            b""
        ))
        .contains("Hello"));
    }

    #[test]
    fn logout_clears_login_cookies() {
        let resp = get(&Shop::new(), "/wp-login.php?action=logout");
        assert_eq!(resp.status, 302);
        let cookies = headers(&resp, "set-cookie");
        assert!(cookies
            .iter()
            .any(|c| c.starts_with(LOGGED_IN_PREFIX) && c.contains("Max-Age=0")));
    }

    #[test]
    fn slow_page_sets_delay() {
        let shop = Shop::new();
        let resp = get(&shop, "/slow/");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.delay, Duration::from_secs(2));
        assert!(text(&resp).contains("2 seconds"));
        assert_eq!(get(&shop, "/").delay, Duration::ZERO);
    }

    #[test]
    fn unknown_path_is_404() {
        let resp = get(&Shop::new(), "/wp-admin/<script>");
        assert_eq!(resp.status, 404);
        assert_eq!(
            header(&resp, "content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(!text(&resp).contains("<script>"));
        assert_eq!(send(&Shop::new(), "POST", "/nowhere", "", b"").status, 404);
    }

    #[test]
    fn methods() {
        let shop = Shop::new();
        let put = send(&shop, "PUT", "/", "", b"");
        assert_eq!(put.status, 405);
        assert_eq!(header(&put, "allow"), Some("GET, HEAD, POST"));
        assert_eq!(send(&shop, "get", "/", "", b"").status, 405);
        let post_home = send(&shop, "POST", "/", "", b"");
        assert_eq!(
            (post_home.status, header(&post_home, "allow")),
            (405, Some("GET, HEAD"))
        );
        let head = send(&shop, "HEAD", "/", "", b"");
        assert_eq!(head, get(&shop, "/"));
    }

    #[test]
    fn header_names_match_case_insensitively() {
        let headers = vec![("Cookie".to_string(), "demo_cart=cap:2".to_string())];
        let req = ShopRequest {
            method: "GET",
            path_and_query: "/cart/",
            headers: &headers,
            body: b"",
        };
        assert!(text(&Shop::new().handle(&req)).contains("Cap"));
    }

    #[test]
    fn percent_decoding_edge_cases() {
        assert_eq!(percent_decode("a+b%20c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("%", true), "%");
        assert_eq!(percent_decode("%4", true), "%4");
        assert_eq!(percent_decode("%zz%", true), "%zz%");
        assert_eq!(percent_decode("%%41", true), "%A");
        assert_eq!(percent_decode("%C3%A9", true), "é");
        assert_eq!(percent_decode("%ff%C3", true), "\u{fffd}\u{fffd}");
        assert_eq!(percent_decode("é%e9", true), "é\u{fffd}");
        assert_eq!(
            parse_form("&&=&a&b=1=2&c="),
            vec![
                (String::new(), String::new()),
                ("a".to_string(), String::new()),
                ("b".to_string(), "1=2".to_string()),
                ("c".to_string(), String::new()),
            ]
        );

        let shop = Shop::new();
        for target in [
            "/?s=%",
            "/?s=%E",
            "/?s=%ff%fe",
            "/?=&&&=",
            "/??s=?",
            "/?s",
            "",
            "*",
            "/#frag",
            "/%",
            "/product/%ff/",
        ] {
            let _ = get(&shop, target);
        }
        assert!(text(&get(&shop, "/?s=%ff")).contains('\u{fffd}'));
        let long = format!("/?s={}", "%".repeat(100_000));
        assert_eq!(get(&shop, &long).status, 200);
        let body: Vec<u8> = vec![
            0xff, b'l', b'o', b'g', b'=', 0xc3, b'&', b'p', b'w', b'd', b'=', b'x',
        ];
        assert_eq!(send(&shop, "POST", "/wp-login.php", "", &body).status, 200);
        let _ = send(
            &shop,
            "GET",
            "/cart/",
            ";;=;demo_cart;demo_cart==;demo_cart=\u{0}:1",
            b"",
        );
    }

    #[test]
    fn redirect_location_has_no_control_characters() {
        let resp = get(&Shop::new(), "/product/cap?a\r\nset-cookie:x");
        assert_eq!(
            header(&resp, "location"),
            Some("/product/cap/?aset-cookie:x")
        );
    }
}
