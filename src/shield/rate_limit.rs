//! Named rate limits (GCRA, on governor): each limit matches requests (path
//! prefixes or regexes, methods, a header), counts them per key (client IP,
//! IP prefix, header, cookie, query parameter, or everyone together) and
//! answers 429 with `Retry-After` past its rate and burst.
//!
//! A limit's state outlives reloads: limiters live in a process-wide registry
//! keyed by the limit's name and quota, so editing an unrelated part of the
//! policy does not hand every attacker a fresh burst. Keyed state stays
//! bounded: idle keys are dropped by `sweep` and a flood of new keys beyond
//! `max_keys` shares one overflow bucket instead of growing memory.

use crate::filter::{Reply, RequestFilter, RequestInfo, Verdict};
use crate::util::pattern::ActionMatch;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

/// What part of a request makes a limit's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// The client address.
    Ip,
    /// One subscriber: the IPv4 address, or the IPv6 /64 (a subscriber holds
    /// a whole /64, so counting single IPv6 addresses would give an attacker
    /// 2^64 fresh bursts).
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

/// When a limit counts: every request, or only those that reach the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    /// Cache misses and uncached requests: cached browsing is never throttled.
    Origin,
}

/// What happens past the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Answer 429.
    Block,
    /// Answer 429 and ban the client (escalating).
    Ban,
}

/// One compiled limit.
pub struct Limit {
    pub name: String,
    pub matcher: LimitMatch,
    pub key: Vec<KeyPart>,
    pub scope: Scope,
    pub action: Action,
    limiter: Arc<Limiter>,
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

/// A limiter and the bound on its keys.
pub struct Limiter {
    keyed: DefaultKeyedRateLimiter<String>,
    max_keys: usize,
    /// The table has been full once (logged once).
    overflowing: std::sync::atomic::AtomicBool,
}

/// The key of the bucket newcomers share once a limit's table is full.
const OVERFLOW_KEY: &str = "#overflow";

/// A refused request: how long to wait, and whether the shared overflow
/// bucket refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Over {
    pub wait: Duration,
    pub shared: bool,
}

type RegistryKey = (String, u32, u32, u64);

/// Limiters by (name, burst, rate numerator, period), shared across reloads.
static REGISTRY: LazyLock<Mutex<HashMap<RegistryKey, Arc<Limiter>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The rate: `count` requests per `period`, with bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub period: Duration,
    pub burst: NonZeroU32,
}

/// Parses `10/s`, `300/m`, `1000/h`.
pub fn parse_rate(text: &str) -> Result<(NonZeroU32, Duration), String> {
    let (n, unit) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not a rate; write e.g. `10/s`, `60/m`, `1000/h`"))?;
    let count = n
        .trim()
        .parse::<u32>()
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| format!("`{n}` in `{text}` must be a whole number above zero"))?;
    let period = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => {
            return Err(format!(
                "unknown rate unit `{other}` in `{text}`; use s, m, h or d"
            ))
        }
    };
    Ok((count, period))
}

