//! The request's way through Rempart: one pingora phase after another.
//!
//! | phase | work |
//! |---|---|
//! | `early_request_filter` | pin the policy snapshot, request id, real client IP |
//! | `request_filter` | header/body size limits, HTTP→HTTPS redirect, request filters (IP lists...) |
//! | `request_body_filter` | body size limit while streaming |
//! | `upstream_peer` / `fail_to_connect` | pick a healthy origin; retry idempotent requests elsewhere |
//! | `upstream_request_filter` | forwarding headers, hop-by-hop stripping |
//! | `upstream_response_filter` / `response_filter` | passive health, request id, HSTS |
//! | `fail_to_proxy` | Rempart's own error page |
//! | `logging` | metrics and the access log, labelled with who decided |

pub mod client_ip;
pub mod connections;
pub mod ctx;
pub mod headers;
pub mod inspect;
pub mod offload;
pub mod reply;
pub mod tls;
pub mod upstream;

use crate::cache::PageStore;
use crate::edge::client_ip::anonymize;
use crate::edge::upstream::{elapsed_secs, UpstreamPool};
use crate::filter::{Reply, RequestInfo};
use crate::observe::metrics;
use crate::observe::stats::{RequestRecord, Stats};
use crate::policy::store::PolicyStore;
use crate::shield::bans::BanList;
use async_trait::async_trait;
use bytes::Bytes;
use ctx::RequestCtx;
use pingora::cache::key::HashBinary;
use pingora::cache::lock::CacheKeyLockImpl;
use pingora::cache::{
    CacheKey, CacheMeta, CacheOptionOverrides, CachePhase, NoCacheReason, RespCacheable,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::sync::Arc;
use std::time::Instant;

/// The proxy: policy snapshots come from `policy`, origin health from `pool`.
pub struct Proxy {
    pub policy: Arc<PolicyStore>,
    pub pool: Arc<UpstreamPool>,
    /// The page store and its fill lock, when the cache was on at start-up.
    pub cache: Option<CacheStore>,
    pub stats: Arc<Stats>,
    pub bans: Arc<BanList>,
    /// Signs challenge seeds and passes (from `REMPART_CHALLENGE_SECRET`).
    pub challenge_key: Arc<crate::shield::bots::challenge::ChallengeKey>,
    /// Port of this process's first HTTPS listener, if it has one: the
    /// HTTP→HTTPS redirect points there (a reload cannot add listeners).
    pub https_port: Option<u16>,
}

impl Proxy {
    /// Writes one of Rempart's own replies and records who decided.
    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        by: &'static str,
        reply: Reply,
    ) -> Result<()> {
        ctx.decision.by = by;
        ctx.decision.reason = Some(reply.reason);
        ctx.decision.rule = reply.rule.clone();
        if let Some(reason) = reply.ban {
            // Allowlisted clients are refused the request but never banned.
            let _ = self.bans.ban(ctx.client.ip, None, reason);
        }
        // The audit log records security decisions, not origin errors; the
        // WAF writes its own, more detailed record when the request ends.
        if reply.status >= 400 && by != "proxy" && by != "waf" && reply.reason != "challenge" {
            let anonymize_ips = ctx
                .snapshot
                .as_ref()
                .is_some_and(|s| s.server.anonymize_ips);
            let ip = if anonymize_ips {
                anonymize(ctx.client.ip)
            } else {
                ctx.client.ip
            };
            let req = session.req_header();
            tracing::info!(
                target: "rempart::audit",
                event = "refused",
                decided_by = by,
                reason = reply.reason,
                status = reply.status,
                client_ip = %ip,
                method = %req.method,
                path = req.uri.path(),
                rule = reply.rule.as_deref().unwrap_or("-"),
                request_id = %ctx.request_id,
            );
        }
        let json = reply::wants_json(&session.req_header().headers);
        let (mut head, body) = reply::render(&reply, &ctx.request_id, json)?;
        if let Some(ids) = ctx.waf.as_ref().and_then(|w| w.debug_header()) {
            head.insert_header("x-rempart-waf", ids)?;
        }
        if let Some(hsts) = self.hsts(ctx) {
            head.insert_header("strict-transport-security", hsts)?;
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(head), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }

    /// Crawlers and the challenge: who answers and how, when Rempart must.
    async fn screen_bots(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        bots: &crate::policy::BotSettings,
    ) -> Option<(&'static str, Reply)> {
        let ua = req
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let allowlisted = self.bans.is_allowlisted(ctx.client.ip);
        let claimed = crate::shield::bots::crawler::claimed(ua).filter(|_| !allowlisted);
        if let (Some(crawler), Some(verifier)) = (claimed, &bots.verifier) {
            match verifier.verify(ctx.client.ip, crawler).await {
                // A verified crawler is never challenged.
                Some(true) => {
                    ctx.verified_crawler = true;
                    return None;
                }
                // DNS did not answer in time: no verdict, judged like any client.
                None => {
                    tracing::debug!(request_id = %ctx.request_id, crawler = crawler.name, "crawler check inconclusive")
                }
                Some(false) => {
                    let mut reply = Reply::new(
                        403,
                        "fake_crawler",
                        "Automated access with a borrowed identity is not allowed.",
                    );
                    reply.rule = Some(crawler.name.to_string());
                    if bots.ban_fakes {
                        reply.ban = Some("scanner");
                    }
                    return Some(("bots", reply));
                }
            }
        }
        self.challenge(req, ctx, bots).map(|r| ("challenge", r))
    }

    /// The proof-of-work page, for a bot-like client without a pass on a
    /// risky action (step-up) or on any page, unless it is exempt (a payment
    /// webhook that is not also a risky action), allowlisted or a verified
    /// crawler. Run on the head, and again once the body is read when the
    /// body makes the request risky (a login posted to any URL).
    fn challenge(
        &self,
        req: &RequestHeader,
        ctx: &RequestCtx,
        bots: &crate::policy::BotSettings,
    ) -> Option<Reply> {
        let challenge = bots.challenge.as_ref()?;
        if ctx.verified_crawler || self.bans.is_allowlisted(ctx.client.ip) {
            return None;
        }
        let risky = !challenge.risky.is_empty() && challenge.risky.matches(&ctx.target);
        if challenge.step_up && !risky {
            return None;
        }
        if !risky
            && challenge
                .exempt
                .iter()
                .any(|m| m.matches_target(&ctx.target))
        {
            return None;
        }
        let ua = req
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let http10 = req.version == http::Version::HTTP_10;
        let (score, signals) =
            crate::shield::bots::agents::score(&req.headers, http10, ctx.client.tls);
        if score < bots.score_threshold {
            return None;
        }
        let binding = crate::shield::bots::challenge::binding(ctx.client.ip, ua);
        let pass =
            crate::util::cookies::value_of(&req.headers, crate::shield::bots::challenge::COOKIE);
        let pass = pass.as_deref().map(String::from_utf8_lossy);
        if pass.is_some_and(|p| self.challenge_key.check_pass(&p, &binding).is_ok()) {
            return None;
        }
        metrics::CHALLENGES.with_label_values(&["shown"]).inc();
        tracing::debug!(request_id = %ctx.request_id, score, ?signals, "challenge shown");
        let seed = self.challenge_key.seed(&binding);
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let return_to = crate::shield::bots::challenge::safe_return(pq);
        let mut reply = Reply::new(403, "challenge", "Checking your browser.");
        reply.page = Some(crate::shield::bots::challenge::page(
            &seed,
            challenge.difficulty,
            &return_to,
            &ctx.request_id,
        ));
        Some(reply)
    }

    /// `POST /.rempart/challenge`: checks the solution, sets the pass cookie,
    /// and sends the browser back where it was going.
    async fn answer_challenge(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            if body.len() + chunk.len() > 8192 {
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let form = String::from_utf8_lossy(&body).to_string();
        let field = |name: &str| -> String {
            form.split('&')
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| crate::shield::logins::url_decode(v))
                .unwrap_or_default()
        };
        let req = session.req_header();
        let ua = req
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let binding = crate::shield::bots::challenge::binding(ctx.client.ip, ua);
        let difficulty = ctx
            .snapshot
            .as_ref()
            .and_then(|s| s.bots.as_ref())
            .and_then(|b| b.challenge.as_ref())
            .map(|c| (c.difficulty, c.pass_ttl));
        let outcome = match difficulty {
            Some((bits, ttl)) if req.method == http::Method::POST => self
                .challenge_key
                .verify(&field("seed"), &field("nonce"), &binding, bits, ttl)
                .map(|pass| (pass, ttl)),
            _ => Err(crate::shield::bots::challenge::ChallengeError::Malformed),
        };
        match outcome {
            Ok((pass, ttl)) => {
                metrics::CHALLENGES.with_label_values(&["passed"]).inc();
                ctx.decision.by = "challenge";
                ctx.decision.reason = Some("challenge_passed");
                let secure = if ctx.client.tls { "; Secure" } else { "" };
                let cookie = format!(
                    "{}={pass}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
                    crate::shield::bots::challenge::COOKIE,
                    ttl.as_secs()
                );
                let mut reply = Reply::new(
                    303,
                    "challenge_passed",
                    "Thank you, taking you to the shop.",
                );
                reply.headers.push((http::header::SET_COOKIE, cookie));
                reply.headers.push((
                    http::header::LOCATION,
                    crate::shield::bots::challenge::safe_return(&field("return_to")),
                ));
                self.respond(session, ctx, "challenge", reply).await
            }
            Err(why) => {
                metrics::CHALLENGES.with_label_values(&["failed"]).inc();
                tracing::debug!(request_id = %ctx.request_id, "challenge answer refused: {why}");
                let reply = Reply::new(
                    403,
                    "challenge_failed",
                    "The browser check did not succeed. Please go back and reload the page.",
                );
                self.respond(session, ctx, "challenge", reply).await
            }
        }
    }

    /// The body has been read: the rules its form fields (or the REST
    /// routes it names) newly match run now, before the last of it goes to
    /// the origin (which never runs a request whose body has not ended).
    fn body_read(&self, session: &Session, ctx: &mut RequestCtx) -> Option<(&'static str, Reply)> {
        let reader = ctx.form.take()?;
        let snapshot = ctx.snapshot.clone()?;
        let fields = reader.finish();
        let head = ctx.target.clone();
        ctx.target.add_body(&fields);
        let req = session.req_header();
        let info = request_info(req, ctx);
        let head_info = RequestInfo {
            target: &head,
            ..info
        };
        for limit in &snapshot.request_limits {
            if limit.matches(&info) && !limit.matches(&head_info) {
                if let Err(over) = limit.check(&info) {
                    return Some((
                        "rate_limit",
                        crate::shield::rate_limit::refusal(limit, over),
                    ));
                }
            }
        }
        if let Some(bots) = &snapshot.bots {
            let was_risky = bots
                .challenge
                .as_ref()
                .is_some_and(|c| c.risky.is_empty() || c.risky.matches(&head));
            if !was_risky {
                if let Some(reply) = self.challenge(req, ctx, bots) {
                    return Some(("challenge", reply));
                }
            }
        }
        if ctx.login.is_none() {
            if let Some(rule) = snapshot.logins.iter().find(|r| r.matches(&ctx.target)) {
                ctx.login = Some(ctx::LoginCapture::new(rule.clone(), &req.headers));
            }
        }
        if let Some(login) = ctx.login.as_mut() {
            login.attempt = Some(crate::shield::logins::read_attempt(
                &login.rule,
                &ctx.target,
                Some(&fields),
            ));
        }
        None
    }

    /// Counts a judged login or payment attempt; bans past the rule's limits.
    fn judge_attempt(
        &self,
        rule: &crate::shield::logins::LoginRule,
        ip: std::net::IpAddr,
        attempt: &crate::shield::logins::Attempt,
        failed: bool,
    ) {
        if crate::shield::logins::record(
            rule,
            &crate::shield::rate_limit::client_key(ip),
            attempt,
            failed,
        ) {
            let _ = self.bans.ban(ip, None, rule.ban_reason);
        }
    }

    /// The HSTS value to send, when the client talks HTTPS and the policy asks for it.
    fn hsts<'a>(&self, ctx: &'a RequestCtx) -> Option<&'a str> {
        if !ctx.client.tls {
            return None;
        }
        ctx.snapshot.as_ref()?.tls.as_ref()?.hsts.as_deref()
    }

    /// 308 to the same URL over HTTPS.
    fn https_redirect(req: &RequestHeader, tls_port: Option<u16>) -> Option<String> {
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
}

