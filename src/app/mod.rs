//! Assembly: the sections and the filter chain (`sections`), the
//! long-lived state created once at start-up and handed to the slices, the
//! services pingora runs (the proxy on the shop's listeners, the admin API
//! on its own, background tasks), and reloads.

pub mod reload;
pub mod sections;
pub mod tasks;

use crate::admin::AdminApi;
use crate::cache::{CacheSection, Store};
use crate::demo::ShopApp;
use crate::edge::chain::Chain;
use crate::edge::tls::{SniResolver, TlsSection};
use crate::edge::upstream::health::HealthChecker;
use crate::edge::upstream::{UpstreamPool, UpstreamSection};
use crate::edge::Proxy;
use crate::observe::alerts::{AlertEngine, AlertsSection};
use crate::observe::stats::{Stats, StatsSection};
use crate::policy::server::{ServerSection, ServerSettings};
use crate::policy::store::PolicyStore;
use crate::policy::{Diagnostics, Overrides, Services, Snapshot};
use crate::shield::bans::{BanList, BansSection};
use crate::shield::bots::challenge::ChallengeKey;
use crate::util::limiter::Registry;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use reload::Reloader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the admin API would listen on {0}, which is not loopback: set REMPART_ADMIN_TOKEN to protect it")]
    AdminTokenRequired(SocketAddr),
    #[error(transparent)]
    Tls(#[from] crate::edge::tls::TlsError),
    #[error("{0}")]
    Policy(String),
    #[error("cannot make a challenge key: {0}")]
    Random(String),
    #[error("{0} is already in use (another Rempart, or another server, listens there); to replace a running Rempart without downtime, start the new one with `rempart run --upgrade` and send SIGQUIT to the old one")]
    AddressInUse(SocketAddr),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, String),
}

/// What to run besides the proxy.
#[derive(Default)]
pub struct Extras {
    /// Serve the sample shop on this address (`rempart demo`).
    pub demo_origin: Option<SocketAddr>,
    /// Take the listening sockets over from a running Rempart (pingora's
    /// graceful upgrade) instead of binding them.
    pub upgrade: bool,
}

/// Refuses to start on an address something already listens on. The
/// kernel would otherwise split the traffic between two processes with
/// different policies (pingora's listeners set SO_REUSEPORT). The probe
/// sets SO_REUSEADDR only, so a port left in TIME_WAIT by a restart is free.
fn check_free(addrs: &[SocketAddr]) -> Result<(), StartError> {
    for addr in addrs {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(*addr),
            socket2::Type::STREAM,
            None,
        )
        .map_err(|e| StartError::Listen(*addr, e.to_string()))?;
        let _ = socket.set_reuse_address(true);
        match socket.bind(&(*addr).into()).and_then(|()| socket.listen(1)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(StartError::AddressInUse(*addr))
            }
            Err(e) => return Err(StartError::Listen(*addr, e.to_string())),
        }
    }
    Ok(())
}

/// The long-lived state the slices are handed, created once at start-up.
pub struct Parts {
    pub bans: Arc<BanList>,
    pub challenge_key: Arc<ChallengeKey>,
    /// The page store, when the policy had a cache at start-up.
    pub cache: Option<Store>,
    /// Port of this process's first HTTPS listener, if it has one: the
    /// HTTP→HTTPS redirect points there (a reload cannot add listeners).
    pub https_port: Option<u16>,
}

/// Loads a policy for `rempart check`: every problem, or the snapshot and
/// its warnings.
pub fn check(path: &Path) -> Result<Snapshot, Diagnostics> {
    crate::policy::load(
        path,
        &sections::sections(),
        &Overrides::default(),
        &Services::default(),
    )
}

/// The running policy, with the rate limiters that outlive reloads.
pub fn open(path: PathBuf, overrides: Overrides) -> Result<PolicyStore, Diagnostics> {
    let services = Services::default().with(Arc::new(Registry::default()));
    PolicyStore::open(path, sections::sections(), overrides, services)
}

