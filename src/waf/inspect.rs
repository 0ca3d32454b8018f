//! The WAF in the request path: phase 1 on the head, phase 2 on the body
//! (held back, up to the inspection limit, until it is judged), then one
//! audit record and per-rule counters per inspected request.

use std::sync::{Arc, LazyLock};

use bytes::{Bytes, BytesMut};
use pingora::prelude::Session;
use regex::Regex;

use super::offload::Offload;
use crate::filter::{BanReason, Reason, Reply, RequestState};
use crate::observe::metrics;
use crate::util::multipart;
use crate::waf::{self, Head, Transaction, Waf};

/// The WAF's work on one request.
pub struct Inspection {
    pub waf: Arc<Waf>,
    pub tx: Transaction,
    /// The request head, for the fresh transactions of later checkpoints.
    head: Head,
    /// Body bytes held back while they are inspected.
    held: BytesMut,
    /// Body bytes seen in all.
    seen: usize,
    /// How the body is read.
    reader: BodyReader,
    /// Phase 2 has run on everything; later chunks flow straight through.
    judged: bool,
    /// Checkpoints run so far (a multipart upload is judged part by part).
    checkpoints: u32,
    /// Who is asking: heavy inspections are queued per client.
    client: std::net::IpAddr,
    offload: Arc<Offload>,
    pub outcome: Outcome,
}

