//! The WAF in the request path: phase 1 on the head, phase 2 on the body
//! (held back, up to the inspection limit, until it is judged), then one
//! audit record and per-rule counters per inspected request.

use std::sync::{Arc, LazyLock};

use bytes::{Bytes, BytesMut};
use pingora::prelude::Session;
use regex::Regex;

use super::ctx::RequestCtx;
use crate::filter::Reply;
use crate::metrics;
use crate::waf::{self, Head, Transaction, Waf};

/// The WAF's work on one request.
pub struct Inspection {
    pub waf: Arc<Waf>,
    pub tx: Transaction,
    /// Body bytes held back while they are inspected.
    held: BytesMut,
    /// Body bytes seen in all.
    seen: usize,
    /// Phase 2 has run; later chunks flow straight through.
    judged: bool,
    pub outcome: Outcome,
}

/// How an inspection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    /// Rules matched below the threshold (scored, logged).
    Logged,
    /// Would have been blocked (detect-only mode or a detect-only rule).
    Detected,
    Blocked,
    /// Body refused: too large or unparsable under a `reject` policy.
    Rejected,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Clean => "clean",
            Outcome::Logged => "logged",
            Outcome::Detected => "detected",
            Outcome::Blocked => "blocked",
            Outcome::Rejected => "rejected",
        }
    }
}

fn head(session: &Session, ctx: &RequestCtx) -> Head {
    let req = session.req_header();
    let protocol = match req.version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    };
    let headers = req
        .headers
        .iter()
        .map(|(name, value)| (header_case(name.as_str()), value.as_bytes().to_vec()))
        .collect();
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet().map(|a| a.port()));
    let server_port = session
        .server_addr()
        .and_then(|a| a.as_inet().map(|a| a.port()));
    Head {
        method: req.method.as_str().to_string(),
        raw_uri: req.raw_path().to_vec(),
        protocol: protocol.to_string(),
        headers,
        remote_addr: ctx.client.ip.to_string(),
        remote_port: peer.unwrap_or(0),
        server_port: server_port.unwrap_or(0),
        request_id: ctx.request_id.clone(),
    }
}

/// `user-agent` → `User-Agent`: names as browsers write them, for logs.
fn header_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

/// Phase 1, and phase 2 at once when the request has no body.
pub fn start(session: &mut Session, ctx: &mut RequestCtx, waf: &Arc<Waf>) -> Option<Reply> {
    let mut tx = waf.transaction(head(session, ctx));
    tx.run_phase(1);
    let no_body = session.as_mut().is_body_empty();
    let mut inspection = Inspection {
        waf: waf.clone(),
        tx,
        held: BytesMut::new(),
        seen: 0,
        judged: false,
        outcome: Outcome::Clean,
    };
    if inspection.tx.blocked().is_none() && no_body {
        inspection.tx.set_body(Vec::new(), 0);
        inspection.tx.run_phase(2);
        inspection.judged = true;
    }
    if inspection.tx.blocked().is_some() || no_body {
        inspection
            .tx
            .evaluate_score(waf.settings.paranoia, waf.settings.threshold);
        inspection.judged = true;
    }
    let reply = inspection.verdict();
    ctx.waf = Some(inspection);
    reply
}

impl Inspection {
    /// The block page for a blocked request, and the outcome either way.
    fn verdict(&mut self) -> Option<Reply> {
        if let Some(block) = self.tx.blocked() {
            self.outcome = Outcome::Blocked;
            let mut reply = Reply::new(
                403,
                "waf",
                "This request looks like an attack on the shop and was blocked. If you think this is a mistake, contact the shop and quote the request id.",
            );
            reply.rule = Some(block.rule.to_string());
            if self.waf.settings.ban_on_block {
                reply.ban = Some("waf");
            }
            return Some(reply);
        }
        self.outcome = if self.tx.would_block().is_some() {
            Outcome::Detected
        } else if self.tx.matches().iter().any(|m| m.log) {
            Outcome::Logged
        } else {
            Outcome::Clean
        };
        None
    }

