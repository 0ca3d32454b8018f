//! The contract between the request path (`edge`) and the slices that guard
//! and serve it.
//!
//! A slice takes part in a request through a [`Filter`]: one method per
//! phase of the request, each defaulting to "nothing to do". Filters run in
//! the order of the chain (`app::sections`); in the phases that may answer,
//! the first filter that answers ([`Verdict::Respond`]) ends the chain and
//! its [`Reply`] is rendered by the request path, in one place.
//!
//! What a filter knows of a request is the [`RequestState`]: the pinned
//! policy, who asks, what the request asks the shop to do (its
//! [`Target`]), what was decided, and each slice's own per-request state
//! in [`Slots`], kept by type so the state names no slice. Long-lived state
//! (counters, the ban list, the page store) belongs to the filter itself,
//! created once at start-up; the ban list reaches other slices through the
//! small [`Bans`] trait.
//!
//! This module names no slice: slices import it, it imports none of them.

use crate::policy::Snapshot;
use crate::util::target::Target;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::Session;
use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;

/// Who answered a request, for logs and metrics (`decided_by`). Stable
/// snake_case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decider {
    /// The shop answered.
    #[default]
    Origin,
    /// The page cache answered from memory.
    Cache,
    /// Rempart's own error page (the origin failed or the request was broken).
    Proxy,
    /// Request hygiene: sizes, host.
    Limits,
    /// The HTTP→HTTPS redirect.
    Redirect,
    Bans,
    IpFilter,
    RateLimit,
    Bots,
    Challenge,
    Waf,
}

impl Decider {
    pub fn as_str(self) -> &'static str {
        match self {
            Decider::Origin => "origin",
            Decider::Cache => "cache",
            Decider::Proxy => "proxy",
            Decider::Limits => "limits",
            Decider::Redirect => "redirect",
            Decider::Bans => "bans",
            Decider::IpFilter => "ip_filter",
            Decider::RateLimit => "rate_limit",
            Decider::Bots => "bots",
            Decider::Challenge => "challenge",
            Decider::Waf => "waf",
        }
    }
}

/// Why Rempart answered a request itself: stable snake_case codes, seen in
/// logs, metrics and the `x-rempart-reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BadHost,
    HeadersTooLarge,
    BodyTooLarge,
    HttpsRedirect,
    Banned,
    IpDenied,
    IpNotAllowed,
    RateLimited,
    BadBot,
    FakeCrawler,
    Challenge,
    ChallengePassed,
    ChallengeFailed,
    Waf,
    WafTooManyArgs,
    WafBodyTooLarge,
    WafMalformedBody,
    BadRequest,
    ProxyError,
    OriginTimeout,
    OriginUnreachable,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadHost => "bad_host",
            Reason::HeadersTooLarge => "headers_too_large",
            Reason::BodyTooLarge => "body_too_large",
            Reason::HttpsRedirect => "https_redirect",
            Reason::Banned => "banned",
            Reason::IpDenied => "ip_denied",
            Reason::IpNotAllowed => "ip_not_allowed",
            Reason::RateLimited => "rate_limited",
            Reason::BadBot => "bad_bot",
            Reason::FakeCrawler => "fake_crawler",
            Reason::Challenge => "challenge",
            Reason::ChallengePassed => "challenge_passed",
            Reason::ChallengeFailed => "challenge_failed",
            Reason::Waf => "waf",
            Reason::WafTooManyArgs => "waf_too_many_args",
            Reason::WafBodyTooLarge => "waf_body_too_large",
            Reason::WafMalformedBody => "waf_malformed_body",
            Reason::BadRequest => "bad_request",
            Reason::ProxyError => "proxy_error",
            Reason::OriginTimeout => "origin_timeout",
            Reason::OriginUnreachable => "origin_unreachable",
        }
    }
}

/// Why a client is banned by a slice (the admin API bans with its own words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanReason {
    /// A scanner's user agent, or a fake search-engine crawler.
    Scanner,
    RateLimit,
    Waf,
    BruteForce,
    CardTesting,
    NotFoundFlood,
}

impl BanReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BanReason::Scanner => "scanner",
            BanReason::RateLimit => "rate_limit",
            BanReason::Waf => "waf",
            BanReason::BruteForce => "brute_force",
            BanReason::CardTesting => "card_testing",
            BanReason::NotFoundFlood => "not_found_flood",
        }
    }
}

/// What the page cache did with a request (the `x-cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Stale,
    Expired,
    Revalidated,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// Served from memory (a hit, or stale while refreshing or on error).
    pub fn from_memory(self) -> bool {
        matches!(self, CacheStatus::Hit | CacheStatus::Stale)
    }
}

/// A filter's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request go on to the next filter, then to the origin.
    Continue,
    /// Answer the client now; the request never reaches the origin.
    Respond(Reply),
}

