//! The policy: YAML on disk, an immutable [`Snapshot`] in memory.
//!
//! Two stages. `parse` reads the file into serde structs (`raw`), block by
//! block; [`compile`] checks what the values mean (addresses, CIDRs, ranges,
//! durations that must be positive) and builds the snapshot the proxy runs
//! on. Every problem of both stages is collected and reported together as
//! `file:line:col: message`; a policy with any problem is never applied.

pub mod diag;
mod parse;
pub mod raw;
pub mod store;
pub mod units;
mod waf;

use crate::cache::rules::{self as cache_rules, CacheRules, NamePattern, PathMatch};
use crate::edge::client_ip::ClientIpResolver;
use crate::edge::tls::CertTable;
use crate::filter::FilterChain;
use crate::observe::alerts::AlertPolicy;
use crate::shield::bans::BanPolicy;
use crate::shield::bots::agents::BotFilter;
use crate::shield::ip_filter::{parse_net, IpFilter};
use crate::shield::logins::LoginRule;
use crate::shield::rate_limit::{self, KeyPart, Limit, LimitMatch, Rate, RateLimitFilter, Scope};
pub use diag::{Diagnostic, Diagnostics, Pos};
use http::HeaderName;
use ipnet::IpNet;
pub use raw::{Balance, LogFormat};
use serde_saphyr::Spanned;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Values given on the command line; they win over the file, so a shipped
/// policy can be pointed at any origin and port.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Vec<String>,
    pub admin_listen: Option<String>,
    pub upstreams: Vec<String>,
}

impl Snapshot {
    /// Whether some rule may need a request's form fields (or the REST
    /// routes its body names): logins, request limits, the challenge.
    pub fn reads_forms(&self) -> bool {
        !self.logins.is_empty()
            || !self.request_limits.is_empty()
            || self.bots.as_ref().is_some_and(|b| b.challenge.is_some())
    }
}

/// A compiled, immutable policy. Requests pin one snapshot for their whole life,
/// so a reload never changes the rules under a request in flight.
#[derive(Debug)]
pub struct Snapshot {
    pub source: PathBuf,
    pub server: ServerSettings,
    pub tls: Option<TlsSettings>,
    pub limits: Limits,
    pub client_ip: ClientIpResolver,
    pub upstream: UpstreamSettings,
    /// The page cache, when the policy turns it on.
    pub cache: Option<CacheSettings>,
    /// Length of a statistics slot (fixed at start-up).
    pub stats_slot: Duration,
    pub alerts: AlertPolicy,
    pub bans: BanPolicy,
    /// Where bans are saved to survive restarts (fixed at start-up).
    pub ban_state_file: Option<PathBuf>,
    /// Limits counted only for requests that reach the origin (after the cache).
    pub origin_limits: Vec<Arc<Limit>>,
    /// The request-phase limits (also in `request_filters`), for the ones
    /// only a request's form fields make count, read once the body is in.
    pub request_limits: Vec<Arc<Limit>>,
    /// 404 answers per client before a ban (scanners probing for files).
    pub not_found_flood: Option<Arc<Limit>>,
    /// Logins whose failures are counted from the origin's answers.
    pub logins: Vec<Arc<LoginRule>>,
    /// Crawler verification, bot score and the challenge.
    pub bots: Option<BotSettings>,
    /// Request-phase filters, in order (IP lists first).
    pub request_filters: FilterChain,
    /// The web application firewall (CRS and the policy's own rules).
    pub waf: Option<Arc<crate::waf::Waf>>,
    /// Problems that do not stop `check` but may stop `run` (missing certificates).
    pub warnings: Vec<Diagnostic>,
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

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub listen: Vec<SocketAddr>,
    pub certs_dir: PathBuf,
    /// The certificates of `certs_dir`, loaded with the policy so that `check`
    /// and reloads refuse a folder that would not serve.
    pub certs: Option<Arc<CertTable>>,
    pub redirect_http: bool,
    pub http2: bool,
    /// The ready-made `strict-transport-security` value, when HSTS is on.
    pub hsts: Option<String>,
}

/// What the pipeline needs for crawlers, bot scores and challenges.
#[derive(Debug, Clone)]
pub struct BotSettings {
    pub verifier: Option<Arc<crate::shield::bots::crawler::Verifier>>,
    /// Fake crawlers are banned like scanners.
    pub ban_fakes: bool,
    pub score_threshold: u32,
    pub challenge: Option<ChallengeSettings>,
}

#[derive(Debug, Clone)]
pub struct ChallengeSettings {
    /// Only `risky` paths are challenged (step-up), or every page.
    pub step_up: bool,
    pub difficulty: u32,
    pub pass_ttl: Duration,
    pub exempt: Vec<PathMatch>,
    /// Risky actions: paths and forms (on any URL).
    pub risky: crate::util::pattern::ActionMatch,
}

/// The page cache: its rules (reloadable) and its size (fixed at start-up).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub rules: Arc<CacheRules>,
    pub max_size: u64,
    pub max_object_size: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_header_count: usize,
    pub max_body_bytes: u64,
    /// From the first byte of a request head to its end (slow heads are cut).
    pub header_timeout: Duration,
    /// Open connections one client address may hold (trusted proxies excepted).
    pub max_connections_per_ip: usize,
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

