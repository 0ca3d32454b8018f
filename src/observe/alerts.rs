//! Predictive alerts: warn the operator before a slowdown becomes an outage.
//!
//! For each route class (page, checkout, account, api, static) the engine
//! keeps two exponentially weighted averages of p95 latency and error rate: a
//! fast one (the last few slots) and a slow one (the baseline). An alert
//! fires when the fast one pulls away from the baseline by a factor and a
//! floor; the baseline stops learning while that lasts, so a slow creep is
//! not absorbed. Traffic spikes are judged per path, origin flapping from the
//! health checks. Alerts are de-duplicated (one per kind and subject per
//! cooldown), rate limited, logged, kept for the dashboard and sent to an
//! optional webhook (Slack-compatible JSON) through a bounded queue, so a
//! webhook that is down never slows the proxy.

use crate::observe::stats::SlotSummary;
use crate::policy::units::Dur;
use crate::policy::{Compiler, Section};
use crate::util::time::rfc3339;
use serde::Deserialize;
use serde_json::json;
use serde_saphyr::Spanned;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Alert settings from the policy.
#[derive(Debug, Clone)]
pub struct AlertPolicy {
    pub enabled: bool,
    pub webhook: Option<String>,
    /// One alert per kind and subject per cooldown.
    pub cooldown: Duration,
    pub max_per_hour: usize,
    /// Slots a route needs before its baseline is trusted.
    pub warmup_slots: u64,
    /// Requests a route needs in a slot for its latency and errors to count.
    pub min_requests: u64,
    /// Latency alert: fast p95 above baseline × factor...
    pub latency_factor: f64,
    /// ...and above baseline + floor (milliseconds).
    pub latency_floor_ms: f64,
    /// Error alert: 5xx share at least this...
    pub error_rate: f64,
    /// Spike alert: one path at least `spike_factor` × its usual rate and `spike_min_rpm` requests a minute.
    pub spike_factor: f64,
    pub spike_min_rpm: f64,
    /// Origin flapping: this many health changes within ten minutes.
    pub flap_changes: u64,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy {
            enabled: true,
            webhook: None,
            cooldown: Duration::from_secs(600),
            max_per_hour: 30,
            warmup_slots: 6,
            min_requests: 5,
            latency_factor: 2.0,
            latency_floor_ms: 100.0,
            error_rate: 0.05,
            spike_factor: 5.0,
            spike_min_rpm: 300.0,
            flap_changes: 4,
        }
    }
}

/// The `alerts` block.
pub struct AlertsSection;

impl Section for AlertsSection {
    const KEY: &'static str = "alerts";
    type Raw = AlertsBlock;
    type Compiled = AlertPolicy;

