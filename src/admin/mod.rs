//! The admin API, on its own listener (default 127.0.0.1:9090), never on the
//! shop's port.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /health` | the process is alive |
//! | `GET /ready` | 200 when at least one origin server is healthy, else 503; JSON per server |
//! | `GET /metrics` | Prometheus text |
//! | `POST /reload` | re-read the policy; refused (422) if it has problems |
//! | `GET /` | the live dashboard (HTML, self-contained) |
//! | `GET /stats` | live figures over 1 min, 5 min and 1 h (JSON) |
//! | `GET /alerts` | recent alerts (JSON) |
//! | `GET /bans`, `POST /bans`, `DELETE /bans/<ip>` | list, add (`{"ip", "duration", "reason"}`) and lift bans |
//! | `POST /cache/purge` | remove cached pages: `{"url"}`, `{"prefix"}`, `{"tag"}` or `{"all": true}` |
//!
//! Mutating endpoints need `Authorization: Bearer $REMPART_ADMIN_TOKEN` when a
//! token is set; a token is required to bind a non-loopback address.

use crate::cache::{CacheRules, CacheSection, PageStore, Purge};
use crate::edge::upstream::{UpstreamPool, UpstreamSection};
use crate::observe::alerts::{Alert, AlertEngine};
use crate::observe::metrics;
use crate::observe::stats::Stats;
use crate::policy::server::ServerSection;
use crate::policy::store::{PolicyStore, ReloadOutcome};
use crate::shield::bans::{Ban, BanList};
use crate::util::net::{net_text, parse_net};
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;

/// Re-reads the policy (the assembly knows what a reload also updates:
/// certificates, the ban ladder, alert settings...).
pub trait Reload: Send + Sync {
    fn reload(&self) -> ReloadOutcome;
}

/// The admin application.
pub struct AdminApi {
    pub reloader: Arc<dyn Reload>,
    pub policy: Arc<PolicyStore>,
    pub pool: Arc<UpstreamPool>,
    /// Bearer token guarding mutating endpoints, when set.
    pub token: Option<String>,
    pub stats: Arc<Stats>,
    pub alerts: Arc<AlertEngine>,
    pub bans: Arc<BanList>,
    /// The page store, when the cache was on at start-up (purges, sizes).
    pub cache: Option<&'static PageStore>,
    /// The admin listener's own address (fixed at start).
    pub listen: std::net::SocketAddr,
}