    /// A body chunk: held back until the body ends or fills the inspection
    /// limit, then judged. Returns a reply when the request must be refused.
    pub fn body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) -> Option<Reply> {
        if self.judged {
            return None;
        }
        let limit = self.waf.settings.body_limit;
        if let Some(chunk) = body.take() {
            self.seen += chunk.len();
            self.held.extend_from_slice(&chunk);
        }
        // Held back: an empty chunk, because `None` would end the body upstream.
        *body = Some(Bytes::new());
        let over = self.held.len() > limit;
        if !end_of_stream && !over {
            return None;
        }
        if over && self.waf.settings.overflow == waf::Overflow::Reject {
            self.judged = true;
            self.outcome = Outcome::Rejected;
            return Some(Reply::new(
                413,
                "waf_body_too_large",
                "The request body is larger than this shop inspects.",
            ));
        }
        let inspected = self.held[..self.held.len().min(limit)].to_vec();
        let length = if end_of_stream {
            self.seen
        } else {
            self.held.len()
        };
        if self.tx.wants_body() {
            self.tx.set_body(inspected, length);
            if self.waf.settings.malformed == waf::Malformed::Reject
                && self.tx.data.body_error.is_some()
            {
                self.judged = true;
                self.outcome = Outcome::Rejected;
                return Some(Reply::new(
                    400,
                    "waf_malformed_body",
                    "The request body could not be read.",
                ));
            }
            self.tx.run_phase(2);
        }
        self.tx
            .evaluate_score(self.waf.settings.paranoia, self.waf.settings.threshold);
        self.judged = true;
        let reply = self.verdict();
        if reply.is_none() {
            // Let everything held back go on to the origin in one piece.
            *body = Some(std::mem::take(&mut self.held).freeze());
        }
        reply
    }

    /// The `x-rempart-waf` debug header: ids of the logged rules that matched.
    pub fn debug_header(&self) -> Option<String> {
        if !self.waf.settings.debug_header {
            return None;
        }
        let ids: Vec<String> = self
            .tx
            .matches()
            .iter()
            .filter(|m| m.log)
            .map(|m| m.id.to_string())
            .collect();
        Some(ids.join(","))
    }

    /// Counters and the audit record, once the request is over.
    pub fn finish(&self, ctx: &RequestCtx, session: &Session, anonymized_ip: &str) {
        metrics::WAF_REQUESTS
            .with_label_values(&[self.outcome.label()])
            .inc();
        for m in self.tx.matches().iter().filter(|m| m.log) {
            metrics::WAF_RULE_HITS
                .with_label_values(&[&m.id.to_string()])
                .inc();
        }
        if self.outcome == Outcome::Clean {
            return;
        }
        let req = session.req_header();
        let matches: Vec<serde_json::Value> = self
            .tx
            .matches()
            .iter()
            .filter(|m| m.log)
            .map(|m| {
                // Any secret variable in the match hides the values: the
                // message data may quote another variable than the first.
                let secret = is_secret(&m.target) || m.targets.iter().any(|t| is_secret(t));
                serde_json::json!({
                    "id": m.id,
                    "msg": m.msg,
                    "severity": m.severity.map(waf::rule::severity_name),
                    "target": m.target,
                    "fragment": if secret { "********".to_string() } else { m.fragment.clone() },
                    "data": if secret { String::new() } else { waf::engine::truncate(m.data.as_bytes(), 200) },
                    "detect_only": m.detect_only,
                })
            })
            .collect();
        let rules: Vec<u32> = self
            .tx
            .matches()
            .iter()
            .filter(|m| m.log)
            .map(|m| m.id)
            .collect();
        let blocked_by = self.tx.blocked().or(self.tx.would_block()).map(|b| b.rule);
        let record = serde_json::json!({
            "outcome": self.outcome.label(),
            "mode": match self.waf.settings.mode { waf::Mode::Block => "block", waf::Mode::Detect => "detect" },
            "score": self.tx.score(self.waf.settings.paranoia),
            "threshold": self.waf.settings.threshold,
            "paranoia_level": self.waf.settings.paranoia,
            "blocking_rule": blocked_by,
            "rules": rules,
            "matches": matches,
        });
        tracing::info!(
            target: "rempart::audit",
            event = "waf",
            outcome = self.outcome.label(),
            client_ip = %anonymized_ip,
            method = %req.method,
            path = req.uri.path(),
            request_id = %ctx.request_id,
            waf = %record,
        );
    }
}

/// Fields whose values must never reach a log: passwords, card data, tokens.
fn is_secret(target: &str) -> bool {
    static SECRET: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(
            r"(?i)pass|pwd|secret|token|card|cvc|cvv|ccnum|cc_num|iban|authorization|api[_-]?key",
        )
        .ok()
    });
    SECRET.as_ref().is_some_and(|re| re.is_match(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised() {
        for t in [
            "ARGS:pwd",
            "ARGS:password",
            "ARGS:json.payment.card_number",
            "REQUEST_HEADERS:Authorization",
            "ARGS:wc-stripe-cvc",
        ] {
            assert!(is_secret(t), "{t}");
        }
        for t in ["ARGS:q", "REQUEST_FILENAME", "ARGS:billing_first_name"] {
            assert!(!is_secret(t), "{t}");
        }
    }

    #[test]
    fn header_names_are_cased() {
        assert_eq!(header_case("user-agent"), "User-Agent");
        assert_eq!(header_case("x-forwarded-for"), "X-Forwarded-For");
    }
}
