//! Live figures for `/stats` and the dashboard: requests, status mix, latency
//! percentiles (HDR histograms), cache hit ratio, blocks and offenders, over
//! the last minute, five minutes and hour.
//!
//! Time is cut into slots (`stats.slot`, default 10 s); the last hour of slots
//! is kept and windows are merged on demand, so recording a request is a few
//! counter bumps under one short lock. Each closed slot is also handed to the
//! alert engine, per route class.

use crate::policy::units::NonZeroDur;
use crate::policy::{Compiler, Section};
use crate::util::time::rfc3339;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Largest latency recorded exactly (60 s); longer ones count as 60 s.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Distinct offender IPs and paths remembered per slot (bounded memory under a flood).
const MAX_KEYS_PER_SLOT: usize = 1000;
/// Bytes of path text remembered per slot, all paths together.
const MAX_PATH_BYTES_PER_SLOT: usize = 64 << 10;
/// A path longer than this is remembered cut (with `…`).
const MAX_PATH_LEN: usize = 200;
/// Slots that keep their per-path counts: the alert engine reads a slot's
/// paths once it closes; older slots drop them.
const SLOTS_WITH_PATHS: usize = 3;
/// How much history is kept.
const HISTORY: Duration = Duration::from_secs(3600);

/// The `stats` block: the length of a statistics slot (fixed at start-up).
pub struct StatsSection;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsBlock {
    pub slot: Option<NonZeroDur>,
}

impl Section for StatsSection {
    const KEY: &'static str = "stats";
    type Raw = StatsBlock;
    type Compiled = Duration;

    fn compile(raw: Option<StatsBlock>, _c: &mut Compiler<'_>) -> Option<Duration> {
        Some(
            raw.and_then(|b| b.slot)
                .map_or(Duration::from_secs(10), |d| d.0),
        )
    }
}

/// Requests are grouped by the kind of page they ask for, for baselines and alerts.
pub fn route_class(path: &str) -> &'static str {
    let lower = path.to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    if matches!(
        ext,
        "css"
            | "js"
            | "png"
            | "jpg"
            | "jpeg"
            | "gif"
            | "webp"
            | "avif"
            | "svg"
            | "ico"
            | "woff"
            | "woff2"
            | "ttf"
            | "map"
    ) {
        return "static";
    }
    // A prefix matches on a path-segment boundary: `/cart` is not `/cartoons`.
    let starts = |prefixes: &[&str]| {
        prefixes.iter().any(|p| {
            lower.starts_with(p)
                && (p.ends_with('/')
                    || lower.len() == p.len()
                    || lower[p.len()..].starts_with(['/', '.', '?']))
        })
    };
    // API first: WordPress AJAX lives under /wp-admin/.
    if starts(&["/wp-json", "/xmlrpc.php", "/api"])
        || lower.contains("admin-ajax.php")
        || lower.contains("wc-ajax")
    {
        "api"
    } else if starts(&["/cart", "/checkout", "/order", "/panier", "/commande"]) {
        "checkout"
    } else if starts(&[
        "/my-account",
        "/wp-login.php",
        "/wp-admin",
        "/login",
        "/connexion",
        "/mon-compte",
    ]) || lower.starts_with("/admin")
    {
        "account"
    } else {
        "page"
    }
}

/// A path as the tables keep it: at most `MAX_PATH_LEN` bytes (cut on a
/// character boundary, marked with `…`).
fn bounded_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.len() <= MAX_PATH_LEN {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut end = MAX_PATH_LEN;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &path[..end]))
}

/// One answered request, as the stats see it.
#[derive(Debug, Clone)]
pub struct RequestRecord<'a> {
    pub status: u16,
    pub latency: Duration,
    pub upstream_latency: Option<Duration>,
    /// `x-cache` value, if the route is cache-enabled.
    pub cache: Option<&'a str>,
    /// Who answered: `origin`, `proxy`, `redirect` or a filter name.
    pub decision: &'static str,
    /// The refusal reason when a filter answered (`ip_denied`, `banned`...).
    pub reason: Option<&'static str>,
    /// Client address as it may be shown (anonymised when the policy says so).
    pub client_ip: IpAddr,
    pub path: &'a str,
}