/// Reads and compiles a policy file, reporting every problem.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Snapshot, Diagnostics> {
    let mut diags = Diagnostics::default();
    let raw = parse::parse_policy(path, &mut diags);
    let snapshot = compile(path, raw, overrides, &mut diags);
    if diags.is_empty() {
        Ok(snapshot)
    } else {
        diags.sort();
        Err(diags)
    }
}

/// Collects problems; `file` is the file of the block being compiled.
struct Checker<'a> {
    file: PathBuf,
    diags: &'a mut Diagnostics,
    /// Problems that do not make the policy invalid, such as certificates not
    /// installed yet on the machine where `check` runs.
    warnings: Vec<Diagnostic>,
}

/// A block's value (or its default) and the file it came from.
fn unpack<T: Default>(block: Option<raw::Block<T>>, main: &Path) -> (PathBuf, T) {
    block.map_or_else(|| (main.to_path_buf(), T::default()), |b| (b.file, b.value))
}

impl Checker<'_> {
    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>, hint: Option<&str>) {
        let mut d = Diagnostic::new(&self.file, parse::pos(&at.referenced), message);
        if let Some(h) = hint {
            d = d.with_hint(h);
        }
        self.diags.push(d);
    }

    fn cli_error(&mut self, flag: &str, message: String) {
        self.diags.push(Diagnostic {
            file: PathBuf::from(format!("command line ({flag})")),
            line: 0,
            col: 0,
            message,
            hint: None,
        });
    }

    fn nets(&mut self, list: &[Spanned<String>]) -> Vec<IpNet> {
        list.iter()
            .filter_map(|s| match parse_net(&s.value) {
                Ok(net) => Some(net),
                Err(e) => {
                    self.error(s, e, Some("write an address (`192.0.2.7`) or a network (`192.0.2.0/24`, `2001:db8::/32`)"));
                    None
                }
            })
            .collect()
    }

    fn listen_addr(&mut self, s: &Spanned<String>) -> Option<SocketAddr> {
        match s.value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    s,
                    format!("`{}` is not a listen address", s.value),
                    Some("write IP:PORT, e.g. `0.0.0.0:80`, `127.0.0.1:9090` or `[::]:443`"),
                );
                None
            }
        }
    }

    fn at<T>(&mut self, at: Option<&Spanned<T>>, message: impl Into<String>, hint: Option<&str>) {
        match at {
            Some(s) => self.error(s, message, hint),
            None => {
                let mut d = Diagnostic::new(&self.file, Pos::default(), message);
                if let Some(h) = hint {
                    d = d.with_hint(h);
                }
                self.diags.push(d);
            }
        }
    }
}

