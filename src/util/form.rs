//! Form fields of a request body, read as it streams, for the rules that
//! recognise an action by its fields (a WooCommerce login posted to any
//! URL) and read a username or a cart session from it.
//!
//! URL-encoded and multipart bodies are read to their end whatever their
//! size, keeping names and the start of each value (memory stays bounded);
//! JSON and XML bodies are kept up to `MAX_DOCUMENT` and read at the end.
//! A body that could not be read whole says so ([`FormFields::complete`]):
//! a rule then counts what it cannot tell apart, never less.

use super::content_type::{form_kind, wp_is_json, PostKind};

/// Bytes of each value kept.
pub const MAX_VALUE: usize = 1024;
/// Fields kept at most.
pub const MAX_FIELDS: usize = 4096;
/// Bytes of a JSON or XML document kept for reading.
pub const MAX_DOCUMENT: usize = 1 << 20;

/// What a body held.
#[derive(Debug, Clone, Default)]
pub struct FormFields {
    /// (PHP variable name, start of the value), in body order.
    fields: Vec<(String, Vec<u8>)>,
    /// `requests[].path` of a WordPress REST batch.
    batch: Vec<String>,
    /// The XML document, for XML-RPC.
    xml: Option<Vec<u8>>,
    /// Every byte was read and understood.
    pub complete: bool,
}

impl FormFields {
    pub fn fields(&self) -> &[(String, Vec<u8>)] {
        &self.fields
    }

    /// The value PHP keeps for `name` (the last one).
    pub fn value(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn batch_paths(&self) -> &[String] {
        &self.batch
    }

    /// The XML body, when there was one (a document that starts with `<`).
    pub fn xml(&self) -> Option<&[u8]> {
        self.xml.as_deref()
    }
}

enum Kind {
    Urlencoded {
        segment: Vec<u8>,
        cut: bool,
    },
    Multipart(Box<super::multipart::Parser>),
    /// JSON, XML or anything else: kept (bounded) and read at the end.
    Document,
}

/// The streaming reader.
pub struct FormReader {
    kind: Kind,
    json: bool,
    doc: Vec<u8>,
    out: FormFields,
    overflow: bool,
}

/// Bytes of one url-encoded `name=value` kept while it streams.
const MAX_SEGMENT: usize = MAX_VALUE + 1024;

impl FormReader {
    /// A reader for a body of this content type (any type: an unknown one
    /// is kept as a document, XML-RPC reads any type).
    pub fn new(content_type: Option<&[u8]>) -> FormReader {
        let ct = content_type.unwrap_or_default();
        let kind = match form_kind(ct) {
            Some(PostKind::Urlencoded) => Kind::Urlencoded {
                segment: Vec::new(),
                cut: false,
            },
            Some(PostKind::Multipart) => match super::multipart::boundary(ct) {
                Some(b) => Kind::Multipart(Box::new(super::multipart::Parser::truncating(
                    &b, MAX_VALUE,
                ))),
                None => Kind::Document,
            },
            None => Kind::Document,
        };
        FormReader {
            kind,
            json: wp_is_json(ct),
            doc: Vec::new(),
            out: FormFields {
                complete: true,
                ..FormFields::default()
            },
            overflow: false,
        }
    }

    fn push(&mut self, name: &[u8], value: &[u8]) {
        let Some(name) = super::php::variable_name(name) else {
            return;
        };
        if self.out.fields.len() >= MAX_FIELDS {
            self.out.complete = false;
            return;
        }
        let value = &value[..value.len().min(MAX_VALUE)];
        self.out
            .fields
            .push((String::from_utf8_lossy(&name).into_owned(), value.to_vec()));
    }

    fn segment_done(&mut self, segment: &[u8]) {
        if segment.is_empty() {
            return;
        }
        let pair = super::query::pairs(segment).next();
        if let Some(pair) = pair {
            let name = super::php::url_decode(pair.raw_name);
            let value = super::php::url_decode(pair.raw_value);
            self.push(&name, &value);
        }
    }