/// Per route class figures of one slot, for the alert engine.
#[derive(Debug, Clone, Default)]
pub struct RouteFigures {
    pub requests: u64,
    pub errors_5xx: u64,
    /// p95 latency in milliseconds, if there was any request.
    pub p95_ms: Option<f64>,
}

/// A closed slot, summarised for the alert engine.
#[derive(Debug, Clone, Default)]
pub struct SlotSummary {
    pub slot_seconds: f64,
    pub routes: HashMap<&'static str, RouteFigures>,
    /// Requests per path (bounded), for traffic spikes on one page.
    pub paths: HashMap<String, u64>,
}

struct Slot {
    index: u64,
    requests: u64,
    status: [u64; 5],
    latency: Histogram<u64>,
    upstream_latency: Histogram<u64>,
    cache: [u64; 4], // hits, misses, stale, bypass
    decisions: HashMap<&'static str, u64>,
    blocked: HashMap<&'static str, u64>,
    offenders: HashMap<IpAddr, u64>,
    routes: HashMap<&'static str, (u64, u64, Histogram<u64>)>,
    paths: HashMap<String, u64>,
    /// Bytes of the keys of `paths`.
    path_bytes: usize,
}

fn histogram() -> Histogram<u64> {
    // 2 significant figures from 1 µs to 60 s: a few KiB each.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("constant histogram bounds are valid")
}

impl Slot {
    fn new(index: u64) -> Self {
        Slot {
            index,
            requests: 0,
            status: [0; 5],
            latency: histogram(),
            upstream_latency: histogram(),
            cache: [0; 4],
            decisions: HashMap::new(),
            blocked: HashMap::new(),
            offenders: HashMap::new(),
            routes: HashMap::new(),
            paths: HashMap::new(),
            path_bytes: 0,
        }
    }

    fn summary(&self, slot_seconds: f64) -> SlotSummary {
        SlotSummary {
            slot_seconds,
            routes: self
                .routes
                .iter()
                .map(|(k, (n, e, h))| {
                    let p95 = (!h.is_empty()).then(|| h.value_at_quantile(0.95) as f64 / 1000.0);
                    (
                        *k,
                        RouteFigures {
                            requests: *n,
                            errors_5xx: *e,
                            p95_ms: p95,
                        },
                    )
                })
                .collect(),
            paths: self.paths.clone(),
        }
    }
}

/// Decisions that are refusals (blocks, limits, bans, challenges).
fn is_block(decision: &str) -> bool {
    !matches!(decision, "origin" | "cache" | "proxy" | "redirect")
}

/// The collector, created once at start-up.
pub struct Stats {
    slot: Duration,
    started: Instant,
    started_at: SystemTime,
    slots: Mutex<VecDeque<Slot>>,
}

impl Stats {
    pub fn new(slot: Duration) -> Self {
        let slot = slot.max(Duration::from_millis(100));
        Stats {
            slot,
            started: Instant::now(),
            started_at: SystemTime::now(),
            slots: Mutex::new(VecDeque::new()),
        }
    }

    pub fn slot_duration(&self) -> Duration {
        self.slot
    }

    fn index_now(&self) -> u64 {
        (self.started.elapsed().as_nanos() / self.slot.as_nanos().max(1)) as u64
    }

    fn max_slots(&self) -> usize {
        (HISTORY.as_nanos() / self.slot.as_nanos().max(1)) as usize + 1
    }