/// The process-wide cache objects pingora needs as `'static`: created once at
/// start-up, never rebuilt by reloads.
#[derive(Clone, Copy)]
pub struct CacheStore {
    pub store: &'static PageStore,
    pub lock: &'static CacheKeyLockImpl,
}

/// What filters see of a request.
fn request_info<'a>(req: &'a RequestHeader, ctx: &'a RequestCtx) -> RequestInfo<'a> {
    RequestInfo {
        client_ip: ctx.client.ip,
        method: &req.method,
        uri: &req.uri,
        headers: &req.headers,
        request_id: &ctx.request_id,
        target: &ctx.target,
    }
}

/// The `x-cache` value for a cache phase.
fn cache_status(phase: CachePhase) -> &'static str {
    match phase {
        CachePhase::Hit => "HIT",
        CachePhase::Miss => "MISS",
        CachePhase::Stale | CachePhase::StaleUpdating => "STALE",
        CachePhase::Expired => "EXPIRED",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "REVALIDATED",
        _ => "BYPASS",
    }
}

/// A status code and reply for an error that ended a request.
fn error_reply(e: &Error) -> Option<Reply> {
    let reply = match e.etype() {
        ErrorType::HTTPStatus(413) => Reply::new(
            413,
            "body_too_large",
            "The request body is larger than this shop accepts.",
        ),
        ErrorType::HTTPStatus(code) if *code >= 400 => {
            Reply::new(*code, "proxy_error", "The request could not be completed.")
        }
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            Reply::new(
                504,
                "origin_timeout",
                "The shop took too long to answer. Please try again in a moment.",
            )
        }
        _ => match e.esource() {
            ErrorSource::Upstream => Reply::new(
                502,
                "origin_unreachable",
                "The shop is temporarily unreachable. Please try again in a moment.",
            ),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    return None
                }
                _ => Reply::new(400, "bad_request", "The request could not be understood."),
            },
            ErrorSource::Internal | ErrorSource::Unset => Reply::new(
                502,
                "proxy_error",
                "The shop is temporarily unreachable. Please try again in a moment.",
            ),
        },
    };
    Some(reply)
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    /// Runs first, before any filter: pins the snapshot for the whole request,
    /// takes or makes the request id, and resolves the real client address.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let snapshot = self.policy.current();
        // The host as nginx hands it to PHP and ModSecurity: HTTP/2 carries
        // it in `:authority`. Every phase reads the normalised `Host`.
        let req = session.req_header();
        ctx.host = match crate::util::host::raw(req) {
            Some(raw) => crate::util::host::normalise(raw).map(|h| h.into_owned()),
            None if req.version <= http::Version::HTTP_10 => Ok(String::new()),
            None => Err(crate::util::host::HostError::Missing),
        };
        if let Ok(host) = &ctx.host {
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
        let req = session.req_header();
        ctx.target = crate::util::target::Target::new(&req.method, req.raw_path(), &req.headers);
        ctx.request_id = headers::request_id(req.headers.get("x-request-id"));
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(ctx.client.peer, |a| a.ip());
        ctx.client.peer = peer;
        ctx.client.ip = snapshot.client_ip.resolve(peer, &req.headers);
        ctx.client.peer_trusted = snapshot.client_ip.is_trusted(peer);
        // HTTPS as the client sees it: our own TLS, or a trusted proxy (CDN,
        // load balancer) that terminated TLS and says so.
        let forwarded_https = ctx.client.peer_trusted
            && req
                .headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        ctx.client.tls =
            forwarded_https || session.digest().is_some_and(|d| d.ssl_digest.is_some());
        // gzip/brotli for clients that accept them, applied after the cache, so
        // the stored entry stays uncompressed and serves every client.
        let level = snapshot
            .cache
            .as_ref()
            .map_or(0, |c| c.rules.compression_level);
        if let Some(compression) = session
            .downstream_modules_ctx
            .get_mut::<ResponseCompression>()
        {
            compression.adjust_level(level);
            compression.adjust_decompression(level > 0);
        }
        ctx.snapshot = Some(snapshot);
        // The head is in: the connection's head deadline is off until the
        // request ends.
        connections::head_read(session.stream());
        Ok(())
    }

    /// Turns the cache on for this request unless a rule says it is personal
    /// (session cookie, cart/checkout/account path, action parameter, method).
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let (Some(cache), Some(settings)) = (
            self.cache,
            ctx.snapshot.as_ref().and_then(|s| s.cache.clone()),
        ) else {
            return Ok(());
        };
        if let Some(reason) = settings
            .rules
            .request_bypass(session.req_header(), &ctx.target)
        {
            ctx.cache.bypass = Some(reason);
            return Ok(());
        }
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(settings.rules.lock_timeout);
        session
            .cache
            .enable(cache.store, None, None, Some(cache.lock), Some(overrides));
        session
            .cache
            .set_max_file_size_bytes(settings.max_object_size);
        Ok(())
    }

    /// Host + path + normalised query (+ device class).
    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let Some(settings) = ctx.snapshot.as_ref().and_then(|s| s.cache.as_ref()) else {
            return Error::e_explain(
                ErrorType::InternalError,
                "cache enabled without cache rules",
            );
        };
        Ok(CacheKey::new(
            settings.rules.key(session.req_header()).primary,
            "",
        ))
    }

    /// Whether and how long a response may be stored (the cart-leak guard lives in the rules).
    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let Some(settings) = ctx.snapshot.as_ref().and_then(|s| s.cache.as_ref()) else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        let shared = settings.rules.is_shared_asset(&ctx.target);
        match settings
            .rules
            .response_meta_for(session.req_header(), resp, shared)
        {
            Ok(meta) => Ok(RespCacheable::Cacheable(meta)),
            Err(reason) => {
                ctx.cache.bypass = Some(reason);
                Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(reason)))
            }
        }
    }

    /// The variance of a response: only the allowed `Vary` headers.
    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        ctx.snapshot
            .as_ref()?
            .cache
            .as_ref()?
            .rules
            .variance(meta, req)
    }

    /// After the cache: limits that count only requests reaching the origin,
    /// so cached browsing is never throttled.
    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let Some(snapshot) = ctx.snapshot.clone() else {
            return Ok(true);
        };
        // Background cache refreshes are Rempart's own requests: never limited.
        if snapshot.origin_limits.is_empty() || session.subrequest_ctx.is_some() {
            return Ok(true);
        }
        let req = session.req_header();
        let info = request_info(req, ctx);
        match crate::shield::rate_limit::check_all(&snapshot.origin_limits, &info) {
            None => Ok(true),
            Some(reply) => {
                self.respond(session, ctx, "rate_limit", reply).await?;
                Ok(false)
            }
        }
    }

    /// Serve stale while revalidating (`error` is None), and when the origin
    /// is down, times out or answers 5xx (stale-if-error); the entry's own
    /// windows (`stale_while_revalidate`, `stale_if_error`) still apply.
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

    /// Size limits, the HTTPS redirect, then the request filters in order.
    /// `Ok(true)` means Rempart answered and the origin is not contacted.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(snapshot) = ctx.snapshot.clone() else {
            return Ok(false);
        };
        if let Err(why) = &ctx.host {
            session.set_keepalive(None);
            let reply = Reply::new(
                400,
                "bad_host",
                format!("The request could not be understood: {why}."),
            );
            self.respond(session, ctx, "limits", reply).await?;
            return Ok(true);
        }
        let req = session.req_header();
        let limits = snapshot.limits;
        let (bytes, count) = headers::header_size(&req.headers);
        if bytes > limits.max_header_bytes || count > limits.max_header_count {
            session.set_keepalive(None);
            let reply = Reply::new(
                431,
                "headers_too_large",
                "The request headers are larger than this shop accepts.",
            );
            self.respond(session, ctx, "limits", reply).await?;
            return Ok(true);
        }
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_body_bytes) {
            session.set_keepalive(None);
            let reply = Reply::new(
                413,
                "body_too_large",
                "The request body is larger than this shop accepts.",
            );
            self.respond(session, ctx, "limits", reply).await?;
            return Ok(true);
        }
        let redirect = snapshot.tls.as_ref().is_some_and(|t| t.redirect_http) && !ctx.client.tls;
        if let (true, Some(port)) = (redirect, self.https_port) {
            // Behind a trusted proxy the public HTTPS port is the standard one.
            let port = (!ctx.client.peer_trusted).then_some(port);
            if let Some(location) = Self::https_redirect(req, port) {
                let mut reply =
                    Reply::new(308, "https_redirect", "This shop is served over HTTPS.");
                reply.headers.push((http::header::LOCATION, location));
                self.respond(session, ctx, "redirect", reply).await?;
                return Ok(true);
            }
        }
        if let Some(ban) = self.bans.check(ctx.client.ip) {
            let mut reply = Reply::new(
                403,
                "banned",
                "Access from your address is blocked for a while.",
            );
            let wait = ban.until.saturating_sub(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
            reply
                .headers
                .push((http::header::RETRY_AFTER, wait.to_string()));
            self.respond(session, ctx, "bans", reply).await?;
            return Ok(true);
        }
        let challenge_on = snapshot
            .bots
            .as_ref()
            .is_some_and(|b| b.challenge.is_some());
        if challenge_on && req.uri.path() == crate::shield::bots::challenge::VERIFY_PATH {
            self.answer_challenge(session, ctx).await?;
            return Ok(true);
        }
        let req = session.req_header();
        let info = request_info(req, ctx);
        if let Some((by, reply)) = snapshot.request_filters.run(&info) {
            self.respond(session, ctx, by, reply).await?;
            return Ok(true);
        }
        if let Some(bots) = &snapshot.bots {
            let req = session.req_header().clone();
            if let Some((by, reply)) = self.screen_bots(&req, ctx, bots).await {
                if reply.page.is_some() {
                    session.set_keepalive(None);
                }
                self.respond(session, ctx, by, reply).await?;
                return Ok(true);
            }
        }
        if let Some(waf) = &snapshot.waf {
            if let Some(reply) = inspect::start(session, ctx, waf) {
                self.respond(session, ctx, "waf", reply).await?;
                return Ok(true);
            }
        }
        // Some rules recognise an action by its form fields, wherever it is
        // posted: the body is read for them as it streams.
        if snapshot.reads_forms() && !session.as_mut().is_body_empty() {
            let ct = session
                .req_header()
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes());
            ctx.form = Some(crate::util::form::FormReader::new(ct));
        }
        if let Some(rule) = snapshot.logins.iter().find(|r| r.matches(&ctx.target)) {
            ctx.login = Some(ctx::LoginCapture::new(
                rule.clone(),
                &session.req_header().headers,
            ));
        }
        Ok(false)
    }

    /// Enforces the body size limit on streamed bodies (no or wrong Content-Length).
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
            if let Some((by, reply)) = self.body_read(session, ctx) {
                let status = reply.status;
                ctx.decision.by = by;
                ctx.pending_reply = Some(reply);
                return Error::e_explain(
                    ErrorType::HTTPStatus(status),
                    "refused once the body was read",
                );
            }
        }
        if let (Some(chunk), Some(snapshot)) = (body.as_ref(), ctx.snapshot.as_ref()) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > snapshot.limits.max_body_bytes {
                ctx.decision.by = "limits";
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body over limits.max_body_bytes",
                );
            }
        }
        let waf_reply = match ctx.waf.as_mut() {
            Some(w) => w.body(body, end_of_stream).await,
            None => None,
        };
        if let Some(reply) = waf_reply {
            let status = reply.status;
            ctx.decision.by = "waf";
            ctx.pending_reply = Some(reply);
            return Error::e_explain(ErrorType::HTTPStatus(status), "refused by the WAF");
        }
        // Never hand pingora an empty chunk at the end of the body: over a
        // chunked connection it is written as a last-chunk marker before the
        // real one, and the spare bytes would be read as the next request.
        if end_of_stream && body.as_ref().is_some_and(|b| b.is_empty()) {
            *body = None;
        }
        Ok(())
    }

    /// Picks an origin server not tried yet for this request.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(snapshot) = ctx.snapshot.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no policy snapshot");
        };
        let settings = &snapshot.upstream;
        let Some(selected) = self.pool.select(settings, &ctx.upstream.tried) else {
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
    /// requests, lets pingora ask `upstream_peer` for another server.
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(snapshot) = ctx.snapshot.as_ref() else {
            return e;
        };
        let settings = &snapshot.upstream;
        if let Some(current) = &ctx.upstream.current {
            current
                .in_flight
                .state()
                .record_failure("connect", settings.max_failures);
            tracing::warn!(upstream = %current.server.name, request_id = %ctx.request_id, "cannot connect to upstream: {e}");
        }
        let retries_used = ctx.upstream.tried.len().saturating_sub(1);
        let untried_left = settings
            .servers
            .iter()
            .any(|s| !ctx.upstream.tried.contains(&s.addr));
        if session.req_header().method.is_idempotent()
            && retries_used < settings.retries as usize
            && untried_left
        {
            if let Some(current) = &ctx.upstream.current {
                metrics::UPSTREAM_RETRIES
                    .with_label_values(&[&current.server.name])
                    .inc();
            }
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    /// Timeouts and broken connections while proxying count against the server.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if e.esource() == &ErrorSource::Upstream {
            if let (Some(current), Some(snapshot)) = (&ctx.upstream.current, &ctx.snapshot) {
                let kind = match e.etype() {
                    ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
                    _ => "io",
                };
                current
                    .in_flight
                    .state()
                    .record_failure(kind, snapshot.upstream.max_failures);
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

    /// Forwarding headers for the origin; hop-by-hop headers removed.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if session.cache.enabled() || ctx.login.is_some() {
            // The origin answers uncompressed, so one stored entry serves every
            // client; Rempart compresses on the way out.
            upstream_request.remove_header(&http::header::ACCEPT_ENCODING);
        }
        if session.cache.enabled() {
            // The parameters the key leaves out (utm_*, fbclid...) are left
            // out of what the origin receives too: the stored page cannot
            // depend on them.
            let forwarded = ctx
                .snapshot
                .as_ref()
                .and_then(|s| s.cache.as_ref())
                .and_then(|c| c.rules.forwarded_target(upstream_request));
            if let Some(target) = forwarded {
                upstream_request.set_raw_path(&target)?;
            }
        }
        let upgrade = headers::is_upgrade(&upstream_request.headers);
        for name in headers::hop_by_hop(&upstream_request.headers, upgrade) {
            upstream_request.remove_header(&name);
        }
        if !ctx.client.peer_trusted {
            for name in headers::PROXY_RESERVED {
                upstream_request.remove_header(*name);
            }
        }
        let peer = ctx.client.peer.to_string();
        let xff = match upstream_request
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(chain) if ctx.client.peer_trusted => format!("{chain}, {peer}"),
            _ => peer,
        };
        upstream_request.insert_header("x-forwarded-for", xff)?;
        let proto_from_proxy =
            ctx.client.peer_trusted && upstream_request.headers.contains_key("x-forwarded-proto");
        if !proto_from_proxy {
            upstream_request.insert_header(
                "x-forwarded-proto",
                if ctx.client.tls { "https" } else { "http" },
            )?;
        }
        // The normalised host the cache keyed the request with: the origin
        // must build its answer (canonical redirects, links) for that host.
        if let Some(host) = ctx.host.as_deref().ok().filter(|h| !h.is_empty()) {
            upstream_request.insert_header("x-forwarded-host", host)?;
            upstream_request.insert_header(http::header::HOST, host)?;
        }
        upstream_request.insert_header("x-real-ip", ctx.client.ip.to_string())?;
        upstream_request.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(host) = ctx
            .snapshot
            .as_ref()
            .and_then(|s| s.upstream.host_header.as_deref())
        {
            upstream_request.insert_header(http::header::HOST, host)?;
        }
        Ok(())
    }

    /// The origin answered: record its latency and health.
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
        if let Some(mut login) = ctx.login.take() {
            // A request whose body never ended here (none, or cut) is read
            // from what is known: its query, or nothing (counted per address).
            let mut attempt = login.attempt.take().unwrap_or_else(|| {
                let mut a = crate::shield::logins::read_attempt(&login.rule, &ctx.target, None);
                a.readable = ctx.form.is_none();
                a
            });
            if login.session.is_some() {
                attempt.username = login.session.take();
            }
            match crate::shield::logins::judge_status(
                &login.rule,
                upstream_response.status.as_u16(),
            ) {
                Some(failed) => self.judge_attempt(&login.rule, ctx.client.ip, &attempt, failed),
                None => {
                    // The body will tell (a 200 that says "payment failed").
                    login.pending = Some(attempt);
                    ctx.login = Some(login);
                }
            }
        }
        let upgrade = upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS;
        for name in headers::hop_by_hop(&upstream_response.headers, upgrade) {
            upstream_response.remove_header(&name);
        }
        Ok(())
    }

    /// Reads the origin's answer to a watched attempt when only its body tells
    /// failure from success (bounded; a pattern split across chunks is found).
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let Some(login) = ctx.login.as_mut() else {
            return Ok(None);
        };
        let (Some(pattern), Some(_)) = (login.rule.failure_body.clone(), login.pending.as_ref())
        else {
            return Ok(None);
        };
        let mut found = false;
        if let Some(chunk) = body.as_ref() {
            if login.scanned < crate::shield::logins::MAX_BODY {
                let mut window = std::mem::take(&mut login.tail);
                window.extend_from_slice(chunk);
                found = window
                    .windows(pattern.len().max(1))
                    .any(|w| w == pattern.as_bytes());
                login.scanned += chunk.len();
                let keep = pattern.len().saturating_sub(1).min(window.len());
                login.tail = window[window.len() - keep..].to_vec();
            }
        }
        if found || end_of_stream {
            if let Some(login) = ctx.login.take() {
                if let Some(attempt) = &login.pending {
                    self.judge_attempt(&login.rule, ctx.client.ip, attempt, found);
                }
            }
        }
        Ok(None)
    }

    /// Every response: the request id, `x-cache` on cache-enabled routes, and
    /// HSTS on HTTPS.
    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response.insert_header("x-request-id", ctx.request_id.as_str())?;
        if self.cache.is_some() && ctx.snapshot.as_ref().is_some_and(|s| s.cache.is_some()) {
            let status = match ctx.cache.bypass {
                Some(_) => "BYPASS",
                None => cache_status(session.cache.phase()),
            };
            ctx.cache.status = Some(status);
            response.insert_header("x-cache", status)?;
        }
        if let Some(hsts) = self.hsts(ctx) {
            response.insert_header("strict-transport-security", hsts)?;
        }
        if let Some(ids) = ctx.waf.as_ref().and_then(|w| w.debug_header()) {
            response.insert_header("x-rempart-waf", ids)?;
        }
        Ok(())
    }

    /// The request failed: answer with Rempart's own page, no internals.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let Some(reply) = ctx.pending_reply.take().or_else(|| error_reply(e)) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let status = reply.status;
        if ctx.decision.by == "origin" {
            ctx.decision.by = "proxy";
        }
        if session.response_written().is_none() {
            // The connection is not reused after a failure: say so, or a
            // client would send its next request into a closed socket.
            session.set_keepalive(None);
            if ctx.request_id.is_empty() {
                ctx.request_id = headers::request_id(None);
            }
            let by = ctx.decision.by;
            if let Err(write_err) = self.respond(session, ctx, by, reply).await {
                tracing::debug!("cannot send error page: {write_err}");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// Metrics and the access log, once per request.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let class = metrics::status_class(status);
        let elapsed = ctx.timing.start.elapsed();
        let path = session.req_header().uri.path();
        let route = crate::observe::stats::route_class(path);
        // A page served from memory was decided by the cache, not the origin.
        if ctx.decision.by == "origin" && matches!(ctx.cache.status, Some("HIT" | "STALE")) {
            ctx.decision.by = "cache";
        }
        metrics::REQUESTS
            .with_label_values(&[route, class, ctx.decision.by])
            .inc();
        // Scanners probing for files collect 404s: past the flood limit, a ban.
        if status == 404 && ctx.decision.by == "origin" {
            if let Some(flood) = ctx
                .snapshot
                .as_ref()
                .and_then(|s| s.not_found_flood.clone())
            {
                let req = session.req_header();
                let info = request_info(req, ctx);
                if flood.check(&info).is_err() && self.bans.check(ctx.client.ip).is_none() {
                    let _ = self.bans.ban(ctx.client.ip, None, "not_found_flood");
                }
            }
        }
        let anonymize_ips = ctx
            .snapshot
            .as_ref()
            .is_some_and(|s| s.server.anonymize_ips);
        let shown_ip = if anonymize_ips {
            anonymize(ctx.client.ip)
        } else {
            ctx.client.ip
        };
        if let Some(inspection) = &ctx.waf {
            inspection.finish(ctx, session, &shown_ip.to_string());
        }
        self.stats.record(&RequestRecord {
            status,
            latency: elapsed,
            upstream_latency: ctx.upstream.latency,
            cache: ctx.cache.status,
            decision: ctx.decision.by,
            reason: ctx.decision.reason,
            client_ip: shown_ip,
            path,
        });
        metrics::REQUEST_DURATION
            .with_label_values(&[class])
            .observe(elapsed.as_secs_f64());
        match (ctx.cache.bypass, ctx.cache.status) {
            (Some(reason), _) => metrics::CACHE_BYPASS.with_label_values(&[reason]).inc(),
            // pingora declined to store (lock timeout, object too large...).
            (None, Some("BYPASS")) => metrics::CACHE_BYPASS
                .with_label_values(&["not_stored"])
                .inc(),
            (None, Some(status)) => metrics::CACHE_LOOKUPS
                .with_label_values(&[&status.to_ascii_lowercase()])
                .inc(),
            _ => {}
        }
        let access_log = ctx.snapshot.as_ref().is_none_or(|s| s.server.access_log);
        if access_log {
            let req = session.req_header();
            let upstream = ctx
                .upstream
                .current
                .as_ref()
                .map_or("-", |c| c.server.name.as_str());
            tracing::info!(
                target: "rempart::access",
                client_ip = %shown_ip,
                method = %req.method,
                path = req.uri.path(),
                status,
                bytes = session.body_bytes_sent(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                upstream,
                request_id = %ctx.request_id,
                decided_by = ctx.decision.by,
                reason = ctx.decision.reason.unwrap_or("-"),
                rule = ctx.decision.rule.as_deref().unwrap_or("-"),
                cache = ctx.cache.status.unwrap_or("-"),
                cache_bypass = ctx.cache.bypass.unwrap_or("-"),
                error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
            );
        }
        // Release the least-connections slot now rather than when the ctx drops.
        ctx.upstream.current = None;
        connections::request_done(session.stream());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_host_and_path() {
        let mut req = RequestHeader::build("GET", b"/shop?x=1", None).unwrap();
        req.insert_header("host", "example.com:8080").unwrap();
        assert_eq!(
            Proxy::https_redirect(&req, Some(443)).unwrap(),
            "https://example.com/shop?x=1"
        );
        assert_eq!(
            Proxy::https_redirect(&req, Some(8443)).unwrap(),
            "https://example.com:8443/shop?x=1"
        );
        req.insert_header("host", "[::1]:8080").unwrap();
        assert_eq!(
            Proxy::https_redirect(&req, Some(443)).unwrap(),
            "https://[::1]/shop?x=1"
        );
    }

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
