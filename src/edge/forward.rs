//! The way to the origin: which server, with which headers, and what a
//! failure on the way becomes (passive health, retries, the error page).

use super::client_ip::ClientIpSection;
use super::ctx::RequestCtx;
use super::headers;
use super::upstream::{UpstreamPool, UpstreamSection};
use crate::filter::{Client, Reason, Reply};
use crate::observe::metrics;
use pingora::http::RequestHeader;
use pingora::prelude::{HttpPeer, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::time::Instant;

/// The real client and how it arrived: from the TCP peer, the trusted
/// proxies' headers, and our own TLS or a trusted proxy's.
pub fn client(session: &Session, st: &crate::filter::RequestState) -> Client {
    let req = session.req_header();
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map_or(Client::default().peer, |a| a.ip());
    let resolver = st.policy.get::<ClientIpSection>();
    let ip = resolver.map_or(crate::util::net::canonical(peer), |r| {
        r.resolve(peer, &req.headers)
    });
    let peer_trusted = resolver.is_some_and(|r| r.is_trusted(peer));
    // HTTPS as the client sees it: our own TLS, or a trusted proxy (CDN,
    // load balancer) that terminated TLS and says so.
    let forwarded_https = peer_trusted
        && req
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let tls = forwarded_https || session.digest().is_some_and(|d| d.ssl_digest.is_some());
    Client {
        peer,
        ip,
        peer_trusted,
        tls,
    }
}

/// Picks an origin server not tried yet for this request.
pub fn peer(pool: &UpstreamPool, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    let Some(settings) = ctx.st.policy.get::<UpstreamSection>() else {
        return Error::e_explain(ErrorType::InternalError, "no upstream settings");
    };
    let Some(selected) = pool.select(settings, &ctx.upstream.tried) else {
        return Error::e_explain(ErrorType::ConnectNoRoute, "no upstream server left to try");
    };
    let mut peer = HttpPeer::new(selected.server.addr, false, selected.server.host.clone());
    peer.options.connection_timeout = Some(settings.connect_timeout);
    peer.options.read_timeout = Some(settings.read_timeout);
    peer.options.write_timeout = Some(settings.write_timeout);
    peer.options.idle_timeout = Some(settings.idle_timeout);
    ctx.upstream.tried.push(selected.server.addr);
    ctx.upstream.current = Some(selected);
    ctx.upstream.sent_at = Some(Instant::now());
    Ok(Box::new(peer))
}

/// A connect failure marks the server (passive health) and, for idempotent
/// requests, lets pingora ask for another server.
pub fn connect_failed(session: &Session, ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
    let Some(settings) = ctx.st.policy.get::<UpstreamSection>() else {
        return e;
    };
    if let Some(current) = &ctx.upstream.current {
        current
            .in_flight
            .state()
            .record_failure("connect", settings.max_failures);
        tracing::warn!(upstream = %current.server.name, request_id = %ctx.st.id, "cannot connect to upstream: {e}");
    }
    let retries_used = ctx.upstream.tried.len().saturating_sub(1);
    let untried_left = settings
        .servers
        .iter()
        .any(|s| !ctx.upstream.tried.contains(&s.addr));
    let retry = session.req_header().method.is_idempotent()
        && retries_used < settings.retries as usize
        && untried_left;
    if retry {
        if let Some(current) = &ctx.upstream.current {
            metrics::UPSTREAM_RETRIES
                .with_label_values(&[&current.server.name])
                .inc();
        }
    }
    e.set_retry(retry);
    e
}

/// Timeouts and broken connections while proxying count against the server.
pub fn proxy_failed(
    peer: &HttpPeer,
    session: &Session,
    ctx: &RequestCtx,
    e: Box<Error>,
    client_reused: bool,
) -> Box<Error> {
    if e.esource() == &ErrorSource::Upstream {
        let settings = ctx.st.policy.get::<UpstreamSection>();
        if let (Some(current), Some(settings)) = (&ctx.upstream.current, settings) {
            let kind = match e.etype() {
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
                _ => "io",
            };
            current
                .in_flight
                .state()
                .record_failure(kind, settings.max_failures);
        }
    }
    let mut e = e.more_context(format!("Peer: {peer}"));
    if !session.req_header().method.is_idempotent() {
        e.set_retry(false);
    } else {
        e.retry.decide_reuse(client_reused);
    }
    e
}

/// Forwarding headers for the origin; hop-by-hop and proxy-reserved
/// headers removed.
pub fn upstream_headers(ctx: &RequestCtx, upstream: &mut RequestHeader) -> Result<()> {
    let st = &ctx.st;
    let upgrade = headers::is_upgrade(&upstream.headers);
    for name in headers::hop_by_hop(&upstream.headers, upgrade) {
        upstream.remove_header(&name);
    }
    if !st.client.peer_trusted {
        for name in headers::PROXY_RESERVED {
            upstream.remove_header(*name);
        }
    }
    let peer = st.client.peer.to_string();
    let xff = match upstream
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(chain) if st.client.peer_trusted => format!("{chain}, {peer}"),
        _ => peer,
    };
    upstream.insert_header("x-forwarded-for", xff)?;
    let proto_from_proxy =
        st.client.peer_trusted && upstream.headers.contains_key("x-forwarded-proto");
    if !proto_from_proxy {
        upstream.insert_header(
            "x-forwarded-proto",
            if st.client.tls { "https" } else { "http" },
        )?;
    }
    // The normalised host the cache keyed the request with: the origin
    // must build its answer (canonical redirects, links) for that host.
    if let Some(host) = st.host.as_deref().ok().filter(|h| !h.is_empty()) {
        upstream.insert_header("x-forwarded-host", host)?;
        upstream.insert_header(http::header::HOST, host)?;
    }
    upstream.insert_header("x-real-ip", st.client.ip.to_string())?;
    upstream.insert_header("x-request-id", st.id.as_str())?;
    if let Some(host) = st
        .policy
        .get::<UpstreamSection>()
        .and_then(|u| u.host_header.as_deref())
    {
        upstream.insert_header(http::header::HOST, host)?;
    }
    Ok(())
}

