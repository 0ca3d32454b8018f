//! The chain runner: the filters of every phase, in the order the sections
//! list gives them (`app::sections`), and Rempart's own replies, rendered
//! and recorded in one place.

use super::ctx::RequestCtx;
use super::reply;
use super::tls::TlsSection;
use crate::filter::{Bans, Decider, Filter, Reason, Reply, RequestState, Verdict};
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::Session;
use std::sync::Arc;

/// The filters, in chain order, and the ban list a reply may ban through.
pub struct Chain {
    filters: Vec<Arc<dyn Filter>>,
    bans: Arc<dyn Bans>,
}

impl Chain {
    pub fn new(filters: Vec<Arc<dyn Filter>>, bans: Arc<dyn Bans>) -> Self {
        Chain { filters, bans }
    }

    pub fn filters(&self) -> &[Arc<dyn Filter>] {
        &self.filters
    }

    /// The request head: the first filter that answers wins.
    pub async fn request(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> Option<(Decider, Reply)> {
        for f in &self.filters {
            if let Verdict::Respond(reply) = f.request(session, st).await {
                return Some((f.name(), reply));
            }
        }
        None
    }

    /// Whether some filter needs the body's form fields.
    pub fn reads_forms(&self, st: &RequestState) -> bool {
        self.filters.iter().any(|f| f.reads_forms(&st.policy))
    }

    /// A chunk of the request body: the first filter that answers wins.
    pub async fn request_body(
        &self,
        req: &RequestHeader,
        st: &mut RequestState,
        body: &mut Option<Bytes>,
        end: bool,
    ) -> Option<(Decider, Reply)> {
        for f in &self.filters {
            if let Verdict::Respond(reply) = f.request_body(req, st, body, end).await {
                return Some((f.name(), reply));
            }
        }
        None
    }

    /// After the cache, before the origin: the first filter that answers wins.
    pub async fn before_origin(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> Option<(Decider, Reply)> {
        for f in &self.filters {
            if let Verdict::Respond(reply) = f.before_origin(session, st).await {
                return Some((f.name(), reply));
            }
        }
        None
    }

    /// The head of an answer: the filters' headers, then HSTS on HTTPS.
    pub fn response(
        &self,
        session: &Session,
        st: &mut RequestState,
        head: &mut ResponseHeader,
        own: bool,
    ) -> pingora::Result<()> {
        for f in &self.filters {
            f.response(session, st, head, own)?;
        }
        if let Some(hsts) = hsts(st) {
            head.insert_header("strict-transport-security", hsts)?;
        }
        Ok(())
    }

    /// Writes one of Rempart's own replies and records who decided.
    pub async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        by: Decider,
        reply: Reply,
    ) -> pingora::Result<()> {
        let st = &mut ctx.st;
        st.decision.by = by;
        st.decision.reason = Some(reply.reason);
        st.decision.rule.clone_from(&reply.rule);
        if let Some(reason) = reply.ban {
            self.bans.ban(st.client.ip, reason);
        }
        if reply.close {
            session.set_keepalive(None);
        }
        // The audit log records security decisions, not origin errors; the
        // WAF writes its own, more detailed record when the request ends.
        let security = !matches!(by, Decider::Proxy | Decider::Waf);
        if reply.status >= 400 && security && reply.reason != Reason::Challenge {
            let req = session.req_header();
            tracing::info!(
                target: "rempart::audit",
                event = "refused",
                decided_by = by.as_str(),
                reason = reply.reason.as_str(),
                status = reply.status,
                client_ip = %st.shown_ip(),
                method = %req.method,
                path = req.uri.path(),
                rule = reply.rule.as_deref().unwrap_or("-"),
                request_id = %st.id,
            );
        }
        let json = reply::wants_json(&session.req_header().headers);
        let (mut head, body) = reply::render(&reply, &st.id, json)?;
        self.response(session, st, &mut head, true)?;
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(head), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }
}

/// The HSTS value to send, when the client talks HTTPS and the policy asks for it.
fn hsts(st: &RequestState) -> Option<String> {
    if !st.client.tls {
        return None;
    }
    st.policy.get::<TlsSection>()?.hsts.clone()
}
