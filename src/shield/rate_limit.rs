//! Named rate limits: the `rate_limits` block and its filter. Each limit
//! matches requests (paths, forms, methods, a header), counts them per key
//! (client, IP prefix, header, cookie, query parameter, or everyone
//! together) and answers 429 with `Retry-After` past its rate and burst.
//!
//! A limit counts every request (`scope: all`, in the request phase, and
//! once the body is read for limits a form field makes count) or only those
//! that reach the origin (`scope: origin`, after the cache: cached browsing
//! is never throttled). Limiters outlive reloads and their keys stay
//! bounded (see `util::limiter`).

use crate::filter::{
    BanReason, Decider, Filter, Reason, Reply, RequestInfo, RequestState, Verdict,
};
use crate::observe::metrics;
use crate::policy::{Compiler, Section};
use crate::util::limiter::{self, KeyedLimiter, Rate, Registry};
use crate::util::pattern::ActionMatch;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::prelude::Session;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::sync::Arc;
use std::time::Duration;

/// The `rate_limits` block.
pub struct RateLimitsSection;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsBlock {
    pub max_keys: Option<usize>,
    pub limits: Vec<LimitBlock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitBlock {
    pub name: Spanned<String>,
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    #[serde(default)]
    pub forms: Vec<Spanned<Vec<Spanned<String>>>>,
    pub key: Spanned<Vec<Spanned<String>>>,
    pub rate: Spanned<String>,
    #[serde(default)]
    pub burst: Option<Spanned<u32>>,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub action: Action,
}

/// When a limit counts: every request, or only those that reach the origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    All,
    /// Cache misses and uncached requests: cached browsing is never throttled.
    Origin,
}

/// What happens past the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Answer 429.
    #[default]
    Block,
    /// Answer 429 and ban the client (escalating).
    Ban,
}

/// What part of a request makes a limit's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// The client address.
    Ip,
    /// One subscriber: the IPv4 address, or the IPv6 /64.
    Client,
    /// The client's network: /24 for IPv4, /64 for IPv6.
    IpPrefix,
    Header(http::HeaderName),
    Cookie(String),
    Query(String),
    /// One bucket for everyone (origin protection).
    Global,
}

/// Which requests a limit counts.
#[derive(Debug, Clone, Default)]
pub struct LimitMatch {
    /// Paths, forms and methods (empty: every request), on every spelling
    /// the shop serves (see `util::target`).
    pub action: ActionMatch,
    /// Only requests that carry this header.
    pub header: Option<http::HeaderName>,
}

/// One compiled limit.
pub struct Limit {
    pub name: String,
    pub matcher: LimitMatch,
    pub key: Vec<KeyPart>,
    pub scope: Scope,
    pub action: Action,
    limiter: Arc<KeyedLimiter>,
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limit")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The compiled `rate_limits` block, by scope.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// Counted on every request, in the request phase.
    pub request: Vec<Limit>,
    /// Counted only on requests that reach the origin.
    pub origin: Vec<Limit>,
}

impl Limit {
    /// A limit counting on `limiter` (the registry's, for its name and rate).
    pub fn new(
        name: &str,
        matcher: LimitMatch,
        key: Vec<KeyPart>,
        scope: Scope,
        action: Action,
        limiter: Arc<KeyedLimiter>,
    ) -> Self {
        Limit {
            name: name.to_string(),
            matcher,
            key,
            scope,
            action,
            limiter,
        }
    }

    /// Whether this limit counts the request (form fields count once the
    /// body is read).
    pub fn matches(&self, req: &RequestInfo<'_>) -> bool {
        self.matcher.action.matches(req.target)
            && self
                .matcher
                .header
                .as_ref()
                .is_none_or(|h| req.headers.contains_key(h))
    }

    /// The request's key for this limit; `None` when a keyed value is absent
    /// (a limit by cookie does not count requests without that cookie).
    pub fn key_of(&self, req: &RequestInfo<'_>) -> Option<String> {
        let mut key = String::new();
        for part in &self.key {
            if !key.is_empty() {
                key.push('|');
            }
            match part {
                KeyPart::Ip => key.push_str(&req.client_ip.to_string()),
                KeyPart::Client => key.push_str(&crate::util::net::subscriber_key(req.client_ip)),
                KeyPart::IpPrefix => key.push_str(&crate::util::net::prefix_key(req.client_ip)),
                KeyPart::Global => key.push('*'),
                KeyPart::Header(h) => key.push_str(req.headers.get(h)?.to_str().ok()?),
                KeyPart::Cookie(name) => key.push_str(&cookie(req.headers, name)?),
                KeyPart::Query(name) => key.push_str(&String::from_utf8_lossy(
                    &crate::util::query::value_of(req.uri.query()?.as_bytes(), name)?,
                )),
            }
        }
        // Keys are bounded in size: absurd header values cannot bloat memory.
        key.truncate(256);
        Some(key)
    }