    /// The next bytes of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        // A url-encoded body that is an XML document (XML-RPC reads the body
        // whatever its type) is kept as one too.
        let document = self.json
            || matches!(self.kind, Kind::Document)
            || matches!(self.kind, Kind::Urlencoded { .. }) && self.looks_like_xml(chunk);
        if document {
            let room = MAX_DOCUMENT.saturating_sub(self.doc.len());
            self.doc.extend_from_slice(&chunk[..room.min(chunk.len())]);
            self.overflow |= chunk.len() > room;
        }
        match &mut self.kind {
            Kind::Urlencoded { segment, cut } => {
                let mut done = Vec::new();
                for piece in chunk.split_inclusive(|b| *b == b'&') {
                    let (data, ends) = match piece.strip_suffix(b"&") {
                        Some(d) => (d, true),
                        None => (piece, false),
                    };
                    let room = MAX_SEGMENT.saturating_sub(segment.len());
                    segment.extend_from_slice(&data[..room.min(data.len())]);
                    *cut |= data.len() > room;
                    if ends {
                        done.push(std::mem::take(segment));
                        *cut = false;
                    }
                }
                for s in done {
                    self.segment_done(&s);
                }
            }
            Kind::Multipart(parser) => {
                let mut events = Vec::new();
                parser.feed(chunk, &mut events);
                self.take(events);
            }
            Kind::Document => {}
        }
    }

    /// Whether the body so far starts (past white space) with `<`.
    fn looks_like_xml(&self, chunk: &[u8]) -> bool {
        self.doc
            .iter()
            .chain(chunk.iter())
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'<')
    }

    fn take(&mut self, events: Vec<super::multipart::Event>) {
        for e in events {
            if let super::multipart::Event::Field { name, value, .. } = e {
                self.push(&name, &value);
            }
        }
    }

    /// The body has ended: what it held.
    pub fn finish(mut self) -> FormFields {
        match std::mem::replace(&mut self.kind, Kind::Document) {
            Kind::Urlencoded { segment, .. } => {
                self.segment_done(&segment);
                if self.doc.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<') {
                    self.out.xml = Some(std::mem::take(&mut self.doc));
                }
            }
            Kind::Multipart(mut parser) => {
                let mut events = Vec::new();
                parser.finish(&mut events);
                if parser.stopped().is_some() {
                    self.out.complete = false;
                }
                self.take(events);
            }
            Kind::Document => {
                let first = self.doc.iter().find(|b| !b.is_ascii_whitespace());
                if first == Some(&b'<') {
                    if self.overflow {
                        self.out.complete = false;
                    }
                    self.out.xml = Some(std::mem::take(&mut self.doc));
                }
            }
        }
        if self.json {
            if self.overflow {
                self.out.complete = false;
            }
            match super::json::flatten(&self.doc, MAX_FIELDS) {
                Ok(leaves) => {
                    for (key, value) in leaves {
                        let Some(path) = key.strip_prefix("json.") else {
                            continue;
                        };
                        if let Some(rest) = path.strip_prefix("requests.") {
                            if rest.ends_with(".path") && rest.matches('.').count() == 1 {
                                self.out
                                    .batch
                                    .push(String::from_utf8_lossy(&value).into_owned());
                            }
                        }
                        if !path.contains('.') {
                            self.push(path.as_bytes(), &value);
                        }
                    }
                }
                Err(_) => self.out.complete = false,
            }
        }
        self.out
    }
}

/// Reads a whole body at once.
pub fn read(content_type: Option<&[u8]>, body: &[u8]) -> FormFields {
    let mut r = FormReader::new(content_type);
    r.feed(body);
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoded_fields_stream_to_any_size() {
        let mut r = FormReader::new(Some(b"application/x-www-form-urlencoded"));
        let body = format!(
            "pad={}&login=1&username=Admin%40shop&password=x&wp.x=1",
            "p".repeat(200_000)
        );
        for c in body.as_bytes().chunks(7000) {
            r.feed(c);
        }
        let f = r.finish();
        assert_eq!(f.value("username"), Some(&b"Admin@shop"[..]));
        assert!(f.value("wp_x").is_some(), "PHP's names");
        assert_eq!(f.value("pad").map(<[u8]>::len), Some(MAX_VALUE));
        assert!(f.complete);
    }

    #[test]
    fn multipart_and_json_fields() {
        let body = b"--B\r\nContent-Disposition: form-data; name=\"log\"\r\n\r\nadmin\r\n--B\r\nContent-Disposition: form-data; name=\"pwd\"\r\n\r\nx\r\n--B--\r\n";
        let f = read(Some(b"multipart/form-data; boundary=B"), body);
        assert_eq!(f.value("log"), Some(&b"admin"[..]));
        let batch = read(
            Some(b"application/json"),
            br#"{"requests":[{"method":"POST","path":"/wc/store/v1/checkout?x=1","body":{}}],"x":"1"}"#,
        );
        assert_eq!(batch.batch_paths(), ["/wc/store/v1/checkout?x=1"]);
        assert_eq!(batch.value("x"), Some(&b"1"[..]));
        let xml = read(Some(b"text/plain"), b"  <methodCall/>");
        assert!(xml.xml().is_some());
    }
}
