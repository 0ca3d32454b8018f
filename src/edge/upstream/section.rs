//! The `upstream` block: the origin servers, how requests are spread over
//! them, timeouts, retries and health checks.

use crate::policy::units::{Dur, NonZeroDur};
use crate::policy::{Compiler, Section};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The `upstream` block.
pub struct UpstreamSection;

impl Section for UpstreamSection {
    const KEY: &'static str = "upstream";
    type Raw = UpstreamBlock;
    type Compiled = UpstreamSettings;

    fn compile(raw: Option<UpstreamBlock>, c: &mut Compiler<'_>) -> Option<UpstreamSettings> {
        Some(compile_upstream(c, raw))
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub servers: Vec<UpstreamServer>,
    pub balance: Balance,
    pub host_header: Option<String>,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    pub max_failures: u32,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    /// As written (`shop-php:8080`), used as its name in logs and metrics.
    pub name: String,
    /// The host part, sent as `Host` by health checks.
    pub host: String,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub path: String,
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Inclusive range of statuses that count as healthy.
    pub expect_status: (u16, u16),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamBlock {
    pub servers: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub host_header: Option<Spanned<String>>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub timeouts: TimeoutsBlock,
    #[serde(default)]
    pub health_check: Option<HealthCheckBlock>,
    #[serde(default)]
    pub passive: PassiveBlock,
}

/// How requests are spread over healthy upstream servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each server in turn.
    #[default]
    RoundRobin,
    /// The server with the fewest requests in flight.
    LeastConnections,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsBlock {
    pub connect: Option<NonZeroDur>,
    pub read: Option<NonZeroDur>,
    pub write: Option<NonZeroDur>,
    pub idle: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckBlock {
    pub path: Option<Spanned<String>>,
    pub host: Option<String>,
    pub interval: Option<NonZeroDur>,
    pub timeout: Option<NonZeroDur>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub expect_status: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveBlock {
    pub max_failures: Option<u32>,
    pub cooldown: Option<Dur>,
}

fn compile_upstream(c: &mut Compiler<'_>, raw: Option<UpstreamBlock>) -> UpstreamSettings {
    let missing = c.is_missing(UpstreamSection::KEY);
    let overrides = c.overrides().clone();
    let mut servers = Vec::new();
    let (balance, host_header, retries, timeouts, health, passive) = match raw {
        Some(u) => {
            for s in &u.servers.value {
                match resolve(&s.value) {
                    Ok(server) => servers.push(server),
                    Err(e) => c.error(
                        s,
                        e,
                        Some("write HOST:PORT, e.g. `127.0.0.1:8081` or `php-fpm-nginx:80`"),
                    ),
                }
            }
            if u.servers.value.is_empty() && overrides.upstreams.is_empty() {
                c.error(
                    &u.servers,
                    "`upstream.servers` is empty",
                    Some("list at least one origin server, e.g. `127.0.0.1:8081`"),
                );
            }
            if let Some(h) = &u.host_header {
                if http::HeaderValue::from_str(&h.value).is_err() || h.value.is_empty() {
                    c.error(h, format!("`{}` is not a valid Host header", h.value), None);
                }
            }
            (
                u.balance,
                u.host_header.map(|h| h.value),
                u.retries,
                u.timeouts,
                u.health_check,
                u.passive,
            )
        }
        None => {
            if overrides.upstreams.is_empty() && missing {
                c.at::<()>(None, "the policy has no `upstream` block",
                    Some("add `upstream:` with `servers: [\"127.0.0.1:8081\"]`, or pass --upstream HOST:PORT"));
            }
            (
                Balance::default(),
                None,
                None,
                Default::default(),
                None,
                Default::default(),
            )
        }
    };
    if !overrides.upstreams.is_empty() {
        servers.clear();
        for s in &overrides.upstreams {
            match resolve(s) {
                Ok(server) => servers.push(server),
                Err(e) => c.cli_error("--upstream", e),
            }
        }
    }
    let health_check = health.map(|h| {
        let path = match &h.path {
            Some(p) if !p.value.starts_with('/') => {
                c.error(
                    p,
                    format!("health check path `{}` must start with `/`", p.value),
                    None,
                );
                "/".to_string()
            }
            Some(p) => p.value.clone(),
            None => "/".to_string(),
        };
        let expect_status = match &h.expect_status {
            Some(s) => parse_status_range(&s.value).unwrap_or_else(|e| {
                c.error(
                    s,
                    e,
                    Some("write one status (`200`) or an inclusive range (`200-399`)"),
                );
                (200, 399)
            }),
            None => (200, 399),
        };
        let healthy_threshold = h.healthy_threshold.unwrap_or(2).max(1);
        let unhealthy_threshold = h.unhealthy_threshold.unwrap_or(3).max(1);
        HealthCheck {
            path,
            host: h.host,
            interval: h.interval.map_or(Duration::from_secs(5), |d| d.0),
            timeout: h.timeout.map_or(Duration::from_secs(2), |d| d.0),
            healthy_threshold,
            unhealthy_threshold,
            expect_status,
        }
    });
    UpstreamSettings {
        servers,
        balance,
        host_header,
        retries: retries.unwrap_or(1),
        connect_timeout: timeouts.connect.map_or(Duration::from_secs(3), |d| d.0),
        read_timeout: timeouts.read.map_or(Duration::from_secs(60), |d| d.0),
        write_timeout: timeouts.write.map_or(Duration::from_secs(60), |d| d.0),
        idle_timeout: timeouts.idle.map_or(Duration::from_secs(60), |d| d.0),
        health_check,
        max_failures: passive.max_failures.unwrap_or(3).max(1),
        cooldown: passive.cooldown.map_or(Duration::from_secs(10), |d| d.0),
    }
}

/// `host:port` to an address, resolving names once, at load time.
fn resolve(text: &str) -> Result<UpstreamServer, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}` has no port"))?;
    port.parse::<u16>()
        .map_err(|_| format!("`{port}` in `{text}` is not a port number"))?;
    let addr = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{text}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address"))?;
    Ok(UpstreamServer {
        name: text.to_string(),
        host: host.trim_matches(|ch| ch == '[' || ch == ']').to_string(),
        addr,
    })
}

/// `200` or `200-399`.
fn parse_status_range(text: &str) -> Result<(u16, u16), String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (100..=599).contains(n))
            .ok_or_else(|| format!("`{s}` is not an HTTP status (100-599)"))
    };
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(text)?, parse(text)?),
    };
    if lo > hi {
        return Err(format!("status range `{text}` is empty"));
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert_eq!(parse_status_range("204"), Ok((204, 204)));
        assert!(parse_status_range("399-200").is_err());
        assert!(parse_status_range("abc").is_err());
    }
}