    /// Counts the request; the refusal when it is over the limit.
    pub fn check(&self, req: &RequestInfo<'_>) -> Option<Reply> {
        let key = self.key_of(req)?;
        let count = self.limiter.count(&key);
        if count.shared {
            metrics::RATE_LIMIT_OVERFLOW
                .with_label_values(&[&self.name])
                .inc();
        }
        let wait = count.wait?;
        metrics::RATE_LIMITED.with_label_values(&[&self.name]).inc();
        let mut reply = too_many(&self.name, wait);
        reply.rule = Some(self.name.clone());
        // The shared overflow bucket cannot tell who is to blame: no ban.
        if self.action == Action::Ban && !count.shared {
            reply.ban = Some(BanReason::RateLimit);
        }
        Some(reply)
    }

    /// Keys held now (for tests and metrics).
    pub fn keys(&self) -> usize {
        self.limiter.keys()
    }
}

/// The 429 reply: `Retry-After` in whole seconds (at least 1).
pub fn too_many(limit: &str, wait: Duration) -> Reply {
    let mut reply = Reply::new(
        429,
        Reason::RateLimited,
        "Too many requests. Please wait a moment and try again.",
    );
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    reply
        .headers
        .push((http::header::RETRY_AFTER, secs.max(1).to_string()));
    reply.headers.push((
        http::HeaderName::from_static("x-rempart-limit"),
        limit.to_string(),
    ));
    reply
}

/// A cookie's value as PHP reads it; `name*` takes the first cookie whose
/// name starts with `name` (WooCommerce suffixes its session cookie with a
/// hash).
fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let found = crate::util::cookies::first(headers, |k| match name.strip_suffix('*') {
        Some(prefix) => k.starts_with(prefix),
        None => k == name,
    })?;
    Some(String::from_utf8_lossy(&found.value()).into_owned())
}

/// Runs `limits` in order; the first one over its rate answers.
fn check_all(limits: &[Limit], req: &RequestInfo<'_>) -> Verdict {
    limits
        .iter()
        .filter(|l| l.matches(req))
        .find_map(|limit| limit.check(req))
        .map_or(Verdict::Continue, Verdict::Respond)
}

impl Section for RateLimitsSection {
    const KEY: &'static str = "rate_limits";
    type Raw = RateLimitsBlock;
    type Compiled = RateLimits;

    fn compile(raw: Option<RateLimitsBlock>, c: &mut Compiler<'_>) -> Option<RateLimits> {
        let b = raw?;
        // `check` compiles without the running limiters: throwaway ones then.
        let registry = c.service::<Registry>().unwrap_or_default();
        let max_keys = b.max_keys.unwrap_or(100_000).max(100);
        let mut names: Vec<String> = Vec::new();
        let mut out = RateLimits::default();
        for l in b.limits {
            let before = c.problems();
            let name = l.name.value.trim().to_string();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                c.error(
                    &l.name,
                    format!("`{}` is not a limit name", l.name.value),
                    Some("letters, digits, `_` and `-`: it appears in logs and metrics"),
                );
            } else if names.contains(&name) {
                c.error(
                    &l.name,
                    format!("two limits are named `{name}`"),
                    Some("names must be unique"),
                );
            }
            names.push(name.clone());
            let paths = c.paths(&l.paths, "a prefix such as `/wp-login.php` or a regex such as `~^/wp-json/wc/store/v1/checkout`");
            let methods = c.methods(&l.methods);
            let forms = c.forms(&l.forms);
            let header = l.header.as_ref().and_then(|h| c.header_name(h));
            let mut key = Vec::new();
            if l.key.value.is_empty() {
                c.error(
                    &l.key,
                    "`key` is empty",
                    Some(
                        "e.g. `[ip]`, `[ip_prefix]`, `[global]`, `[\"cookie:wp_woocommerce_session_*\"]`",
                    ),
                );
            }
            for part in &l.key.value {
                match parse_key_part(&part.value) {
                    Ok(k) => key.push(k),
                    Err(e) => c.error(part, e, Some("one of `ip`, `ip_prefix`, `global`, `header:NAME`, `cookie:NAME`, `query:NAME`")),
                }
            }
            let (count, period) = match limiter::parse_rate(&l.rate.value) {
                Ok(r) => r,
                Err(e) => {
                    c.error(&l.rate, e, None);
                    (std::num::NonZeroU32::MIN, Duration::from_secs(1))
                }
            };
            let burst = match &l.burst {
                Some(b) => std::num::NonZeroU32::new(b.value).unwrap_or_else(|| {
                    c.error(
                        b,
                        "`burst` must be at least 1",
                        Some("the number of requests allowed at once"),
                    );
                    std::num::NonZeroU32::MIN
                }),
                None => count,
            };
            if c.problems() > before {
                continue;
            }
            let limit = Limit::new(
                &name,
                LimitMatch {
                    action: ActionMatch {
                        paths,
                        forms,
                        methods,
                    },
                    header,
                },
                key,
                l.scope,
                l.action,
                registry.limiter(
                    &name,
                    Rate {
                        count,
                        period,
                        burst,
                    },
                    max_keys,
                ),
            );
            match l.scope {
                Scope::All => out.request.push(limit),
                Scope::Origin => out.origin.push(limit),
            }
        }
        Some(out)
    }
}