/// The `server` block of the running policy (every policy has one).
pub fn server_settings(store: &PolicyStore) -> ServerSettings {
    store
        .current()
        .get::<ServerSection>()
        .cloned()
        .unwrap_or_default()
}

/// Builds every service and runs until SIGTERM (graceful) or SIGINT.
pub fn run(store: PolicyStore, extras: Extras) -> Result<(), StartError> {
    let store = Arc::new(store);
    let snapshot = store.current();
    let server = server_settings(&store);
    let token = std::env::var("REMPART_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if !server.admin_listen.ip().is_loopback() && token.is_none() {
        return Err(StartError::AdminTokenRequired(server.admin_listen));
    }
    let tls = snapshot.get::<TlsSection>();
    if let Some(tls) = tls.filter(|t| !t.listen.is_empty() && t.certs.is_none()) {
        let why = snapshot
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        return Err(StartError::Policy(format!(
            "no usable certificate in {}:\n{why}",
            tls.certs_dir.display()
        )));
    }
    crate::observe::metrics::init();
    if let Some(waf) = snapshot.get::<crate::waf::WafSection>() {
        log_waf(waf);
    }
    let pool = Arc::new(UpstreamPool::new());
    let certs = match tls.and_then(|t| t.certs.clone()) {
        Some(table) => {
            tracing::info!(names = ?table.names(), "TLS certificates loaded");
            Some(Arc::new(SniResolver::new(table)))
        }
        None => None,
    };
    let https_port = certs
        .as_ref()
        .and(tls)
        .and_then(|t| t.listen.first())
        .map(|a| a.port());
    let slot = snapshot
        .get::<StatsSection>()
        .copied()
        .unwrap_or(Duration::from_secs(10));
    let stats = Arc::new(Stats::new(slot));
    let bans_settings = snapshot.get::<BansSection>().cloned();
    let bans = Arc::new(BanList::open(
        bans_settings.as_ref().and_then(|b| b.state_file.clone()),
        bans_settings.map(|b| b.policy).unwrap_or_default(),
    ));
    let (outbox, inbox) = tokio::sync::mpsc::channel(64);
    let alerts = Arc::new(AlertEngine::new(
        snapshot.get::<AlertsSection>().cloned().unwrap_or_default(),
        Some(outbox),
    ));
    let parts = Parts {
        bans: bans.clone(),
        challenge_key: Arc::new(challenge_key()?),
        cache: snapshot.get::<CacheSection>().map(Store::new),
        https_port,
    };
    let reloader = Arc::new(Reloader {
        store: store.clone(),
        certs: certs.clone(),
        cache: parts.cache.map(|c| c.pages),
        bans: bans.clone(),
        alerts: alerts.clone(),
    });

    if !extras.upgrade {
        let mut addrs = server.listen.clone();
        addrs.push(server.admin_listen);
        if let Some(tls) = tls.filter(|_| certs.is_some()) {
            addrs.extend(tls.listen.iter().copied());
        }
        addrs.extend(extras.demo_origin);
        check_free(&addrs)?;
    }
    let conf = server_conf(&server);
    let opt = pingora::server::configuration::Opt {
        upgrade: extras.upgrade,
        ..Default::default()
    };
    let mut pingora_server = Server::new_with_opt_and_conf(Some(opt), conf);
    pingora_server.bootstrap();
    let conf = pingora_server.configuration.clone();

    let proxy_app = pingora::proxy::http_proxy(
        &conf,
        Proxy {
            policy: store.clone(),
            pool: pool.clone(),
            chain: Chain::new(sections::filters(&parts), bans.clone()),
            stats: stats.clone(),
        },
    );
    let mut proxy = Service::new(
        "rempart proxy".to_string(),
        crate::edge::connections::Guarded::new(proxy_app, store.clone()),
    );
    for addr in &server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    if let (Some(tls), Some(resolver)) = (tls, &certs) {
        for addr in &tls.listen {
            let mut settings = match TlsSettings::intermediate("", "") {
                Ok(s) => s,
                Err(e) => {
                    return Err(StartError::Tls(crate::edge::tls::TlsError::Generate(
                        e.to_string(),
                    )))
                }
            };
            settings.set_cert_resolver(resolver.clone());
            if tls.http2 {
                settings.enable_h2();
            }
            proxy.add_tls_with_settings(&addr.to_string(), None, settings);
        }
    }
    pingora_server.add_service(proxy);

    let mut admin = Service::new(
        "rempart admin".to_string(),
        AdminApi {
            reloader: reloader.clone(),
            policy: store.clone(),
            pool: pool.clone(),
            token,
            stats: stats.clone(),
            alerts: alerts.clone(),
            bans: bans.clone(),
            cache: parts.cache.map(|c| c.pages),
            listen: server.admin_listen,
        },
    );
    admin.add_tcp(&server.admin_listen.to_string());
    pingora_server.add_service(admin);

    pingora_server.add_service(background_service(
        "alerts",
        tasks::AlertDriver {
            stats,
            engine: alerts,
            policy: store.clone(),
            pool: pool.clone(),
            inbox: parking_lot::Mutex::new(Some(inbox)),
        },
    ));
    if let Some(limiters) = store.services().get::<Registry>() {
        pingora_server.add_service(background_service(
            "rate limit sweep",
            tasks::LimiterSweep {
                limiters,
                every: slot * 20,
            },
        ));
    }
    pingora_server.add_service(background_service(
        "health checks",
        HealthChecker {
            policy: store.clone(),
            pool,
        },
    ));
    pingora_server.add_service(background_service("ban state", tasks::BanSaver(bans)));
    pingora_server.add_service(background_service(
        "reload on SIGHUP",
        tasks::SignalReload(reloader),
    ));

    if let Some(addr) = extras.demo_origin {
        let mut shop = Service::new("demo shop".to_string(), ShopApp::default());
        shop.add_tcp(&addr.to_string());
        pingora_server.add_service(shop);
    }

    tracing::info!(
        listen = ?server.listen,
        tls = ?tls.map(|t| &t.listen),
        admin = %server.admin_listen,
        upstreams = ?snapshot.get::<UpstreamSection>().map(|u| u.servers.iter().map(|s| &s.name).collect::<Vec<_>>()),
        "rempart starting"
    );
    drop(snapshot);
    pingora_server.run_forever();
}

