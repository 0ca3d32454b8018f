//! The admin API, on its own listener (default 127.0.0.1:9090), never on the
//! shop's port.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /health` | the process is alive |
//! | `GET /ready` | 200 when at least one origin server is healthy, else 503; JSON per server |
//! | `GET /metrics` | Prometheus text |
//! | `POST /reload` | re-read the policy; refused (422) if it has problems |
//!
//! Mutating endpoints need `Authorization: Bearer $REMPART_ADMIN_TOKEN` when a
//! token is set; a token is required to bind a non-loopback address.

use crate::config::store::ReloadOutcome;
use crate::metrics;
use crate::server::Reloader;
use crate::upstream::UpstreamPool;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;

/// The admin application.
pub struct AdminApi {
    pub reloader: Arc<Reloader>,
    pub pool: Arc<UpstreamPool>,
    /// Bearer token guarding mutating endpoints, when set.
    pub token: Option<String>,
}

/// Why a request to the admin API was refused.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed; use {0}")]
    Method(&'static str),
    #[error("missing or wrong bearer token")]
    Unauthorized,
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::NotFound => StatusCode::NOT_FOUND,
            AdminError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }
}

impl AdminApi {
    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }

    fn ready(&self) -> (StatusCode, serde_json::Value) {
        let snapshot = self.reloader.store.current();
        let settings = &snapshot.upstream;
        let servers: Vec<_> = settings
            .servers
            .iter()
            .map(|s| {
                let st = self.pool.state(s);
                json!({
                    "upstream": s.name,
                    "healthy": st.is_healthy(),
                    "checked": st.was_checked(),
                    "in_flight": st.in_flight(),
                })
            })
            .collect();
        let ready = self.pool.any_healthy(settings);
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, json!({ "ready": ready, "upstreams": servers }))
    }

    fn reload(&self) -> (StatusCode, serde_json::Value) {
        match self.reloader.reload() {
            ReloadOutcome::Applied { generation } => (
                StatusCode::OK,
                json!({ "status": "applied", "generation": generation }),
            ),
            ReloadOutcome::Refused(diags) => {
                let problems: Vec<String> = diags.0.iter().map(ToString::to_string).collect();
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({ "status": "refused", "reason": "the policy has problems; the running policy stays", "problems": problems }),
                )
            }
        }
    }

    fn route(&self, session: &ServerSession) -> Result<Response<Vec<u8>>, AdminError> {
        let req = session.req_header();
        let (method, path) = (&req.method, req.uri.path());
        let get = |m: &Method| m == Method::GET || m == Method::HEAD;
        match path {
            "/health" if get(method) => {
                Ok(json_response(StatusCode::OK, &json!({ "status": "alive" })))
            }
            "/ready" if get(method) => {
                let (status, body) = self.ready();
                Ok(json_response(status, &body))
            }
            "/metrics" if get(method) => Ok(response(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                metrics::render(),
            )),
            "/reload" if method == Method::POST => {
                if !self.authorized(session) {
                    return Err(AdminError::Unauthorized);
                }
                let (status, body) = self.reload();
                Ok(json_response(status, &body))
            }
            "/health" | "/ready" | "/metrics" => Err(AdminError::Method("GET")),
            "/reload" => Err(AdminError::Method("POST")),
            _ => Err(AdminError::NotFound),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        self.route(session).unwrap_or_else(|e| {
            let mut r = json_response(e.status(), &json!({ "error": e.to_string() }));
            if matches!(e, AdminError::Unauthorized) {
                r.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
            }
            r
        })
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Vec<u8>> {
    response(status, "application/json", body.to_string().into_bytes())
}

fn response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let headers = r.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