fn parse_key_part(text: &str) -> Result<KeyPart, String> {
    let text = text.trim();
    match text.split_once(':') {
        None => match text {
            "ip" => Ok(KeyPart::Ip),
            "client" => Ok(KeyPart::Client),
            "ip_prefix" => Ok(KeyPart::IpPrefix),
            "global" => Ok(KeyPart::Global),
            other => Err(format!("unknown key `{other}`")),
        },
        Some(("header", name)) => http::HeaderName::try_from(name.trim().to_ascii_lowercase())
            .map(KeyPart::Header)
            .map_err(|_| format!("`{name}` is not a header name")),
        Some(("cookie", name)) if !name.trim().is_empty() => {
            Ok(KeyPart::Cookie(name.trim().to_string()))
        }
        Some(("query", name)) if !name.trim().is_empty() => {
            Ok(KeyPart::Query(name.trim().to_string()))
        }
        Some(_) => Err(format!("unknown key `{text}`")),
    }
}

/// Counts requests against the policy's limits: every request in the
/// request phase, the ones a form field makes count once the body is read,
/// and the origin-scoped ones after the cache.
pub struct RateLimitFilter;

#[async_trait]
impl Filter for RateLimitFilter {
    fn name(&self) -> Decider {
        Decider::RateLimit
    }

    async fn request(&self, session: &mut Session, st: &mut RequestState) -> Verdict {
        match st.policy.get::<RateLimitsSection>() {
            Some(limits) => check_all(&limits.request, &st.info(session.req_header())),
            None => Verdict::Continue,
        }
    }

    fn reads_forms(&self, policy: &crate::policy::Snapshot) -> bool {
        policy
            .get::<RateLimitsSection>()
            .is_some_and(|l| !l.request.is_empty())
    }

    /// The limits the body's fields (or the REST routes it names) newly
    /// match count the request now, before the last of the body goes on.
    async fn request_body(
        &self,
        req: &RequestHeader,
        st: &mut RequestState,
        _body: &mut Option<Bytes>,
        end: bool,
    ) -> Verdict {
        let (true, Some(head), Some(limits)) = (
            end,
            st.head_target.as_ref(),
            st.policy.get::<RateLimitsSection>(),
        ) else {
            return Verdict::Continue;
        };
        let info = st.info(req);
        let head_info = RequestInfo {
            target: head,
            ..info
        };
        limits
            .request
            .iter()
            .filter(|l| l.matches(&info) && !l.matches(&head_info))
            .find_map(|limit| limit.check(&info))
            .map_or(Verdict::Continue, Verdict::Respond)
    }