/// Stage two: gives the raw values their meaning.
fn compile(
    file: &Path,
    raw: raw::RawPolicy,
    overrides: &Overrides,
    diags: &mut Diagnostics,
) -> Snapshot {
    let mut c = Checker {
        file: file.to_path_buf(),
        diags,
        warnings: Vec::new(),
    };

    // server
    let (server_file, server) = unpack(raw.server, file);
    c.file = server_file;
    let mut listen: Vec<SocketAddr> = match &server.listen {
        Some(list) => list.iter().filter_map(|s| c.listen_addr(s)).collect(),
        None => vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
    };
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
    let server = ServerSettings {
        listen,
        admin_listen,
        threads,
        grace_period: server.grace_period.map_or(Duration::from_secs(5), |d| d.0),
        shutdown_timeout: server
            .shutdown_timeout
            .map_or(Duration::from_secs(30), |d| d.0),
        log_format: server.log_format.unwrap_or_default(),
        access_log: server.access_log.unwrap_or(true),
        log_file: server
            .log_file
            .as_ref()
            .map(|f| base_of(&c.file).join(&f.value)),
        audit_log: server
            .audit_log
            .as_ref()
            .map(|f| base_of(&c.file).join(&f.value)),
        anonymize_ips: server.anonymize_ips.unwrap_or(false),
        admin_hosts: server
            .admin_hosts
            .iter()
            .map(|h| h.value.trim().to_ascii_lowercase())
            .collect(),
        upgrade_socket: server.upgrade_socket.as_ref().map_or_else(
            || PathBuf::from("/tmp/rempart_upgrade.sock"),
            |s| base_of(&c.file).join(&s.value),
        ),
    };

    // tls
    let tls = raw.tls.map(|block| {
        let t = block.value;
        c.file = block.file;
        let base = c.file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let listen: Vec<SocketAddr> = t.listen.iter().filter_map(|s| c.listen_addr(s)).collect();
        let certs_dir = t.certs_dir.as_ref().map_or_else(|| base.join("../certs"), |s| base.join(&s.value));
        let certs = if listen.is_empty() {
            None
        } else {
            match CertTable::load(&certs_dir) {
                Ok(table) => Some(Arc::new(table)),
                Err(e) => {
                    let at = t.certs_dir.as_ref().map_or_else(Pos::default, |s| parse::pos(&s.referenced));
                    c.warnings.push(
                        Diagnostic::new(&c.file, at, format!("warning: the HTTPS listeners cannot start: {e}"))
                            .with_hint("`certs_dir` is relative to the policy file; `rempart cert --dev DOMAIN --dir FOLDER` creates a development certificate"),
                    );
                    None
                }
            }
        };
        let hsts = t.hsts.map(|h| {
            let mut v = format!("max-age={}", h.max_age.0.as_secs());
            if h.include_subdomains {
                v.push_str("; includeSubDomains");
            }
            if h.preload {
                v.push_str("; preload");
            }
            v
        });
        if t.redirect_http && listen.is_empty() {
            c.at(t.certs_dir.as_ref(), "`tls.redirect_http` is on but `tls.listen` is empty",
                Some("add an HTTPS listener, or the redirect would send clients nowhere"));
        }
        TlsSettings { listen, certs_dir, certs, redirect_http: t.redirect_http, http2: t.http2.unwrap_or(true), hsts }
    });
    if let Some(t) = &tls {
        for a in &t.listen {
            if server.listen.iter().any(|l| overlaps(l, a)) || overlaps(a, &server.admin_listen) {
                c.at::<()>(
                    None,
                    format!("address {a} is used by two listeners"),
                    Some("give HTTP, HTTPS and admin listeners a port each"),
                );
            }
        }
    }

    // limits
    let (limits_file, l) = unpack(raw.limits, file);
    c.file = limits_file;
    let limits = Limits {
        max_header_bytes: l.max_header_bytes.as_ref().map_or(16 << 10, |b| {
            usize::try_from(b.value.0).unwrap_or(usize::MAX)
        }),
        max_header_count: l.max_header_count.as_ref().map_or(100, |n| n.value),
        max_body_bytes: l.max_body_bytes.map_or(64 << 20, |b| b.0),
        header_timeout: l
            .header_timeout
            .as_ref()
            .map_or(Duration::from_secs(10), |d| d.value.0),
        max_connections_per_ip: l.max_connections_per_ip.as_ref().map_or(256, |n| n.value),
    };
    if limits.header_timeout > Duration::from_secs(300) {
        c.at(
            l.header_timeout.as_ref(),
            "`limits.header_timeout` must be at most 5m",
            Some("browsers send a request head in one go; 10s is generous"),
        );
    }
    if limits.max_connections_per_ip == 0 {
        c.at(
            l.max_connections_per_ip.as_ref(),
            "`limits.max_connections_per_ip` must be at least 1",
            Some("a browser opens at most 6 connections per host over HTTP/1.1, 1 over HTTP/2"),
        );
    }
    if limits.max_header_bytes < 1024 || limits.max_header_bytes > 1 << 20 {
        c.at(
            l.max_header_bytes.as_ref(),
            "`limits.max_header_bytes` must be between 1KiB and 1MiB",
            Some("browsers with many cookies send up to 8KiB; 16KiB is a safe default"),
        );
    }
    if limits.max_header_count == 0 || limits.max_header_count > 250 {
        c.at(
            l.max_header_count.as_ref(),
            "`limits.max_header_count` must be between 1 and 250",
            None,
        );
    }

    // client_ip
    let (client_file, ci) = unpack(raw.client_ip, file);
    c.file = client_file;
    let trusted = c.nets(&ci.trusted_proxies);
    let header = match &ci.header {
        Some(h) => match HeaderName::try_from(h.value.to_ascii_lowercase()) {
            Ok(name) => name,
            Err(_) => {
                c.error(
                    h,
                    format!("`{}` is not a valid header name", h.value),
                    Some("e.g. `x-forwarded-for`, `cf-connecting-ip`, `x-real-ip`"),
                );
                HeaderName::from_static("x-forwarded-for")
            }
        },
        None => HeaderName::from_static("x-forwarded-for"),
    };
    let client_ip = ClientIpResolver { trusted, header };

    // upstream
    let upstream_missing = !raw.seen.iter().any(|b| b == "upstream") && !raw.unreadable;
    c.file = raw
        .upstream
        .as_ref()
        .map_or_else(|| file.to_path_buf(), |b| b.file.clone());
    let upstream = compile_upstream(
        &mut c,
        raw.upstream.map(|b| b.value),
        upstream_missing,
        overrides,
    );

    // cache
    let cache = raw.cache.and_then(|block| {
        c.file = block.file;
        compile_cache(&mut c, block.value)
    });

    // stats, alerts, bans
    let stats_slot = raw
        .stats
        .and_then(|b| b.value.slot)
        .map_or(Duration::from_secs(10), |d| d.0);
    let alerts = match raw.alerts {
        Some(block) => {
            c.file = block.file;
            compile_alerts(&mut c, block.value)
        }
        None => AlertPolicy::default(),
    };
    let (bans, ban_state_file) = match raw.bans {
        Some(block) => {
            c.file = block.file;
            let b = block.value;
            let mut policy = BanPolicy {
                allowlist: c.nets(&b.allowlist),
                anonymize_logs: server.anonymize_ips,
                ..BanPolicy::default()
            };
            if let Some(ladder) = &b.ladder {
                if ladder.value.is_empty() {
                    c.error(
                        ladder,
                        "`bans.ladder` is empty",
                        Some("e.g. `[1m, 10m, 1h, 24h]`"),
                    );
                } else {
                    policy.ladder = ladder.value.iter().map(|d| d.0).collect();
                }
            }
            if let Some(m) = b.memory {
                policy.memory = m.0;
            }
            if let Some(len) = &b.ipv6_prefix {
                if (32..=128).contains(&len.value) {
                    policy.ipv6_prefix = len.value;
                } else {
                    c.error(
                        len,
                        "`bans.ipv6_prefix` must be between 32 and 128",
                        Some("64 bans the network one subscriber holds; 128 a single address"),
                    );
                }
            }
            let file = b
                .state_file
                .as_ref()
                .map(|f| base_of(&c.file).join(&f.value));
            (policy, file)
        }
        None => (
            BanPolicy {
                anonymize_logs: server.anonymize_ips,
                ..BanPolicy::default()
            },
            None,
        ),
    };

    // rate limits: request-phase ones join the filter chain, origin-scoped
    // ones run after the cache
    let mut request_limits = Vec::new();
    let mut origin_limits = Vec::new();
    if let Some(block) = raw.rate_limits {
        c.file = block.file;
        for limit in compile_limits(&mut c, block.value) {
            match limit.scope {
                Scope::All => request_limits.push(Arc::new(limit)),
                Scope::Origin => origin_limits.push(Arc::new(limit)),
            }
        }
    }

    // brute force
    let mut logins = match raw.brute_force {
        Some(block) => {
            c.file = block.file;
            compile_logins(&mut c, block.value.logins, "brute_force")
        }
        None => Vec::new(),
    };
    if let Some(block) = raw.card_testing {
        c.file = block.file;
        logins.extend(compile_logins(
            &mut c,
            block.value.checkouts,
            "card_testing",
        ));
    }

    // request filters, in pipeline order
    let mut request_filters = FilterChain::default();
    let (mut allow, mut deny) = (Vec::new(), Vec::new());
    for block in &raw.ip_filter {
        c.file = block.file.clone();
        allow.extend(c.nets(&block.value.allow));
        deny.extend(c.nets(&block.value.deny));
    }
    let ip_filter = IpFilter::new(allow, deny);
    if !ip_filter.is_noop() {
        request_filters.push(Box::new(ip_filter));
    }
    if !request_limits.is_empty() {
        request_filters.push(Box::new(RateLimitFilter::new(request_limits.clone())));
    }
    let mut not_found_flood = None;
    let mut bots = None;
    if let Some(block) = raw.bots {
        c.file = block.file;
        let (filter, flood, settings) = compile_bots(&mut c, block.value);
        if let Some(f) = filter {
            request_filters.push(Box::new(f));
        }
        not_found_flood = flood.map(Arc::new);
        bots = settings;
    }
    let waf = raw.waf.and_then(|block| {
        c.file = block.file;
        waf::compile_waf(&mut c, block.value)
    });

    Snapshot {
        source: file.to_path_buf(),
        server,
        tls,
        limits,
        client_ip,
        upstream,
        cache,
        stats_slot,
        alerts,
        bans,
        ban_state_file,
        origin_limits,
        request_limits,
        not_found_flood,
        logins,
        bots,
        request_filters,
        waf,
        warnings: c.warnings,
    }
}