    fn compile(raw: Option<AlertsBlock>, c: &mut Compiler<'_>) -> Option<AlertPolicy> {
        Some(match raw {
            Some(b) => compile_alerts(c, b),
            None => AlertPolicy::default(),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsBlock {
    pub enabled: Option<bool>,
    pub webhook: Option<Spanned<String>>,
    pub cooldown: Option<Dur>,
    pub max_per_hour: Option<usize>,
    pub warmup_slots: Option<u64>,
    pub min_requests: Option<u64>,
    pub latency_factor: Option<Spanned<f64>>,
    pub latency_floor: Option<Dur>,
    pub error_rate: Option<Spanned<f64>>,
    pub spike_factor: Option<Spanned<f64>>,
    pub spike_min_rpm: Option<f64>,
    pub flap_changes: Option<u64>,
}

/// The `alerts` block.
fn compile_alerts(c: &mut Compiler<'_>, b: AlertsBlock) -> AlertPolicy {
    let d = AlertPolicy::default();
    let positive =
        |c: &mut Compiler<'_>, v: &Option<Spanned<f64>>, name: &str, default: f64| match v {
            Some(s) if !(s.value > 0.0 && s.value.is_finite()) => {
                c.error(
                    s,
                    format!("`alerts.{name}` must be a positive number"),
                    None,
                );
                default
            }
            Some(s) => s.value,
            None => default,
        };
    let webhook = b.webhook.as_ref().and_then(|w| {
        if w.value.starts_with("http://") || w.value.starts_with("https://") {
            Some(w.value.clone())
        } else {
            c.error(
                w,
                format!("`{}` is not an http(s) URL", w.value),
                Some("e.g. `https://hooks.slack.com/services/...`"),
            );
            None
        }
    });
    let error_rate = positive(c, &b.error_rate, "error_rate", d.error_rate);
    if error_rate > 1.0 {
        c.at(
            b.error_rate.as_ref(),
            "`alerts.error_rate` is a share between 0 and 1",
            Some("0.05 means 5 %"),
        );
    }
    AlertPolicy {
        enabled: b.enabled.unwrap_or(true),
        webhook,
        cooldown: b.cooldown.map_or(d.cooldown, |x| x.0),
        max_per_hour: b.max_per_hour.unwrap_or(d.max_per_hour),
        warmup_slots: b.warmup_slots.unwrap_or(d.warmup_slots),
        min_requests: b.min_requests.unwrap_or(d.min_requests),
        latency_factor: positive(c, &b.latency_factor, "latency_factor", d.latency_factor),
        latency_floor_ms: b
            .latency_floor
            .map_or(d.latency_floor_ms, |x| x.0.as_secs_f64() * 1000.0),
        error_rate,
        spike_factor: positive(c, &b.spike_factor, "spike_factor", d.spike_factor),
        spike_min_rpm: b.spike_min_rpm.unwrap_or(d.spike_min_rpm),
        flap_changes: b.flap_changes.unwrap_or(d.flap_changes).max(2),
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub at: SystemTime,
    /// `latency_rising`, `errors_rising`, `traffic_spike`, `origin_flapping`.
    pub kind: &'static str,
    /// The route class, path or upstream concerned.
    pub subject: String,
    pub severity: &'static str,
    pub message: String,
}

impl Alert {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "at": rfc3339(self.at),
            "kind": self.kind,
            "route_class": self.subject,
            "subject": self.subject,
            "severity": self.severity,
            "message": self.message,
        })
    }

    /// The webhook body: Slack's `text`, plus the structured alert.
    pub fn webhook_body(&self) -> String {
        json!({
            "text": format!("[{}] Rempart: {}", self.severity, self.message),
            "alert": self.to_json(),
        })
        .to_string()
    }
}

#[derive(Debug, Default)]
struct Baseline {
    slots: u64,
    fast_p95: Option<f64>,
    slow_p95: Option<f64>,
    fast_err: f64,
    slow_err: f64,
}

/// Weight of a new slot in the fast averages (about the last two slots).
const FAST: f64 = 0.5;
/// Weight in the slow averages (error rate, per-path traffic).
const SLOW: f64 = 0.1;
/// Weight in the latency baseline: slow enough (about 50 slots) that a steady
/// creep stands out against it instead of dragging it along.
const BASELINE: f64 = 0.02;

fn ewma(prev: Option<f64>, value: f64, alpha: f64) -> f64 {
    prev.map_or(value, |p| p + alpha * (value - p))
}

#[derive(Default)]
struct EngineState {
    slots_seen: u64,
    routes: HashMap<&'static str, Baseline>,
    /// Usual requests per minute of each path.
    paths: HashMap<String, f64>,
    flips: HashMap<String, VecDeque<(Instant, u64)>>,
    last_sent: HashMap<(&'static str, String), Instant>,
    sent: VecDeque<Instant>,
}

/// The alert engine, created once at start-up.
pub struct AlertEngine {
    policy: Mutex<AlertPolicy>,
    state: Mutex<EngineState>,
    recent: Mutex<VecDeque<Alert>>,
    outbox: Option<tokio::sync::mpsc::Sender<Alert>>,
}

/// How many paths are followed for spikes (bounded under a flood of URLs).
const MAX_PATHS: usize = 5000;
const RECENT: usize = 100;

impl AlertEngine {
    pub fn new(policy: AlertPolicy, outbox: Option<tokio::sync::mpsc::Sender<Alert>>) -> Self {
        AlertEngine {
            policy: Mutex::new(policy),
            state: Mutex::new(EngineState::default()),
            recent: Mutex::new(VecDeque::new()),
            outbox,
        }
    }

