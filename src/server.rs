//! Assembles the running server: the proxy on the shop's listeners, the admin
//! API on its own, the health checker and the reload signal, as pingora services.

use crate::admin::AdminApi;
use crate::config::store::{PolicyStore, ReloadOutcome};
use crate::config::Snapshot;
use crate::demo::ShopApp;
use crate::pipeline::Proxy;
use crate::tls::{CertTable, SniResolver};
use crate::upstream::health::HealthChecker;
use crate::upstream::UpstreamPool;
use async_trait::async_trait;
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
    Tls(#[from] crate::tls::TlsError),
}

/// Reloads the policy, and the certificates with it.
pub struct Reloader {
    pub store: Arc<PolicyStore>,
    certs: Option<Arc<SniResolver>>,
}

impl Reloader {
    /// Re-reads policy and certificates; applies both or neither.
    pub fn reload(&self) -> ReloadOutcome {
        let Some(resolver) = &self.certs else {
            return self.store.reload();
        };
        self.store.reload_with(|snapshot| match &snapshot.tls {
            Some(tls) => {
                let table = CertTable::load(&tls.certs_dir).map_err(|e| e.to_string())?;
                resolver.replace(table);
                Ok(())
            }
            None => Ok(()),
        })
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
    crate::metrics::init();
    let pool = Arc::new(UpstreamPool::new());
    let certs = match &snapshot.tls {
        Some(tls) if !tls.listen.is_empty() => {
            let table = CertTable::load(&tls.certs_dir)?;
            tracing::info!(names = ?table.names(), "TLS certificates loaded");
            Some(Arc::new(SniResolver::new(table)))
        }
        _ => None,
    };
    let reloader = Arc::new(Reloader {
        store: store.clone(),
        certs: certs.clone(),
    });

    let conf = server_conf(&snapshot);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let conf = server.configuration.clone();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &conf,
        Proxy {
            policy: store.clone(),
            pool: pool.clone(),
        },
        "rempart proxy",
    );
    for addr in &snapshot.server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    if let (Some(tls), Some(resolver)) = (&snapshot.tls, &certs) {
        for addr in &tls.listen {
            let mut settings = match TlsSettings::intermediate("", "") {
                Ok(s) => s,
                Err(e) => {
                    return Err(StartError::Tls(crate::tls::TlsError::Generate(
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
        },
    );
    admin.add_tcp(&snapshot.server.admin_listen.to_string());
    server.add_service(admin);

    server.add_service(background_service(
        "health checks",
        HealthChecker {
            policy: store.clone(),
            pool,
        },
    ));
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

fn server_conf(snapshot: &Snapshot) -> ServerConf {
    ServerConf {
        threads: snapshot.server.threads,
        grace_period_seconds: Some(snapshot.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(snapshot.server.shutdown_timeout.as_secs()),
        ..ServerConf::default()
    }
}