    /// Records one answered request.
    pub fn record(&self, r: &RequestRecord<'_>) {
        let index = self.index_now();
        let max_slots = self.max_slots();
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        if slots.back().is_none_or(|s| s.index != index) {
            slots.push_back(Slot::new(index));
            while slots.len() > max_slots {
                slots.pop_front();
            }
            let len = slots.len();
            for old in slots.iter_mut().take(len.saturating_sub(SLOTS_WITH_PATHS)) {
                if !old.paths.is_empty() {
                    old.paths = HashMap::new();
                    old.path_bytes = 0;
                }
            }
        }
        let Some(slot) = slots.back_mut() else {
            return;
        };
        slot.requests += 1;
        if let Some(class) = (r.status / 100)
            .checked_sub(1)
            .map(usize::from)
            .filter(|c| *c < 5)
        {
            slot.status[class] += 1;
        }
        let us = u64::try_from(r.latency.as_micros())
            .unwrap_or(MAX_LATENCY_US)
            .clamp(1, MAX_LATENCY_US);
        slot.latency.saturating_record(us);
        if let Some(up) = r.upstream_latency {
            slot.upstream_latency.saturating_record(
                u64::try_from(up.as_micros())
                    .unwrap_or(MAX_LATENCY_US)
                    .clamp(1, MAX_LATENCY_US),
            );
        }
        match r.cache {
            Some("HIT") => slot.cache[0] += 1,
            Some("MISS") | Some("EXPIRED") => slot.cache[1] += 1,
            Some("STALE") | Some("REVALIDATED") => slot.cache[2] += 1,
            Some("BYPASS") => slot.cache[3] += 1,
            _ => {}
        }
        *slot.decisions.entry(r.decision).or_default() += 1;
        if is_block(r.decision) && r.reason != Some("challenge_passed") {
            *slot
                .blocked
                .entry(r.reason.unwrap_or(r.decision))
                .or_default() += 1;
            if slot.offenders.len() < MAX_KEYS_PER_SLOT || slot.offenders.contains_key(&r.client_ip)
            {
                *slot.offenders.entry(r.client_ip).or_default() += 1;
            }
        }
        let route = slot
            .routes
            .entry(route_class(r.path))
            .or_insert_with(|| (0, 0, histogram()));
        route.0 += 1;
        route.1 += u64::from(r.status >= 500);
        route.2.saturating_record(us);
        // Per-path counts (traffic spikes on one page) are for requests the
        // shop served: a refused flood must not fill memory with its URLs.
        if !is_block(r.decision) {
            let path = bounded_path(r.path);
            if let Some(n) = slot.paths.get_mut(path.as_ref()) {
                *n += 1;
            } else if slot.paths.len() < MAX_KEYS_PER_SLOT
                && slot.path_bytes + path.len() <= MAX_PATH_BYTES_PER_SLOT
            {
                slot.path_bytes += path.len();
                slot.paths.insert(path.into_owned(), 1);
            }
        }
    }

    /// The summary of the last closed slot, if it exists and has not been taken.
    /// Slots without traffic summarise as empty.
    pub fn closed_slot(&self, index: u64) -> SlotSummary {
        let secs = self.slot.as_secs_f64();
        let Ok(slots) = self.slots.lock() else {
            return SlotSummary {
                slot_seconds: secs,
                ..Default::default()
            };
        };
        slots.iter().find(|s| s.index == index).map_or_else(
            || SlotSummary {
                slot_seconds: secs,
                ..Default::default()
            },
            |s| s.summary(secs),
        )
    }

    /// The index of the slot being filled now.
    pub fn current_index(&self) -> u64 {
        self.index_now()
    }

