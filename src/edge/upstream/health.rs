//! Active health checks: every `interval`, an HTTP GET of the policy's path on
//! each origin server, judged by its status. Runs as a pingora background
//! service and always reads the current snapshot, so a reload takes effect at
//! the next round.

use super::UpstreamPool;
use super::{HealthCheck, UpstreamSection, UpstreamServer};
use crate::observe::metrics;
use crate::policy::store::PolicyStore;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The background task that probes origin servers.
pub struct HealthChecker {
    pub policy: Arc<PolicyStore>,
    pub pool: Arc<UpstreamPool>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let snapshot = self.policy.current();
            let upstream = snapshot.get::<UpstreamSection>();
            let wait = match upstream.and_then(|u| u.health_check.as_ref()) {
                Some(check) => {
                    let mut probes = tokio::task::JoinSet::new();
                    for server in upstream.map(|u| u.servers.clone()).unwrap_or_default() {
                        let check = check.clone();
                        let state = self.pool.state(&server);
                        probes.spawn(async move {
                            let ok = probe(&server, &check).await;
                            if let Err(why) = &ok {
                                metrics::UPSTREAM_FAILURES
                                    .with_label_values(&[&server.name, "health_check"])
                                    .inc();
                                tracing::debug!(upstream = %server.name, "health check failed: {why}");
                            }
                            state.record_check(ok.is_ok(), check.healthy_threshold, check.unhealthy_threshold);
                        });
                    }
                    while probes.join_next().await.is_some() {}
                    check.interval
                }
                // No checks configured: look again later in case a reload adds them.
                None => Duration::from_secs(1),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One check: connect, send a GET, read the status line, all within `timeout`.
pub async fn probe(server: &UpstreamServer, check: &HealthCheck) -> Result<u16, String> {
    let attempt = async {
        let mut stream = TcpStream::connect(server.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let host = check.host.as_deref().unwrap_or(&server.host);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rempart-health-check\r\nConnection: close\r\n\r\n",
            check.path
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = vec![0u8; 1024];
        let mut filled = 0;
        loop {
            let n = stream
                .read(&mut buf[filled..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before a status line".to_string());
            }
            filled += n;
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            let parsed = response.parse(&buf[..filled]);
            // The status line is enough; the rest of the head may not have arrived.
            if let Some(code) = response.code {
                return Ok(code);
            }
            if parsed.is_err() || filled == buf.len() {
                return Err("malformed status line".to_string());
            }
        }
    };
    let status = tokio::time::timeout(check.timeout, attempt)
        .await
        .map_err(|_| format!("no answer within {:?}", check.timeout))??;
    let (lo, hi) = check.expect_status;
    if (lo..=hi).contains(&status) {
        Ok(status)
    } else {
        Err(format!("status {status} outside {lo}-{hi}"))
    }
}