/// The challenge signing key: `REMPART_CHALLENGE_SECRET` (at least 16 bytes,
/// shared by every instance behind one load balancer), else a random key and
/// passes that end with the process.
fn challenge_key() -> Result<ChallengeKey, StartError> {
    let random = || ChallengeKey::random().map_err(|e| StartError::Random(e.to_string()));
    match std::env::var("REMPART_CHALLENGE_SECRET") {
        Ok(secret) if secret.len() >= 16 => Ok(ChallengeKey::new(secret.as_bytes())),
        Ok(_) => {
            tracing::warn!(
                "REMPART_CHALLENGE_SECRET is shorter than 16 bytes: using a random key instead"
            );
            random()
        }
        Err(_) => random(),
    }
}

fn server_conf(server: &ServerSettings) -> ServerConf {
    ServerConf {
        threads: server.threads,
        // pingora counts whole seconds; round up so `500ms` is not 0.
        grace_period_seconds: Some(whole_seconds(server.grace_period)),
        graceful_shutdown_timeout_seconds: Some(whole_seconds(server.shutdown_timeout)),
        upgrade_sock: server.upgrade_socket.display().to_string(),
        ..ServerConf::default()
    }
}

fn whole_seconds(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// What the WAF loaded, and every construct it cannot run (file, line, rule id).
fn log_waf(waf: &crate::waf::Waf) {
    tracing::info!(
        rules = waf.rules.rules.len(),
        files = waf.files.len(),
        paranoia_level = waf.settings.paranoia,
        mode = ?waf.settings.mode,
        "WAF loaded"
    );
    for note in &waf.notes {
        tracing::warn!("WAF: {note}");
    }
}