fn compile_upstream(
    c: &mut Checker<'_>,
    raw: Option<raw::UpstreamBlock>,
    missing: bool,
    overrides: &Overrides,
) -> UpstreamSettings {
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

/// The folder of a policy file, against which its relative paths are read.
fn base_of(file: &Path) -> PathBuf {
    file.parent().unwrap_or(Path::new(".")).to_path_buf()
}

/// The `rate_limits` block: every limit, with problems reported at their line.
fn compile_limits(c: &mut Checker<'_>, b: raw::RateLimitsBlock) -> Vec<Limit> {
    let max_keys = b.max_keys.unwrap_or(100_000).max(100);
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for l in b.limits {
        let before = c.diags.len();
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
        let mut paths = Vec::new();
        for p in &l.paths {
            match PathMatch::parse(&p.value) {
                Ok(m) => paths.push(m),
                Err(e) => c.error(p, e, Some("a prefix such as `/wp-login.php` or a regex such as `~^/wp-json/wc/store/v1/checkout`")),
            }
        }
        let mut methods = Vec::new();
        for m in &l.methods {
            match http::Method::from_bytes(m.value.to_ascii_uppercase().as_bytes()) {
                Ok(method) => methods.push(method),
                Err(_) => c.error(m, format!("`{}` is not an HTTP method", m.value), None),
            }
        }
        let forms = compile_forms(c, &l.forms);
        let header = l.header.as_ref().and_then(|h| {
            match HeaderName::try_from(h.value.to_ascii_lowercase()) {
                Ok(name) => Some(name),
                Err(_) => {
                    c.error(h, format!("`{}` is not a header name", h.value), None);
                    None
                }
            }
        });
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
        let (count, period) = match rate_limit::parse_rate(&l.rate.value) {
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
        if c.diags.len() > before {
            continue;
        }
        let scope = match l.scope {
            raw::LimitScope::All => Scope::All,
            raw::LimitScope::Origin => Scope::Origin,
        };
        let action = match l.action {
            raw::LimitAction::Block => rate_limit::Action::Block,
            raw::LimitAction::Ban => rate_limit::Action::Ban,
        };
        out.push(Limit::new(
            &name,
            LimitMatch {
                action: crate::util::pattern::ActionMatch {
                    paths,
                    forms,
                    methods,
                },
                header,
            },
            key,
            Rate {
                count,
                period,
                burst,
            },
            scope,
            action,
            max_keys,
        ));
    }
    out
}

/// `forms:`: lists of field names (or `name=value`), each list a form whose
/// fields must all be present.
fn compile_forms(c: &mut Checker<'_>, forms: &[Spanned<Vec<Spanned<String>>>]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for form in forms {
        if form.value.is_empty() {
            c.error(
                form,
                "a form needs at least one field",
                Some("e.g. `[login, username, password]` (all present) or `[\"action=woocommerce_checkout\"]`"),
            );
            continue;
        }
        let mut fields = Vec::new();
        for f in &form.value {
            let name = f.value.split('=').next().unwrap_or("");
            if name.is_empty() || name.contains(|ch: char| ch.is_whitespace() || ch == '&') {
                c.error(
                    f,
                    format!("`{}` is not a form field name", f.value),
                    Some("write the field's name as PHP reads it, or `name=value`"),
                );
            } else {
                fields.push(f.value.clone());
            }
        }
        out.push(fields);
    }
    out
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
        Some(("header", name)) => HeaderName::try_from(name.trim().to_ascii_lowercase())
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

/// The `brute_force` block.
fn compile_logins(
    c: &mut Checker<'_>,
    rules: Vec<raw::LoginBlock>,
    ban_reason: &'static str,
) -> Vec<Arc<LoginRule>> {
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for l in rules {
        let before = c.diags.len();
        if names.contains(&l.name.value) {
            c.error(
                &l.name,
                format!("two rules are named `{}`", l.name.value),
                Some("names must be unique: they key the failure counts"),
            );
        }
        names.push(l.name.value.clone());
        if l.failure_body.as_deref() == Some("") {
            c.error(
                &l.name,
                "`failure_body` is empty",
                Some("give the text that means failure, e.g. `\"result\":\"failure\"`"),
            );
        }
        if let Some(bad) = l.failure_status.iter().find(|s| !(100..=599).contains(*s)) {
            c.error(
                &l.name,
                format!("`{bad}` in `failure_status` is not an HTTP status"),
                None,
            );
        }
        let mut paths = Vec::new();
        for p in &l.paths {
            match PathMatch::parse(&p.value) {
                Ok(m) => paths.push(m),
                Err(e) => c.error(p, e, Some("e.g. `/wp-login.php`")),
            }
        }
        let forms = compile_forms(c, &l.forms);
        if l.paths.is_empty() && l.forms.is_empty() {
            c.error(
                &l.name,
                "a login needs `paths` or `forms`",
                Some("e.g. `paths: [\"/wp-login.php\"]`, or `forms: [[login, username, password]]` for a form handled on any URL"),
            );
        }
        let methods: Vec<http::Method> = if l.methods.is_empty() {
            vec![http::Method::POST]
        } else {
            l.methods
                .iter()
                .filter_map(|m| {
                    match http::Method::from_bytes(m.value.to_ascii_uppercase().as_bytes()) {
                        Ok(method) => Some(method),
                        Err(_) => {
                            c.error(m, format!("`{}` is not an HTTP method", m.value), None);
                            None
                        }
                    }
                })
                .collect()
        };
        if !l.xmlrpc && l.failure_status.is_empty() && l.failure_body.is_none() {
            c.error(&l.name, "a login needs `failure_status` (or `xmlrpc: true`)", Some("WordPress answers a failed login with 200 and a success with 302: `failure_status: [200]`"));
        }
        if c.diags.len() > before {
            continue;
        }
        out.push(Arc::new(LoginRule {
            name: l.name.value.clone(),
            action: crate::util::pattern::ActionMatch {
                paths,
                forms,
                methods,
            },
            username_field: l.username_field,
            failure_status: l.failure_status,
            failure_body: l.failure_body.filter(|b| !b.is_empty()),
            session_cookie: l.session_cookie,
            ban_reason,
            xmlrpc: l.xmlrpc,
            max_per_ip: l.max_per_ip.unwrap_or(10),
            max_per_user: l.max_per_user.unwrap_or(20),
            window: l.window.map_or(Duration::from_secs(600), |w| w.0),
        }));
    }
    out
}

/// The `bots` block: the user-agent filter and the 404-flood limit.
fn compile_bots(
    c: &mut Checker<'_>,
    b: raw::BotsBlock,
) -> (Option<BotFilter>, Option<Limit>, Option<BotSettings>) {
    if b.enabled == Some(false) {
        return (None, None, None);
    }
    let ban = b.ban_scanners.unwrap_or(true);
    let crawlers = b.crawlers.unwrap_or_default();
    let verifier = if crawlers.verify.unwrap_or(true) {
        let resolver = if crawlers.static_records.is_empty() {
            crate::shield::bots::crawler::Resolver::System
        } else {
            let mut records = std::collections::HashMap::new();
            for (ip, name) in &crawlers.static_records {
                match ip.parse::<std::net::IpAddr>() {
                    Ok(ip) => {
                        records.insert(ip, name.to_ascii_lowercase());
                    }
                    Err(_) => c.at::<()>(
                        None,
                        format!("`bots.crawlers.static_records`: `{ip}` is not an IP address"),
                        None,
                    ),
                }
            }
            crate::shield::bots::crawler::Resolver::Static(records)
        };
        Some(Arc::new(crate::shield::bots::crawler::Verifier::new(
            resolver,
            crawlers.timeout.map_or(Duration::from_secs(2), |d| d.0),
            crawlers
                .cache_ttl
                .map_or(Duration::from_secs(3600), |d| d.0),
        )))
    } else {
        None
    };
    let challenge = b.challenge.and_then(|ch| {
        let step_up = match ch.mode {
            raw::ChallengeMode::Off => return None,
            raw::ChallengeMode::Score => false,
            raw::ChallengeMode::StepUp => true,
        };
        let difficulty = match &ch.difficulty {
            Some(d) if !(8..=24).contains(&d.value) => {
                c.error(
                    d,
                    "`difficulty` must be between 8 and 24 (leading zero bits)",
                    Some("16 takes a browser well under a second"),
                );
                16
            }
            Some(d) => d.value,
            None => 16,
        };
        let paths = |c: &mut Checker<'_>, list: &[Spanned<String>]| -> Vec<PathMatch> {
            list.iter()
                .filter_map(|s| {
                    PathMatch::parse(&s.value)
                        .map_err(|e| c.error(s, e, None))
                        .ok()
                })
                .collect()
        };
        let exempt = paths(c, &ch.exempt_paths);
        let risky = crate::util::pattern::ActionMatch {
            paths: paths(c, &ch.risky_paths),
            forms: compile_forms(c, &ch.risky_forms),
            methods: Vec::new(),
        };
        if step_up && risky.paths.is_empty() && risky.forms.is_empty() {
            c.at::<()>(
                None,
                "`bots.challenge.mode: step_up` needs `risky_paths` (or `risky_forms`)",
                Some("e.g. [\"/wp-login.php\", \"/checkout\"]"),
            );
        }
        Some(ChallengeSettings {
            step_up,
            difficulty,
            pass_ttl: ch.pass_ttl.map_or(Duration::from_secs(3600), |d| d.0),
            exempt,
            risky,
        })
    });
    let settings = BotSettings {
        verifier,
        ban_fakes: ban,
        score_threshold: b.score_threshold.unwrap_or(5).max(1),
        challenge,
    };
    let words = |c: &mut Checker<'_>, list: &[Spanned<String>]| -> Vec<String> {
        list.iter()
            .filter_map(|s| {
                let w = s.value.trim();
                if w.len() < 3 {
                    c.error(
                        s,
                        format!("`{w}` is too short to match user agents safely"),
                        Some("use at least 3 characters, e.g. `sqlmap`"),
                    );
                    None
                } else {
                    Some(w.to_string())
                }
            })
            .collect()
    };
    let deny = match &b.deny_user_agents {
        Some(list) => words(c, list),
        None => crate::shield::bots::agents::DEFAULT_DENY
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let allow = words(c, &b.allow_user_agents);
    let filter = match BotFilter::new(&deny, &allow, ban) {
        Ok(f) => Some(f),
        Err(e) => {
            c.at::<()>(None, format!("bot lists do not compile: {e}"), None);
            None
        }
    };
    let flood = b.not_found_flood.and_then(|f| {
        let (count, period) = match rate_limit::parse_rate(&f.rate.value) {
            Ok(r) => r,
            Err(e) => {
                c.error(
                    &f.rate,
                    e,
                    Some("e.g. `30/m`: more 404 answers than this get the client banned"),
                );
                return None;
            }
        };
        let burst = f
            .burst
            .as_ref()
            .map_or(Some(count), |b| std::num::NonZeroU32::new(b.value));
        let Some(burst) = burst else {
            c.at(f.burst.as_ref(), "`burst` must be at least 1", None);
            return None;
        };
        Some(Limit::new(
            "not_found_flood",
            LimitMatch::default(),
            vec![KeyPart::Ip],
            Rate {
                count,
                period,
                burst,
            },
            Scope::Origin,
            rate_limit::Action::Ban,
            100_000,
        ))
    });
    (filter, flood, Some(settings))
}

/// The `alerts` block.
fn compile_alerts(c: &mut Checker<'_>, b: raw::AlertsBlock) -> AlertPolicy {
    let d = AlertPolicy::default();
    let positive = |c: &mut Checker<'_>, v: &Option<Spanned<f64>>, name: &str, default: f64| match v
    {
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

/// The `cache` block: `None` when absent or `enabled: false`.
fn compile_cache(c: &mut Checker<'_>, b: raw::CacheBlock) -> Option<CacheSettings> {
    if b.enabled == Some(false) {
        return None;
    }
    let names = |c: &mut Checker<'_>,
                 list: &Option<Vec<Spanned<String>>>,
                 defaults: &[&str]|
     -> Vec<NamePattern> {
        match list {
            Some(list) => list
                .iter()
                .filter_map(|s| match NamePattern::parse(&s.value) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        c.error(
                            s,
                            e,
                            Some("a name, with `*` for any characters: `wordpress_logged_in_*`"),
                        );
                        None
                    }
                })
                .collect(),
            None => defaults
                .iter()
                .filter_map(|d| NamePattern::parse(d).ok())
                .collect(),
        }
    };
    let paths = |c: &mut Checker<'_>, list: &[Spanned<String>]| -> Vec<PathMatch> {
        list.iter()
            .filter_map(|s| match PathMatch::parse(&s.value) {
                Ok(p) => Some(p),
                Err(e) => {
                    c.error(
                        s,
                        e,
                        Some("a prefix such as `/cart` or a regex such as `~^/admin[0-9a-z]*/`"),
                    );
                    None
                }
            })
            .collect()
    };
    let bypass_paths = match &b.bypass.paths {
        Some(list) => paths(c, list),
        None => cache_rules::DEFAULT_BYPASS_PATHS
            .iter()
            .filter_map(|p| PathMatch::parse(p).ok())
            .collect(),
    };
    let shared_assets = paths(c, &b.shared_assets);
    let mut ttl_overrides = Vec::new();
    for o in &b.ttl_overrides {
        if let Some(m) = paths(c, std::slice::from_ref(&o.path)).pop() {
            ttl_overrides.push((m, o.ttl.0));
        }
    }
    let statuses: Vec<u16> = match &b.statuses {
        Some(list) => list
            .iter()
            .filter_map(|s| {
                if (200..600).contains(&s.value) {
                    Some(s.value)
                } else {
                    c.error(
                        s,
                        format!("`{}` is not a cacheable HTTP status", s.value),
                        Some("e.g. 200, 301, 404"),
                    );
                    None
                }
            })
            .collect(),
        None => vec![200, 301, 404],
    };
    let mut status_ttl: std::collections::BTreeMap<u16, Duration> =
        b.status_ttl.iter().map(|(k, v)| (*k, v.0)).collect();
    if b.statuses.is_none() {
        status_ttl.entry(404).or_insert(Duration::from_secs(60));
    }
    let header = |c: &mut Checker<'_>, s: &Spanned<String>| match HeaderName::try_from(
        s.value.to_ascii_lowercase(),
    ) {
        Ok(h) => Some(h),
        Err(_) => {
            c.error(s, format!("`{}` is not a header name", s.value), None);
            None
        }
    };
    let vary_allow = b.vary_allow.iter().filter_map(|s| header(c, s)).collect();
    let tag_header = b
        .tag_header
        .as_ref()
        .and_then(|s| header(c, s))
        .unwrap_or(HeaderName::from_static("x-cache-tags"));
    let compression_level = match &b.compression_level {
        // gzip (zlib-ng) takes levels 0-9; one level is used for every algorithm.
        Some(l) if l.value > 9 => {
            c.error(
                l,
                "`cache.compression_level` must be between 0 (off) and 9",
                Some("5 is a good balance for HTML"),
            );
            5
        }
        Some(l) => l.value,
        None => 5,
    };
    let max_size = b.max_size.as_ref().map_or(256 << 20, |s| s.value.0);
    if max_size < 1 << 20 {
        c.at(
            b.max_size.as_ref(),
            "`cache.max_size` must be at least 1MiB",
            Some("e.g. `512MiB`"),
        );
    }
    let max_object_size = b.max_object_size.as_ref().map_or(8 << 20, |s| {
        usize::try_from(s.value.0).unwrap_or(usize::MAX)
    });
    if max_object_size as u64 > max_size {
        c.at(
            b.max_object_size.as_ref(),
            "`cache.max_object_size` is larger than `cache.max_size`",
            None,
        );
    }
    let rules = CacheRules {
        default_ttl: b.default_ttl.map_or(Duration::from_secs(600), |d| d.0),
        statuses,
        status_ttl,
        ttl_overrides,
        stale_while_revalidate: b
            .stale_while_revalidate
            .map_or(Duration::from_secs(30), |d| d.0),
        stale_if_error: b
            .stale_if_error
            .map_or(Duration::from_secs(86_400), |d| d.0),
        lock_timeout: b.lock_timeout.map_or(Duration::from_secs(5), |d| d.0),
        bypass_cookies: names(c, &b.bypass.cookies, cache_rules::DEFAULT_BYPASS_COOKIES),
        bypass_paths,
        shared_assets,
        bypass_query_params: names(
            c,
            &b.bypass.query_params,
            cache_rules::DEFAULT_BYPASS_QUERY_PARAMS,
        ),
        drop_query_params: names(
            c,
            &b.key.drop_query_params,
            cache_rules::DEFAULT_DROP_QUERY_PARAMS,
        ),
        device_class: b.key.device_class,
        vary_allow,
        tag_header,
        compression_level,
    };
    Some(CacheSettings {
        rules: Arc::new(rules),
        max_size,
        max_object_size,
    })
}

