//! One record per finished request, in one place: the request counters and
//! latency histogram, the live statistics, and the access log line, all
//! labelled with who decided.

use super::metrics;
use super::stats::{route_class, RequestRecord, Stats};
use std::net::IpAddr;
use std::time::Duration;

/// What is known of a request once it is over.
#[derive(Debug)]
pub struct Finished<'a> {
    /// 0 when no answer was sent.
    pub status: u16,
    pub elapsed: Duration,
    pub upstream_latency: Option<Duration>,
    /// The origin server that answered (its name), if any.
    pub upstream: Option<&'a str>,
    pub decided_by: &'static str,
    pub reason: Option<&'static str>,
    pub rule: Option<&'a str>,
    /// The `x-cache` value sent, and why the cache was bypassed.
    pub cache: Option<&'static str>,
    pub cache_bypass: Option<&'static str>,
    /// The client as logs may show it (`server.anonymize_ips`).
    pub client_ip: IpAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub bytes: usize,
    pub request_id: &'a str,
    pub error: Option<&'static str>,
    /// Write the access log line (`server.access_log`).
    pub access_log: bool,
}

/// Counts the request, feeds the live statistics and writes the access log.
pub fn finished(stats: &Stats, r: &Finished<'_>) {
    let class = metrics::status_class(r.status);
    metrics::REQUESTS
        .with_label_values(&[route_class(r.path), class, r.decided_by])
        .inc();
    stats.record(&RequestRecord {
        status: r.status,
        latency: r.elapsed,
        upstream_latency: r.upstream_latency,
        cache: r.cache,
        decision: r.decided_by,
        reason: r.reason,
        client_ip: r.client_ip,
        path: r.path,
    });
    metrics::REQUEST_DURATION
        .with_label_values(&[class])
        .observe(r.elapsed.as_secs_f64());
    if r.access_log {
        tracing::info!(
            target: "rempart::access",
            client_ip = %r.client_ip,
            method = %r.method,
            path = r.path,
            status = r.status,
            bytes = r.bytes,
            duration_ms = r.elapsed.as_secs_f64() * 1000.0,
            upstream = r.upstream.unwrap_or("-"),
            request_id = %r.request_id,
            decided_by = r.decided_by,
            reason = r.reason.unwrap_or("-"),
            rule = r.rule.unwrap_or("-"),
            cache = r.cache.unwrap_or("-"),
            cache_bypass = r.cache_bypass.unwrap_or("-"),
            error = r.error.unwrap_or("-"),
        );
    }
}
