//! The pingora glue: each phase pins what it needs, runs the chain's hooks
//! for that phase, and maps a filter's answer to Rempart's reply. It names
//! no slice: slices are `dyn Filter` in the chain.

use super::chain::Chain;
use super::ctx::RequestCtx;
use super::{connections, forward, headers};
use crate::filter::{Decider, RequestState};
use crate::observe::access::{self, Finished};
use crate::observe::metrics;
use crate::observe::stats::Stats;
use crate::policy::server::ServerSection;
use crate::policy::store::PolicyStore;
use crate::util::target::Target;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::sync::Arc;

use super::upstream::{elapsed_secs, UpstreamPool};

/// The proxy: policy snapshots from `policy`, origin health from `pool`,
/// the slices in `chain`.
pub struct Proxy {
    pub policy: Arc<PolicyStore>,
    pub pool: Arc<UpstreamPool>,
    pub chain: Chain,
    pub stats: Arc<Stats>,
}

impl Proxy {
    /// A refusal decided while the body streams is sent by `fail_to_proxy`.
    fn refuse_later(ctx: &mut RequestCtx, by: Decider, reply: crate::filter::Reply) -> Result<()> {
        let status = reply.status;
        ctx.st.decision.by = by;
        ctx.pending_reply = Some((by, reply));
        Error::e_explain(
            ErrorType::HTTPStatus(status),
            "refused while the body streamed",
        )
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    /// Pins the policy snapshot for the whole request.
    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(RequestState::new(self.policy.current()))
    }