    /// The `/stats` document (without upstreams, alerts and bans, added by the admin API).
    pub fn snapshot(&self) -> Value {
        let now_index = self.index_now();
        let slot_secs = self.slot.as_secs_f64();
        let Ok(slots) = self.slots.lock() else {
            return json!({});
        };
        let uptime = self.started.elapsed().as_secs_f64().max(1.0);
        let window = |seconds: u64| -> Value {
            let n = ((seconds as f64 / slot_secs).ceil() as u64).max(1);
            let first = now_index.saturating_sub(n - 1);
            // The window's time: full slots plus the part of the current one
            // already elapsed, and never more than the uptime.
            let in_current = uptime - now_index as f64 * slot_secs;
            let covered = ((n - 1) as f64 * slot_secs + in_current.max(0.001))
                .min(uptime)
                .min(seconds as f64);
            window_json(slots.iter().filter(|s| s.index >= first), seconds, covered)
        };
        let first_point = now_index.saturating_sub(359);
        let points: Vec<Value> = (first_point..=now_index)
            .filter(|i| *i * self.slot.as_millis() as u64 <= self.started.elapsed().as_millis() as u64)
            .map(|i| {
                let t = self.started_at + self.slot * u32::try_from(i).unwrap_or(u32::MAX);
                let t = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                match slots.iter().find(|s| s.index == i) {
                    Some(s) => point_json(s, t, slot_secs),
                    None => json!({ "t": t, "rps": 0.0, "p50": null, "p95": null, "p99": null, "hit_ratio": null, "blocked": 0, "errors_5xx": 0 }),
                }
            })
            .collect();
        json!({
            "generated_at": rfc3339(SystemTime::now()),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "windows": { "1m": window(60), "5m": window(300), "1h": window(3600) },
            "series": { "slot_seconds": slot_secs, "points": points },
        })
    }
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "p50": null, "p95": null, "p99": null, "max": null });
    }
    let ms = |v: u64| (v as f64 / 1000.0 * 1000.0).round() / 1000.0;
    json!({
        "p50": ms(h.value_at_quantile(0.50)),
        "p95": ms(h.value_at_quantile(0.95)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
    })
}

fn hit_ratio(cache: &[u64; 4]) -> Option<f64> {
    let lookups = cache[0] + cache[1] + cache[2];
    (lookups > 0).then(|| (cache[0] + cache[2]) as f64 / lookups as f64)
}

fn top<K: ToString>(map: HashMap<K, u64>, key: &str, n: usize) -> Vec<Value> {
    let mut items: Vec<(String, u64)> = map.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    items.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    items.truncate(n);
    items
        .into_iter()
        .map(|(k, v)| json!({ key: k, "count": v }))
        .collect()
}

fn window_json<'a>(slots: impl Iterator<Item = &'a Slot>, seconds: u64, covered: f64) -> Value {
    let mut requests = 0;
    let mut status = [0u64; 5];
    let mut latency = histogram();
    let mut upstream = histogram();
    let mut cache = [0u64; 4];
    let mut decisions: HashMap<&str, u64> = HashMap::new();
    let mut blocked: HashMap<&str, u64> = HashMap::new();
    let mut offenders: HashMap<IpAddr, u64> = HashMap::new();
    for s in slots {
        requests += s.requests;
        for (total, n) in status.iter_mut().zip(s.status) {
            *total += n;
        }
        let _ = latency.add(&s.latency);
        let _ = upstream.add(&s.upstream_latency);
        for (total, n) in cache.iter_mut().zip(s.cache) {
            *total += n;
        }
        for (k, v) in &s.decisions {
            *decisions.entry(k).or_default() += v;
        }
        for (k, v) in &s.blocked {
            *blocked.entry(k).or_default() += v;
        }
        for (k, v) in &s.offenders {
            *offenders.entry(*k).or_default() += v;
        }
    }
    let answered: u64 = status.iter().sum();
    json!({
        "seconds": seconds,
        "requests": requests,
        "rps": requests as f64 / covered,
        "status": { "1xx": status[0], "2xx": status[1], "3xx": status[2], "4xx": status[3], "5xx": status[4] },
        "latency_ms": percentiles(&latency),
        "upstream_latency_ms": percentiles(&upstream),
        "cache": { "hits": cache[0], "misses": cache[1], "stale": cache[2], "bypass": cache[3], "hit_ratio": hit_ratio(&cache) },
        "decisions": decisions,
        "top_blocked": top(blocked, "reason", 10),
        "top_offending_ips": top(offenders, "ip", 10),
        "availability": (answered > 0).then(|| 1.0 - status[4] as f64 / answered as f64),
    })
}

