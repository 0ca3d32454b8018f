//! Origin servers: their health, and the choice of one for each request.
//!
//! Health state lives in [`UpstreamPool`], created once at start-up and kept
//! across reloads (keyed by address), so a reload neither forgets that a
//! server is down nor resets the in-flight counts. pingora's load-balancing
//! crate has no least-connections strategy and rebuilds its backends as a
//! whole, hence this small module.

pub mod health;
pub mod section;

use crate::observe::metrics;
pub use section::{Balance, HealthCheck, UpstreamSection, UpstreamServer, UpstreamSettings};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Live state of one origin server.
#[derive(Debug)]
pub struct ServerState {
    name: String,
    healthy: AtomicBool,
    /// Whether an active health check has answered at least once.
    checked: AtomicBool,
    consecutive_ok: AtomicU32,
    consecutive_fail: AtomicU32,
    passive_failures: AtomicU32,
    marked_down_at: Mutex<Option<Instant>>,
    in_flight: AtomicUsize,
    /// Health changes since start-up (for flapping alerts).
    flips: std::sync::atomic::AtomicU64,
}

impl ServerState {
    fn new(name: &str) -> Self {
        metrics::UPSTREAM_HEALTHY.with_label_values(&[name]).set(1);
        ServerState {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            checked: AtomicBool::new(false),
            consecutive_ok: AtomicU32::new(0),
            consecutive_fail: AtomicU32::new(0),
            passive_failures: AtomicU32::new(0),
            marked_down_at: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            flips: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn was_checked(&self) -> bool {
        self.checked.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// How many times this server changed health since start-up.
    pub fn flips(&self) -> u64 {
        self.flips.load(Ordering::Relaxed)
    }

    fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            self.flips.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut at) = self.marked_down_at.lock() {
                *at = (!healthy).then(Instant::now);
            }
            metrics::UPSTREAM_HEALTHY
                .with_label_values(&[&self.name])
                .set(i64::from(healthy));
            if healthy {
                tracing::info!(upstream = %self.name, "upstream is healthy again");
            } else {
                tracing::warn!(upstream = %self.name, "upstream marked unhealthy");
            }
        }
    }

    /// Routable now: healthy, or (without active checks) down for longer than
    /// the cooldown, so that a passive mark does not exclude a server forever.
    fn routable(&self, settings: &UpstreamSettings) -> bool {
        if self.is_healthy() {
            return true;
        }
        settings.health_check.is_none()
            && self
                .marked_down_at
                .lock()
                .ok()
                .and_then(|at| *at)
                .is_some_and(|at| at.elapsed() >= settings.cooldown)
    }

    /// Result of an active health check.
    pub fn record_check(&self, ok: bool, healthy_threshold: u32, unhealthy_threshold: u32) {
        self.checked.store(true, Ordering::Relaxed);
        if ok {
            self.consecutive_fail.store(0, Ordering::Relaxed);
            let n = self.consecutive_ok.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= healthy_threshold {
                self.passive_failures.store(0, Ordering::Relaxed);
                self.set_healthy(true);
            }
        } else {
            self.consecutive_ok.store(0, Ordering::Relaxed);
            let n = self.consecutive_fail.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= unhealthy_threshold {
                self.set_healthy(false);
            }
        }
    }

    /// A request failed to reach this server (connect error, timeout).
    pub fn record_failure(&self, kind: &str, max_failures: u32) {
        metrics::UPSTREAM_FAILURES
            .with_label_values(&[&self.name, kind])
            .inc();
        let n = self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= max_failures {
            self.consecutive_ok.store(0, Ordering::Relaxed);
            self.set_healthy(false);
        }
    }

    /// A request got a response from this server.
    pub fn record_success(&self) {
        self.passive_failures.store(0, Ordering::Relaxed);
        // Without active checks, a response is the proof of life.
        if !self.is_healthy() && !self.was_checked() {
            self.set_healthy(true);
        }
    }
}

/// Counts a request in flight on a server until dropped (least-connections).
#[derive(Debug)]
pub struct InFlight(Arc<ServerState>);

impl InFlight {
    pub fn state(&self) -> &Arc<ServerState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The chosen server for one attempt.
#[derive(Debug)]
pub struct Selected {
    pub server: UpstreamServer,
    pub in_flight: InFlight,
}

/// Health and load of every origin server seen since start-up.
#[derive(Debug, Default)]
pub struct UpstreamPool {
    states: RwLock<HashMap<SocketAddr, Arc<ServerState>>>,
    next: AtomicUsize,
}

impl UpstreamPool {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of a server, created on first sight.
    pub fn state(&self, server: &UpstreamServer) -> Arc<ServerState> {
        if let Some(s) = self
            .states
            .read()
            .ok()
            .and_then(|m| m.get(&server.addr).cloned())
        {
            return s;
        }
        let mut map = match self.states.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(server.addr)
            .or_insert_with(|| Arc::new(ServerState::new(&server.name)))
            .clone()
    }

