//! The WAF in the request's phases: phase 1 on the head, phase 2 on the
//! body as it streams (held back until judged), the debug header, and one
//! audit record and per-rule counters per inspected request.

use super::inspect::{self, Inspection};
use super::offload::Offload;
use super::section::WafSection;
use crate::filter::{Decider, Filter, RequestState, Verdict};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::Session;
use std::sync::Arc;

/// Inspects requests with the policy's rules (CRS and its own).
pub struct WafFilter {
    /// Heavy inspections run off the I/O threads (created once at start-up).
    offload: Arc<Offload>,
}

impl WafFilter {
    pub fn new() -> Self {
        WafFilter {
            offload: Arc::new(Offload::default()),
        }
    }
}

impl Default for WafFilter {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Filter for WafFilter {
    fn name(&self) -> Decider {
        Decider::Waf
    }

    async fn request(&self, session: &mut Session, st: &mut RequestState) -> Verdict {
        let Some(waf) = st.policy.get::<WafSection>().cloned() else {
            return Verdict::Continue;
        };
        match inspect::start(session, st, &waf, &self.offload) {
            Some(reply) => Verdict::Respond(reply),
            None => Verdict::Continue,
        }
    }

    async fn request_body(
        &self,
        _req: &RequestHeader,
        st: &mut RequestState,
        body: &mut Option<Bytes>,
        end: bool,
    ) -> Verdict {
        let Some(inspection) = st.slots.get_mut::<Inspection>() else {
            return Verdict::Continue;
        };
        match inspection.body(body, end).await {
            Some(reply) => Verdict::Respond(reply),
            None => Verdict::Continue,
        }
    }

    /// `x-rempart-waf`: ids of the logged rules that matched, when the
    /// policy asks for it (own replies too).
    fn response(
        &self,
        _session: &Session,
        st: &mut RequestState,
        response: &mut ResponseHeader,
        _own: bool,
    ) -> pingora::Result<()> {
        if let Some(ids) = st.slots.get::<Inspection>().and_then(|w| w.debug_header()) {
            response.insert_header("x-rempart-waf", ids)?;
        }
        Ok(())
    }

    fn logging(&self, session: &Session, st: &mut RequestState, _status: u16) {
        if let Some(inspection) = st.slots.get::<Inspection>() {
            inspection.finish(st, session);
        }
    }
}
