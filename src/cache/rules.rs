//! What may be cached, under which key, and for how long.
//!
//! The rules are compiled from the policy's `cache` block and swapped on
//! reload. They are pure functions of a request or response head, so they are
//! tested without a network.

use pingora::cache::cache_control::CacheControl;
use pingora::cache::filters::calculate_fresh_until;
use pingora::cache::{CacheMeta, CacheMetaDefaults};
use pingora::http::{RequestHeader, ResponseHeader};
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

pub use crate::util::pattern::{NamePattern, PathMatch};

/// Query pairs past which a request is not cached.
const MAX_KEY_PAIRS: usize = 256;

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
    /// Files that are the same for every visitor (theme and plugin assets):
    /// served from and stored in the cache whatever cookies the request
    /// carries. The response guard still applies.
    pub shared_assets: Vec<PathMatch>,
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
    /// Why this request must not use the cache, if it must not. Paths are
    /// matched on the request's reading (`util::target`): every spelling
    /// of `/cart/` the shop serves is personal too.
    pub fn request_bypass(
        &self,
        req: &RequestHeader,
        target: &crate::util::target::Target,
    ) -> Option<BypassReason> {
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return Some("method");
        }
        if req.headers.contains_key(http::header::AUTHORIZATION) {
            return Some("authorization");
        }
        // A target with raw bytes outside printable ASCII (browsers encode
        // them) could key two spellings the shop tells apart alike.
        if !req.raw_path().iter().all(|b| (0x21..0x7f).contains(b)) {
            return Some("target");
        }
        if self.is_shared_asset(target) {
            return None;
        }
        if self.has_session_cookie(req) {
            return Some("cookie");
        }
        if self.bypass_paths.iter().any(|p| p.matches_target(target)) {
            return Some("path");
        }
        let query = req.uri.query().unwrap_or("");
        let action = crate::util::query::pairs(query.as_bytes()).any(|pair| {
            pair.name().is_some_and(|n| {
                let name = String::from_utf8_lossy(&n);
                self.bypass_query_params.iter().any(|p| p.matches(&name))
            })
        });
        if action {
            return Some("query");
        }
        // PHP stops reading a query at 1000 variables; past a few hundred,
        // the order of the pairs could matter to the page: not cached.
        if crate::util::query::pairs(query.as_bytes())
            .nth(MAX_KEY_PAIRS)
            .is_some()
        {
            return Some("query");
        }
        None
    }

    /// Whether the request asks for a file that is the same for every
    /// visitor (`shared_assets`), on its path as sent: a spelling of it the
    /// web server resolves elsewhere is not one.
    pub fn is_shared_asset(&self, target: &crate::util::target::Target) -> bool {
        !self.shared_assets.is_empty() && {
            let path = target.path();
            let pq = target.paths_with_query().next().unwrap_or(path.into());
            self.shared_assets.iter().any(|m| m.matches(path, &pq))
        }
    }

    /// Whether the request carries a session or login cookie, its name read
    /// as PHP reads it (`util::cookies`).
    pub fn has_session_cookie(&self, req: &RequestHeader) -> bool {
        crate::util::cookies::all(&req.headers).any(|c| {
            let name = c.name_text();
            self.bypass_cookies.iter().any(|p| p.matches(&name))
        })
    }

    /// The normalised key: the host as forwarded to the origin (lower case,
    /// without a default port), the path as sent, the query's pairs as sent
    /// minus marketing parameters, ordered by the name PHP files them under
    /// (stable: pairs of one name keep their order, which decides the value
    /// PHP keeps).
    pub fn key(&self, req: &RequestHeader) -> KeyParts {
        let raw_host = crate::util::host::raw(req).unwrap_or_default();
        let host = crate::util::host::normalise(raw_host)
            .map(|h| h.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(raw_host).to_ascii_lowercase());
        let raw = req.raw_path();
        let (path, query) = match raw.iter().position(|b| *b == b'?') {
            Some(q) => (&raw[..q], &raw[q + 1..]),
            None => (raw, &b""[..]),
        };
        let mut pairs: Vec<(Vec<u8>, &[u8])> = self
            .kept_pairs(query)
            .into_iter()
            .map(|p| (p.name().map(|n| n.into_owned()).unwrap_or_default(), p.raw))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut url = host;
        url.push_str(&String::from_utf8_lossy(path));
        for (i, (_, raw_pair)) in pairs.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&String::from_utf8_lossy(raw_pair));
        }
        let primary = if self.device_class && is_mobile(req) {
            format!("{url}#mobile")
        } else {
            url.clone()
        };
        KeyParts { url, primary }
    }

    /// The query's pairs the key keeps: all but marketing parameters
    /// (judged by the name PHP reads: `utm.source` is `utm_source`).
    fn kept_pairs<'a>(&self, query: &'a [u8]) -> Vec<crate::util::query::Pair<'a>> {
        crate::util::query::pairs(query)
            .filter(|p| {
                !p.name().is_some_and(|n| {
                    let name = String::from_utf8_lossy(&n);
                    self.drop_query_params.iter().any(|d| d.matches(&name))
                })
            })
            .collect()
    }

    /// The request target to forward when the key dropped marketing
    /// parameters: the path and the kept pairs in their order, so that the
    /// stored page cannot depend on a parameter the key ignores. `None`
    /// when nothing was dropped.
    pub fn forwarded_target(&self, req: &RequestHeader) -> Option<Vec<u8>> {
        let raw = req.raw_path();
        let q = raw.iter().position(|b| *b == b'?')?;
        let (path, query) = (&raw[..q], &raw[q + 1..]);
        let kept = self.kept_pairs(query);
        let all = crate::util::query::pairs(query).count();
        if kept.len() == all {
            return None;
        }
        let mut target = path.to_vec();
        for (i, pair) in kept.iter().enumerate() {
            target.push(if i == 0 { b'?' } else { b'&' });
            target.extend_from_slice(pair.raw);
        }
        Some(target)
    }

    /// Decides whether a response may be stored, and builds its cache meta.
    pub fn response_meta(
        &self,
        req: &RequestHeader,
        resp: &ResponseHeader,
    ) -> Result<CacheMeta, BypassReason> {
        self.response_meta_for(req, resp, false)
    }

    /// [`Self::response_meta`], for a shared asset (a session cookie on the
    /// request does not make it personal) or not.
    pub fn response_meta_for(
        &self,
        req: &RequestHeader,
        resp: &ResponseHeader,
        shared_asset: bool,
    ) -> Result<CacheMeta, BypassReason> {
        // The cart-leak guard: anything personal is never stored.
        if resp.headers.contains_key(http::header::SET_COOKIE) {
            return Err("response_set_cookie");
        }
        if !shared_asset && self.has_session_cookie(req) {
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

/// The device class WordPress themes use, as `wp_is_mobile` decides it:
/// the `Sec-CH-UA-Mobile` client hint when the browser sends one, else
/// phones and tablets by user agent.
fn is_mobile(req: &RequestHeader) -> bool {
    if let Some(hint) = req.headers.get("sec-ch-ua-mobile") {
        return hint.as_bytes() == b"?1";
    }
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
            shared_assets: vec![],
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
            let request = req(path, &headers);
            let target = crate::util::target::Target::new(
                &request.method,
                request.raw_path(),
                &request.headers,
            );
            assert_eq!(
                r.request_bypass(&request, &target),
                expected,
                "{path} {headers:?}"
            );
        }
        let mut post = req("/", &[]);
        post.set_method(http::Method::POST);
        let target = crate::util::target::Target::new(&post.method, b"/", &post.headers);
        assert_eq!(r.request_bypass(&post, &target), Some("method"));
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