/// How the body is read while it streams.
enum BodyReader {
    /// Held whole (forms, JSON, XML, raw) up to the limit, then judged.
    Whole,
    /// `multipart/form-data`, read as it arrives: fields whole, files
    /// streamed through once every part before them has been judged.
    Multipart {
        parser: Box<multipart::Parser>,
        parts: waf::body::Multipart,
        /// Bytes of field values and part headers kept.
        kept: usize,
        /// Parts found since the last checkpoint.
        unjudged: bool,
    },
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

fn head(session: &Session, st: &RequestState) -> Head {
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
        remote_addr: st.client.ip.to_string(),
        remote_port: peer.unwrap_or(0),
        server_port: server_port.unwrap_or(0),
        request_id: st.id.clone(),
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

/// Phase 1, and phase 2 at once when the request has no body. The
/// inspection is kept in the request's state for the body and the log.
pub fn start(
    session: &mut Session,
    st: &mut RequestState,
    waf: &Arc<Waf>,
    offload: &Arc<Offload>,
) -> Option<Reply> {
    let head = head(session, st);
    let mut tx = waf.transaction(head.clone());
    tx.run_phase(1);
    let no_body = session.as_mut().is_body_empty();
    let reader = match session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
    {
        Some(ct)
            if crate::util::content_type::form_kind(ct)
                == Some(crate::util::content_type::PostKind::Multipart) =>
        {
            match multipart::boundary(ct) {
                Some(b) => BodyReader::Multipart {
                    parser: Box::new(multipart::Parser::new(&b, waf.settings.body_limit)),
                    parts: waf::body::Multipart::default(),
                    kept: 0,
                    unjudged: false,
                },
                None => BodyReader::Whole,
            }
        }
        _ => BodyReader::Whole,
    };
    let mut inspection = Inspection {
        waf: waf.clone(),
        tx,
        head,
        held: BytesMut::new(),
        seen: 0,
        reader,
        judged: false,
        checkpoints: 0,
        client: st.client.ip,
        offload: offload.clone(),
        outcome: Outcome::Clean,
    };
    if inspection.tx.data.args_count() > waf.settings.max_args {
        inspection.judged = true;
        inspection.outcome = Outcome::Rejected;
        st.slots.insert(inspection);
        return Some(too_many_args());
    }
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
    st.slots.insert(inspection);
    reply
}

fn too_many_args() -> Reply {
    Reply::new(
        400,
        Reason::WafTooManyArgs,
        "The request carries more fields than this shop accepts.",
    )
}

fn too_large() -> Reply {
    Reply::new(
        413,
        Reason::WafBodyTooLarge,
        "The request body is larger than this shop inspects.",
    )
}

fn unreadable() -> Reply {
    Reply::new(
        400,
        Reason::WafMalformedBody,
        "The request body could not be read.",
    )
}

/// Why a body is refused before its rules run.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    TooManyArgs,
    Unreadable,
}

impl Refusal {
    fn reply(self) -> Reply {
        match self {
            Refusal::TooManyArgs => too_many_args(),
            Refusal::Unreadable => unreadable(),
        }
    }
}

/// Bodies (or argument counts) past which phase 2 runs off the proxy's I/O
/// threads: a form of thousands of fields costs milliseconds of CPU.
const HEAVY_BYTES: usize = 16 << 10;
const HEAVY_ARGS: usize = 300;

impl Inspection {
    /// The block page for a blocked request, and the outcome either way.
    fn verdict(&mut self) -> Option<Reply> {
        if let Some(block) = self.tx.blocked() {
            self.outcome = Outcome::Blocked;
            let mut reply = Reply::new(
                403,
                Reason::Waf,
                "This request looks like an attack on the shop and was blocked. If you think this is a mistake, contact the shop and quote the request id.",
            );
            reply.rule = Some(block.rule.to_string());
            if self.waf.settings.ban_on_block {
                reply.ban = Some(BanReason::Waf);
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

    fn reject(&mut self, reply: Reply) -> Option<Reply> {
        self.judged = true;
        self.outcome = Outcome::Rejected;
        self.held.clear();
        Some(reply)
    }

    /// A body chunk. Held back until it can be judged whole (or, for a
    /// multipart upload, until every part before the current file has been
    /// judged), then let go. Returns a reply when the request must be refused.
    ///
    /// Nothing reaches the origin before the WAF has judged every byte
    /// before it that PHP will read: forms, JSON and XML over `body_limit`
    /// are refused (413), never passed half read.
    pub async fn body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) -> Option<Reply> {
        if self.judged {
            return None;
        }
        let limit = self.waf.settings.body_limit;
        let chunk = body.take().unwrap_or_default();
        self.seen += chunk.len();
        // Held back: an empty chunk (never the last one; the pipeline turns
        // an empty last chunk into the end of the body).
        *body = Some(Bytes::new());
        if let BodyReader::Multipart { .. } = self.reader {
            return self.multipart_chunk(body, &chunk, end_of_stream).await;
        }
        self.held.extend_from_slice(&chunk);
        if self.held.len() > limit {
            let parsed = self.tx.data.processor_for().is_some();
            if parsed || self.waf.settings.overflow == waf::Overflow::Reject {
                return self.reject(too_large());
            }
            // A raw body (no parser): its first `body_limit` bytes are
            // judged, the rest streams through.
            let inspected = self.held[..limit].to_vec();
            let length = self.held.len();
            if let Some(reply) = self.judge_whole(inspected, length).await {
                return Some(reply);
            }
            *body = Some(std::mem::take(&mut self.held).freeze());
            return None;
        }
        if !end_of_stream {
            return None;
        }
        let inspected = self.held.to_vec();
        let length = self.seen;
        if let Some(reply) = self.judge_whole(inspected, length).await {
            return Some(reply);
        }
        // Let everything held back go on to the origin in one piece.
        *body = Some(std::mem::take(&mut self.held).freeze());
        None
    }

    /// Phase 2 on a whole (or raw-prefix) body.
    async fn judge_whole(&mut self, inspected: Vec<u8>, length: usize) -> Option<Reply> {
        self.judged = true;
        if !self.tx.wants_body() {
            self.tx
                .evaluate_score(self.waf.settings.paranoia, self.waf.settings.threshold);
            return self.verdict();
        }
        // A form of too many fields is refused before it is parsed: counting
        // its separators costs next to nothing, parsing 20,000 fields does not.
        if self.tx.data.processor_for() == Some(waf::request::URLENCODED) {
            let fields = inspected
                .split(|b| *b == b'&')
                .filter(|f| !f.is_empty())
                .count();
            if fields + self.tx.data.args_get.len() > self.waf.settings.max_args {
                return self.reject(too_many_args());
            }
        }
        let heavy = inspected.len() > HEAVY_BYTES;
        let settings = self.waf.settings.clone();
        let run = move |tx: &mut Transaction| {
            tx.set_body(inspected, length);
            if tx.data.args_count() > settings.max_args {
                Err(Refusal::TooManyArgs)
            } else if settings.malformed == waf::Malformed::Reject && tx.data.body_error.is_some() {
                Err(Refusal::Unreadable)
            } else {
                tx.run_phase(2);
                tx.evaluate_score(settings.paranoia, settings.threshold);
                Ok(())
            }
        };
        let outcome = self.run(heavy, false, run).await;
        match outcome {
            Err(refusal) => self.reject(refusal.reply()),
            Ok(()) => self.verdict(),
        }
    }

    /// Runs `work` on this request's transaction, or on a fresh one (phase
    /// 1 run again) when `fresh`. A heavy one runs off the I/O threads (see
    /// `offload`), on a fresh transaction built there.
    async fn run<R: Send + 'static>(
        &mut self,
        heavy: bool,
        fresh: bool,
        work: impl FnOnce(&mut Transaction) -> R + Send + 'static,
    ) -> R {
        let waf = self.waf.clone();
        let head = self.head.clone();
        let build = move || {
            let mut tx = waf.transaction(head);
            tx.run_phase(1);
            tx
        };
        if heavy {
            let (tx, result) = self
                .offload
                .clone()
                .run(self.client, move || {
                    let mut tx = build();
                    let result = work(&mut tx);
                    (tx, result)
                })
                .await;
            self.tx = tx;
            return result;
        }
        if fresh {
            self.tx = build();
        }
        work(&mut self.tx)
    }

    /// A chunk of a multipart body.
    async fn multipart_chunk(
        &mut self,
        body: &mut Option<Bytes>,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Option<Reply> {
        let limit = self.waf.settings.body_limit;
        let max_args = self.waf.settings.max_args;
        let get_args = self.tx.data.args_get.len();
        let BodyReader::Multipart {
            parser,
            parts,
            kept,
            unjudged,
        } = &mut self.reader
        else {
            return None;
        };
        let mut events = Vec::new();
        parser.feed(chunk, &mut events);
        if end_of_stream {
            parser.finish(&mut events);
        }
        let found = !events.is_empty();
        for e in events {
            if let multipart::Event::Field { value, headers, .. } = &e {
                *kept += value.len() + headers.iter().map(Vec::len).sum::<usize>();
            }
            parts.add(e);
        }
        *unjudged |= found;
        let over_fields = *kept > limit;
        let over_args = get_args + parts.fields.len() + parts.files.len() > max_args;
        let stop = parser.stopped().cloned();
        let in_file = parser.in_file_data();
        self.held.extend_from_slice(chunk);
        if over_args {
            return self.reject(too_many_args());
        }
        if over_fields || matches!(stop, Some(multipart::Stop::FieldTooLarge)) {
            return self.reject(too_large());
        }
        if matches!(stop, Some(multipart::Stop::HeadersTooLarge)) {
            return self.reject(unreadable());
        }
        let BodyReader::Multipart {
            parser,
            parts,
            unjudged,
            ..
        } = &mut self.reader
        else {
            return None;
        };
        if end_of_stream {
            parts.close(parser);
            let parts = parts.clone();
            if let Some(reply) = self.checkpoint(parts, true).await {
                return Some(reply);
            }
            *body = Some(std::mem::take(&mut self.held).freeze()).filter(|b| !b.is_empty());
            return None;
        }
        // Inside a file's data, everything before has been read: judge the
        // parts found since the last checkpoint, then let it all go.
        if in_file && !found && !*unjudged {
            *body = Some(std::mem::take(&mut self.held).freeze());
            return None;
        }
        if in_file {
            *unjudged = false;
            let parts = parts.clone();
            if let Some(reply) = self.checkpoint(parts, false).await {
                return Some(reply);
            }
            *body = Some(std::mem::take(&mut self.held).freeze());
        }
        None
    }

    /// Phase 2 on the multipart parts read so far. The first checkpoint
    /// uses the transaction phase 1 ran on; later ones start afresh (phase
    /// 1 again), so every verdict covers everything read.
    async fn checkpoint(&mut self, parts: waf::body::Multipart, last: bool) -> Option<Reply> {
        if last {
            self.judged = true;
        }
        if !self.tx.wants_body() && self.checkpoints == 0 {
            self.tx
                .evaluate_score(self.waf.settings.paranoia, self.waf.settings.threshold);
            self.judged = true;
            return self.verdict();
        }
        let fresh = self.checkpoints > 0;
        self.checkpoints += 1;
        let heavy = parts.fields.len() + parts.files.len() > HEAVY_ARGS
            || parts.fields.iter().map(|(_, v)| v.len()).sum::<usize>() > HEAVY_BYTES;
        let settings = self.waf.settings.clone();
        let length = self.seen;
        let outcome = self
            .run(heavy, fresh, move |tx| {
                if tx.blocked().is_none() {
                    tx.set_multipart(parts, length);
                    if settings.malformed == waf::Malformed::Reject && tx.data.body_error.is_some()
                    {
                        return Err(Refusal::Unreadable);
                    }
                    tx.run_phase(2);
                }
                tx.evaluate_score(settings.paranoia, settings.threshold);
                Ok(())
            })
            .await;
        match outcome {
            Err(refusal) => self.reject(refusal.reply()),
            Ok(()) => {
                let reply = self.verdict();
                if reply.is_some() {
                    self.judged = true;
                    self.held.clear();
                }
                reply
            }
        }
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
    pub fn finish(&self, st: &RequestState, session: &Session) {
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
            client_ip = %st.shown_ip(),
            method = %req.method,
            path = req.uri.path(),
            request_id = %st.id,
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
