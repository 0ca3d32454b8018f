//! Per-request context of the pingora glue: what the slices know of the
//! request ([`RequestState`]), and what only the request path keeps
//! (timing, the origin servers tried, the body's form reader, a refusal
//! decided while the body streamed).

use super::upstream::Selected;
use crate::filter::{Decider, Reply, RequestState};
use std::net::SocketAddr;
use std::time::Instant;

/// Everything the phases of one request share.
pub struct RequestCtx {
    pub st: RequestState,
    pub start: Instant,
    pub upstream: UpstreamAttempts,
    /// The body's form fields, read as it streams, when a filter needs them.
    pub form: Option<crate::util::form::FormReader>,
    /// A refusal decided while the body streamed, sent by `fail_to_proxy`.
    pub pending_reply: Option<(Decider, Reply)>,
}

impl RequestCtx {
    pub fn new(st: RequestState) -> Self {
        RequestCtx {
            st,
            start: Instant::now(),
            upstream: UpstreamAttempts::default(),
            form: None,
            pending_reply: None,
        }
    }
}

/// Which origin servers this request tried.
#[derive(Debug, Default)]
pub struct UpstreamAttempts {
    pub current: Option<Selected>,
    pub tried: Vec<SocketAddr>,
    pub sent_at: Option<Instant>,
    /// Time to the origin's response header.
    pub latency: Option<std::time::Duration>,
}
