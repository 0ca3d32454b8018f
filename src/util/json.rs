//! JSON bodies as PHP's `json_decode` reads them (WordPress REST, the
//! WooCommerce Store API), flattened into named leaves for inspection.
//!
//! PHP's reading (`ext/json`), where it differs from common parsers:
//! - any number is accepted, however large (`1e400` is INF, a 20-digit
//!   integer a float): leaves keep the number as written;
//! - nesting up to 511 arrays/objects (depth 512);
//! - a lone UTF-16 surrogate (`\ud800`), invalid UTF-8, a raw control byte
//!   in a string, white space other than space/tab/CR/LF, comments and
//!   trailing commas are errors;
//! - a top-level scalar is a document; a key given twice keeps the last
//!   value, but both are listed here, so a payload cannot hide behind a
//!   later duplicate.
//!
//! The parser is iterative (no recursion): any nesting PHP accepts is read
//! without touching the stack, and deeper nesting is an error, as in PHP.

use std::fmt;

/// Nesting PHP accepts with its default depth of 512.
pub const MAX_NESTING: usize = 511;

/// Why a body is not JSON PHP would read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub at: usize,
    pub what: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JSON parsing error at byte {}: {}", self.at, self.what)
    }
}

impl std::error::Error for JsonError {}

/// One leaf: `json.a.0.b` and its value (strings decoded, numbers as
/// written, `true`/`false`, empty for `null`).
pub type Leaf = (String, Vec<u8>);

enum Frame {
    /// Inside an object: the key length to cut back to; whether a member was read.
    Object { at: usize, members: bool },
    /// Inside an array: the key length to cut back to; the next index.
    Array { at: usize, index: usize },
}

