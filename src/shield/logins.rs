//! Brute-force protection: login attempts are judged by the origin's answer
//! (WordPress answers 200 with an error on a failed login and 302 on
//! success; the policy says which statuses mean what), failures are counted
//! per client address and per username over a window, and past a threshold
//! the client is banned. XML-RPC `system.multicall` packs many password
//! guesses into one request: each call counts as one attempt.
//!
//! Counters live in a bounded, expiring map (moka): memory stays bounded
//! under a flood of addresses or usernames, and a quiet client is forgotten
//! after the window.

use crate::util::pattern::ActionMatch;
use std::sync::LazyLock;
use std::time::Duration;

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
    /// Ban reason: `brute_force` or `card_testing`.
    pub ban_reason: &'static str,
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

/// Decodes `%XX` and `+` in a form value; invalid escapes stay as they are.
pub fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = text
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Failure counters: `(rule, "ip"|"user", value)` → count, forgotten after
/// the longest window in use (entries carry their own start time).
static COUNTERS: LazyLock<moka::sync::Cache<String, (u64, std::time::Instant)>> =
    LazyLock::new(|| {
        moka::sync::Cache::builder()
            .max_capacity(200_000)
            .time_to_idle(Duration::from_secs(24 * 3600))
            .build()
    });

fn bump(key: String, n: u64, window: Duration) -> u64 {
    let now = std::time::Instant::now();
    let entry = COUNTERS
        .entry(key)
        .and_upsert_with(|old| match old.map(|e| e.into_value()) {
            Some((count, since)) if now.duration_since(since) < window => (count + n, since),
            _ => (n, now),
        });
    entry.into_value().0
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

/// Records the outcome of an attempt; returns true when the client must be banned.
pub fn record(rule: &LoginRule, client: &str, attempt: &Attempt, failed: bool) -> bool {
    // A form without the username field is another form on the same page
    // (an address or account edit), not a login.
    let not_a_login = !rule.xmlrpc
        && rule.username_field.is_some()
        && attempt.username.is_none()
        && attempt.readable;
    if not_a_login || !failed {
        return false;
    }
    crate::observe::metrics::LOGIN_FAILURES
        .with_label_values(&[&rule.name])
        .inc_by(attempt.calls);
    let per_ip = bump(
        format!("{}|ip|{client}", rule.name),
        attempt.calls,
        rule.window,
    );
    let per_user = attempt.username.as_ref().map_or(0, |u| {
        bump(
            format!("{}|user|{u}", rule.name),
            attempt.calls,
            rule.window,
        )
    });
    per_ip > rule.max_per_ip || (attempt.username.is_some() && per_user > rule.max_per_user)
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
            ban_reason: "brute_force",
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
        let r = rule(false);
        let a = Attempt {
            username: Some("admin".into()),
            calls: 1,
            readable: true,
        };
        for _ in 0..10 {
            assert!(
                !record(&r, "198.51.100.1", &a, judge_status(&r, 302).unwrap()),
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
                !record(&r, "198.51.100.2", &address_form, true),
                "not a login form"
            );
        }
        assert!(!record(&r, "198.51.100.2", &a, true));
        assert!(!record(&r, "198.51.100.2", &a, true));
        assert!(!record(&r, "198.51.100.2", &a, true));
        assert!(record(&r, "198.51.100.2", &a, true));
        let unreadable = Attempt {
            username: None,
            calls: 1,
            readable: false,
        };
        assert!(!record(&r, "198.51.100.3", &unreadable, true));
        assert!(!record(&r, "198.51.100.3", &unreadable, true));
        assert!(!record(&r, "198.51.100.3", &unreadable, true));
        assert!(
            record(&r, "198.51.100.3", &unreadable, true),
            "a body that could not be read counts per address"
        );
    }
}