/// An answer made by Rempart itself. The request path renders it (HTML or
/// JSON, with the request id) in one place, so filters never build bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub reason: Reason,
    /// One sentence for the person who sees the page. Never internal details.
    pub message: String,
    /// Extra response headers, such as `retry-after`.
    pub headers: Vec<(http::HeaderName, String)>,
    /// The policy rule that matched (a limit's name...), for logs and metrics.
    pub rule: Option<String>,
    /// Ban the client, for this reason (an allowlisted client is not banned).
    pub ban: Option<BanReason>,
    /// A page of its own (the challenge's), sent as HTML instead of the
    /// standard page.
    pub page: Option<String>,
    /// Close the connection after the answer (a broken or hostile request).
    pub close: bool,
}

impl Reply {
    pub fn new(status: u16, reason: Reason, message: impl Into<String>) -> Self {
        Reply {
            status,
            reason,
            message: message.into(),
            headers: Vec::new(),
            rule: None,
            ban: None,
            page: None,
            close: false,
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The TCP peer (a CDN or load balancer when Rempart sits behind one).
    pub peer: IpAddr,
    /// The real client, after trusted-proxy resolution.
    pub ip: IpAddr,
    pub peer_trusted: bool,
    /// HTTPS as the client sees it (ours, or a trusted proxy's).
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

/// Who answered the request and why, for logs and metrics.
#[derive(Debug, Default)]
pub struct Decision {
    pub by: Decider,
    pub reason: Option<Reason>,
    /// The policy rule that matched (a rate limit's name...).
    pub rule: Option<String>,
}

/// What the page cache did, for logs and metrics.
#[derive(Debug, Default)]
pub struct CacheFacts {
    /// Why the cache was not used (request or response), e.g. `cookie`.
    pub bypass: Option<&'static str>,
    /// The `x-cache` value sent.
    pub status: Option<CacheStatus>,
}

/// Each slice's own per-request state, one value per type.
#[derive(Default)]
pub struct Slots(Vec<Box<dyn Any + Send + Sync>>);

impl Slots {
    /// Stores `value`, replacing the one of the same type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.take::<T>();
        self.0.push(Box::new(value));
    }

    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.iter().find_map(|b| b.downcast_ref())
    }

    pub fn get_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        self.0.iter_mut().find_map(|b| b.downcast_mut())
    }

    pub fn take<T: Any + Send + Sync>(&mut self) -> Option<T> {
        let i = self.0.iter().position(|b| b.is::<T>())?;
        self.0.swap_remove(i).downcast().ok().map(|b| *b)
    }
}

/// What the slices know of one request, for all its phases.
pub struct RequestState {
    /// The policy pinned when the request arrived.
    pub policy: Arc<Snapshot>,
    pub id: String,
    pub client: Client,
    /// The host the request names, normalised (see `util::host`): what the
    /// cache keys and what the origin receives. `Err` is answered with a 400.
    pub host: Result<String, crate::util::host::HostError>,
    /// The request as the shop reads it (see `util::target`); form fields
    /// join it once the body is read.
    pub target: Target,
    /// The head's reading, kept once the body adds to `target`: rules the
    /// body newly matches are the ones to run then.
    pub head_target: Option<Target>,
    pub decision: Decision,
    pub cache: CacheFacts,
    /// The body's form fields, once read (when a filter asked for them).
    pub body_fields: Option<crate::util::form::FormFields>,
    pub slots: Slots,
}

impl RequestState {
    pub fn new(policy: Arc<Snapshot>) -> Self {
        RequestState {
            policy,
            id: String::new(),
            client: Client::default(),
            host: Err(crate::util::host::HostError::Missing),
            target: Target::default(),
            head_target: None,
            decision: Decision::default(),
            cache: CacheFacts::default(),
            body_fields: None,
            slots: Slots::default(),
        }
    }

    /// The narrow view pure checks take.
    pub fn info<'a>(&'a self, req: &'a RequestHeader) -> RequestInfo<'a> {
        RequestInfo {
            client_ip: self.client.ip,
            method: &req.method,
            uri: &req.uri,
            headers: &req.headers,
            request_id: &self.id,
            target: &self.target,
        }
    }

    /// The client address as logs show it (`server.anonymize_ips`).
    pub fn shown_ip(&self) -> IpAddr {
        match self.policy.get::<crate::policy::server::ServerSection>() {
            Some(server) => server.shown_ip(self.client.ip),
            None => self.client.ip,
        }
    }
}

/// What a check sees of a request: no pingora session, so checks are tested
/// without a network.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The real client address (after trusted-proxy resolution).
    pub client_ip: IpAddr,
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub headers: &'a http::HeaderMap,
    pub request_id: &'a str,
    /// The request as the shop reads it (resolved path, REST routes, PHP's
    /// query names; form fields once the body is read).
    pub target: &'a Target,
}

/// The ban list, as other slices see it.
pub trait Bans: Send + Sync {
    /// Bans the client's address (its network for IPv6) for the next step
    /// of the ladder; an allowlisted client is never banned.
    fn ban(&self, ip: IpAddr, reason: BanReason);
    fn is_banned(&self, ip: IpAddr) -> bool;
    fn is_allowlisted(&self, ip: IpAddr) -> bool;
}

