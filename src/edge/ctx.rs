//! Per-request context, split by concern: when, who, what was decided, and
//! where the request went.

use crate::edge::upstream::Selected;
use crate::policy::Snapshot;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Everything the phases of one request share.
pub struct RequestCtx {
    /// The policy pinned at the start of the request (None only before `early_request_filter`).
    pub snapshot: Option<Arc<Snapshot>>,
    pub timing: Timing,
    pub client: Client,
    pub decision: Decision,
    pub upstream: UpstreamAttempts,
    pub cache: CacheFacts,
    /// A login attempt being watched (brute-force protection).
    pub login: Option<LoginCapture>,
    /// The request as the shop reads it (see `util::target`); form fields
    /// join it once the body is read.
    pub target: crate::util::target::Target,
    /// The request head's reading, kept when the body adds to `target`:
    /// rules the body newly matches are the ones to run then.
    pub head_target: Option<crate::util::target::Target>,
    /// The body's form fields, read as it streams, when a rule needs them.
    pub form: Option<crate::util::form::FormReader>,
    pub request_id: String,
    /// The host the request names, normalised (see `util::host`): what the
    /// cache keys and what the origin receives. `Err` is answered with a 400.
    pub host: Result<String, crate::util::host::HostError>,
    /// Request body bytes seen so far (for the body size limit).
    pub body_bytes: u64,
    /// The WAF's inspection of this request.
    pub waf: Option<super::inspect::Inspection>,
    /// A verified search-engine crawler (never challenged).
    pub verified_crawler: bool,
    /// A refusal decided while the body streamed, sent by `fail_to_proxy`.
    pub pending_reply: Option<crate::filter::Reply>,
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx {
            snapshot: None,
            timing: Timing::default(),
            client: Client::default(),
            decision: Decision::default(),
            upstream: UpstreamAttempts::default(),
            cache: CacheFacts::default(),
            login: None,
            target: crate::util::target::Target::default(),
            head_target: None,
            form: None,
            request_id: String::new(),
            host: Err(crate::util::host::HostError::Missing),
            body_bytes: 0,
            waf: None,
            verified_crawler: false,
            pending_reply: None,
        }
    }
}

#[derive(Debug)]
pub struct Timing {
    pub start: Instant,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            start: Instant::now(),
        }
    }
}

/// Who is asking.
#[derive(Debug)]
pub struct Client {
    /// The TCP peer (a CDN or load balancer when Rempart sits behind one).
    pub peer: IpAddr,
    /// The real client, after trusted-proxy resolution.
    pub ip: IpAddr,
    pub peer_trusted: bool,
    pub tls: bool,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            peer: IpAddr::from([0, 0, 0, 0]),
            ip: IpAddr::from([0, 0, 0, 0]),
            peer_trusted: false,
            tls: false,
        }
    }
}

/// Who answered the request, for logs and metrics: `origin`, a filter name,
/// `limits`, `redirect` or `proxy` (Rempart's own error page).
#[derive(Debug)]
pub struct Decision {
    pub by: &'static str,
    pub reason: Option<&'static str>,
    /// The policy rule that matched (a rate limit's name...).
    pub rule: Option<String>,
}

impl Default for Decision {
    fn default() -> Self {
        Decision {
            by: "origin",
            reason: None,
            rule: None,
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

/// What the page cache did with this request.
#[derive(Debug, Default)]
pub struct CacheFacts {
    /// Why the cache was not used (request or response), e.g. `cookie`, `response_set_cookie`.
    pub bypass: Option<&'static str>,
    /// The `x-cache` value sent: HIT, MISS, STALE, BYPASS, EXPIRED, REVALIDATED.
    pub status: Option<&'static str>,
}

impl LoginCapture {
    /// Watches a request for `rule`, with the cart session from its cookies.
    pub fn new(rule: Arc<crate::shield::logins::LoginRule>, headers: &http::HeaderMap) -> Self {
        let session = crate::shield::logins::session_of(&rule, headers);
        LoginCapture {
            rule,
            attempt: None,
            session,
            pending: None,
            tail: Vec::new(),
            scanned: 0,
        }
    }
}

/// A login (or payment) being watched: judged from the origin's answer.
#[derive(Debug)]
pub struct LoginCapture {
    pub rule: Arc<crate::shield::logins::LoginRule>,
    /// What the request says: username, calls; `None` until the body is read.
    pub attempt: Option<crate::shield::logins::Attempt>,
    /// The cart session, for rules that count per session.
    pub session: Option<String>,
    /// Set once the answer's status is in but the body must still be read.
    pub pending: Option<crate::shield::logins::Attempt>,
    /// The end of the previous body chunk (a pattern may straddle chunks).
    pub tail: Vec<u8>,
    pub scanned: usize,
}