    /// Picks a server for a request, never one in `exclude` (already tried).
    /// Healthy servers first; when none is, any untried server, so that a
    /// stale health view does not turn the whole shop into 502s.
    pub fn select(&self, settings: &UpstreamSettings, exclude: &[SocketAddr]) -> Option<Selected> {
        let untried: Vec<(&UpstreamServer, Arc<ServerState>)> = settings
            .servers
            .iter()
            .filter(|s| !exclude.contains(&s.addr))
            .map(|s| (s, self.state(s)))
            .collect();
        let healthy: Vec<_> = untried
            .iter()
            .filter(|(_, st)| st.routable(settings))
            .cloned()
            .collect();
        let candidates = if healthy.is_empty() { untried } else { healthy };
        if candidates.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let (server, state) = match settings.balance {
            Balance::RoundRobin => &candidates[turn % candidates.len()],
            Balance::LeastConnections => {
                let least = candidates
                    .iter()
                    .map(|(_, st)| st.in_flight())
                    .min()
                    .unwrap_or(0);
                let tied: Vec<_> = candidates
                    .iter()
                    .filter(|(_, st)| st.in_flight() == least)
                    .collect();
                tied[turn % tied.len()]
            }
        };
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Selected {
            server: (*server).clone(),
            in_flight: InFlight(state.clone()),
        })
    }

    /// Whether at least one configured server can take traffic.
    pub fn any_healthy(&self, settings: &UpstreamSettings) -> bool {
        settings.servers.iter().any(|s| {
            let st = self.state(s);
            st.is_healthy() && (settings.health_check.is_none() || st.was_checked())
        })
    }
}

/// Time since `start`, for upstream latency metrics.
pub fn elapsed_secs(start: Instant) -> f64 {
    Duration::as_secs_f64(&start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(balance: Balance, ports: &[u16]) -> UpstreamSettings {
        UpstreamSettings {
            servers: ports
                .iter()
                .map(|p| UpstreamServer {
                    name: format!("127.0.0.1:{p}"),
                    host: "127.0.0.1".into(),
                    addr: SocketAddr::from(([127, 0, 0, 1], *p)),
                })
                .collect(),
            balance,
            host_header: None,
            retries: 1,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            health_check: None,
            max_failures: 2,
            cooldown: Duration::from_secs(3600),
        }
    }

    #[test]
    fn round_robin_takes_turns() {
        let pool = UpstreamPool::new();
        let s = settings(Balance::RoundRobin, &[1, 2]);
        let a = pool.select(&s, &[]).unwrap().server.addr.port();
        let b = pool.select(&s, &[]).unwrap().server.addr.port();
        assert_ne!(a, b);
    }

    #[test]
    fn least_connections_prefers_the_idle_server() {
        let pool = UpstreamPool::new();
        let s = settings(Balance::LeastConnections, &[1, 2]);
        let busy = pool.select(&s, &[]).unwrap();
        for _ in 0..5 {
            let other = pool.select(&s, &[]).unwrap();
            assert_ne!(other.server.addr, busy.server.addr);
        }
        drop(busy);
    }

    #[test]
    fn passive_failures_take_a_server_out_and_exclusion_is_respected() {
        let pool = UpstreamPool::new();
        let s = settings(Balance::RoundRobin, &[1, 2]);
        let down = pool.state(&s.servers[0]);
        down.record_failure("connect", 2);
        assert!(down.is_healthy());
        down.record_failure("connect", 2);
        assert!(!down.is_healthy());
        for _ in 0..4 {
            assert_eq!(pool.select(&s, &[]).unwrap().server.addr.port(), 2);
        }
        // Everything excluded but the down one: it is still tried.
        assert_eq!(
            pool.select(&s, &[s.servers[1].addr])
                .unwrap()
                .server
                .addr
                .port(),
            1
        );
        assert!(pool
            .select(&s, &[s.servers[0].addr, s.servers[1].addr])
            .is_none());
        down.record_success();
        assert!(down.is_healthy());
    }

    #[test]
    fn active_checks_use_thresholds() {
        let pool = UpstreamPool::new();
        let s = settings(Balance::RoundRobin, &[1]);
        let st = pool.state(&s.servers[0]);
        st.record_check(false, 2, 2);
        assert!(st.is_healthy());
        st.record_check(false, 2, 2);
        assert!(!st.is_healthy());
        st.record_check(true, 2, 2);
        assert!(!st.is_healthy());
        st.record_check(true, 2, 2);
        assert!(st.is_healthy());
    }

    #[test]
    fn in_flight_is_released_on_drop() {
        let pool = UpstreamPool::new();
        let s = settings(Balance::LeastConnections, &[1]);
        let sel = pool.select(&s, &[]).unwrap();
        assert_eq!(sel.in_flight.state().in_flight(), 1);
        let st = sel.in_flight.state().clone();
        drop(sel);
        assert_eq!(st.in_flight(), 0);
    }
}