fn point_json(s: &Slot, t: u64, slot_secs: f64) -> Value {
    let p = percentiles(&s.latency);
    json!({
        "t": t,
        "rps": s.requests as f64 / slot_secs,
        "p50": p["p50"], "p95": p["p95"], "p99": p["p99"],
        "hit_ratio": hit_ratio(&s.cache),
        "blocked": s.blocked.values().sum::<u64>(),
        "errors_5xx": s.status[4],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: u16, ms: u64, decision: &'static str) -> RequestRecord<'static> {
        RequestRecord {
            status,
            latency: Duration::from_millis(ms),
            upstream_latency: Some(Duration::from_millis(ms)),
            cache: Some("HIT"),
            decision,
            reason: (decision != "origin").then_some("ip_denied"),
            client_ip: [203, 0, 113, 7].into(),
            path: "/product/x/",
        }
    }

    #[test]
    fn percentiles_and_availability_match_what_was_recorded() {
        let stats = Stats::new(Duration::from_secs(10));
        for i in 1..=100 {
            stats.record(&rec(200, i, "origin"));
        }
        stats.record(&rec(503, 5, "proxy"));
        stats.record(&rec(403, 1, "ip_filter"));
        let doc = stats.snapshot();
        let w = &doc["windows"]["1m"];
        assert_eq!(w["requests"], 102);
        let p50 = w["latency_ms"]["p50"].as_f64().unwrap();
        let p99 = w["latency_ms"]["p99"].as_f64().unwrap();
        assert!((45.0..=55.0).contains(&p50), "{p50}");
        assert!((95.0..=101.0).contains(&p99), "{p99}");
        let availability = w["availability"].as_f64().unwrap();
        assert!((availability - (1.0 - 1.0 / 102.0)).abs() < 1e-9);
        assert_eq!(w["top_blocked"][0]["reason"], "ip_denied");
        assert_eq!(w["top_offending_ips"][0]["ip"], "203.0.113.7");
        assert_eq!(w["cache"]["hit_ratio"], 1.0);
        assert!(!doc["series"]["points"].as_array().unwrap().is_empty());
    }

    #[test]
    fn path_tables_stay_bounded_and_refusals_stay_out() {
        let stats = Stats::new(Duration::from_secs(10));
        let long = "/é".repeat(2_000);
        for i in 0..3000 {
            let path = format!("{long}{i}");
            let mut r = rec(200, 1, "origin");
            r.path = &path;
            stats.record(&r);
            let refused = format!("/banned-flood/{i}");
            let mut r = rec(403, 1, "bans");
            r.path = &refused;
            stats.record(&r);
        }
        let slots = stats.slots.lock().unwrap();
        for slot in slots.iter() {
            assert!(
                slot.path_bytes <= MAX_PATH_BYTES_PER_SLOT,
                "{}",
                slot.path_bytes
            );
            assert!(slot
                .paths
                .keys()
                .all(|k| k.len() <= MAX_PATH_LEN + '…'.len_utf8()));
            assert!(!slot.paths.keys().any(|k| k.starts_with("/banned-flood/")));
        }
        let requests: u64 = slots.iter().map(|s| s.requests).sum();
        assert_eq!(requests, 6_000, "refused requests still count");
    }

    #[test]
    fn empty_stats_have_nulls_not_nans() {
        let doc = Stats::new(Duration::from_secs(10)).snapshot();
        let w = &doc["windows"]["5m"];
        assert!(w["latency_ms"]["p95"].is_null());
        assert!(w["availability"].is_null());
        assert!(w["cache"]["hit_ratio"].is_null());
    }

    #[test]
    fn route_classes() {
        assert_eq!(route_class("/wp-content/themes/x/style.css"), "static");
        assert_eq!(route_class("/checkout/"), "checkout");
        assert_eq!(route_class("/my-account/orders/"), "account");
        assert_eq!(route_class("/wp-json/wc/store/v1/cart"), "api");
        assert_eq!(route_class("/wp-admin/admin-ajax.php"), "api");
        assert_eq!(route_class("/cartoons/"), "page");
        assert_eq!(route_class("/order-history"), "page");
        assert_eq!(route_class("/order/"), "checkout");
        assert_eq!(route_class("/product/hoodie/"), "page");
    }
}
