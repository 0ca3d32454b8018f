//! Counting requests per key against a rate (GCRA, on governor), with the
//! memory a flood of keys may take bounded, and limiters that outlive
//! policy reloads.
//!
//! A limiter holds at most `max_keys` keys. Past it, idle keys are dropped
//! first; if the table is still full, the newcomer is counted in one shared
//! overflow bucket. Counting never stops, so overflow is at least as strict
//! as the limit: an attacker who fills the table shares one bucket with
//! every other newcomer ([`Count::shared`] says so; a caller that bans must
//! not ban from it: it cannot tell who is to blame).

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The rate: `count` requests per `period`, with bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: NonZeroU32,
    pub period: Duration,
    pub burst: NonZeroU32,
}

/// Parses `10/s`, `300/m`, `1000/h`, `5/d`: the count and the period.
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

/// The key of the bucket newcomers share once a table is full.
const OVERFLOW_KEY: &str = "#overflow";

/// One keyed limiter.
pub struct KeyedLimiter {
    name: String,
    keyed: DefaultKeyedRateLimiter<String>,
    max_keys: usize,
    /// The table has been full once (logged once).
    overflowing: AtomicBool,
}

/// What counting one request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Over the rate: how long until the next request would be allowed.
    pub wait: Option<Duration>,
    /// Counted in the shared overflow bucket (the table was full).
    pub shared: bool,
}

impl KeyedLimiter {
    fn new(name: &str, rate: Rate, max_keys: usize) -> Self {
        let per_cell = rate.period / rate.count.get();
        let quota = Quota::with_period(per_cell.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(rate.count))
            .allow_burst(rate.burst);
        KeyedLimiter {
            name: name.to_string(),
            keyed: DefaultKeyedRateLimiter::keyed(quota),
            max_keys,
            overflowing: AtomicBool::new(false),
        }
    }

    /// Counts one request of `key`.
    pub fn count(&self, key: &str) -> Count {
        let mut shared = false;
        if self.keyed.len() >= self.max_keys {
            self.keyed.retain_recent();
            if self.keyed.len() >= self.max_keys {
                if !self.overflowing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(limit = %self.name, max_keys = self.max_keys, "rate limit table full: newcomers share one bucket");
                }
                shared = true;
            }
        }
        let key = if shared { OVERFLOW_KEY } else { key };
        let wait = match self.keyed.check_key(&key.to_string()) {
            Ok(()) => None,
            Err(not_until) => Some(not_until.wait_time_from(DefaultClock::default().now())),
        };
        Count { wait, shared }
    }

    /// Keys held now.
    pub fn keys(&self) -> usize {
        self.keyed.len()
    }

    fn sweep(&self) {
        self.keyed.retain_recent();
        self.keyed.shrink_to_fit();
    }
}

type RegistryKey = (String, Rate);

/// Limiters by name and rate, created once at start-up and kept across
/// reloads: editing an unrelated part of the policy must not hand every
/// attacker a fresh burst. A changed rate starts a new limiter.
#[derive(Default)]
pub struct Registry {
    limiters: Mutex<HashMap<RegistryKey, Arc<KeyedLimiter>>>,
}

impl Registry {
    /// The running limiter of this name and rate, or a new one.
    pub fn limiter(&self, name: &str, rate: Rate, max_keys: usize) -> Arc<KeyedLimiter> {
        self.limiters
            .lock()
            .entry((name.to_string(), rate))
            .or_insert_with(|| Arc::new(KeyedLimiter::new(name, rate, max_keys)))
            .clone()
    }

    /// Drops idle keys of every limiter (a background task calls this).
    pub fn sweep(&self) {
        let limiters: Vec<Arc<KeyedLimiter>> = self.limiters.lock().values().cloned().collect();
        for l in limiters {
            l.sweep();
        }
    }
}

impl std::fmt::Debug for KeyedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("name", &self.name)
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_minute: u32, burst: u32) -> Rate {
        Rate {
            count: NonZeroU32::new(per_minute).unwrap(),
            period: Duration::from_secs(60),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn burst_then_wait() {
        let registry = Registry::default();
        let l = registry.limiter("t", rate(6, 3), 1000);
        for _ in 0..3 {
            assert_eq!(l.count("a").wait, None);
        }
        let wait = l.count("a").wait.unwrap();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(10));
        assert_eq!(l.count("b").wait, None, "another key has its own bucket");
    }

    #[test]
    fn the_same_name_and_rate_is_the_same_limiter() {
        let registry = Registry::default();
        let a = registry.limiter("t", rate(6, 1), 1000);
        assert_eq!(a.count("k").wait, None);
        let b = registry.limiter("t", rate(6, 1), 1000);
        assert!(b.count("k").wait.is_some(), "state survives a reload");
        let c = registry.limiter("t", rate(60, 1), 1000);
        assert_eq!(c.count("k").wait, None, "a new rate starts afresh");
    }

    #[test]
    fn a_flood_of_keys_stays_bounded_and_shares_a_bucket() {
        let registry = Registry::default();
        let l = registry.limiter("t", rate(1, 1), 500);
        let mut shared = 0;
        for i in 0..5000u32 {
            shared += usize::from(l.count(&i.to_string()).shared);
        }
        assert!(l.keys() <= 501, "{} keys", l.keys());
        assert!(shared > 4000);
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("10/s").unwrap().1, Duration::from_secs(1));
        assert_eq!(parse_rate("300/m").unwrap().0.get(), 300);
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("ten/s").is_err());
        assert!(parse_rate("10/fortnight").is_err());
    }
}