/// A status code and reply for an error that ended a request.
pub fn error_reply(e: &Error) -> Option<Reply> {
    let reply = match e.etype() {
        ErrorType::HTTPStatus(413) => Reply::new(
            413,
            Reason::BodyTooLarge,
            "The request body is larger than this shop accepts.",
        ),
        ErrorType::HTTPStatus(code) if *code >= 400 => Reply::new(
            *code,
            Reason::ProxyError,
            "The request could not be completed.",
        ),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            Reply::new(
                504,
                Reason::OriginTimeout,
                "The shop took too long to answer. Please try again in a moment.",
            )
        }
        _ => match e.esource() {
            ErrorSource::Upstream => Reply::new(
                502,
                Reason::OriginUnreachable,
                "The shop is temporarily unreachable. Please try again in a moment.",
            ),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    return None
                }
                _ => Reply::new(
                    400,
                    Reason::BadRequest,
                    "The request could not be understood.",
                ),
            },
            ErrorSource::Internal | ErrorSource::Unset => Reply::new(
                502,
                Reason::ProxyError,
                "The shop is temporarily unreachable. Please try again in a moment.",
            ),
        },
    };
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_become_clean_pages() {
        let e = Error::new(ErrorType::ConnectRefused).into_up();
        assert_eq!(error_reply(&e).unwrap().status, 502);
        let e = Error::new(ErrorType::ReadTimedout).into_up();
        assert_eq!(error_reply(&e).unwrap().status, 504);
        let e = Error::new(ErrorType::ConnectionClosed).into_down();
        assert!(error_reply(&e).is_none());
    }
}
