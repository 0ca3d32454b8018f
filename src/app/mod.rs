//! Assembles the running server: the proxy on the shop's listeners, the admin
//! API on its own, the health checker and the reload signal, as pingora services.

use crate::admin::AdminApi;
use crate::cache::PageStore;
use crate::demo::ShopApp;
use crate::edge::tls::SniResolver;
use crate::edge::upstream::health::HealthChecker;
use crate::edge::upstream::UpstreamPool;
use crate::edge::{CacheStore, Proxy};
use crate::observe::alerts::{Alert, AlertEngine};
use crate::observe::stats::Stats;
use crate::policy::store::{PolicyStore, ReloadOutcome};
use crate::policy::Snapshot;
use crate::shield::bans::BanList;
use async_trait::async_trait;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the admin API would listen on {0}, which is not loopback: set REMPART_ADMIN_TOKEN to protect it")]
    AdminTokenRequired(SocketAddr),
    #[error(transparent)]
    Tls(#[from] crate::edge::tls::TlsError),
    #[error("{0}")]
    Policy(String),
    #[error("{0} is already in use (another Rempart, or another server, listens there); to replace a running Rempart without downtime, start the new one with `rempart run --upgrade` and send SIGQUIT to the old one")]
    AddressInUse(SocketAddr),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, String),
}

/// Reloads the policy, and the certificates with it.
pub struct Reloader {
    pub store: Arc<PolicyStore>,
    certs: Option<Arc<SniResolver>>,
    /// The page store, when the cache was on at start-up (purges, tag header).
    pub cache: Option<&'static PageStore>,
    pub bans: Arc<BanList>,
    pub alerts: Arc<AlertEngine>,
}

impl Reloader {
    /// Re-reads the policy; its certificates come with it (loaded and checked
    /// while compiling), so both are applied or neither.
    pub fn reload(&self) -> ReloadOutcome {
        let outcome = self.store.reload_checked(|snapshot| {
            let tls = snapshot.tls.as_ref().filter(|t| !t.listen.is_empty());
            match (&self.certs, tls) {
                (Some(_), Some(t)) if t.certs.is_none() => Err(snapshot.warnings.clone()),
                _ => Ok(()),
            }
        });
        if let ReloadOutcome::Applied { .. } = &outcome {
            let snapshot = self.store.current();
            let table = snapshot.tls.as_ref().and_then(|t| t.certs.clone());
            if let (Some(resolver), Some(table)) = (&self.certs, table) {
                resolver.replace(table);
            }
            if let (Some(store), Some(cache)) = (self.cache, &snapshot.cache) {
                store.set_tag_header(cache.rules.tag_header.clone());
            }
            self.bans.set_policy(snapshot.bans.clone());
            self.alerts.set_policy(snapshot.alerts.clone());
        }
        outcome
    }
}

/// Every slot, hands the closed slot to the alert engine; delivers alerts to
/// the webhook from the same runtime.
struct AlertDriver {
    stats: Arc<Stats>,
    engine: Arc<AlertEngine>,
    policy: Arc<PolicyStore>,
    pool: Arc<UpstreamPool>,
    inbox: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Alert>>>,
}

#[async_trait]
impl BackgroundService for AlertDriver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Some(inbox) = self.inbox.lock().ok().and_then(|mut i| i.take()) {
            tokio::spawn(crate::observe::alerts::deliver(self.engine.clone(), inbox));
        }
        let mut next = self.stats.current_index();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.stats.slot_duration() / 4) => {}
                _ = shutdown.changed() => return,
            }
            let now = self.stats.current_index();
            if now % 20 == 0 && next < now {
                // Housekeeping on the same clock: idle rate-limit keys go.
                crate::shield::rate_limit::sweep();
            }
            while next < now {
                let summary = self.stats.closed_slot(next);
                let snapshot = self.policy.current();
                let flips: Vec<(String, u64)> = snapshot
                    .upstream
                    .servers
                    .iter()
                    .map(|s| (s.name.clone(), self.pool.state(s).flips()))
                    .collect();
                self.engine.observe(&summary, &flips);
                next += 1;
            }
        }
    }
}

/// Writes the ban state file in the background, at most once a second and
/// only after a change, so that placing a ban never waits on the disk.
struct BanSaver(Arc<BanList>);

#[async_trait]
impl BackgroundService for BanSaver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = shutdown.changed() => {
                    self.0.save_if_changed();
                    return;
                }
            }
            let bans = self.0.clone();
            let _ = tokio::task::spawn_blocking(move || bans.save_if_changed()).await;
        }
    }
}

/// Reloads on SIGHUP.
struct SignalReload(Arc<Reloader>);

#[async_trait]
impl BackgroundService for SignalReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot listen for SIGHUP; reload through the admin API only");
            return;
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    tracing::info!("SIGHUP: reloading the policy");
                    self.0.reload();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
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

