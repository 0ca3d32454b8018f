//! Brute-force and card-testing protection: the `brute_force` and
//! `card_testing` blocks and their filter. A login (or payment) attempt is
//! judged by the origin's answer (WordPress answers 200 with an error on a
//! failed login and 302 on success; the policy says which statuses, or
//! which text in the answer, mean failure), failures are counted per client
//! and per username (or cart session) over a window, and past a threshold
//! the client is banned. XML-RPC `system.multicall` packs many password
//! guesses into one request: each call counts as one attempt.
//!
//! Counters live in a bounded, expiring map (moka) owned by the filter:
//! memory stays bounded under a flood of addresses or usernames, and a
//! quiet client is forgotten after the window.

use crate::filter::{BanReason, Bans, Decider, Filter, RequestState, Verdict};
use crate::observe::metrics;
use crate::policy::units::NonZeroDur;
use crate::policy::{Compiler, Section, Snapshot};
use crate::util::pattern::ActionMatch;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::Session;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of an origin's answer read for a failure text (`failure_body`).
pub const MAX_BODY: usize = 64 << 10;

/// One protected login.
#[derive(Debug, Clone)]
pub struct LoginRule {
    pub name: String,
    /// The login's paths and forms (a form handled on any URL) and methods,
    /// on every spelling the shop serves.
    pub action: ActionMatch,
    /// Form field holding the username (`log` for WordPress, `email` for PrestaShop).
    pub username_field: Option<String>,
    /// Statuses that mean "wrong password" (or "payment refused").
    pub failure_status: Vec<u16>,
    /// Text in the origin's answer that means failure, e.g. `"result":"failure"`.
    pub failure_body: Option<String>,
    /// Cookie whose value is counted like a username (a cart session).
    pub session_cookie: Option<String>,
    /// Ban reason: brute force or card testing.
    pub ban_reason: BanReason,
    /// Count every XML-RPC authentication call as an attempt, whatever the answer.
    pub xmlrpc: bool,
    pub max_per_ip: u64,
    pub max_per_user: u64,
    pub window: Duration,
}

impl LoginRule {
    /// Whether the request is this login (form fields count once the body is read).
    pub fn matches(&self, target: &crate::util::target::Target) -> bool {
        self.action.matches(target)
    }
}

/// What a request body says about a login attempt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attempt {
    pub username: Option<String>,
    /// Authentication calls in the request (1 for a form, N for a multicall).
    pub calls: u64,
    /// The whole body was read: a missing username field means another
    /// form, not a login. Otherwise the attempt counts per address whatever
    /// it holds.
    pub readable: bool,
}

/// XML-RPC methods that take a username and password.
const XMLRPC_AUTH_METHODS: &[&str] = &[
    "wp.getUsersBlogs",
    "wp.getProfile",
    "wp.getUsers",
    "wp.getOptions",
    "wp.getPosts",
    "wp.newPost",
    "wp.getComments",
    "metaWeblog.getUsersBlogs",
    "blogger.getUsersBlogs",
    "wp.getCategories",
];

/// The value of the rule's session cookie (`name*` takes a prefix), read as
/// PHP reads it.
pub fn session_of(rule: &LoginRule, headers: &http::HeaderMap) -> Option<String> {
    let name = rule.session_cookie.as_deref()?;
    let found = crate::util::cookies::first(headers, |k| {
        name.strip_suffix('*')
            .map_or(k == name, |p| k.starts_with(p))
    })?;
    Some(
        String::from_utf8_lossy(&found.value())
            .chars()
            .take(128)
            .collect(),
    )
}

/// Reads a login: the username of a form (body, then query, as PHP's
/// `$_REQUEST`), or the authentication calls of an XML-RPC request.
pub fn read_attempt(
    rule: &LoginRule,
    target: &crate::util::target::Target,
    body: Option<&crate::util::form::FormFields>,
) -> Attempt {
    let readable = body.is_none_or(|b| b.complete);
    if rule.xmlrpc {
        return Attempt {
            username: None,
            calls: xmlrpc_calls(body.and_then(|b| b.xml())).max(1),
            readable,
        };
    }
    let username = rule.username_field.as_ref().and_then(|field| {
        let value = target.field(field)?;
        let u = String::from_utf8_lossy(value).trim().to_lowercase();
        (!u.is_empty()).then(|| u.chars().take(128).collect::<String>())
    });
    Attempt {
        username,
        calls: 1,
        readable,
    }
}

