//! Request hygiene: the `limits` block (head and body sizes, slow heads,
//! connections per client) and the first filters of the chain: a request
//! with a host that cannot be read, a head or body larger than the shop
//! accepts, is refused before anything else looks at it; plain HTTP is sent
//! to HTTPS when the policy says so.

use super::tls::TlsSection;
use crate::filter::{Decider, Filter, Reason, Reply, RequestState, Verdict};
use crate::policy::units::{ByteSize, NonZeroDur};
use crate::policy::{Compiler, Section};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::prelude::Session;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::time::Duration;

/// The `limits` block.
pub struct LimitsSection;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsBlock {
    pub max_header_bytes: Option<Spanned<ByteSize>>,
    pub max_header_count: Option<Spanned<usize>>,
    pub max_body_bytes: Option<ByteSize>,
    pub header_timeout: Option<Spanned<NonZeroDur>>,
    pub max_connections_per_ip: Option<Spanned<usize>>,
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

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 << 10,
            max_header_count: 100,
            max_body_bytes: 64 << 20,
            header_timeout: Duration::from_secs(10),
            max_connections_per_ip: 256,
        }
    }
}

impl Section for LimitsSection {
    const KEY: &'static str = "limits";
    type Raw = LimitsBlock;
    type Compiled = Limits;

    fn compile(raw: Option<LimitsBlock>, c: &mut Compiler<'_>) -> Option<Limits> {
        let l = raw.unwrap_or_default();
        let d = Limits::default();
        let limits = Limits {
            max_header_bytes: l.max_header_bytes.as_ref().map_or(d.max_header_bytes, |b| {
                usize::try_from(b.value.0).unwrap_or(usize::MAX)
            }),
            max_header_count: l
                .max_header_count
                .as_ref()
                .map_or(d.max_header_count, |n| n.value),
            max_body_bytes: l.max_body_bytes.map_or(d.max_body_bytes, |b| b.0),
            header_timeout: l
                .header_timeout
                .as_ref()
                .map_or(d.header_timeout, |t| t.value.0),
            max_connections_per_ip: l
                .max_connections_per_ip
                .as_ref()
                .map_or(d.max_connections_per_ip, |n| n.value),
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
        Some(limits)
    }
}

fn limits(st: &RequestState) -> Limits {
    st.policy
        .get::<LimitsSection>()
        .copied()
        .unwrap_or_default()
}

/// Body bytes seen so far, per request.
struct BodyBytes(u64);

/// The host, head and body sizes.
pub struct LimitsFilter;

#[async_trait]
impl Filter for LimitsFilter {
    fn name(&self) -> Decider {
        Decider::Limits
    }

    async fn request(&self, session: &mut Session, st: &mut RequestState) -> Verdict {
        if let Err(why) = &st.host {
            let mut reply = Reply::new(
                400,
                Reason::BadHost,
                format!("The request could not be understood: {why}."),
            );
            reply.close = true;
            return Verdict::Respond(reply);
        }
        let limits = limits(st);
        let req = session.req_header();
        let (bytes, count) = super::headers::header_size(&req.headers);
        if bytes > limits.max_header_bytes || count > limits.max_header_count {
            let mut reply = Reply::new(
                431,
                Reason::HeadersTooLarge,
                "The request headers are larger than this shop accepts.",
            );
            reply.close = true;
            return Verdict::Respond(reply);
        }
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_body_bytes) {
            return Verdict::Respond(body_too_large(true));
        }
        Verdict::Continue
    }

    /// Streamed bodies (no or a wrong Content-Length) are counted as they come.
    async fn request_body(
        &self,
        _req: &RequestHeader,
        st: &mut RequestState,
        body: &mut Option<Bytes>,
        _end: bool,
    ) -> Verdict {
        let Some(chunk) = body.as_ref() else {
            return Verdict::Continue;
        };
        let max = limits(st).max_body_bytes;
        let seen = match st.slots.get_mut::<BodyBytes>() {
            Some(seen) => {
                seen.0 += chunk.len() as u64;
                seen.0
            }
            None => {
                st.slots.insert(BodyBytes(chunk.len() as u64));
                chunk.len() as u64
            }
        };
        if seen > max {
            return Verdict::Respond(body_too_large(false));
        }
        Verdict::Continue
    }
}

fn body_too_large(close: bool) -> Reply {
    let mut reply = Reply::new(
        413,
        Reason::BodyTooLarge,
        "The request body is larger than this shop accepts.",
    );
    reply.close = close;
    reply
}

/// 308 to the same URL over HTTPS, when the policy asks for it and this
/// process has an HTTPS listener.
pub struct RedirectFilter {
    /// Port of this process's first HTTPS listener, if it has one (a
    /// reload cannot add listeners).
    https_port: Option<u16>,
}

impl RedirectFilter {
    pub fn new(https_port: Option<u16>) -> Self {
        RedirectFilter { https_port }
    }
}

#[async_trait]
impl Filter for RedirectFilter {
    fn name(&self) -> Decider {
        Decider::Redirect
    }

    async fn request(&self, session: &mut Session, st: &mut RequestState) -> Verdict {
        let wanted = st
            .policy
            .get::<TlsSection>()
            .is_some_and(|t| t.redirect_http);
        let (true, false, Some(port)) = (wanted, st.client.tls, self.https_port) else {
            return Verdict::Continue;
        };
        // Behind a trusted proxy the public HTTPS port is the standard one.
        let port = (!st.client.peer_trusted).then_some(port);
        match https_location(session.req_header(), port) {
            Some(location) => {
                let mut reply = Reply::new(
                    308,
                    Reason::HttpsRedirect,
                    "This shop is served over HTTPS.",
                );
                reply.headers.push((http::header::LOCATION, location));
                Verdict::Respond(reply)
            }
            None => Verdict::Continue,
        }
    }
}

/// The same URL over HTTPS.
fn https_location(req: &RequestHeader, tls_port: Option<u16>) -> Option<String> {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())?;
    // Drop the port: `[::1]:8080` -> `[::1]`, `shop.example:8080` -> `shop.example`.
    let bare = match host.find(']') {
        Some(end) if host.starts_with('[') => &host[..=end],
        _ => host.split(':').next().unwrap_or(host),
    };
    let port = match tls_port {
        Some(443) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    Some(format!("https://{bare}{port}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_host_and_path() {
        let mut req = RequestHeader::build("GET", b"/shop?x=1", None).unwrap();
        req.insert_header("host", "example.com:8080").unwrap();
        assert_eq!(
            https_location(&req, Some(443)).unwrap(),
            "https://example.com/shop?x=1"
        );
        assert_eq!(
            https_location(&req, Some(8443)).unwrap(),
            "https://example.com:8443/shop?x=1"
        );
        req.insert_header("host", "[::1]:8080").unwrap();
        assert_eq!(
            https_location(&req, Some(443)).unwrap(),
            "https://[::1]/shop?x=1"
        );
    }
}
