//! What may be cached, under which key, and for how long.
//!
//! The rules are compiled from the policy's `cache` block and swapped on
//! reload. They are pure functions of a request or response head, so they are
//! tested without a network.

use pingora::cache::cache_control::CacheControl;
use pingora::cache::filters::calculate_fresh_until;
use pingora::cache::{CacheMeta, CacheMetaDefaults};
use pingora::http::{RequestHeader, ResponseHeader};
use regex::Regex;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Session and login cookies of WordPress, WooCommerce and PrestaShop: a
/// request that carries one is personal and never served from, or stored in,
/// the cache.
pub const DEFAULT_BYPASS_COOKIES: &[&str] = &[
    "woocommerce_items_in_cart",
    "woocommerce_cart_hash",
    "wp_woocommerce_session_*",
    "wordpress_logged_in_*",
    "wordpress_sec_*",
    "wp-postpass_*",
    "comment_author_*",
    "PrestaShop-*",
];

/// Pages that are personal or change state, for both platforms.
pub const DEFAULT_BYPASS_PATHS: &[&str] = &[
    "/cart",
    "/checkout",
    "/my-account",
    "/wp-admin",
    "/wp-login.php",
    "/wp-json/wc/store",
    "/xmlrpc.php",
    "/wp-cron.php",
    "/order",
    "/commande",
    "/panier",
    "/login",
    "/connexion",
    "/authentication",
    "/password-recovery",
    "/identity",
    "/addresses",
    "/address",
    "/order-history",
    "/order-confirmation",
    "/module/",
    "~^/admin[a-z0-9_-]*/",
    "~(?i)index\\.php\\?controller=(cart|order|authentication|my-account|identity|address|history|password)",
];

/// Query parameters that mark a request as an action, never a page view.
pub const DEFAULT_BYPASS_QUERY_PARAMS: &[&str] = &[
    "add-to-cart",
    "wc-ajax",
    "remove_item",
    "undo_item",
    "removed_item",
    "preview",
    "wc-api",
    "_wpnonce",
];

/// Marketing parameters that do not change the page: dropped from the key.
pub const DEFAULT_DROP_QUERY_PARAMS: &[&str] = &[
    "utm_*", "fbclid", "gclid", "gbraid", "wbraid", "msclkid", "dclid", "_ga", "_gl", "mc_cid",
    "mc_eid", "yclid", "_ke",
];

/// A path rule: a prefix matched on segment boundaries, or a regex (`~...`)
/// matched against path and query.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Regex(Regex),
}

impl PathMatch {
    /// `~regex` or a prefix.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.strip_prefix('~') {
            Some(re) => Regex::new(re)
                .map(PathMatch::Regex)
                .map_err(|e| format!("invalid regex `{re}`: {e}")),
            None if text.starts_with('/') => Ok(PathMatch::Prefix(text.to_string())),
            None => Err(format!(
                "path `{text}` must start with `/` (a prefix) or `~` (a regex)"
            )),
        }
    }

    pub fn matches(&self, path: &str, path_and_query: &str) -> bool {
        match self {
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (p.ends_with('/')
                        || path.len() == p.len()
                        || path[p.len()..].starts_with(['/', '?', '.']))
            }
            PathMatch::Regex(re) => re.is_match(path_and_query),
        }
    }
}

/// A cookie or parameter name pattern: exact, or with `*` wildcards.
#[derive(Debug, Clone)]
pub struct NamePattern(Regex);

impl NamePattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.contains(['=', ';', ' ']) {
            return Err(format!(
                "`{text}` is not a cookie or parameter name (use `*` as a wildcard)"
            ));
        }
        let escaped: Vec<String> = text.split('*').map(regex::escape).collect();
        Regex::new(&format!("^{}$", escaped.join(".*")))
            .map(NamePattern)
            .map_err(|e| e.to_string())
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.is_match(name)
    }
}

/// The compiled `cache` block.
#[derive(Debug, Clone)]
pub struct CacheRules {
    pub default_ttl: Duration,
    pub statuses: Vec<u16>,
    pub status_ttl: BTreeMap<u16, Duration>,
    pub ttl_overrides: Vec<(PathMatch, Duration)>,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub lock_timeout: Duration,
    pub bypass_cookies: Vec<NamePattern>,
    pub bypass_paths: Vec<PathMatch>,
    pub bypass_query_params: Vec<NamePattern>,
    pub drop_query_params: Vec<NamePattern>,
    pub device_class: bool,
    pub vary_allow: Vec<http::HeaderName>,
    pub tag_header: http::HeaderName,
    pub compression_level: u32,
}