/// Authentication calls in an XML-RPC body, read as WordPress reads it
/// (text joined across comments, CDATA and references): every method name
/// that takes a password, the plain call's and each call of a
/// `system.multicall`.
fn xmlrpc_calls(xml: Option<&[u8]>) -> u64 {
    let Some(xml) = xml else { return 0 };
    match crate::util::xml::parse(xml, 1_000_000) {
        Ok(values) => values
            .texts
            .iter()
            .filter(|t| {
                XMLRPC_AUTH_METHODS
                    .iter()
                    .any(|m| t.as_slice() == m.as_bytes())
            })
            .count() as u64,
        // Not XML PHP would read: the call fails, it counted as one.
        Err(_) => 1,
    }
}

/// Whether the status alone says the attempt failed (`None`: the body must tell).
pub fn judge_status(rule: &LoginRule, status: u16) -> Option<bool> {
    if rule.xmlrpc || rule.failure_status.contains(&status) {
        Some(true)
    } else if rule.failure_body.is_some() && (200..300).contains(&status) {
        None
    } else {
        Some(false)
    }
}

/// Failure counters: `(rule, "ip"|"user", value)` → count and the start of
/// its window.
pub struct Counters(moka::sync::Cache<String, (u64, Instant)>);

impl Default for Counters {
    fn default() -> Self {
        Counters(
            moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
        )
    }
}

impl Counters {
    fn bump(&self, key: String, n: u64, window: Duration) -> u64 {
        let now = Instant::now();
        let entry = self
            .0
            .entry(key)
            .and_upsert_with(|old| match old.map(|e| e.into_value()) {
                Some((count, since)) if now.duration_since(since) < window => (count + n, since),
                _ => (n, now),
            });
        entry.into_value().0
    }

    /// Records the outcome of an attempt; returns true when the client
    /// must be banned.
    pub fn record(&self, rule: &LoginRule, client: &str, attempt: &Attempt, failed: bool) -> bool {
        // A form without the username field is another form on the same
        // page (an address or account edit), not a login.
        let not_a_login = !rule.xmlrpc
            && rule.username_field.is_some()
            && attempt.username.is_none()
            && attempt.readable;
        if not_a_login || !failed {
            return false;
        }
        metrics::LOGIN_FAILURES
            .with_label_values(&[&rule.name])
            .inc_by(attempt.calls);
        let per_ip = self.bump(
            format!("{}|ip|{client}", rule.name),
            attempt.calls,
            rule.window,
        );
        let per_user = attempt.username.as_ref().map_or(0, |u| {
            self.bump(
                format!("{}|user|{u}", rule.name),
                attempt.calls,
                rule.window,
            )
        });
        per_ip > rule.max_per_ip || (attempt.username.is_some() && per_user > rule.max_per_user)
    }
}

/// The `brute_force` block: the shop's logins.
pub struct BruteForceSection;