    /// Background cache refreshes are Rempart's own requests: never limited.
    async fn before_origin(&self, session: &mut Session, st: &mut RequestState) -> Verdict {
        match st.policy.get::<RateLimitsSection>() {
            Some(limits) if session.subrequest_ctx.is_none() => {
                check_all(&limits.origin, &st.info(session.req_header()))
            }
            _ => Verdict::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::target::Target;
    use std::net::IpAddr;
    use std::num::NonZeroU32;

    fn info<'a>(
        ip: [u8; 4],
        method: &'a http::Method,
        uri: &'a http::Uri,
        headers: &'a http::HeaderMap,
        target: &'a Target,
    ) -> RequestInfo<'a> {
        RequestInfo {
            client_ip: IpAddr::from(ip),
            method,
            uri,
            headers,
            request_id: "t",
            target,
        }
    }

    fn target(method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) -> Target {
        let raw = uri.path_and_query().map_or("/", |p| p.as_str());
        Target::new(method, raw.as_bytes(), headers)
    }

    fn limit(name: &str, key: Vec<KeyPart>, per_minute: u32, burst: u32) -> Limit {
        let rate = Rate {
            count: NonZeroU32::new(per_minute).unwrap(),
            period: Duration::from_secs(60),
            burst: NonZeroU32::new(burst).unwrap(),
        };
        let matcher = LimitMatch {
            action: ActionMatch {
                paths: vec![crate::util::pattern::PathMatch::parse("/wp-login.php").unwrap()],
                forms: vec![],
                methods: vec![http::Method::POST],
            },
            header: None,
        };
        let limiter = Registry::default().limiter(name, rate, 1000);
        Limit::new(name, matcher, key, Scope::All, Action::Ban, limiter)
    }

    #[test]
    fn burst_then_refusal_per_client() {
        let l = limit("t_burst", vec![KeyPart::Ip], 6, 3);
        let (post, uri, h) = (
            http::Method::POST,
            http::Uri::from_static("/wp-login.php"),
            http::HeaderMap::new(),
        );
        let t = target(&post, &uri, &h);
        for _ in 0..3 {
            assert!(l
                .check(&info([127, 0, 0, 2], &post, &uri, &h, &t))
                .is_none());
        }
        let reply = l.check(&info([127, 0, 0, 2], &post, &uri, &h, &t)).unwrap();
        assert_eq!(reply.status, 429);
        assert_eq!(reply.ban, Some(BanReason::RateLimit));
        assert!(
            l.check(&info([127, 0, 0, 3], &post, &uri, &h, &t))
                .is_none(),
            "another client has its own bucket"
        );
        let get = http::Method::GET;
        let tg = target(&get, &uri, &h);
        assert!(!l.matches(&info([127, 0, 0, 2], &get, &uri, &h, &tg)));
    }

    #[test]
    fn keys_from_prefix_cookie_and_query() {
        let l = limit(
            "t_keys",
            vec![
                KeyPart::IpPrefix,
                KeyPart::Cookie("sess".into()),
                KeyPart::Query("u".into()),
            ],
            6,
            3,
        );
        let (post, uri) = (
            http::Method::POST,
            http::Uri::from_static("/wp-login.php?u=joe"),
        );
        let mut h = http::HeaderMap::new();
        h.insert("cookie", "a=1; sess=xyz".parse().unwrap());
        let t = target(&post, &uri, &h);
        assert_eq!(
            l.key_of(&info([10, 1, 2, 3], &post, &uri, &h, &t)).unwrap(),
            "10.1.2.0/24|xyz|joe"
        );
        let bare = http::HeaderMap::new();
        assert!(l
            .key_of(&info([10, 1, 2, 3], &post, &uri, &bare, &t))
            .is_none());
    }

    #[test]
    fn cookie_keys_take_a_prefix() {
        let wc = limit(
            "t_keys_wc",
            vec![KeyPart::Cookie("wp_woocommerce_session_*".into())],
            6,
            3,
        );
        let (post, uri) = (http::Method::POST, http::Uri::from_static("/wp-login.php"));
        let mut h = http::HeaderMap::new();
        h.insert(
            "cookie",
            "a=1; wp_woocommerce_session_9f3a=42%7C%7Cabc"
                .parse()
                .unwrap(),
        );
        let t = target(&post, &uri, &h);
        assert_eq!(
            wc.key_of(&info([10, 1, 2, 3], &post, &uri, &h, &t))
                .unwrap(),
            "42||abc",
            "the value PHP reads (raw-url-decoded)"
        );
    }

    #[test]
    fn the_reply_says_when_to_come_back() {
        let r = too_many("login", Duration::from_millis(1500));
        assert_eq!(r.status, 429);
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == http::header::RETRY_AFTER && v == "2"));
    }
}
