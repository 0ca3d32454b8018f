//! Bots: the `bots` block and its filters. Scanners are refused by their
//! user agent (and banned), claimed search-engine crawlers are checked by
//! DNS (an impostor is refused), clients that look like bots are sent the
//! proof-of-work challenge (on every page, or on risky actions only), and
//! a client collecting 404s (probing for files) is banned.
//!
//! Three filters, at their places in the chain: [`ChallengeAnswer`] takes
//! the browser's solution (before the IP lists and limits, as the page's
//! own endpoint), [`BotFilter`] judges user agents and crawlers, and
//! [`Challenge`] shows the page.

pub mod agents;
pub mod challenge;
pub mod crawler;

use crate::filter::{BanReason, Bans, Decider, Filter, Reason, Reply, RequestState, Verdict};
use crate::observe::metrics;
use crate::policy::units::NonZeroDur;
use crate::policy::{Compiler, Section, Snapshot};
use crate::util::limiter::{self, KeyedLimiter, Rate, Registry};
use crate::util::pattern::{ActionMatch, PathMatch};
use agents::AgentLists;
use async_trait::async_trait;
use bytes::Bytes;
use challenge::ChallengeKey;
use pingora::http::RequestHeader;
use pingora::prelude::Session;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::sync::Arc;
use std::time::Duration;

