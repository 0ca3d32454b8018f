//! The `server` block: the process's listeners, threads, shutdown timings
//! and logs. Every layer reads it (the assembly binds the listeners, the
//! request path and the slices log with its privacy setting), so it lives
//! with the framework rather than with one slice.

use super::section::{Compiler, Section};
use super::units::Dur;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The `server` block.
pub struct ServerSection;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerBlock {
    pub listen: Option<Vec<Spanned<String>>>,
    pub admin_listen: Option<Spanned<String>>,
    pub threads: Option<Spanned<usize>>,
    pub grace_period: Option<Dur>,
    pub shutdown_timeout: Option<Dur>,
    pub log_format: Option<LogFormat>,
    pub access_log: Option<bool>,
    pub log_file: Option<Spanned<String>>,
    pub audit_log: Option<Spanned<String>>,
    pub anonymize_ips: Option<bool>,
    pub admin_hosts: Vec<Spanned<String>>,
    pub upgrade_socket: Option<Spanned<String>>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub admin_listen: SocketAddr,
    pub threads: usize,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    pub access_log: bool,
    /// Write logs to this file instead of standard output (restart to change).
    pub log_file: Option<PathBuf>,
    /// Also write security decisions, as JSON lines, to this file (restart to change).
    pub audit_log: Option<PathBuf>,
    /// Client addresses in logs and stats cut to /24 (IPv4) or /48 (IPv6).
    pub anonymize_ips: bool,
    /// Host names the admin API answers to, besides IP literals and `localhost`.
    pub admin_hosts: Vec<String>,
    /// The Unix socket a new process takes the listeners over from (`run --upgrade`).
    pub upgrade_socket: PathBuf,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            grace_period: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            log_format: LogFormat::Text,
            access_log: true,
            log_file: None,
            audit_log: None,
            anonymize_ips: false,
            admin_hosts: Vec::new(),
            upgrade_socket: PathBuf::from("/tmp/rempart_upgrade.sock"),
        }
    }
}

impl ServerSettings {
    /// The address logs show for a client (`anonymize_ips`).
    pub fn shown_ip(&self, ip: std::net::IpAddr) -> std::net::IpAddr {
        if self.anonymize_ips {
            crate::util::net::anonymize(ip)
        } else {
            ip
        }
    }
}

/// Two listen addresses that cannot both be bound: same port, and the same
/// IP or one of them the wildcard (`0.0.0.0`, `[::]`).
pub fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl Section for ServerSection {
    const KEY: &'static str = "server";
    type Raw = ServerBlock;
    type Compiled = ServerSettings;

    fn compile(raw: Option<ServerBlock>, c: &mut Compiler<'_>) -> Option<ServerSettings> {
        let server = raw.unwrap_or_default();
        let mut listen: Vec<SocketAddr> = match &server.listen {
            Some(list) => list.iter().filter_map(|s| c.listen_addr(s)).collect(),
            None => vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
        };
        let overrides = c.overrides().clone();
        if !overrides.listen.is_empty() {
            listen = overrides
                .listen
                .iter()
                .filter_map(|s| match s.parse() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        c.cli_error("--listen", format!("`{s}` is not IP:PORT"));
                        None
                    }
                })
                .collect();
        }
        let mut admin_listen = match &server.admin_listen {
            Some(s) => c
                .listen_addr(s)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090))),
            None => SocketAddr::from(([127, 0, 0, 1], 9090)),
        };
        if let Some(s) = &overrides.admin_listen {
            match s.parse() {
                Ok(a) => admin_listen = a,
                Err(_) => c.cli_error("--admin-listen", format!("`{s}` is not IP:PORT")),
            }
        }
        if listen.iter().any(|l| overlaps(l, &admin_listen)) {
            c.at(
                server.admin_listen.as_ref(),
                format!("the admin listener {admin_listen} is also a shop listener"),
                Some("the admin API must have a port of its own, never the shop's"),
            );
        }
        let threads = server.threads.as_ref().map_or_else(
            || std::thread::available_parallelism().map_or(2, |n| n.get()),
            |t| t.value,
        );
        if threads == 0 || threads > 1024 {
            c.at(
                server.threads.as_ref(),
                "`server.threads` must be between 1 and 1024",
                None,
            );
        }
        let base = c.base();
        Some(ServerSettings {
            listen,
            admin_listen,
            threads,
            grace_period: server.grace_period.map_or(Duration::from_secs(5), |d| d.0),
            shutdown_timeout: server
                .shutdown_timeout
                .map_or(Duration::from_secs(30), |d| d.0),
            log_format: server.log_format.unwrap_or_default(),
            access_log: server.access_log.unwrap_or(true),
            log_file: server.log_file.as_ref().map(|f| base.join(&f.value)),
            audit_log: server.audit_log.as_ref().map(|f| base.join(&f.value)),
            anonymize_ips: server.anonymize_ips.unwrap_or(false),
            admin_hosts: server
                .admin_hosts
                .iter()
                .map(|h| h.value.trim().to_ascii_lowercase())
                .collect(),
            upgrade_socket: server.upgrade_socket.as_ref().map_or_else(
                || PathBuf::from("/tmp/rempart_upgrade.sock"),
                |s| base.join(&s.value),
            ),
        })
    }
}