/// Two listen addresses that cannot both be bound: same port, and the same IP
/// or one of them the wildcard (`0.0.0.0`, `[::]`).
fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
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
    use std::io::Write;

    fn load_text(text: &str) -> Result<Snapshot, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        load(&path, &Overrides::default())
    }

    fn lines(d: &Diagnostics) -> Vec<(u32, String)> {
        d.0.iter().map(|d| (d.line, d.message.clone())).collect()
    }

    #[test]
    fn minimal_policy_compiles_with_defaults() {
        let s = load_text("upstream:\n  servers: [\"127.0.0.1:8081\"]\n").unwrap();
        assert_eq!(s.server.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(s.limits.max_header_bytes, 16 << 10);
        assert_eq!(s.upstream.servers[0].addr.to_string(), "127.0.0.1:8081");
        assert!(s.request_filters.is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "\
server:
  lisen: [\"0.0.0.0:80\"]
upstream:
  servers: [\"127.0.0.1:8081\", \"nope\"]
  timeouts:
    connect: 3
ip_filter:
  deny:
    - 10.0.0.0/8
    - 300.1.1.1
    - 192.168.0.0/40
colour: blue
";
        let d = load_text(text).unwrap_err();
        let got = lines(&d);
        assert_eq!(got.len(), 5, "{d}");
        assert_eq!(got[0].0, 2);
        assert!(got[0].1.contains("unknown key `lisen`"), "{d}");
        assert!(d.0[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("did you mean `listen`"));
        assert_eq!(got[1].0, 6, "{d}");
        assert!(got[1].1.contains("no unit"), "{d}");
        assert_eq!(got[2].0, 10);
        assert_eq!(got[3].0, 11);
        assert_eq!(got[4].0, 12);
        assert!(got[4].1.contains("unknown block `colour`"));
    }

    #[test]
    fn wrong_types_and_bad_addresses() {
        let text = "server:\n  threads: many\nupstream:\n  servers: [\"127.0.0.1:http\"]\n";
        let d = load_text(text).unwrap_err();
        let got = lines(&d);
        assert_eq!(got.len(), 2, "{d}");
        assert_eq!(got[0].0, 2);
        assert_eq!(got[1].0, 4);
        assert!(got[1].1.contains("not a port"), "{d}");
    }

    #[test]
    fn syntax_errors_point_at_the_line() {
        let d = load_text("server:\n  listen: [\"a\"\nupstream: {\n").unwrap_err();
        assert_eq!(d.len(), 1);
        assert!(d.0[0].line >= 2, "{d}");
    }

    #[test]
    fn includes_are_merged_and_loops_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.yaml"),
            "include: [\"lists.yaml\"]\nupstream:\n  servers: [\"127.0.0.1:1\"]\nip_filter:\n  deny: [\"10.0.0.0/8\"]\n").unwrap();
        std::fs::write(
            dir.path().join("lists.yaml"),
            "ip_filter:\n  deny:\n    - 192.0.2.0/24\n    - bogus\n",
        )
        .unwrap();
        let d = load(&dir.path().join("main.yaml"), &Overrides::default()).unwrap_err();
        assert_eq!(d.len(), 1, "{d}");
        assert!(d.0[0].file.ends_with("lists.yaml"));
        assert_eq!(d.0[0].line, 4);

        std::fs::write(dir.path().join("lists.yaml"), "include: [\"main.yaml\"]\n").unwrap();
        let d = load(&dir.path().join("main.yaml"), &Overrides::default()).unwrap_err();
        assert!(d.to_string().contains("loop"), "{d}");
    }

    #[test]
    fn overrides_replace_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, "upstream:\n  servers: [\"127.0.0.1:1\"]\n").unwrap();
        let o = Overrides {
            listen: vec!["127.0.0.1:7000".into()],
            admin_listen: Some("127.0.0.1:7001".into()),
            upstreams: vec!["127.0.0.1:7002".into()],
        };
        let s = load(&path, &o).unwrap();
        assert_eq!(s.server.listen[0].port(), 7000);
        assert_eq!(s.server.admin_listen.port(), 7001);
        assert_eq!(s.upstream.servers[0].addr.port(), 7002);
        let bad = Overrides {
            upstreams: vec!["x".into()],
            ..Default::default()
        };
        assert!(load(&path, &bad)
            .unwrap_err()
            .to_string()
            .contains("--upstream"));
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert_eq!(parse_status_range("204"), Ok((204, 204)));
        assert!(parse_status_range("399-200").is_err());
        assert!(parse_status_range("abc").is_err());
    }
}