impl Limit {
    /// Builds a limit, reusing the running limiter of the same name and quota.
    pub fn new(
        name: &str,
        matcher: LimitMatch,
        key: Vec<KeyPart>,
        rate: Rate,
        scope: Scope,
        action: Action,
        max_keys: usize,
    ) -> Self {
        let registry_key = (
            name.to_string(),
            rate.burst.get(),
            rate.count.get(),
            rate.period.as_millis() as u64,
        );
        let limiter = {
            let mut registry = match REGISTRY.lock() {
                Ok(r) => r,
                Err(poisoned) => poisoned.into_inner(),
            };
            registry
                .entry(registry_key)
                .or_insert_with(|| {
                    let per_cell = rate.period / rate.count.get();
                    let quota = Quota::with_period(per_cell.max(Duration::from_nanos(1)))
                        .unwrap_or_else(|| Quota::per_second(rate.count))
                        .allow_burst(rate.burst);
                    Arc::new(Limiter {
                        keyed: DefaultKeyedRateLimiter::keyed(quota),
                        max_keys,
                        overflowing: std::sync::atomic::AtomicBool::new(false),
                    })
                })
                .clone()
        };
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

    /// Whether the body may still make this limit count the request.
    pub fn needs_body(&self) -> bool {
        self.matcher.action.needs_body()
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
                KeyPart::Client => key.push_str(&client_key(req.client_ip)),
                KeyPart::IpPrefix => key.push_str(&ip_prefix(req.client_ip)),
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

    /// Counts the request; `Err` when it is over the limit.
    ///
    /// Past `max_keys` distinct keys (a flood of addresses) memory must not
    /// grow: idle keys are dropped first, and if the table is still full the
    /// new key is counted in one shared overflow bucket. Counting never stops,
    /// so overflow is at least as strict as the limit: an attacker who fills
    /// the table shares one bucket with every other newcomer. A refusal from
    /// the shared bucket says so ([`Over::shared`]): it cannot tell who is
    /// to blame, so it refuses without banning.
    pub fn check(&self, req: &RequestInfo<'_>) -> Result<(), Over> {
        let Some(mut key) = self.key_of(req) else {
            return Ok(());
        };
        let limiter = &self.limiter;
        let mut shared = false;
        if limiter.keyed.len() >= limiter.max_keys {
            limiter.keyed.retain_recent();
            if limiter.keyed.len() >= limiter.max_keys {
                if !limiter
                    .overflowing
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(limit = %self.name, max_keys = limiter.max_keys, "rate limit table full: newcomers share one bucket");
                }
                crate::observe::metrics::RATE_LIMIT_OVERFLOW
                    .with_label_values(&[&self.name])
                    .inc();
                key = OVERFLOW_KEY.to_string();
                shared = true;
            }
        }
        limiter.keyed.check_key(&key).map_err(|not_until| Over {
            wait: not_until.wait_time_from(DefaultClock::default().now()),
            shared,
        })
    }

    /// Keys held now (for tests and metrics).
    pub fn keys(&self) -> usize {
        self.limiter.keyed.len()
    }
}

/// The 429 reply: `Retry-After` in whole seconds (at least 1).
pub fn too_many(limit: &str, wait: Duration) -> Reply {
    let mut reply = Reply::new(
        429,
        "rate_limited",
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

/// Drops idle keys of every limiter (a background task calls this).
pub fn sweep() {
    let limiters: Vec<Arc<Limiter>> = match REGISTRY.lock() {
        Ok(r) => r.values().cloned().collect(),
        Err(_) => return,
    };
    for l in limiters {
        l.keyed.retain_recent();
        l.keyed.shrink_to_fit();
    }
}

fn ip_prefix(ip: IpAddr) -> String {
    match crate::shield::ip_filter::canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The subscriber: an IPv4 address, or an IPv6 /64.
pub fn client_key(ip: IpAddr) -> String {
    match crate::shield::ip_filter::canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        v6 => ip_prefix(v6),
    }
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

/// The request-phase limits of a policy, as one filter.
pub struct RateLimitFilter {
    limits: Vec<Arc<Limit>>,
}

impl RateLimitFilter {
    pub fn new(limits: Vec<Arc<Limit>>) -> Self {
        RateLimitFilter { limits }
    }
}

/// Runs `limits` in order; the first one over its rate answers.
pub fn check_all(limits: &[Arc<Limit>], req: &RequestInfo<'_>) -> Option<Reply> {
    limits
        .iter()
        .filter(|l| l.matches(req))
        .find_map(|limit| limit.check(req).err().map(|over| refusal(limit, over)))
}

/// The 429 for a limit that refused, with a ban when the limit bans and the
/// client's own bucket (not the shared overflow one) was exceeded.
pub fn refusal(limit: &Limit, over: Over) -> Reply {
    crate::observe::metrics::RATE_LIMITED
        .with_label_values(&[&limit.name])
        .inc();
    let mut reply = too_many(&limit.name, over.wait);
    reply.rule = Some(limit.name.clone());
    if limit.action == Action::Ban && !over.shared {
        reply.ban = Some("rate_limit");
    }
    reply
}

impl RequestFilter for RateLimitFilter {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn check(&self, req: &RequestInfo<'_>) -> Verdict {
        match check_all(&self.limits, req) {
            Some(reply) => Verdict::Respond(reply),
            None => Verdict::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(
        ip: [u8; 4],
        method: &'a http::Method,
        uri: &'a http::Uri,
        headers: &'a http::HeaderMap,
    ) -> RequestInfo<'a> {
        let raw = uri.path_and_query().map_or("/", |p| p.as_str());
        // Leaked: a test's requests live as long as the test.
        let target = Box::leak(Box::new(crate::util::target::Target::new(
            method,
            raw.as_bytes(),
            headers,
        )));
        RequestInfo {
            client_ip: IpAddr::from(ip),
            method,
            uri,
            headers,
            request_id: "t",
            target,
        }
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
        Limit::new(name, matcher, key, rate, Scope::All, Action::Block, 1000)
    }

    #[test]
    fn burst_then_refusal_per_client() {
        let l = limit("t_burst", vec![KeyPart::Ip], 6, 3);
        let (post, uri, h) = (
            http::Method::POST,
            http::Uri::from_static("/wp-login.php"),
            http::HeaderMap::new(),
        );
        for _ in 0..3 {
            assert!(l.check(&info([127, 0, 0, 2], &post, &uri, &h)).is_ok());
        }
        let wait = l
            .check(&info([127, 0, 0, 2], &post, &uri, &h))
            .unwrap_err()
            .wait;
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(10));
        assert!(
            l.check(&info([127, 0, 0, 3], &post, &uri, &h)).is_ok(),
            "another client has its own bucket"
        );
        let get = http::Method::GET;
        assert!(!l.matches(&info([127, 0, 0, 2], &get, &uri, &h)));
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
        assert_eq!(
            l.key_of(&info([10, 1, 2, 3], &post, &uri, &h)).unwrap(),
            "10.1.2.0/24|xyz|joe"
        );
        let bare = http::HeaderMap::new();
        assert!(l.key_of(&info([10, 1, 2, 3], &post, &uri, &bare)).is_none());
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_bounded() {
        let rate = Rate {
            count: NonZeroU32::new(1).unwrap(),
            period: Duration::from_secs(3600),
            burst: NonZeroU32::new(1).unwrap(),
        };
        let l = Limit::new(
            "t_flood",
            LimitMatch::default(),
            vec![KeyPart::Ip],
            rate,
            Scope::All,
            Action::Block,
            500,
        );
        let (get, uri, h) = (
            http::Method::GET,
            http::Uri::from_static("/"),
            http::HeaderMap::new(),
        );
        for i in 0..5000u32 {
            let b = i.to_be_bytes();
            let _ = l.check(&info([10, b[1], b[2], b[3]], &get, &uri, &h));
        }
        assert!(l.keys() <= 501, "{} keys", l.keys());
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
        assert_eq!(
            wc.key_of(&info([10, 1, 2, 3], &post, &uri, &h)).unwrap(),
            "42||abc",
            "the value PHP reads (raw-url-decoded)"
        );
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("10/s").unwrap().1, Duration::from_secs(1));
        assert_eq!(parse_rate("300/m").unwrap().0.get(), 300);
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("ten/s").is_err());
        assert!(parse_rate("10/fortnight").is_err());
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