    /// Before any filter: the host as the shop reads it, the request's
    /// reading, its id and the real client.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The host as nginx hands it to PHP and ModSecurity: HTTP/2 carries
        // it in `:authority`. Every phase reads the normalised `Host`.
        let req = session.req_header();
        let host = match crate::util::host::raw(req) {
            Some(raw) => crate::util::host::normalise(raw).map(|h| h.into_owned()),
            None if req.version <= http::Version::HTTP_10 => Ok(String::new()),
            None => Err(crate::util::host::HostError::Missing),
        };
        if let Ok(host) = &host {
            let same = req
                .headers
                .get(http::header::HOST)
                .is_some_and(|h| h.as_bytes() == host.as_bytes());
            if !same && !host.is_empty() {
                session
                    .req_header_mut()
                    .insert_header(http::header::HOST, host.as_str())?;
            }
        }
        ctx.st.host = host;
        let req = session.req_header();
        ctx.st.target = Target::new(&req.method, req.raw_path(), &req.headers);
        ctx.st.id = headers::request_id(req.headers.get("x-request-id"));
        ctx.st.client = forward::client(session, &ctx.st);
        for f in self.chain.filters() {
            f.early(session, &mut ctx.st);
        }
        // The head is in: the connection's head deadline is off until the
        // request ends.
        connections::head_read(session.stream());
        Ok(())
    }

    /// The chain's request filters, in order. `Ok(true)`: Rempart answered
    /// and the origin is not contacted.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some((by, reply)) = self.chain.request(session, &mut ctx.st).await {
            self.chain.respond(session, ctx, by, reply).await?;
            return Ok(true);
        }
        // Some rules recognise an action by its form fields, wherever it
        // is posted: the body is read for them as it streams.
        if !session.as_mut().is_body_empty() && self.chain.reads_forms(&ctx.st) {
            let ct = session
                .req_header()
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes());
            ctx.form = Some(crate::util::form::FormReader::new(ct));
        }
        Ok(false)
    }

    /// Each body chunk: the form reader, then the chain. At the end of the
    /// body its fields join the request's reading first.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(chunk), Some(form)) = (body.as_ref(), ctx.form.as_mut()) {
            form.feed(chunk);
        }
        if end_of_stream {
            if let Some(form) = ctx.form.take() {
                let fields = form.finish();
                ctx.st.head_target = Some(ctx.st.target.clone());
                ctx.st.target.add_body(&fields);
                ctx.st.body_fields = Some(fields);
            }
        }
        let req = session.req_header();
        let refused = self
            .chain
            .request_body(req, &mut ctx.st, body, end_of_stream)
            .await;
        if let Some((by, reply)) = refused {
            return Self::refuse_later(ctx, by, reply);
        }
        // Never hand pingora an empty chunk at the end of the body: over a
        // chunked connection it is written as a last-chunk marker before the
        // real one, and the spare bytes would be read as the next request.
        if end_of_stream && body.as_ref().is_some_and(|b| b.is_empty()) {
            *body = None;
        }
        Ok(())
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        for f in self.chain.filters() {
            f.cache_request(session, &mut ctx.st)?;
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        match self
            .chain
            .filters()
            .iter()
            .find_map(|f| f.cache_key(session, &ctx.st))
        {
            Some(key) => Ok(key),
            None => Error::e_explain(ErrorType::InternalError, "cache enabled without a key"),
        }
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let st = &mut ctx.st;
        let decided = self
            .chain
            .filters()
            .iter()
            .find_map(|f| f.cache_response(session, resp, st));
        Ok(decided.unwrap_or(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled)))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        self.chain
            .filters()
            .iter()
            .find_map(|f| f.cache_variance(meta, req, &ctx.st))
    }

    /// After the cache: only requests that reach the origin.
    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        match self.chain.before_origin(session, &mut ctx.st).await {
            None => Ok(true),
            Some((by, reply)) => {
                self.chain.respond(session, ctx, by, reply).await?;
                Ok(false)
            }
        }
    }

    /// Serve stale while revalidating (`error` is None), and when the
    /// origin is down, times out or answers 5xx (stale-if-error); the
    /// entry's own windows still apply.
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        match error {
            None => true,
            Some(e) => match e.etype() {
                ErrorType::HTTPStatus(code) => *code >= 500,
                _ => e.esource() == &ErrorSource::Upstream,
            },
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        forward::peer(&self.pool, ctx)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        forward::connect_failed(session, ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        forward::proxy_failed(peer, session, ctx, e, client_reused)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        for f in self.chain.filters() {
            f.upstream_request(session, &ctx.st, upstream_request)?;
        }
        forward::upstream_headers(ctx, upstream_request)
    }

    /// The origin answered: its latency and health, then the chain.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(current) = &ctx.upstream.current {
            current.in_flight.state().record_success();
            if let Some(sent) = ctx.upstream.sent_at {
                ctx.upstream.latency = Some(sent.elapsed());
                metrics::UPSTREAM_DURATION
                    .with_label_values(&[&current.server.name])
                    .observe(elapsed_secs(sent));
            }
        }
        for f in self.chain.filters() {
            f.upstream_response(&mut ctx.st, upstream_response);
        }
        let upgrade = upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS;
        for name in headers::hop_by_hop(&upstream_response.headers, upgrade) {
            upstream_response.remove_header(&name);
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        for f in self.chain.filters() {
            f.upstream_response_body(&mut ctx.st, body.as_ref(), end_of_stream);
        }
        Ok(None)
    }

    /// Every answer: the request id, then the chain's headers.
    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response.insert_header("x-request-id", ctx.st.id.as_str())?;
        self.chain.response(session, &mut ctx.st, response, false)
    }

    /// The request failed: answer with Rempart's own page, no internals.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let pending = ctx.pending_reply.take();
        let Some((by, reply)) = pending.or_else(|| {
            let by = match ctx.st.decision.by {
                Decider::Origin => Decider::Proxy,
                by => by,
            };
            forward::error_reply(e).map(|r| (by, r))
        }) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let status = reply.status;
        if session.response_written().is_none() {
            // The connection is not reused after a failure: say so, or a
            // client would send its next request into a closed socket.
            session.set_keepalive(None);
            if ctx.st.id.is_empty() {
                ctx.st.id = headers::request_id(None);
            }
            if let Err(write_err) = self.chain.respond(session, ctx, by, reply).await {
                tracing::debug!("cannot send error page: {write_err}");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// Once per request: the chain's records, then metrics, statistics and
    /// the access log in one place.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let st = &mut ctx.st;
        // A page served from memory was decided by the cache, not the origin.
        if st.decision.by == Decider::Origin && st.cache.status.is_some_and(|s| s.from_memory()) {
            st.decision.by = Decider::Cache;
        }
        for f in self.chain.filters() {
            f.logging(session, st, status);
        }
        let req = session.req_header();
        let access_log = st
            .policy
            .get::<ServerSection>()
            .is_none_or(|s| s.access_log);
        let upstream = ctx.upstream.current.as_ref();
        access::finished(
            &self.stats,
            &Finished {
                status,
                elapsed: ctx.start.elapsed(),
                upstream_latency: ctx.upstream.latency,
                upstream: upstream.map(|c| c.server.name.as_str()),
                decided_by: st.decision.by.as_str(),
                reason: st.decision.reason.map(|r| r.as_str()),
                rule: st.decision.rule.as_deref(),
                cache: st.cache.status.map(|c| c.as_str()),
                cache_bypass: st.cache.bypass,
                client_ip: st.shown_ip(),
                method: req.method.as_str(),
                path: req.uri.path(),
                bytes: session.body_bytes_sent(),
                request_id: &st.id,
                error: e.map(|e| e.etype().as_str()),
                access_log,
            },
        );
        // Release the least-connections slot now rather than when the ctx drops.
        ctx.upstream.current = None;
        connections::request_done(session.stream());
    }
}