/// Why a request or response does not use the cache. Stable codes: they are
/// metric labels and appear in the access log.
pub type BypassReason = &'static str;

/// The cache key's parts: `url` is `host/path?sorted-query` (what purges
/// match); `primary` adds the device class when the key has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParts {
    pub url: String,
    pub primary: String,
}

impl CacheRules {
    /// Why this request must not use the cache, if it must not.
    pub fn request_bypass(&self, req: &RequestHeader) -> Option<BypassReason> {
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return Some("method");
        }
        if req.headers.contains_key(http::header::AUTHORIZATION) {
            return Some("authorization");
        }
        if self.has_session_cookie(req) {
            return Some("cookie");
        }
        let path = req.uri.path();
        let path_and_query = req.uri.path_and_query().map_or(path, |p| p.as_str());
        if self
            .bypass_paths
            .iter()
            .any(|p| p.matches(path, path_and_query))
        {
            return Some("path");
        }
        let query = req.uri.query().unwrap_or("");
        let action = query_pairs(query)
            .any(|(name, _)| self.bypass_query_params.iter().any(|p| p.matches(name)));
        if action {
            return Some("query");
        }
        None
    }

    /// Whether the request carries a session or login cookie, its name read
    /// as PHP reads it (`util::cookies`).
    pub fn has_session_cookie(&self, req: &RequestHeader) -> bool {
        crate::util::cookies::all(&req.headers).any(|c| {
            let name = c.name_text();
            self.bypass_cookies.iter().any(|p| p.matches(&name))
        })
    }

    /// The normalised key: lower-case host without default port, path as
    /// sent, query parameters sorted with marketing parameters dropped.
    pub fn key(&self, req: &RequestHeader) -> KeyParts {
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_ascii_lowercase();
        let host = host
            .strip_suffix(":80")
            .or_else(|| host.strip_suffix(":443"))
            .unwrap_or(&host);
        let mut pairs: Vec<&str> = req
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let name = p.split('=').next().unwrap_or("");
                !self.drop_query_params.iter().any(|d| d.matches(name))
            })
            .collect();
        pairs.sort_unstable();
        let mut url = format!("{host}{}", req.uri.path());
        if !pairs.is_empty() {
            url.push('?');
            url.push_str(&pairs.join("&"));
        }
        let primary = if self.device_class && is_mobile(req) {
            format!("{url}#mobile")
        } else {
            url.clone()
        };
        KeyParts { url, primary }
    }

    /// Decides whether a response may be stored, and builds its cache meta.
    pub fn response_meta(
        &self,
        req: &RequestHeader,
        resp: &ResponseHeader,
    ) -> Result<CacheMeta, BypassReason> {
        // The cart-leak guard: anything personal is never stored.
        if resp.headers.contains_key(http::header::SET_COOKIE) {
            return Err("response_set_cookie");
        }
        if self.has_session_cookie(req) {
            return Err("request_session_cookie");
        }
        let cc = CacheControl::from_resp_headers(resp);
        if cc
            .as_ref()
            .is_some_and(|c| c.private() || c.no_store() || c.no_cache())
        {
            return Err("response_private");
        }
        if !self.vary_allowed(resp) {
            return Err("response_vary");
        }
        let status = resp.status.as_u16();
        if !self.statuses.contains(&status) {
            return Err("response_status");
        }
        let now = SystemTime::now();
        let path = req.uri.path();
        let path_and_query = req.uri.path_and_query().map_or(path, |p| p.as_str());
        let forced = self
            .ttl_overrides
            .iter()
            .find(|(m, _)| m.matches(path, path_and_query))
            .map(|(_, ttl)| *ttl);
        const ORIGIN_ONLY: CacheMetaDefaults = CacheMetaDefaults::new(|_| None, 0, 0);
        let fresh_until = match forced {
            Some(ttl) => now + ttl,
            None => match calculate_fresh_until(now, cc.as_ref(), resp, false, &ORIGIN_ONLY) {
                Some(until) => until,
                None if self.origin_says_nothing(resp, cc.as_ref()) => {
                    now + self
                        .status_ttl
                        .get(&status)
                        .copied()
                        .unwrap_or(self.default_ttl)
                }
                None => return Err("response_uncacheable"),
            },
        };
        let swr = cc
            .as_ref()
            .and_then(|c| c.stale_while_revalidate().ok().flatten())
            .unwrap_or_else(|| secs(self.stale_while_revalidate));
        let sie = cc
            .as_ref()
            .and_then(|c| c.stale_if_error().ok().flatten())
            .unwrap_or_else(|| secs(self.stale_if_error));
        // must-revalidate / proxy-revalidate forbid serving the page stale.
        let no_stale = cc
            .as_ref()
            .is_some_and(|c| c.must_revalidate() || c.proxy_revalidate());
        let (swr, sie) = if no_stale { (0, 0) } else { (swr, sie) };
        Ok(CacheMeta::new(fresh_until, now, swr, sie, resp.clone()))
    }

    /// No Cache-Control freshness and no Expires: WordPress catalogue pages.
    fn origin_says_nothing(&self, resp: &ResponseHeader, cc: Option<&CacheControl>) -> bool {
        let cc_freshness = cc.is_some_and(|c| {
            matches!(c.max_age(), Ok(Some(_))) || matches!(c.s_maxage(), Ok(Some(_)))
        });
        !cc_freshness && !resp.headers.contains_key(http::header::EXPIRES)
    }

    /// `Vary` may name `Accept-Encoding` (handled by compression) and the
    /// allowed headers; anything else (`*`, `Cookie`, `User-Agent`...) would
    /// need one entry per client, so such a response is not stored.
    fn vary_allowed(&self, resp: &ResponseHeader) -> bool {
        vary_names(resp).all(|name| {
            name == "accept-encoding" || self.vary_allow.iter().any(|h| h.as_str() == name)
        })
    }

    /// The variance hash: the allowed Vary headers' request values.
    pub fn variance(
        &self,
        meta: &CacheMeta,
        req: &RequestHeader,
    ) -> Option<pingora::cache::key::HashBinary> {
        let names: Vec<String> = meta
            .headers()
            .get_all(http::header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| n != "accept-encoding" && self.vary_allow.iter().any(|h| h.as_str() == n))
            .collect();
        let mut builder = pingora::cache::VarianceBuilder::new();
        for name in &names {
            let value = req
                .headers
                .get(name.as_str())
                .map_or(&[][..], |v| v.as_bytes());
            builder.add_value(name, value);
        }
        builder.finalize()
    }
}

