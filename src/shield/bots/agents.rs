//! What a user agent says: scanners and abusive scrapers are refused (and,
//! by default, banned), while an allow list protects tools the shop relies
//! on (case-insensitive substrings of `User-Agent`); and how bot-like a
//! request looks (the score the challenge is shown from).

use crate::filter::{BanReason, Reason, Reply, Verdict};
use regex::RegexSet;

/// Tools that only attackers point at a shop, and scrapers that ignore robots.txt.
pub const DEFAULT_DENY: &[&str] = &[
    "sqlmap",
    "nikto",
    "wpscan",
    "nuclei",
    "masscan",
    "zgrab",
    "nmap",
    "dirbuster",
    "gobuster",
    "feroxbuster",
    "ffuf",
    "wfuzz",
    "acunetix",
    "netsparker",
    "openvas",
    "nessus",
    "w3af",
    "havij",
    "jorgee",
    "zmeu",
    "morfeus",
    "fimap",
    "commix",
    "whatweb",
    "interactsh",
    "petalbot",
    "mj12bot",
    "dotbot",
    "blexbot",
    "serpstatbot",
    "dataforseobot",
    "megaindex",
];

/// The compiled user-agent lists.
#[derive(Debug)]
pub struct AgentLists {
    deny: RegexSet,
    allow: RegexSet,
    ban: bool,
}

fn set(patterns: &[String]) -> Result<RegexSet, String> {
    let escaped: Vec<String> = patterns
        .iter()
        .map(|p| format!("(?i){}", regex::escape(p)))
        .collect();
    RegexSet::new(escaped).map_err(|e| e.to_string())
}

impl AgentLists {
    pub fn new(deny: &[String], allow: &[String], ban: bool) -> Result<Self, String> {
        Ok(AgentLists {
            deny: set(deny)?,
            allow: set(allow)?,
            ban,
        })
    }

    /// The deny pattern a user agent matches, unless the allow list covers it.
    pub fn verdict_for(&self, user_agent: &str) -> Verdict {
        if self.allow.is_match(user_agent) || !self.deny.is_match(user_agent) {
            return Verdict::Continue;
        }
        let rule = self.deny.matches(user_agent).iter().next().map(|i| {
            self.deny.patterns()[i]
                .trim_start_matches("(?i)")
                .replace('\\', "")
        });
        let mut reply = Reply::new(
            403,
            Reason::BadBot,
            "Automated scanning of this shop is not allowed.",
        );
        reply.rule = rule;
        if self.ban {
            reply.ban = Some(BanReason::Scanner);
        }
        Verdict::Respond(reply)
    }
}

/// Tokens of automation tools and headless browsers in user agents.
const AUTOMATION: &[&str] = &[
    "headlesschrome",
    "phantomjs",
    "selenium",
    "webdriver",
    "puppeteer",
    "playwright",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "libwww-perl",
    "scrapy",
    "okhttp",
    "node-fetch",
    "axios/",
];

/// How bot-like a request looks, from 0 (an ordinary browser) upwards, with
/// the signals that counted. Each signal is weak alone; together they tell.
pub fn score(headers: &http::HeaderMap, http10: bool, tls: bool) -> (u32, Vec<&'static str>) {
    let mut score = 0;
    let mut signals = Vec::new();
    let mut add = |points: u32, why: &'static str| {
        score += points;
        signals.push(why);
    };
    let ua = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ua.is_empty() {
        add(3, "no_user_agent");
    }
    if AUTOMATION.iter().any(|t| ua.contains(t)) {
        add(3, "automation_tool");
    }
    if !headers.contains_key(http::header::ACCEPT) {
        add(2, "no_accept");
    }
    if !headers.contains_key(http::header::ACCEPT_LANGUAGE) {
        add(2, "no_accept_language");
    }
    if http10 {
        add(2, "http_1_0");
    }
    // Impossible combinations: Firefox and Safari never send client hints;
    // desktop Chrome over HTTPS always does.
    let hints = headers.contains_key("sec-ch-ua");
    if hints && (ua.contains("firefox/") || (ua.contains("safari/") && !ua.contains("chrome/"))) {
        add(2, "impossible_client_hints");
    }
    if tls && !hints && ua.contains("chrome/") && !ua.contains("mobile") && !ua.contains("edg/") {
        add(1, "chrome_without_client_hints");
    }
    (score, signals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allow: &[&str]) -> AgentLists {
        let deny: Vec<String> = DEFAULT_DENY.iter().map(|s| s.to_string()).collect();
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        AgentLists::new(&deny, &allow, true).unwrap()
    }

    #[test]
    fn scanners_are_refused_and_banned() {
        let f = filter(&[]);
        for ua in [
            "sqlmap/1.7.2#stable (https://sqlmap.org)",
            "Mozilla/5.0 (compatible; Nuclei - Open-source project)",
            "WPScan v3.8.22",
            "Nikto/2.5.0",
        ] {
            match f.verdict_for(ua) {
                Verdict::Respond(r) => {
                    assert_eq!(r.status, 403);
                    assert_eq!(r.ban, Some(BanReason::Scanner));
                    assert!(r.rule.is_some());
                }
                Verdict::Continue => panic!("{ua} passed"),
            }
        }
    }

    #[test]
    fn scores_tell_browsers_from_scripts() {
        let mut browser = http::HeaderMap::new();
        browser.insert(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
                .parse()
                .unwrap(),
        );
        browser.insert("accept", "text/html".parse().unwrap());
        browser.insert("accept-language", "fr-FR,fr;q=0.9".parse().unwrap());
        assert_eq!(score(&browser, false, true).0, 0);
        let mut script = http::HeaderMap::new();
        script.insert("user-agent", "python-requests/2.32".parse().unwrap());
        script.insert("accept", "*/*".parse().unwrap());
        let (s, why) = score(&script, false, true);
        assert_eq!(s, 5, "{why:?}");
        assert_eq!(score(&http::HeaderMap::new(), true, false).0, 9);
    }

    #[test]
    fn browsers_crawlers_and_allowed_tools_pass() {
        let f = filter(&["nessus-internal-audit"]);
        for ua in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "WooCommerce/9.4 Hookshot (WordPress/6.7)",
            "Nessus-Internal-Audit/1.0",
            "",
        ] {
            assert_eq!(f.verdict_for(ua), Verdict::Continue, "{ua}");
        }
    }
}