/// Parses `body` and returns its leaves in document order, or the first
/// error. Stops with an error once `max_leaves` leaves are read.
pub fn flatten(body: &[u8], max_leaves: usize) -> Result<Vec<Leaf>, JsonError> {
    let mut p = Reader { b: body, i: 0 };
    let mut out: Vec<Leaf> = Vec::new();
    let mut key = String::from("json");
    let mut stack: Vec<Frame> = Vec::new();
    p.ws();
    // Parse one value; containers push frames, scalars become leaves.
    'value: loop {
        match p.peek() {
            Some(b'{') | Some(b'[') => {
                if stack.len() >= MAX_NESTING {
                    return Err(p.error("nesting deeper than PHP's limit (511)"));
                }
                let open = p.next_byte();
                p.ws();
                if open == Some(b'{') {
                    stack.push(Frame::Object {
                        at: key.len(),
                        members: false,
                    });
                } else {
                    stack.push(Frame::Array {
                        at: key.len(),
                        index: 0,
                    });
                }
            }
            Some(_) => {
                let value = p.scalar()?;
                if out.len() >= max_leaves {
                    return Err(p.error("more values than the inspection limit"));
                }
                out.push((key.clone(), value));
            }
            None => return Err(p.error("a value was expected")),
        }
        // After a value (or an opened container): close containers, or
        // move to the next member/item.
        loop {
            p.ws();
            let Some(frame) = stack.last_mut() else {
                break 'value;
            };
            match frame {
                Frame::Object { at, members } => {
                    let at = *at;
                    key.truncate(at);
                    match p.peek() {
                        Some(b'}') => {
                            p.i += 1;
                            stack.pop();
                            continue;
                        }
                        Some(b',') if *members => {
                            p.i += 1;
                            p.ws();
                        }
                        Some(b'"') if !*members => {}
                        _ => return Err(p.error("`,` or `}` was expected")),
                    }
                    *members = true;
                    if p.peek() != Some(b'"') {
                        return Err(p.error("a member name was expected"));
                    }
                    let name = p.string()?;
                    key.push('.');
                    key.push_str(&String::from_utf8_lossy(&name));
                    p.ws();
                    if p.next_byte() != Some(b':') {
                        return Err(p.error("`:` was expected"));
                    }
                    p.ws();
                    continue 'value;
                }
                Frame::Array { at, index } => {
                    let at = *at;
                    key.truncate(at);
                    match p.peek() {
                        Some(b']') => {
                            p.i += 1;
                            stack.pop();
                            continue;
                        }
                        Some(b',') if *index > 0 => {
                            p.i += 1;
                            p.ws();
                        }
                        Some(_) if *index == 0 => {}
                        _ => return Err(p.error("`,` or `]` was expected")),
                    }
                    key.push('.');
                    key.push_str(itoa::Buffer::new().format(*index));
                    *index += 1;
                    continue 'value;
                }
            }
        }
    }
    p.ws();
    if p.i != body.len() {
        return Err(p.error("text after the document"));
    }
    Ok(out)
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn error(&self, what: &'static str) -> JsonError {
        JsonError { at: self.i, what }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next_byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    /// PHP's white space: space, tab, CR, LF only.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn scalar(&mut self) -> Result<Vec<u8>, JsonError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null").map(|_| Vec::new()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("a value was expected")),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<Vec<u8>, JsonError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(word.to_vec())
        } else {
            Err(self.error("not a JSON value"))
        }
    }

    /// `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`, kept as written.
    fn number(&mut self) -> Result<Vec<u8>, JsonError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("a digit was expected")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("a digit was expected after `.`"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("a digit was expected in the exponent"));
            }
            self.digits();
        }
        Ok(self.b[start..self.i].to_vec())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    /// A string, escapes decoded; raw control bytes, invalid UTF-8 and lone
    /// surrogates are errors, as in PHP.
    fn string(&mut self) -> Result<Vec<u8>, JsonError> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            // Copy a run of plain bytes at once.
            let run = self.b[self.i..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .map_or(self.b.len(), |p| self.i + p);
            let plain = &self.b[self.i..run];
            if std::str::from_utf8(plain).is_err() {
                return Err(self.error("invalid UTF-8 in a string"));
            }
            out.extend_from_slice(plain);
            self.i = run;
            match self.next_byte() {
                Some(b'"') => return Ok(out),
                Some(b'\\') => {
                    let escaped = match self.next_byte() {
                        Some(b'"') => b'"',
                        Some(b'\\') => b'\\',
                        Some(b'/') => b'/',
                        Some(b'b') => 0x08,
                        Some(b'f') => 0x0c,
                        Some(b'n') => b'\n',
                        Some(b'r') => b'\r',
                        Some(b't') => b'\t',
                        Some(b'u') => {
                            let c = self.unicode()?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return Err(self.error("unknown escape")),
                    };
                    out.push(escaped);
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .b
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.error("short \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.error("bad \\u escape"))?;
        let v = u32::from_str_radix(text, 16).map_err(|_| self.error("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }

    fn unicode(&mut self) -> Result<char, JsonError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                    return Err(self.error("single unpaired UTF-16 surrogate"));
                }
                self.i += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(self.error("single unpaired UTF-16 surrogate"));
                }
                0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("single unpaired UTF-16 surrogate")),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.error("bad \\u escape"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(body: &str) -> Vec<(String, String)> {
        flatten(body.as_bytes(), 10_000)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn leaves_are_named_by_path_in_document_order() {
        assert_eq!(
            leaves(
                r#"{"billing":{"first_name":"O'Brien"},"items":[{"id":5}],"ok":true,"n":null,"z":"1","a":{"k":"<x>","k":"2"},"f":[1.5e300,-0.25]}"#
            ),
            [
                ("json.billing.first_name", "O'Brien"),
                ("json.items.0.id", "5"),
                ("json.ok", "true"),
                ("json.n", ""),
                ("json.z", "1"),
                ("json.a.k", "<x>"),
                ("json.a.k", "2"),
                ("json.f.0", "1.5e300"),
                ("json.f.1", "-0.25"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            leaves(r#""top""#),
            [("json".to_string(), "top".to_string())]
        );
        assert_eq!(leaves("[]"), []);
        assert_eq!(leaves(" {} "), []);
        assert_eq!(
            leaves(r#"{"":1}"#),
            [("json.".to_string(), "1".to_string())]
        );
        assert_eq!(
            leaves(r#"["\u00e9\ud83d\ude00\n\u0000"]"#),
            [("json.0".to_string(), "é😀\n\0".to_string())]
        );
    }

    #[test]
    fn what_php_accepts_is_read() {
        for ok in [
            "1e400",
            "-1e400",
            "9223372036854775808",
            "-0",
            "[[[1]]]",
            "\t[1]\r\n",
        ] {
            assert!(flatten(ok.as_bytes(), 100).is_ok(), "{ok}");
        }
        let deep = format!("{}1{}", "[".repeat(511), "]".repeat(511));
        assert!(flatten(deep.as_bytes(), 100).is_ok(), "511 levels, as PHP");
    }

    #[test]
    fn what_php_refuses_is_an_error() {
        for bad in [
            "",
            " ",
            "{broken",
            r#"{"a":1} x"#,
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "+1",
            "NaN",
            "TRUE",
            "[1}",
            "'a'",
            "\"\\ud800\"",
            "\"\\udc00x\"",
            "\"a\u{1}\"",
            "\u{feff}1",
            "\x0c1",
            "/*c*/1",
            "\"\\x\"",
            "{\"a\" 1}",
            "[1 2]",
        ] {
            assert!(flatten(bad.as_bytes(), 100).is_err(), "{bad:?}");
        }
        assert!(flatten(b"\"\xff\"", 100).is_err(), "invalid UTF-8");
        let deeper = format!("{}1{}", "[".repeat(512), "]".repeat(512));
        assert!(flatten(deeper.as_bytes(), 100).is_err());
        let huge = "[".repeat(1_000_000);
        assert!(flatten(huge.as_bytes(), 100).is_err(), "no stack overflow");
        assert!(flatten(b"[1,2,3]", 2).is_err(), "leaf limit");
    }
}