fn vary_names(resp: &ResponseHeader) -> impl Iterator<Item = String> + '_ {
    resp.headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// The device class WordPress themes use (`wp_is_mobile`): phones and tablets.
fn is_mobile(req: &RequestHeader) -> bool {
    let ua = req
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    [
        "Mobile",
        "Android",
        "Silk/",
        "Kindle",
        "BlackBerry",
        "Opera Mini",
        "Opera Mobi",
    ]
    .iter()
    .any(|t| ua.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> CacheRules {
        let patterns = |list: &[&str]| {
            list.iter()
                .map(|p| NamePattern::parse(p).unwrap())
                .collect()
        };
        CacheRules {
            default_ttl: Duration::from_secs(600),
            statuses: vec![200, 301, 404],
            status_ttl: BTreeMap::from([(404, Duration::from_secs(60))]),
            ttl_overrides: vec![(
                PathMatch::parse("/static/").unwrap(),
                Duration::from_secs(86_400),
            )],
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(3600),
            lock_timeout: Duration::from_secs(3),
            bypass_cookies: patterns(DEFAULT_BYPASS_COOKIES),
            bypass_paths: DEFAULT_BYPASS_PATHS
                .iter()
                .map(|p| PathMatch::parse(p).unwrap())
                .collect(),
            bypass_query_params: patterns(DEFAULT_BYPASS_QUERY_PARAMS),
            drop_query_params: patterns(DEFAULT_DROP_QUERY_PARAMS),
            device_class: true,
            vary_allow: vec![http::HeaderName::from_static("accept-language")],
            tag_header: http::HeaderName::from_static("x-cache-tags"),
            compression_level: 5,
        }
    }

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        r.insert_header("host", "Shop.Example:80").unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn personal_requests_bypass() {
        let r = rules();
        let table = [
            (
                "/product/hoodie/",
                vec![("cookie", "_ga=1; wordpress_logged_in_abc=joe")],
                Some("cookie"),
            ),
            (
                "/product/hoodie/",
                vec![("cookie", "woocommerce_items_in_cart=1")],
                Some("cookie"),
            ),
            ("/", vec![("cookie", "PrestaShop-a1b2=xyz")], Some("cookie")),
            ("/", vec![("cookie", "_ga=GA1.2; sbjs_current=x")], None),
            ("/cart/", vec![], Some("path")),
            ("/cart", vec![], Some("path")),
            ("/cartoons/", vec![], None),
            ("/my-account/orders/", vec![], Some("path")),
            ("/wp-admin/admin-ajax.php", vec![], Some("path")),
            ("/admin123xyz/index.php", vec![], Some("path")),
            (
                "/index.php?controller=cart&action=show",
                vec![],
                Some("path"),
            ),
            ("/?add-to-cart=42", vec![], Some("query")),
            ("/?wc-ajax=get_refreshed_fragments", vec![], Some("query")),
            ("/shop/?orderby=price", vec![], None),
            (
                "/",
                vec![("authorization", "Basic eDp5")],
                Some("authorization"),
            ),
        ];
        for (path, headers, expected) in table {
            assert_eq!(
                r.request_bypass(&req(path, &headers)),
                expected,
                "{path} {headers:?}"
            );
        }
        let mut post = req("/", &[]);
        post.set_method(http::Method::POST);
        assert_eq!(r.request_bypass(&post), Some("method"));
    }

    #[test]
    fn keys_are_normalised() {
        let r = rules();
        let k = r.key(&req("/shop/?utm_source=x&b=2&a=1&fbclid=zz", &[]));
        assert_eq!(k.url, "shop.example/shop/?a=1&b=2");
        assert_eq!(k.primary, k.url);
        let m = r.key(&req(
            "/shop/?a=1&b=2",
            &[("user-agent", "Mozilla/5.0 (iPhone) Mobile Safari")],
        ));
        assert_eq!(m.url, k.url);
        assert_eq!(m.primary, "shop.example/shop/?a=1&b=2#mobile");
    }

    #[test]
    fn personal_responses_are_never_stored() {
        let r = rules();
        let page = req("/product/hoodie/", &[]);
        assert_eq!(
            r.response_meta(&page, &resp(200, &[("set-cookie", "a=b")]))
                .err(),
            Some("response_set_cookie")
        );
        for cc in ["private", "no-store", "no-cache", "private, max-age=60"] {
            assert_eq!(
                r.response_meta(&page, &resp(200, &[("cache-control", cc)]))
                    .err(),
                Some("response_private")
            );
        }
        assert_eq!(
            r.response_meta(&page, &resp(200, &[("vary", "Cookie")]))
                .err(),
            Some("response_vary")
        );
        assert_eq!(
            r.response_meta(&page, &resp(200, &[("vary", "*")])).err(),
            Some("response_vary")
        );
        assert!(r
            .response_meta(
                &page,
                &resp(200, &[("vary", "Accept-Encoding, Accept-Language")])
            )
            .is_ok());
        assert_eq!(
            r.response_meta(&page, &resp(500, &[])).err(),
            Some("response_status")
        );
        let with_session = req("/", &[("cookie", "wp_woocommerce_session_1=x")]);
        assert_eq!(
            r.response_meta(&with_session, &resp(200, &[])).err(),
            Some("request_session_cookie")
        );
    }

    #[test]
    fn ttls_come_from_origin_then_policy() {
        let r = rules();
        let page = req("/product/hoodie/", &[]);
        let ttl = |m: CacheMeta| {
            m.fresh_until()
                .duration_since(m.created())
                .unwrap()
                .as_secs()
        };
        assert_eq!(ttl(r.response_meta(&page, &resp(200, &[])).unwrap()), 600);
        assert_eq!(ttl(r.response_meta(&page, &resp(404, &[])).unwrap()), 60);
        assert_eq!(
            ttl(r
                .response_meta(
                    &page,
                    &resp(200, &[("cache-control", "public, max-age=120")])
                )
                .unwrap()),
            120
        );
        assert_eq!(
            ttl(r
                .response_meta(
                    &page,
                    &resp(200, &[("cache-control", "s-maxage=90, max-age=10")])
                )
                .unwrap()),
            90
        );
        let stat = req("/static/app.css", &[]);
        assert_eq!(
            ttl(r
                .response_meta(&stat, &resp(200, &[("cache-control", "max-age=5")]))
                .unwrap()),
            86_400
        );
        let m = r
            .response_meta(
                &page,
                &resp(
                    200,
                    &[("cache-control", "max-age=60, stale-while-revalidate=7")],
                ),
            )
            .unwrap();
        assert_eq!(m.stale_while_revalidate_sec(), 7);
        assert_eq!(m.stale_if_error_sec(), 3600);
        let strict = r
            .response_meta(
                &page,
                &resp(200, &[("cache-control", "max-age=0, must-revalidate")]),
            )
            .unwrap();
        assert_eq!(
            (
                strict.stale_while_revalidate_sec(),
                strict.stale_if_error_sec()
            ),
            (0, 0)
        );
    }

    #[test]
    fn patterns() {
        assert!(NamePattern::parse("wp_*_session")
            .unwrap()
            .matches("wp_woo_session"));
        assert!(!NamePattern::parse("utm_*").unwrap().matches("xutm_a"));
        assert!(NamePattern::parse("a=b").is_err());
        assert!(PathMatch::parse("cart").is_err());
        assert!(PathMatch::parse("~[").is_err());
    }
}