    pub fn set_policy(&self, policy: AlertPolicy) {
        if let Ok(mut p) = self.policy.lock() {
            *p = policy;
        }
    }

    pub fn policy(&self) -> AlertPolicy {
        self.policy.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Alerts raised recently, newest first.
    pub fn recent(&self) -> Vec<Alert> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Looks at one closed slot and the upstreams' health-change counters;
    /// returns the alerts that were emitted.
    pub fn observe(&self, slot: &SlotSummary, upstream_flips: &[(String, u64)]) -> Vec<Alert> {
        let policy = self.policy();
        if !policy.enabled {
            return Vec::new();
        }
        let candidates = {
            let Ok(mut state) = self.state.lock() else {
                return Vec::new();
            };
            detect(&mut state, &policy, slot, upstream_flips)
        };
        candidates
            .into_iter()
            .filter_map(|a| self.emit(a, &policy))
            .collect()
    }

    /// De-duplicates, rate limits, logs, stores and sends an alert.
    fn emit(&self, alert: Alert, policy: &AlertPolicy) -> Option<Alert> {
        {
            let mut state = self.state.lock().ok()?;
            let now = Instant::now();
            let key = (alert.kind, alert.subject.clone());
            if state
                .last_sent
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < policy.cooldown)
            {
                return None;
            }
            while state
                .sent
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(3600))
            {
                state.sent.pop_front();
            }
            if state.sent.len() >= policy.max_per_hour {
                tracing::debug!(kind = alert.kind, "alert dropped: max_per_hour reached");
                return None;
            }
            state.sent.push_back(now);
            state.last_sent.insert(key, now);
        }
        tracing::warn!(target: "rempart::alert", kind = alert.kind, subject = %alert.subject, severity = alert.severity, "{}", alert.message);
        if let Ok(mut recent) = self.recent.lock() {
            recent.push_back(alert.clone());
            while recent.len() > RECENT {
                recent.pop_front();
            }
        }
        if let Some(outbox) = &self.outbox {
            if outbox.try_send(alert.clone()).is_err() {
                tracing::warn!(
                    "alert webhook queue full or closed; alert kept in the log and dashboard only"
                );
            }
        }
        Some(alert)
    }
}

fn detect(
    state: &mut EngineState,
    policy: &AlertPolicy,
    slot: &SlotSummary,
    flips: &[(String, u64)],
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let now = SystemTime::now();
    state.slots_seen += 1;
    for (route, figures) in &slot.routes {
        let b = state.routes.entry(route).or_default();
        if figures.requests < policy.min_requests {
            continue;
        }
        b.slots += 1;
        let err = figures.errors_5xx as f64 / figures.requests as f64;
        b.fast_err = ewma(Some(b.fast_err), err, FAST);
        let mut anomalous = false;
        if let Some(p95) = figures.p95_ms {
            let fast = ewma(b.fast_p95, p95, FAST);
            b.fast_p95 = Some(fast);
            if let (true, Some(slow)) = (b.slots > policy.warmup_slots, b.slow_p95) {
                if fast > slow * policy.latency_factor && fast - slow > policy.latency_floor_ms {
                    anomalous = true;
                    alerts.push(Alert {
                        at: now,
                        kind: "latency_rising",
                        subject: route.to_string(),
                        severity: if fast > slow * policy.latency_factor * 2.0 {
                            "critical"
                        } else {
                            "warning"
                        },
                        message: format!(
                            "p95 latency of {route} requests is {fast:.0} ms, usually {slow:.0} ms"
                        ),
                    });
                }
            }
            if !anomalous {
                // During warm-up the baseline learns fast, then slowly.
                let alpha = if b.slots <= policy.warmup_slots {
                    FAST
                } else {
                    BASELINE
                };
                b.slow_p95 = Some(ewma(b.slow_p95, p95, alpha));
            }
        }
        let erring = b.slots > policy.warmup_slots
            && b.fast_err >= policy.error_rate
            && b.fast_err > 3.0 * b.slow_err + 0.01;
        if erring {
            alerts.push(Alert {
                at: now,
                kind: "errors_rising",
                subject: route.to_string(),
                severity: "critical",
                message: format!(
                    "{:.1} % of {route} requests fail with 5xx, usually {:.1} %",
                    b.fast_err * 100.0,
                    b.slow_err * 100.0
                ),
            });
        } else {
            b.slow_err = b.slow_err + SLOW * (err - b.slow_err);
        }
    }
    // Traffic spike on one path, judged once the engine has a baseline.
    let minutes = (slot.slot_seconds / 60.0).max(1e-6);
    let warmed = state.slots_seen > policy.warmup_slots;
    for (path, count) in &slot.paths {
        let rpm = *count as f64 / minutes;
        let usual = state.paths.get(path).copied();
        let spiking = warmed
            && rpm >= policy.spike_min_rpm
            && rpm > policy.spike_factor * (usual.unwrap_or(0.0) + 1.0);
        if spiking {
            alerts.push(Alert {
                at: now,
                kind: "traffic_spike",
                subject: path.clone(),
                severity: "warning",
                message: format!("{path} gets {rpm:.0} requests a minute, usually {:.0} (possible attack or a link going viral)", usual.unwrap_or(0.0)),
            });
        } else if usual.is_some() || state.paths.len() < MAX_PATHS {
            let updated = ewma(usual, rpm, SLOW);
            state.paths.insert(path.clone(), updated);
        }
    }
    // Paths not seen in this slot decay towards zero.
    for (path, usual) in state.paths.iter_mut() {
        if !slot.paths.contains_key(path) {
            *usual *= 1.0 - SLOW;
        }
    }
    state.paths.retain(|_, usual| *usual > 0.01);
    // Origin health flapping: several changes within ten minutes.
    let window = Duration::from_secs(600);
    let instant = Instant::now();
    for (upstream, total) in flips {
        let history = state.flips.entry(upstream.clone()).or_default();
        history.push_back((instant, *total));
        while history
            .front()
            .is_some_and(|(t, _)| instant.duration_since(*t) > window)
        {
            history.pop_front();
        }
        let changes = history.back().map_or(0, |b| b.1) - history.front().map_or(0, |f| f.1);
        if changes >= policy.flap_changes {
            alerts.push(Alert {
                at: now,
                kind: "origin_flapping",
                subject: upstream.clone(),
                severity: "warning",
                message: format!("origin {upstream} changed health {changes} times in ten minutes"),
            });
        }
    }
    alerts
}

/// Sends alerts to the policy's webhook (if any), one at a time, each bounded
/// by a timeout.
pub async fn deliver(
    engine: std::sync::Arc<AlertEngine>,
    mut outbox: tokio::sync::mpsc::Receiver<Alert>,
) {
    while let Some(alert) = outbox.recv().await {
        let Some(url) = engine.policy().webhook else {
            continue;
        };
        match tokio::time::timeout(
            Duration::from_secs(5),
            crate::observe::webhook::post_json(&url, &alert.webhook_body()),
        )
        .await
        {
            Ok(Ok(status)) if (200..300).contains(&status) => {}
            Ok(Ok(status)) => tracing::warn!(status, "alert webhook answered with an error"),
            Ok(Err(e)) => tracing::warn!("alert webhook unreachable: {e}"),
            Err(_) => tracing::warn!("alert webhook timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::stats::RouteFigures;

    fn slot(requests: u64, errors: u64, p95: f64) -> SlotSummary {
        SlotSummary {
            slot_seconds: 10.0,
            routes: HashMap::from([(
                "page",
                RouteFigures {
                    requests,
                    errors_5xx: errors,
                    p95_ms: Some(p95),
                },
            )]),
            paths: HashMap::from([("/product/x/".to_string(), requests)]),
        }
    }

    fn quiet_policy() -> AlertPolicy {
        AlertPolicy {
            cooldown: Duration::from_secs(3600),
            ..AlertPolicy::default()
        }
    }

    #[test]
    fn steady_traffic_raises_nothing() {
        let engine = AlertEngine::new(quiet_policy(), None);
        for i in 0..200 {
            // Noise around 40 ms, errors now and then.
            let p95 = 40.0 + (i % 7) as f64 * 3.0;
            let errors = u64::from(i % 50 == 0);
            assert!(
                engine.observe(&slot(100, errors, p95), &[]).is_empty(),
                "slot {i}"
            );
        }
    }

    #[test]
    fn creeping_latency_is_caught_before_it_is_an_outage() {
        let engine = AlertEngine::new(quiet_policy(), None);
        for _ in 0..20 {
            engine.observe(&slot(100, 0, 40.0), &[]);
        }
        let mut raised_at = None;
        for step in 0..40 {
            let p95 = 40.0 + step as f64 * 15.0; // +15 ms every slot
            let alerts = engine.observe(&slot(100, 0, p95), &[]);
            if alerts.iter().any(|a| a.kind == "latency_rising") {
                raised_at = Some(p95);
                break;
            }
        }
        let at = raised_at.expect("no latency alert for a steady creep");
        assert!(at < 400.0, "alert came late, at p95 {at} ms");
        assert_eq!(engine.recent().len(), 1);
    }

    #[test]
    fn errors_rising_and_dedup() {
        let engine = AlertEngine::new(quiet_policy(), None);
        for _ in 0..20 {
            engine.observe(&slot(100, 0, 40.0), &[]);
        }
        let first = engine.observe(&slot(100, 30, 40.0), &[]);
        assert!(first.iter().any(|a| a.kind == "errors_rising"), "{first:?}");
        let again = engine.observe(&slot(100, 40, 40.0), &[]);
        assert!(again.is_empty(), "duplicate within cooldown: {again:?}");
    }

    #[test]
    fn a_spike_on_one_path_and_a_flapping_origin() {
        let engine = AlertEngine::new(quiet_policy(), None);
        for _ in 0..10 {
            engine.observe(&slot(20, 0, 40.0), &[("o:80".into(), 0)]);
        }
        let mut spike = slot(20, 0, 40.0);
        spike.paths.insert("/wp-login.php".into(), 2000);
        let alerts = engine.observe(&spike, &[("o:80".into(), 5)]);
        assert!(
            alerts
                .iter()
                .any(|a| a.kind == "traffic_spike" && a.subject == "/wp-login.php"),
            "{alerts:?}"
        );
        assert!(
            alerts.iter().any(|a| a.kind == "origin_flapping"),
            "{alerts:?}"
        );
    }

    #[test]
    fn rate_limit_caps_alerts_per_hour() {
        let policy = AlertPolicy {
            cooldown: Duration::ZERO,
            max_per_hour: 2,
            ..AlertPolicy::default()
        };
        let engine = AlertEngine::new(policy, None);
        for _ in 0..20 {
            engine.observe(&slot(100, 0, 40.0), &[]);
        }
        let mut total = 0;
        for _ in 0..10 {
            total += engine.observe(&slot(100, 60, 40.0), &[]).len();
        }
        assert_eq!(total, 2);
    }

    #[test]
    fn a_full_webhook_queue_never_blocks() {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let policy = AlertPolicy {
            cooldown: Duration::ZERO,
            ..AlertPolicy::default()
        };
        let engine = AlertEngine::new(policy, Some(tx));
        for _ in 0..20 {
            engine.observe(&slot(100, 0, 40.0), &[]);
        }
        for _ in 0..5 {
            engine.observe(&slot(100, 60, 40.0), &[]);
        }
        assert!(engine.recent().len() >= 2);
    }

    #[test]
    fn webhook_body_is_slack_compatible() {
        let a = Alert {
            at: SystemTime::UNIX_EPOCH,
            kind: "latency_rising",
            subject: "page".into(),
            severity: "warning",
            message: "slow".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&a.webhook_body()).unwrap();
        assert_eq!(v["text"], "[warning] Rempart: slow");
        assert_eq!(v["alert"]["kind"], "latency_rising");
    }
}