/// The dashboard, embedded in the binary (no external assets).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Why a request to the admin API was refused.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the page cache is off (no `cache` block at start-up)")]
    CacheOff,
    #[error("not found")]
    NotFound,
    #[error("method not allowed; use {0}")]
    Method(&'static str),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("the Host `{0}` does not name this admin API; add it to `server.admin_hosts` if it is yours")]
    WrongHost(String),
    #[error("cross-site request refused: the Origin `{0}` is not this admin API")]
    CrossSite(String),
    #[error("send the body as JSON, with `Content-Type: application/json`")]
    NotJson,
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::CacheOff => StatusCode::CONFLICT,
            AdminError::NotFound => StatusCode::NOT_FOUND,
            AdminError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::WrongHost(_) => StatusCode::MISDIRECTED_REQUEST,
            AdminError::CrossSite(_) => StatusCode::FORBIDDEN,
            AdminError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

impl AdminApi {
    /// The `Host` must name this listener: an IP literal, `localhost` on a
    /// loopback listener, or a name from `server.admin_hosts`. A page on
    /// another site whose name was made to resolve to this address (DNS
    /// rebinding) sends its own name and is refused.
    fn check_host(&self, session: &ServerSession) -> Result<(), AdminError> {
        let req = session.req_header();
        let Some(raw) = crate::util::host::raw(req) else {
            // HTTP/1.0 without Host: no browser sends that.
            return Ok(());
        };
        let text = String::from_utf8_lossy(raw).to_ascii_lowercase();
        let bare = crate::util::host::without_port(&text);
        let port_ok = text[bare.len()..]
            .strip_prefix(':')
            .is_none_or(|p| p.parse::<u16>() == Ok(self.listen.port()));
        let literal = bare
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok();
        let named = (bare == "localhost" && self.listen.ip().is_loopback())
            || self
                .policy
                .current()
                .get::<ServerSection>()
                .is_some_and(|s| s.admin_hosts.iter().any(|h| h == bare));
        if port_ok && (literal || named) {
            Ok(())
        } else {
            Err(AdminError::WrongHost(text))
        }
    }

    /// A mutation (reload, purge, ban, unban) must carry the token when one
    /// is set. Without a token (a loopback listener), it must not come from
    /// another site: a same-origin `Origin` if any, and a JSON body for a
    /// POST (a cross-site form can only send `text/plain` and form types
    /// without a preflight, which this API never grants).
    fn check_mutation(&self, session: &ServerSession) -> Result<(), AdminError> {
        if self.token.is_some() {
            return if self.authorized(session) {
                Ok(())
            } else {
                Err(AdminError::Unauthorized)
            };
        }
        let req = session.req_header();
        if let Some(origin) = req.headers.get(http::header::ORIGIN) {
            let origin = String::from_utf8_lossy(origin.as_bytes()).to_ascii_lowercase();
            let host = crate::util::host::raw(req)
                .map(|h| String::from_utf8_lossy(h).to_ascii_lowercase())
                .unwrap_or_default();
            let same = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|o| o == host);
            if !same {
                return Err(AdminError::CrossSite(origin));
            }
        }
        if req.method == Method::POST {
            let json = req
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
            if !json {
                return Err(AdminError::NotJson);
            }
        }
        Ok(())
    }

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
        let snapshot = self.policy.current();
        let Some(settings) = snapshot.get::<UpstreamSection>() else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "ready": false, "upstreams": [] }),
            );
        };
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

    /// `/stats`: the collector's windows and series, plus upstreams, alerts and bans.
    fn stats_document(&self) -> serde_json::Value {
        let mut doc = self.stats.snapshot();
        let (_, ready) = self.ready();
        doc["upstreams"] = ready["upstreams"].clone();
        doc["alerts"] = self
            .alerts
            .recent()
            .iter()
            .take(50)
            .map(Alert::to_json)
            .collect();
        doc["bans"] = self.bans.list().iter().map(Ban::to_json).collect();
        doc
    }

    /// `POST /bans` with `{"ip": "...", "duration": "1h", "reason": "..."}`;
    /// without a duration the ban ladder decides.
    fn add_ban(&self, body: &[u8]) -> Result<Response<Vec<u8>>, AdminError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct BanRequest {
            ip: String,
            duration: Option<String>,
            reason: Option<String>,
        }
        let request: BanRequest = serde_json::from_slice(body).map_err(|e| {
            AdminError::BadRequest(format!("body must be JSON such as {{\"ip\": \"198.51.100.7\", \"duration\": \"1h\", \"reason\": \"scanner\"}}: {e}"))
        })?;
        let net = parse_net(&request.ip).map_err(|_| {
            AdminError::BadRequest(format!(
                "`{}` is not an IP address or network (e.g. `198.51.100.7`, `2001:db8::/64`)",
                request.ip
            ))
        })?;
        let duration = request
            .duration
            .as_deref()
            .map(crate::policy::units::parse_duration)
            .transpose()
            .map_err(AdminError::BadRequest)?;
        if duration.is_some_and(|d| d.is_zero()) {
            return Err(AdminError::BadRequest(
                "a ban must last longer than zero".into(),
            ));
        }
        if duration.is_some_and(|d| d > crate::shield::bans::MAX_BAN) {
            return Err(AdminError::BadRequest(
                "a ban may last at most ten years (`3650d`)".into(),
            ));
        }
        let reason = request.reason.unwrap_or_else(|| "manual".to_string());
        if reason.len() > 200 {
            return Err(AdminError::BadRequest(
                "reason is longer than 200 characters".into(),
            ));
        }
        let ban = self
            .bans
            .ban_net(net, duration, &reason)
            .map_err(|e| AdminError::BadRequest(e.to_string()))?;
        Ok(json_response(StatusCode::CREATED, &ban.to_json()))
    }

    /// `POST /cache/purge` with one of `url`, `prefix`, `tag` or `all`.
    fn purge(&self, body: &[u8]) -> Result<Response<Vec<u8>>, AdminError> {
        let store = self.cache.ok_or(AdminError::CacheOff)?;
        let snapshot = self.policy.current();
        let rules = snapshot
            .get::<CacheSection>()
            .map(|c| c.rules.clone())
            .ok_or(AdminError::CacheOff)?;
        let request: PurgeRequest = serde_json::from_slice(body).map_err(|e| {
            AdminError::BadRequest(format!(
                "body must be JSON such as {{\"url\": \"https://shop.example/product/x/\"}}: {e}"
            ))
        })?;
        let purge = match (request.url, request.prefix, request.tag, request.all) {
            (Some(url), None, None, None) => Purge::Url(normalise_url(&url, &rules)?),
            (None, Some(prefix), None, None) => Purge::Prefix(normalise_prefix(&prefix)?),
            (None, None, Some(tag), None) if !tag.trim().is_empty() => {
                Purge::Tag(tag.trim().to_string())
            }
            (None, None, None, Some(true)) => Purge::All,
            _ => {
                return Err(AdminError::BadRequest(
                    "give exactly one of `url`, `prefix`, `tag` (non-empty) or `all: true`".into(),
                ))
            }
        };
        let purged = store.purge(&purge);
        tracing::info!(?purge, purged, "cache purge");
        Ok(json_response(StatusCode::OK, &json!({ "purged": purged })))
    }

    fn route(&self, session: &ServerSession, body: &[u8]) -> Result<Response<Vec<u8>>, AdminError> {
        self.check_host(session)?;
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
            "/metrics" if get(method) => {
                if let Some(store) = self.cache {
                    let (entries, bytes) = store.usage();
                    metrics::CACHE_ENTRIES.set(i64::try_from(entries).unwrap_or(i64::MAX));
                    metrics::CACHE_BYTES.set(i64::try_from(bytes).unwrap_or(i64::MAX));
                }
                Ok(response(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    metrics::render(),
                ))
            }
            "/reload" if method == Method::POST => {
                self.check_mutation(session)?;
                let (status, body) = self.reload();
                Ok(json_response(status, &body))
            }
            "/cache/purge" if method == Method::POST => {
                self.check_mutation(session)?;
                self.purge(body)
            }
            "/" if get(method) => {
                let mut r = response(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    DASHBOARD.as_bytes().to_vec(),
                );
                r.headers_mut().insert(
                    http::header::CONTENT_SECURITY_POLICY,
                    http::HeaderValue::from_static(
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                    ),
                );
                Ok(r)
            }
            "/stats" if get(method) => Ok(json_response(StatusCode::OK, &self.stats_document())),
            "/alerts" if get(method) => {
                let alerts: Vec<_> = self.alerts.recent().iter().map(Alert::to_json).collect();
                Ok(json_response(StatusCode::OK, &json!({ "alerts": alerts })))
            }
            "/bans" if get(method) => {
                let bans: Vec<_> = self.bans.list().iter().map(Ban::to_json).collect();
                Ok(json_response(StatusCode::OK, &json!({ "bans": bans })))
            }
            "/bans" if method == Method::POST => {
                self.check_mutation(session)?;
                self.add_ban(body)
            }
            p if p.starts_with("/bans/") && method == Method::DELETE => {
                self.check_mutation(session)?;
                let raw = &p["/bans/".len()..];
                let decoded = crate::util::php::raw_url_decode(raw.as_bytes());
                let net = parse_net(&String::from_utf8_lossy(&decoded)).map_err(|_| {
                    AdminError::BadRequest(format!("`{raw}` is not an IP address or network"))
                })?;
                let lifted = self.bans.unban(net);
                match lifted.first() {
                    Some(first) => Ok(json_response(
                        StatusCode::OK,
                        &json!({
                            "unbanned": net_text(&first.net),
                            "lifted": lifted.iter().map(|b| net_text(&b.net)).collect::<Vec<_>>(),
                        }),
                    )),
                    None => Err(AdminError::NotFound),
                }
            }
            "/health" | "/ready" | "/metrics" | "/" | "/stats" | "/alerts" => {
                Err(AdminError::Method("GET"))
            }
            "/reload" | "/cache/purge" => Err(AdminError::Method("POST")),
            "/bans" => Err(AdminError::Method("GET or POST")),
            p if p.starts_with("/bans/") => Err(AdminError::Method("DELETE")),
            _ => Err(AdminError::NotFound),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let body = match read_body(session).await {
            Ok(body) => body,
            Err(e) => return json_response(e.status(), &json!({ "error": e.to_string() })),
        };
        self.route(session, &body).unwrap_or_else(|e| {
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

/// Admin request bodies are small JSON documents.
const MAX_ADMIN_BODY: usize = 64 << 10;

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, AdminError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ADMIN_BODY {
                    return Err(AdminError::BadRequest("request body over 64KiB".into()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(AdminError::BadRequest(format!(
                    "unreadable request body: {e}"
                )))
            }
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    url: Option<String>,
    prefix: Option<String>,
    tag: Option<String>,
    all: Option<bool>,
}

/// `https://Shop.example/p/?b=2&a=1&utm_x=y` -> `shop.example/p/?a=1&b=2`, as the cache keys it.
fn normalise_url(url: &str, rules: &CacheRules) -> Result<String, AdminError> {
    let rest = strip_scheme(url)?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let bad = |e: String| AdminError::BadRequest(format!("`{url}` is not a URL: {e}"));
    let mut req =
        RequestHeader::build("GET", path.as_bytes(), None).map_err(|e| bad(e.to_string()))?;
    req.insert_header(http::header::HOST, host)
        .map_err(|e| bad(e.to_string()))?;
    Ok(rules.key(&req).url)
}

/// `https://Shop.example:443/Product/` -> `shop.example/Product/`: the host as
/// keys have it (lower case, no default port), the path untouched.
fn normalise_prefix(prefix: &str) -> Result<String, AdminError> {
    let rest = strip_scheme(prefix)?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = host.to_ascii_lowercase();
    let host = host
        .strip_suffix(":80")
        .or_else(|| host.strip_suffix(":443"))
        .unwrap_or(&host);
    Ok(format!("{host}{path}"))
}

/// `https://shop.example/x` -> `shop.example/x`; a URL without a host is refused.
fn strip_scheme(url: &str) -> Result<&str, AdminError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    if rest.is_empty() || rest.starts_with('/') || rest.chars().any(char::is_whitespace) {
        return Err(AdminError::BadRequest(format!(
            "`{url}` needs a host, e.g. `https://shop.example/product/x/`"
        )));
    }
    Ok(rest)
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
