//! Prometheus metrics, served as text on the admin listener at `/metrics`.
//! Names follow `rempart_<module>_<thing>_<unit|total>`.

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, Encoder,
    HistogramVec, IntCounterVec, IntGaugeVec, TextEncoder,
};
use std::sync::LazyLock;

// Registration only fails on a duplicate name, which is a programming error
// caught by the tests; the statics are created once at start-up.
#[allow(clippy::expect_used)]
fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("metric registration")
}

/// Latency buckets from 1 ms to 30 s, dense where shop pages live (50 ms–2 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// Requests answered, by route class (`page`, `checkout`, `account`, `api`,
/// `static`), status class (`2xx`...) and who decided (`origin`, a filter
/// name, or `proxy` for Rempart's own errors).
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_proxy_requests_total",
        "Requests answered, by route class, status class and deciding component",
        &["route_class", "status_class", "decision"]
    ))
});

/// Time from request start to the end of the response, as the client sees it.
pub static REQUEST_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    must(register_histogram_vec!(
        "rempart_proxy_request_duration_seconds",
        "Downstream request duration",
        &["status_class"],
        LATENCY_BUCKETS.to_vec()
    ))
});

/// Time the origin took to send its response header.
pub static UPSTREAM_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    must(register_histogram_vec!(
        "rempart_upstream_response_duration_seconds",
        "Time to upstream response header",
        &["upstream"],
        LATENCY_BUCKETS.to_vec()
    ))
});

/// 1 when the upstream server is healthy, 0 when it is not.
pub static UPSTREAM_HEALTHY: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    must(register_int_gauge_vec!(
        "rempart_upstream_healthy",
        "Upstream health (1 healthy, 0 unhealthy)",
        &["upstream"]
    ))
});

/// Failures talking to an upstream: `connect`, `timeout`, `io`, `health_check`.
pub static UPSTREAM_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_upstream_failures_total",
        "Upstream failures by kind",
        &["upstream", "kind"]
    ))
});

/// Requests sent again to another upstream after a connect failure.
pub static UPSTREAM_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_upstream_retries_total",
        "Requests retried on another upstream",
        &["upstream"]
    ))
});

/// Policy reloads, `ok` or `failed`.
pub static RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_config_reloads_total",
        "Policy reloads by result",
        &["result"]
    ))
});

/// Cache lookups by outcome: `hit`, `miss`, `stale`, `expired`, `revalidated`.
pub static CACHE_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_cache_lookups_total",
        "Cache lookups by outcome",
        &["outcome"]
    ))
});

/// Requests or responses that did not use the cache, by reason.
pub static CACHE_BYPASS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_cache_bypass_total",
        "Requests served without the cache, by reason",
        &["reason"]
    ))
});

/// Entries pushed out because the store was full.
pub static CACHE_EVICTIONS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    must(prometheus::register_int_counter!(
        "rempart_cache_evictions_total",
        "Entries evicted to stay within cache.max_size"
    ))
});

/// Entries and bytes in the store, refreshed at each scrape.
pub static CACHE_ENTRIES: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    must(prometheus::register_int_gauge!(
        "rempart_cache_entries",
        "Entries in the page cache"
    ))
});

pub static CACHE_BYTES: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    must(prometheus::register_int_gauge!(
        "rempart_cache_bytes",
        "Bytes held by the page cache"
    ))
});

/// Requests refused by a rate limit, by limit name.
pub static RATE_LIMITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_ratelimit_limited_total",
        "Requests answered 429 by a rate limit",
        &["limit"]
    ))
});

/// Requests counted in a limit's shared overflow bucket (its key table was full).
pub static RATE_LIMIT_OVERFLOW: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_ratelimit_overflow_total",
        "Requests counted in a rate limit's shared overflow bucket because its key table was full",
        &["limit"]
    ))
});

/// Connections refused at accept, by reason.
pub static CONNECTIONS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_connections_refused_total",
        "Client connections refused or closed by Rempart, by reason (per_address_cap, header_timeout)",
        &["reason"]
    ))
});

/// Failed login attempts seen, by login rule.
pub static LOGIN_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_bruteforce_failures_total",
        "Failed login attempts judged from the origin's answers",
        &["login"]
    ))
});

/// Proof-of-work challenges: `shown`, `passed`, `failed`.
pub static CHALLENGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_bot_challenges_total",
        "Proof-of-work challenges by outcome",
        &["outcome"]
    ))
});

/// Bans placed, by reason.
pub static BANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_bans_total",
        "Bans placed, by reason",
        &["reason"]
    ))
});

/// Requests the WAF inspected, by outcome.
pub static WAF_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_waf_requests_total",
        "Requests inspected by the WAF, by outcome (clean, logged, detected, blocked, rejected)",
        &["outcome"]
    ))
});

/// WAF rule matches, by rule id.
pub static WAF_RULE_HITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(register_int_counter_vec!(
        "rempart_waf_rule_hits_total",
        "Matches of logging WAF rules, by rule id",
        &["rule"]
    ))
});

/// Creates every metric so that `/metrics` lists them from the start.
pub fn init() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_DURATION);
    LazyLock::force(&UPSTREAM_DURATION);
    LazyLock::force(&UPSTREAM_HEALTHY);
    LazyLock::force(&UPSTREAM_FAILURES);
    LazyLock::force(&UPSTREAM_RETRIES);
    LazyLock::force(&RATE_LIMITED);
    LazyLock::force(&RATE_LIMIT_OVERFLOW);
    LazyLock::force(&CONNECTIONS_REFUSED);
    LazyLock::force(&BANS);
    LazyLock::force(&WAF_REQUESTS);
    LazyLock::force(&WAF_RULE_HITS);
    LazyLock::force(&CHALLENGES);
    LazyLock::force(&CACHE_LOOKUPS);
    LazyLock::force(&CACHE_BYPASS);
    LazyLock::force(&CACHE_EVICTIONS);
    LazyLock::force(&CACHE_ENTRIES);
    LazyLock::force(&CACHE_BYTES);
    RELOADS.with_label_values(&["ok"]);
    RELOADS.with_label_values(&["failed"]);
}

/// The Prometheus text exposition of every metric.
pub fn render() -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&prometheus::gather(), &mut out) {
        tracing::error!("cannot encode metrics: {e}");
    }
    out
}

/// `2xx`, `4xx`... for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}