/// A slice's part in the request's phases. Every method has a default that
/// does nothing, so a filter writes only the phases it takes part in.
///
/// | method | pingora phase | may answer |
/// |---|---|---|
/// | `early` | `early_request_filter`, after the client is known | no |
/// | `request` | `request_filter` | yes |
/// | `request_body` | `request_body_filter`, each chunk | yes (the request is refused) |
/// | `cache_*` | the cache phases | no |
/// | `before_origin` | `proxy_upstream_filter` (misses and uncached requests) | yes |
/// | `upstream_request` | `upstream_request_filter` | no |
/// | `upstream_response`, `upstream_response_body` | the origin's answer | no |
/// | `response` | `response_filter`, and Rempart's own replies | no |
/// | `logging` | `logging`, once per request | no |
#[async_trait]
pub trait Filter: Send + Sync {
    /// Who answered, when this filter answers.
    fn name(&self) -> Decider;

    /// The head is read and the client known, before any filter may answer.
    fn early(&self, _session: &mut Session, _st: &mut RequestState) {}

    /// The request head. `Respond` answers the client; the origin is not
    /// contacted and later filters do not run.
    async fn request(&self, _session: &mut Session, _st: &mut RequestState) -> Verdict {
        Verdict::Continue
    }

    /// Whether some rule of this filter may need the body's form fields
    /// (then the body is read for them as it streams, and `st.target`
    /// holds them at the end of the body).
    fn reads_forms(&self, _policy: &Snapshot) -> bool {
        false
    }

    /// A chunk of the request body (`end`: the last one). A filter may hold
    /// chunks back (the WAF judges a body whole). `Respond` refuses the
    /// request: the origin never runs it, since its body never ends.
    async fn request_body(
        &self,
        _req: &RequestHeader,
        _st: &mut RequestState,
        _body: &mut Option<Bytes>,
        _end: bool,
    ) -> Verdict {
        Verdict::Continue
    }

    /// May turn pingora's cache on for this request.
    fn cache_request(&self, _session: &mut Session, _st: &mut RequestState) -> pingora::Result<()> {
        Ok(())
    }

    /// The cache key, when this filter turned the cache on.
    fn cache_key(&self, _session: &Session, _st: &RequestState) -> Option<CacheKey> {
        None
    }

    /// Whether and how long the origin's answer may be stored.
    fn cache_response(
        &self,
        _session: &Session,
        _resp: &ResponseHeader,
        _st: &mut RequestState,
    ) -> Option<RespCacheable> {
        None
    }

    /// The variance of a stored answer (the `Vary` headers it depends on).
    fn cache_variance(
        &self,
        _meta: &CacheMeta,
        _req: &RequestHeader,
        _st: &RequestState,
    ) -> Option<HashBinary> {
        None
    }

    /// After the cache, before the origin: only requests that reach it.
    async fn before_origin(&self, _session: &mut Session, _st: &mut RequestState) -> Verdict {
        Verdict::Continue
    }

    /// The request about to be sent to the origin.
    fn upstream_request(
        &self,
        _session: &Session,
        _st: &RequestState,
        _upstream: &mut RequestHeader,
    ) -> pingora::Result<()> {
        Ok(())
    }

    /// The origin's answer head.
    fn upstream_response(&self, _st: &mut RequestState, _response: &ResponseHeader) {}

    /// A chunk of the origin's answer.
    fn upstream_response_body(&self, _st: &mut RequestState, _body: Option<&Bytes>, _end: bool) {}

    /// The head of the answer the client gets: the origin's (or the
    /// cache's), or one of Rempart's own (`own`).
    fn response(
        &self,
        _session: &Session,
        _st: &mut RequestState,
        _response: &mut ResponseHeader,
        _own: bool,
    ) -> pingora::Result<()> {
        Ok(())
    }

    /// The request is over (`status` 0: no answer was sent).
    fn logging(&self, _session: &Session, _st: &mut RequestState, _status: u16) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_one_value_per_type() {
        #[derive(Debug, PartialEq)]
        struct A(u8);
        let mut s = Slots::default();
        s.insert(A(1));
        s.insert(7u32);
        s.insert(A(2));
        assert_eq!(s.get::<A>(), Some(&A(2)));
        if let Some(n) = s.get_mut::<u32>() {
            *n += 1;
        }
        assert_eq!(s.take::<u32>(), Some(8));
        assert_eq!(s.get::<u32>(), None);
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(Decider::RateLimit.as_str(), "rate_limit");
        assert_eq!(Reason::WafTooManyArgs.as_str(), "waf_too_many_args");
        assert_eq!(CacheStatus::Revalidated.as_str(), "REVALIDATED");
        assert_eq!(BanReason::NotFoundFlood.as_str(), "not_found_flood");
    }
}