/// Builds every service and runs until SIGTERM (graceful) or SIGINT.
pub fn run(store: PolicyStore, extras: Extras) -> Result<(), StartError> {
    let store = Arc::new(store);
    let snapshot = store.current();
    let token = std::env::var("REMPART_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if !snapshot.server.admin_listen.ip().is_loopback() && token.is_none() {
        return Err(StartError::AdminTokenRequired(snapshot.server.admin_listen));
    }
    if let Some(tls) = snapshot
        .tls
        .as_ref()
        .filter(|t| !t.listen.is_empty() && t.certs.is_none())
    {
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
    if let Some(waf) = &snapshot.waf {
        log_waf(waf);
    }
    let pool = Arc::new(UpstreamPool::new());
    let certs = match snapshot.tls.as_ref().and_then(|t| t.certs.clone()) {
        Some(table) => {
            tracing::info!(names = ?table.names(), "TLS certificates loaded");
            Some(Arc::new(SniResolver::new(table)))
        }
        None => None,
    };
    // Redirects go to an HTTPS listener this process really has.
    let https_port = certs
        .as_ref()
        .and(snapshot.tls.as_ref())
        .and_then(|t| t.listen.first())
        .map(|a| a.port());
    // The page store lives as long as the process: reloads change rules, not the store.
    let cache = snapshot.cache.as_ref().map(|c| {
        let store: &'static PageStore =
            Box::leak(Box::new(PageStore::new(c.max_size, c.max_object_size)));
        store.set_tag_header(c.rules.tag_header.clone());
        let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(c.rules.lock_timeout));
        CacheStore { store, lock }
    });
    let stats = Arc::new(Stats::new(snapshot.stats_slot));
    let bans = Arc::new(BanList::open(
        snapshot.ban_state_file.clone(),
        snapshot.bans.clone(),
    ));
    let (outbox, inbox) = tokio::sync::mpsc::channel(64);
    let alerts = Arc::new(AlertEngine::new(snapshot.alerts.clone(), Some(outbox)));
    let reloader = Arc::new(Reloader {
        store: store.clone(),
        certs: certs.clone(),
        cache: cache.map(|c| c.store),
        bans: bans.clone(),
        alerts: alerts.clone(),
    });

    if !extras.upgrade {
        let mut addrs = snapshot.server.listen.clone();
        addrs.push(snapshot.server.admin_listen);
        if let Some(tls) = snapshot.tls.as_ref().filter(|_| certs.is_some()) {
            addrs.extend(tls.listen.iter().copied());
        }
        addrs.extend(extras.demo_origin);
        check_free(&addrs)?;
    }
    let conf = server_conf(&snapshot);
    let opt = pingora::server::configuration::Opt {
        upgrade: extras.upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    let conf = server.configuration.clone();

    let proxy_app = pingora::proxy::http_proxy(
        &conf,
        Proxy {
            policy: store.clone(),
            pool: pool.clone(),
            https_port,
            cache,
            stats: stats.clone(),
            bans: bans.clone(),
            challenge_key: Arc::new(challenge_key()),
        },
    );
    let mut proxy = Service::new(
        "rempart proxy".to_string(),
        crate::edge::connections::Guarded::new(proxy_app, store.clone()),
    );
    for addr in &snapshot.server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    if let (Some(tls), Some(resolver)) = (&snapshot.tls, &certs) {
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
    server.add_service(proxy);

    let mut admin = Service::new(
        "rempart admin".to_string(),
        AdminApi {
            reloader: reloader.clone(),
            pool: pool.clone(),
            token,
            stats: stats.clone(),
            listen: snapshot.server.admin_listen,
        },
    );
    admin.add_tcp(&snapshot.server.admin_listen.to_string());
    server.add_service(admin);

    server.add_service(background_service(
        "alerts",
        AlertDriver {
            stats,
            engine: alerts,
            policy: store.clone(),
            pool: pool.clone(),
            inbox: std::sync::Mutex::new(Some(inbox)),
        },
    ));
    server.add_service(background_service(
        "health checks",
        HealthChecker {
            policy: store.clone(),
            pool,
        },
    ));
    server.add_service(background_service("ban state", BanSaver(bans.clone())));
    server.add_service(background_service(
        "reload on SIGHUP",
        SignalReload(reloader),
    ));

    if let Some(addr) = extras.demo_origin {
        let mut shop = Service::new("demo shop".to_string(), ShopApp::default());
        shop.add_tcp(&addr.to_string());
        server.add_service(shop);
    }

    tracing::info!(
        listen = ?snapshot.server.listen,
        tls = ?snapshot.tls.as_ref().map(|t| &t.listen),
        admin = %snapshot.server.admin_listen,
        upstreams = ?snapshot.upstream.servers.iter().map(|s| &s.name).collect::<Vec<_>>(),
        "rempart starting"
    );
    server.run_forever();
}

/// The challenge signing key: `REMPART_CHALLENGE_SECRET` (at least 16 bytes,
/// shared by every instance behind one load balancer), else a random key and
/// passes that end with the process.
fn challenge_key() -> crate::shield::bots::challenge::ChallengeKey {
    match std::env::var("REMPART_CHALLENGE_SECRET") {
        Ok(secret) if secret.len() >= 16 => {
            crate::shield::bots::challenge::ChallengeKey::new(secret.as_bytes())
        }
        Ok(_) => {
            tracing::warn!(
                "REMPART_CHALLENGE_SECRET is shorter than 16 bytes: using a random key instead"
            );
            crate::shield::bots::challenge::ChallengeKey::random()
        }
        Err(_) => crate::shield::bots::challenge::ChallengeKey::random(),
    }
}

fn server_conf(snapshot: &Snapshot) -> ServerConf {
    ServerConf {
        threads: snapshot.server.threads,
        // pingora counts whole seconds; round up so `500ms` is not 0.
        grace_period_seconds: Some(whole_seconds(snapshot.server.grace_period)),
        graceful_shutdown_timeout_seconds: Some(whole_seconds(snapshot.server.shutdown_timeout)),
        upgrade_sock: snapshot.server.upgrade_socket.display().to_string(),
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