/// The `bots` block.
pub struct BotsSection;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotsBlock {
    pub enabled: Option<bool>,
    pub deny_user_agents: Option<Vec<Spanned<String>>>,
    pub allow_user_agents: Vec<Spanned<String>>,
    pub ban_scanners: Option<bool>,
    pub not_found_flood: Option<NotFoundFloodBlock>,
    pub crawlers: Option<CrawlersBlock>,
    pub score_threshold: Option<u32>,
    pub challenge: Option<ChallengeBlock>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrawlersBlock {
    pub verify: Option<bool>,
    pub timeout: Option<NonZeroDur>,
    pub cache_ttl: Option<NonZeroDur>,
    /// Fixed reverse records (`ip: name`) instead of the system resolver.
    pub static_records: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChallengeBlock {
    pub mode: ChallengeMode,
    pub difficulty: Option<Spanned<u32>>,
    pub pass_ttl: Option<NonZeroDur>,
    pub exempt_paths: Vec<Spanned<String>>,
    pub risky_paths: Vec<Spanned<String>>,
    pub risky_forms: Vec<Spanned<Vec<Spanned<String>>>>,
}

/// When the proof-of-work challenge is shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeMode {
    /// Never.
    #[default]
    Off,
    /// Any page, to clients whose bot score reaches the threshold.
    Score,
    /// Only risky actions (logins, checkout, add to cart), to such clients.
    StepUp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotFoundFloodBlock {
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<u32>>,
}

/// The compiled `bots` block.
#[derive(Debug)]
pub struct BotSettings {
    /// User agents refused (scanners), unless allowed.
    pub agents: Option<AgentLists>,
    /// 404 answers per client before a ban (scanners probing for files).
    pub not_found_flood: Option<Arc<KeyedLimiter>>,
    pub verifier: Option<Arc<crawler::Verifier>>,
    /// Fake crawlers are banned like scanners.
    pub ban_fakes: bool,
    pub score_threshold: u32,
    pub challenge: Option<ChallengeSettings>,
}

#[derive(Debug, Clone)]
pub struct ChallengeSettings {
    /// Only `risky` paths are challenged (step-up), or every page.
    pub step_up: bool,
    pub difficulty: u32,
    pub pass_ttl: Duration,
    pub exempt: Vec<PathMatch>,
    /// Risky actions: paths and forms (on any URL).
    pub risky: ActionMatch,
}

impl Section for BotsSection {
    const KEY: &'static str = "bots";
    type Raw = BotsBlock;
    type Compiled = BotSettings;

    fn compile(raw: Option<BotsBlock>, c: &mut Compiler<'_>) -> Option<BotSettings> {
        let b = raw?;
        if b.enabled == Some(false) {
            return None;
        }
        let ban = b.ban_scanners.unwrap_or(true);
        let crawlers = b.crawlers.unwrap_or_default();
        let verifier = if crawlers.verify.unwrap_or(true) {
            let resolver = if crawlers.static_records.is_empty() {
                crawler::Resolver::System
            } else {
                let mut records = std::collections::HashMap::new();
                for (ip, name) in &crawlers.static_records {
                    match ip.parse::<std::net::IpAddr>() {
                        Ok(ip) => {
                            records.insert(ip, name.to_ascii_lowercase());
                        }
                        Err(_) => c.at::<()>(
                            None,
                            format!("`bots.crawlers.static_records`: `{ip}` is not an IP address"),
                            None,
                        ),
                    }
                }
                crawler::Resolver::Static(records)
            };
            Some(Arc::new(crawler::Verifier::new(
                resolver,
                crawlers.timeout.map_or(Duration::from_secs(2), |d| d.0),
                crawlers
                    .cache_ttl
                    .map_or(Duration::from_secs(3600), |d| d.0),
            )))
        } else {
            None
        };
        let challenge = b.challenge.and_then(|ch| compile_challenge(c, ch));
        let words = |c: &mut Compiler<'_>, list: &[Spanned<String>]| -> Vec<String> {
            list.iter()
                .filter_map(|s| {
                    let w = s.value.trim();
                    if w.len() < 3 {
                        c.error(
                            s,
                            format!("`{w}` is too short to match user agents safely"),
                            Some("use at least 3 characters, e.g. `sqlmap`"),
                        );
                        None
                    } else {
                        Some(w.to_string())
                    }
                })
                .collect()
        };
        let deny = match &b.deny_user_agents {
            Some(list) => words(c, list),
            None => agents::DEFAULT_DENY.iter().map(|s| s.to_string()).collect(),
        };
        let allow = words(c, &b.allow_user_agents);
        let agents = match AgentLists::new(&deny, &allow, ban) {
            Ok(f) => Some(f),
            Err(e) => {
                c.at::<()>(None, format!("bot lists do not compile: {e}"), None);
                None
            }
        };
        let not_found_flood = b.not_found_flood.and_then(|f| {
            let (count, period) = match limiter::parse_rate(&f.rate.value) {
                Ok(r) => r,
                Err(e) => {
                    c.error(
                        &f.rate,
                        e,
                        Some("e.g. `30/m`: more 404 answers than this get the client banned"),
                    );
                    return None;
                }
            };
            let burst = f
                .burst
                .as_ref()
                .map_or(Some(count), |b| std::num::NonZeroU32::new(b.value));
            let Some(burst) = burst else {
                c.at(f.burst.as_ref(), "`burst` must be at least 1", None);
                return None;
            };
            let registry = c.service::<Registry>().unwrap_or_default();
            let rate = Rate {
                count,
                period,
                burst,
            };
            Some(registry.limiter("not_found_flood", rate, 100_000))
        });
        Some(BotSettings {
            agents,
            not_found_flood,
            verifier,
            ban_fakes: ban,
            score_threshold: b.score_threshold.unwrap_or(5).max(1),
            challenge,
        })
    }
}

fn compile_challenge(c: &mut Compiler<'_>, ch: ChallengeBlock) -> Option<ChallengeSettings> {
    let step_up = match ch.mode {
        ChallengeMode::Off => return None,
        ChallengeMode::Score => false,
        ChallengeMode::StepUp => true,
    };
    let difficulty = match &ch.difficulty {
        Some(d) if !(8..=24).contains(&d.value) => {
            c.error(
                d,
                "`difficulty` must be between 8 and 24 (leading zero bits)",
                Some("16 takes a browser well under a second"),
            );
            16
        }
        Some(d) => d.value,
        None => 16,
    };
    let exempt = c.paths(
        &ch.exempt_paths,
        "a prefix such as `/wc-api/` or a regex such as `~^/wp-json/`",
    );
    let risky = ActionMatch {
        paths: c.paths(
            &ch.risky_paths,
            "a prefix such as `/wp-login.php` or a regex such as `~^/checkout`",
        ),
        forms: c.forms(&ch.risky_forms),
        methods: Vec::new(),
    };
    if step_up && risky.paths.is_empty() && risky.forms.is_empty() {
        c.at::<()>(
            None,
            "`bots.challenge.mode: step_up` needs `risky_paths` (or `risky_forms`)",
            Some("e.g. [\"/wp-login.php\", \"/checkout\"]"),
        );
    }
    Some(ChallengeSettings {
        step_up,
        difficulty,
        pass_ttl: ch.pass_ttl.map_or(Duration::from_secs(3600), |d| d.0),
        exempt,
        risky,
    })
}

fn user_agent(req: &RequestHeader) -> &str {
    req.headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A verified search-engine crawler (never challenged), per request.
struct VerifiedCrawler;

/// Refuses scanners by user agent and impostors of search-engine crawlers;
/// bans clients that collect 404s.
pub struct BotFilter {
    bans: Arc<dyn Bans>,
}

impl BotFilter {
    pub fn new(bans: Arc<dyn Bans>) -> Self {
        BotFilter { bans }
    }
}

#[async_trait]
impl Filter for BotFilter {
    fn name(&self) -> Decider {
        Decider::Bots
    }

    async fn request(&self, session: &mut Session, st: &mut RequestState) -> Verdict {
        let Some(bots) = st.policy.get::<BotsSection>() else {
            return Verdict::Continue;
        };
        let ua = user_agent(session.req_header());
        if let Some(Verdict::Respond(reply)) = bots.agents.as_ref().map(|a| a.verdict_for(ua)) {
            return Verdict::Respond(reply);
        }
        let claimed = crawler::claimed(ua).filter(|_| !self.bans.is_allowlisted(st.client.ip));
        let (Some(crawler), Some(verifier)) = (claimed, &bots.verifier) else {
            return Verdict::Continue;
        };
        match verifier.verify(st.client.ip, crawler).await {
            Some(true) => {
                st.slots.insert(VerifiedCrawler);
                Verdict::Continue
            }
            // DNS did not answer in time: no verdict, judged like any client.
            None => {
                tracing::debug!(request_id = %st.id, crawler = crawler.name, "crawler check inconclusive");
                Verdict::Continue
            }
            Some(false) => {
                let mut reply = Reply::new(
                    403,
                    Reason::FakeCrawler,
                    "Automated access with a borrowed identity is not allowed.",
                );
                reply.rule = Some(crawler.name.to_string());
                if bots.ban_fakes {
                    reply.ban = Some(BanReason::Scanner);
                }
                Verdict::Respond(reply)
            }
        }
    }

    /// Scanners probing for files collect 404s: past the flood limit, a ban.
    fn logging(&self, _session: &Session, st: &mut RequestState, status: u16) {
        if status != 404 || st.decision.by != Decider::Origin {
            return;
        }
        let Some(flood) = st
            .policy
            .get::<BotsSection>()
            .and_then(|b| b.not_found_flood.as_ref())
        else {
            return;
        };
        let count = flood.count(&st.client.ip.to_string());
        if count.shared {
            metrics::RATE_LIMIT_OVERFLOW
                .with_label_values(&["not_found_flood"])
                .inc();
        }
        if count.wait.is_some() && !self.bans.is_banned(st.client.ip) {
            self.bans.ban(st.client.ip, BanReason::NotFoundFlood);
        }
    }
}

/// The proof-of-work page, for a bot-like client without a pass on a risky
/// action (step-up) or on any page, unless it is exempt (a payment webhook
/// that is not also a risky action), allowlisted or a verified crawler. Run
/// on the head, and again once the body is read when the body makes the
/// request risky (a login posted to any URL).
pub struct Challenge {
    key: Arc<ChallengeKey>,
    bans: Arc<dyn Bans>,
}

impl Challenge {
    pub fn new(key: Arc<ChallengeKey>, bans: Arc<dyn Bans>) -> Self {
        Challenge { key, bans }
    }

    fn check(&self, req: &RequestHeader, st: &RequestState, bots: &BotSettings) -> Verdict {
        let Some(challenge) = bots.challenge.as_ref() else {
            return Verdict::Continue;
        };
        if st.slots.get::<VerifiedCrawler>().is_some() || self.bans.is_allowlisted(st.client.ip) {
            return Verdict::Continue;
        }
        let risky = !challenge.risky.is_empty() && challenge.risky.matches(&st.target);
        if challenge.step_up && !risky {
            return Verdict::Continue;
        }
        if !risky
            && challenge
                .exempt
                .iter()
                .any(|m| m.matches_target(&st.target))
        {
            return Verdict::Continue;
        }
        let ua = user_agent(req);
        let http10 = req.version == http::Version::HTTP_10;
        let (score, signals) = agents::score(&req.headers, http10, st.client.tls);
        if score < bots.score_threshold {
            return Verdict::Continue;
        }
        let binding = challenge::binding(st.client.ip, ua);
        let pass = crate::util::cookies::value_of(&req.headers, challenge::COOKIE);
        let pass = pass.as_deref().map(String::from_utf8_lossy);
        if pass.is_some_and(|p| self.key.check_pass(&p, &binding).is_ok()) {
            return Verdict::Continue;
        }
        let seed = match self.key.seed(&binding) {
            Ok(seed) => seed,
            Err(e) => {
                tracing::error!(request_id = %st.id, "cannot make a challenge: {e}");
                let mut reply = Reply::new(
                    503,
                    Reason::Challenge,
                    "The shop cannot check your browser right now. Please try again in a moment.",
                );
                reply.close = true;
                return Verdict::Respond(reply);
            }
        };
        metrics::CHALLENGES.with_label_values(&["shown"]).inc();
        tracing::debug!(request_id = %st.id, score, ?signals, "challenge shown");
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let return_to = challenge::safe_return(pq);
        let mut reply = Reply::new(403, Reason::Challenge, "Checking your browser.");
        reply.page = Some(challenge::page(
            &seed,
            challenge.difficulty,
            &return_to,
            &st.id,
        ));
        reply.close = true;
        Verdict::Respond(reply)
    }
}

#[async_trait]
impl Filter for Challenge {
    fn name(&self) -> Decider {
        Decider::Challenge
    }

    async fn request(&self, session: &mut Session, st: &mut RequestState) -> Verdict {
        match st.policy.get::<BotsSection>() {
            Some(bots) => self.check(session.req_header(), st, bots),
            None => Verdict::Continue,
        }
    }

    fn reads_forms(&self, policy: &Snapshot) -> bool {
        policy
            .get::<BotsSection>()
            .is_some_and(|b| b.challenge.is_some())
    }

    /// The body made the request risky (a login posted to any URL): the
    /// challenge the head did not call for runs now.
    async fn request_body(
        &self,
        req: &RequestHeader,
        st: &mut RequestState,
        _body: &mut Option<Bytes>,
        end: bool,
    ) -> Verdict {
        let (true, Some(head), Some(bots)) =
            (end, st.head_target.as_ref(), st.policy.get::<BotsSection>())
        else {
            return Verdict::Continue;
        };
        let was_risky = bots
            .challenge
            .as_ref()
            .is_some_and(|c| c.risky.is_empty() || c.risky.matches(head));
        if was_risky {
            return Verdict::Continue;
        }
        self.check(req, st, bots)
    }
}

/// `POST /.rempart/challenge`: checks the solution, sets the pass cookie,
/// and sends the browser back where it was going. Answered by Rempart
/// whenever the policy has a challenge, never passed to the shop.
pub struct ChallengeAnswer {
    key: Arc<ChallengeKey>,
}

impl ChallengeAnswer {
    pub fn new(key: Arc<ChallengeKey>) -> Self {
        ChallengeAnswer { key }
    }
}

#[async_trait]
impl Filter for ChallengeAnswer {
    fn name(&self) -> Decider {
        Decider::Challenge
    }

    async fn request(&self, session: &mut Session, st: &mut RequestState) -> Verdict {
        let Some(settings) = st
            .policy
            .get::<BotsSection>()
            .and_then(|b| b.challenge.as_ref())
            .map(|c| (c.difficulty, c.pass_ttl))
        else {
            return Verdict::Continue;
        };
        if session.req_header().uri.path() != challenge::VERIFY_PATH {
            return Verdict::Continue;
        }
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= 8192 => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) | Ok(None) => break,
                Err(e) => {
                    tracing::debug!(request_id = %st.id, "challenge answer unreadable: {e}");
                    break;
                }
            }
        }
        let field = |name: &str| -> String {
            crate::util::query::value_of(&body, name)
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default()
        };
        let req = session.req_header();
        let binding = challenge::binding(st.client.ip, user_agent(req));
        let (bits, ttl) = settings;
        let outcome = if req.method == http::Method::POST {
            self.key
                .verify(&field("seed"), &field("nonce"), &binding, bits, ttl)
        } else {
            Err(challenge::ChallengeError::Malformed)
        };
        match outcome {
            Ok(pass) => {
                metrics::CHALLENGES.with_label_values(&["passed"]).inc();
                let secure = if st.client.tls { "; Secure" } else { "" };
                let cookie = format!(
                    "{}={pass}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
                    challenge::COOKIE,
                    ttl.as_secs()
                );
                let mut reply = Reply::new(
                    303,
                    Reason::ChallengePassed,
                    "Thank you, taking you to the shop.",
                );
                reply.headers.push((http::header::SET_COOKIE, cookie));
                reply.headers.push((
                    http::header::LOCATION,
                    challenge::safe_return(&field("return_to")),
                ));
                Verdict::Respond(reply)
            }
            Err(why) => {
                metrics::CHALLENGES.with_label_values(&["failed"]).inc();
                tracing::debug!(request_id = %st.id, "challenge answer refused: {why}");
                Verdict::Respond(Reply::new(
                    403,
                    Reason::ChallengeFailed,
                    "The browser check did not succeed. Please go back and reload the page.",
                ))
            }
        }
    }
}