/// The `card_testing` block: the shop's payment endpoints.
pub struct CardTestingSection;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BruteForceBlock {
    pub logins: Vec<LoginBlock>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardTestingBlock {
    pub checkouts: Vec<LoginBlock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBlock {
    pub name: Spanned<String>,
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    #[serde(default)]
    pub forms: Vec<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    #[serde(default)]
    pub username_field: Option<String>,
    #[serde(default)]
    pub failure_status: Vec<u16>,
    #[serde(default)]
    pub xmlrpc: bool,
    #[serde(default)]
    pub max_per_ip: Option<u64>,
    #[serde(default)]
    pub max_per_user: Option<u64>,
    #[serde(default)]
    pub window: Option<NonZeroDur>,
    #[serde(default)]
    pub failure_body: Option<String>,
    #[serde(default)]
    pub session_cookie: Option<String>,
}

impl Section for BruteForceSection {
    const KEY: &'static str = "brute_force";
    type Raw = BruteForceBlock;
    type Compiled = Vec<Arc<LoginRule>>;

    fn compile(raw: Option<BruteForceBlock>, c: &mut Compiler<'_>) -> Option<Self::Compiled> {
        Some(compile_rules(c, raw?.logins, BanReason::BruteForce)).filter(|r| !r.is_empty())
    }
}

impl Section for CardTestingSection {
    const KEY: &'static str = "card_testing";
    type Raw = CardTestingBlock;
    type Compiled = Vec<Arc<LoginRule>>;

    fn compile(raw: Option<CardTestingBlock>, c: &mut Compiler<'_>) -> Option<Self::Compiled> {
        Some(compile_rules(c, raw?.checkouts, BanReason::CardTesting)).filter(|r| !r.is_empty())
    }
}

fn compile_rules(
    c: &mut Compiler<'_>,
    rules: Vec<LoginBlock>,
    ban_reason: BanReason,
) -> Vec<Arc<LoginRule>> {
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for l in rules {
        let before = c.problems();
        if names.contains(&l.name.value) {
            c.error(
                &l.name,
                format!("two rules are named `{}`", l.name.value),
                Some("names must be unique: they key the failure counts"),
            );
        }
        names.push(l.name.value.clone());
        if l.failure_body.as_deref() == Some("") {
            c.error(
                &l.name,
                "`failure_body` is empty",
                Some("give the text that means failure, e.g. `\"result\":\"failure\"`"),
            );
        }
        if let Some(bad) = l.failure_status.iter().find(|s| !(100..=599).contains(*s)) {
            c.error(
                &l.name,
                format!("`{bad}` in `failure_status` is not an HTTP status"),
                None,
            );
        }
        let paths = c.paths(&l.paths, "e.g. `/wp-login.php`");
        let forms = c.forms(&l.forms);
        if l.paths.is_empty() && l.forms.is_empty() {
            c.error(
                &l.name,
                "a login needs `paths` or `forms`",
                Some("e.g. `paths: [\"/wp-login.php\"]`, or `forms: [[login, username, password]]` for a form handled on any URL"),
            );
        }
        let methods = if l.methods.is_empty() {
            vec![http::Method::POST]
        } else {
            c.methods(&l.methods)
        };
        if !l.xmlrpc && l.failure_status.is_empty() && l.failure_body.is_none() {
            c.error(&l.name, "a login needs `failure_status` (or `xmlrpc: true`)", Some("WordPress answers a failed login with 200 and a success with 302: `failure_status: [200]`"));
        }
        if c.problems() > before {
            continue;
        }
        out.push(Arc::new(LoginRule {
            name: l.name.value.clone(),
            action: ActionMatch {
                paths,
                forms,
                methods,
            },
            username_field: l.username_field,
            failure_status: l.failure_status,
            failure_body: l.failure_body.filter(|b| !b.is_empty()),
            session_cookie: l.session_cookie,
            ban_reason,
            xmlrpc: l.xmlrpc,
            max_per_ip: l.max_per_ip.unwrap_or(10),
            max_per_user: l.max_per_user.unwrap_or(20),
            window: l.window.map_or(Duration::from_secs(600), |w| w.0),
        }));
    }
    out
}

/// Every watched login and payment of a policy, logins first.
fn rules(policy: &Snapshot) -> impl Iterator<Item = &Arc<LoginRule>> {
    let logins = policy.get::<BruteForceSection>().into_iter().flatten();
    logins.chain(policy.get::<CardTestingSection>().into_iter().flatten())
}

/// A login (or payment) being watched: judged from the origin's answer.
#[derive(Debug)]
struct Capture {
    rule: Arc<LoginRule>,
    /// What the request says: username, calls; `None` until the body is read.
    attempt: Option<Attempt>,
    /// The cart session, for rules that count per session.
    session: Option<String>,
    /// The request has a body, to be read before the attempt is known.
    body_expected: bool,
    /// Set once the answer's status is in but the body must still be read.
    pending: Option<Attempt>,
    /// The end of the previous body chunk (a pattern may straddle chunks).
    tail: Vec<u8>,
    scanned: usize,
}

impl Capture {
    fn new(rule: Arc<LoginRule>, headers: &http::HeaderMap, body_expected: bool) -> Self {
        let session = session_of(&rule, headers);
        Capture {
            rule,
            attempt: None,
            session,
            body_expected,
            pending: None,
            tail: Vec::new(),
            scanned: 0,
        }
    }
}

/// Watches logins and payments: recognises them (on the head, or once the
/// body's fields are read), judges them from the origin's answer, counts
/// failures and bans past the limits.
pub struct LoginWatch {
    counters: Counters,
    bans: Arc<dyn Bans>,
}

impl LoginWatch {
    pub fn new(bans: Arc<dyn Bans>) -> Self {
        LoginWatch {
            counters: Counters::default(),
            bans,
        }
    }

    fn judge(&self, st: &RequestState, rule: &LoginRule, attempt: &Attempt, failed: bool) {
        let client = crate::util::net::subscriber_key(st.client.ip);
        if self.counters.record(rule, &client, attempt, failed) {
            self.bans.ban(st.client.ip, rule.ban_reason);
        }
    }
}

#[async_trait]
impl Filter for LoginWatch {
    fn name(&self) -> Decider {
        Decider::Origin
    }

    async fn request(&self, session: &mut Session, st: &mut RequestState) -> Verdict {
        if let Some(rule) = rules(&st.policy).find(|r| r.matches(&st.target)) {
            let body_expected = !session.as_mut().is_body_empty();
            let capture = Capture::new(rule.clone(), &session.req_header().headers, body_expected);
            st.slots.insert(capture);
        }
        Verdict::Continue
    }

    fn reads_forms(&self, policy: &Snapshot) -> bool {
        rules(policy).next().is_some()
    }

    /// Once the body is read: a login posted to any URL is recognised by
    /// its fields, and the attempt (username, calls) is read.
    async fn request_body(
        &self,
        req: &RequestHeader,
        st: &mut RequestState,
        _body: &mut Option<Bytes>,
        end: bool,
    ) -> Verdict {
        if !end || st.head_target.is_none() {
            return Verdict::Continue;
        }
        if st.slots.get::<Capture>().is_none() {
            if let Some(rule) = rules(&st.policy).find(|r| r.matches(&st.target)) {
                st.slots
                    .insert(Capture::new(rule.clone(), &req.headers, true));
            }
        }
        let fields = st.body_fields.as_ref();
        if let Some(capture) = st.slots.get_mut::<Capture>() {
            capture.attempt = Some(read_attempt(&capture.rule, &st.target, fields));
        }
        Verdict::Continue
    }

    /// Logins and payments are read from an uncompressed answer.
    fn upstream_request(
        &self,
        _session: &Session,
        st: &RequestState,
        upstream: &mut RequestHeader,
    ) -> pingora::Result<()> {
        if st.slots.get::<Capture>().is_some() {
            upstream.remove_header(&http::header::ACCEPT_ENCODING);
        }
        Ok(())
    }

    fn upstream_response(&self, st: &mut RequestState, response: &ResponseHeader) {
        let Some(mut capture) = st.slots.take::<Capture>() else {
            return;
        };
        // A request whose body never ended here (none, or cut) is read from
        // what is known: its query, or nothing (counted per address).
        let mut attempt = capture.attempt.take().unwrap_or_else(|| {
            let mut a = read_attempt(&capture.rule, &st.target, None);
            a.readable = !capture.body_expected;
            a
        });
        if capture.session.is_some() {
            attempt.username = capture.session.take();
        }
        match judge_status(&capture.rule, response.status.as_u16()) {
            Some(failed) => self.judge(st, &capture.rule, &attempt, failed),
            None => {
                // The body will tell (a 200 that says "payment failed").
                capture.pending = Some(attempt);
                st.slots.insert(capture);
            }
        }
    }

    /// Reads the answer to a watched attempt when only its body tells
    /// failure from success (bounded; a pattern split across chunks is found).
    fn upstream_response_body(&self, st: &mut RequestState, body: Option<&Bytes>, end: bool) {
        let Some(capture) = st.slots.get_mut::<Capture>() else {
            return;
        };
        let (Some(pattern), Some(_)) =
            (capture.rule.failure_body.clone(), capture.pending.as_ref())
        else {
            return;
        };
        let mut found = false;
        if let Some(chunk) = body {
            if capture.scanned < MAX_BODY {
                let mut window = std::mem::take(&mut capture.tail);
                window.extend_from_slice(chunk);
                found = window
                    .windows(pattern.len().max(1))
                    .any(|w| w == pattern.as_bytes());
                capture.scanned += chunk.len();
                let keep = pattern.len().saturating_sub(1).min(window.len());
                capture.tail = window[window.len() - keep..].to_vec();
            }
        }
        if found || end {
            if let Some(capture) = st.slots.take::<Capture>() {
                if let Some(attempt) = &capture.pending {
                    self.judge(st, &capture.rule, attempt, found);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::pattern::PathMatch;
    use crate::util::target::Target;

    fn rule(xmlrpc: bool) -> LoginRule {
        LoginRule {
            name: format!("t{xmlrpc}"),
            action: ActionMatch {
                paths: vec![PathMatch::parse(if xmlrpc {
                    "/xmlrpc.php"
                } else {
                    "/wp-login.php"
                })
                .unwrap()],
                forms: vec![],
                methods: vec![http::Method::POST],
            },
            username_field: Some("log".into()),
            failure_status: vec![200],
            failure_body: None,
            session_cookie: None,
            ban_reason: BanReason::BruteForce,
            xmlrpc,
            max_per_ip: 3,
            max_per_user: 5,
            window: Duration::from_secs(60),
        }
    }

    /// The attempt a body makes on a rule, as the pipeline reads it.
    fn attempt(rule: &LoginRule, ct: &str, body: &[u8]) -> Attempt {
        let fields = crate::util::form::read(Some(ct.as_bytes()), body);
        let mut target = Target::new(
            &http::Method::POST,
            b"/wp-login.php",
            &http::HeaderMap::new(),
        );
        target.add_body(&fields);
        read_attempt(rule, &target, Some(&fields))
    }

    const FORM: &str = "application/x-www-form-urlencoded";

    #[test]
    fn a_payment_failure_can_be_read_from_the_body() {
        let mut r = rule(false);
        r.failure_status = vec![402];
        r.failure_body = Some("\"result\":\"failure\"".into());
        assert_eq!(judge_status(&r, 402), Some(true));
        assert_eq!(judge_status(&r, 200), None, "the body decides");
        assert_eq!(judge_status(&r, 302), Some(false));
    }

    #[test]
    fn usernames_are_read_from_the_form() {
        let a = attempt(
            &rule(false),
            FORM,
            b"log=Admin%40Shop.example&pwd=p%26ss&wp-submit=Log+In",
        );
        assert_eq!(
            a,
            Attempt {
                username: Some("admin@shop.example".into()),
                calls: 1,
                readable: true,
            }
        );
        assert_eq!(attempt(&rule(false), FORM, b"pwd=x").username, None);
        assert_eq!(attempt(&rule(false), FORM, &[0xff, 0xfe, b'=']).calls, 1);
        let long = format!("log={}", "%E2%82%AC".repeat(60));
        assert_eq!(
            attempt(&rule(false), FORM, long.as_bytes())
                .username
                .unwrap()
                .chars()
                .count(),
            60
        );
        let longer = format!("log={}", "%E2%82%AC".repeat(300));
        assert!(
            attempt(&rule(false), FORM, longer.as_bytes())
                .username
                .unwrap()
                .chars()
                .count()
                <= 128
        );
        let repeated = attempt(&rule(false), FORM, b"log=decoy&pwd=x&log=admin");
        assert_eq!(
            repeated.username.as_deref(),
            Some("admin"),
            "PHP keeps the last"
        );
        let late = format!("pad={}&log=late&pwd=x", "p".repeat(100_000));
        assert_eq!(
            attempt(&rule(false), FORM, late.as_bytes())
                .username
                .as_deref(),
            Some("late"),
            "a username after 64 KiB is still read"
        );
        let multipart =
            b"--B\r\nContent-Disposition: form-data; name=\"log\"\r\n\r\nroot\r\n--B--\r\n";
        assert_eq!(
            attempt(&rule(false), "multipart/form-data; boundary=B", multipart)
                .username
                .as_deref(),
            Some("root")
        );
    }

    #[test]
    fn a_multicall_counts_every_guess_however_it_is_spelled() {
        let call = "<value><struct><member><name>methodName</name><value><string>wp.getUsersBlogs</string></value></member></struct></value>";
        let hidden = "<value><struct><member><name>methodName</name><value><string>wp.getUsers<!---->Blogs</string></value></member></struct></value>";
        for c in [call, hidden] {
            let body = format!(
                "<methodCall><methodName>system<!---->.multicall</methodName><params>{}</params></methodCall>",
                c.repeat(40)
            );
            assert_eq!(attempt(&rule(true), "text/xml", body.as_bytes()).calls, 40);
            assert_eq!(
                attempt(&rule(true), FORM, body.as_bytes()).calls,
                40,
                "XML-RPC reads the body whatever its type"
            );
        }
    }

    #[test]
    fn failures_past_the_threshold_ban_and_successes_do_not_count() {
        let c = Counters::default();
        let r = rule(false);
        let a = Attempt {
            username: Some("admin".into()),
            calls: 1,
            readable: true,
        };
        for _ in 0..10 {
            assert!(
                !c.record(&r, "198.51.100.1", &a, judge_status(&r, 302).unwrap()),
                "a success never counts"
            );
        }
        let address_form = Attempt {
            username: None,
            calls: 1,
            readable: true,
        };
        for _ in 0..10 {
            assert!(
                !c.record(&r, "198.51.100.2", &address_form, true),
                "not a login form"
            );
        }
        assert!(!c.record(&r, "198.51.100.2", &a, true));
        assert!(!c.record(&r, "198.51.100.2", &a, true));
        assert!(!c.record(&r, "198.51.100.2", &a, true));
        assert!(c.record(&r, "198.51.100.2", &a, true));
        let unreadable = Attempt {
            username: None,
            calls: 1,
            readable: false,
        };
        assert!(!c.record(&r, "198.51.100.3", &unreadable, true));
        assert!(!c.record(&r, "198.51.100.3", &unreadable, true));
        assert!(!c.record(&r, "198.51.100.3", &unreadable, true));
        assert!(
            c.record(&r, "198.51.100.3", &unreadable, true),
            "a body that could not be read counts per address"
        );
    }
}
