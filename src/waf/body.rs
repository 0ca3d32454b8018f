//! Request body processors: url-encoded forms, multipart forms, JSON and XML
//! turned into named values the rules inspect. Malformed bodies never fail
//! the request here; they set an error the rules (and the policy) act on.

/// Name/value pairs, names decoded to text, values kept as bytes.
pub type Pairs = Vec<(String, Vec<u8>)>;

/// Decodes `%XX` and `+`; returns whether an invalid escape was seen.
pub fn url_decode(input: &[u8], plus_is_space: bool) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(input.len());
    let mut invalid = false;
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                match (hex(input.get(i + 1)), hex(input.get(i + 2))) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => {
                        invalid = true;
                        out.push(b'%');
                    }
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    (out, invalid)
}

/// `a=1&b=2` pairs (query strings and url-encoded bodies).
pub fn urlencoded(input: &[u8]) -> (Pairs, bool) {
    let mut pairs = Vec::new();
    let mut invalid = false;
    for part in input.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match part.iter().position(|b| *b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &b""[..]),
        };
        let (name, bad_name) = url_decode(name, true);
        let (value, bad_value) = url_decode(value, true);
        invalid |= bad_name || bad_value;
        pairs.push((String::from_utf8_lossy(&name).into_owned(), value));
    }
    (pairs, invalid)
}

/// Cookie header pairs: `a=1; b=2` (not decoded, as ModSecurity keeps them).
pub fn cookies(header: &[u8], into: &mut Pairs) {
    for part in header.split(|b| *b == b';') {
        let part = trim(part);
        if part.is_empty() {
            continue;
        }
        let (name, value) = match part.iter().position(|b| *b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &b""[..]),
        };
        into.push((
            String::from_utf8_lossy(trim(name)).into_owned(),
            value.to_vec(),
        ));
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}

/// What a multipart body holds.
#[derive(Debug, Default, Clone)]
pub struct Multipart {
    pub fields: Pairs,
    /// (field name, file name)
    pub files: Pairs,
    /// (field name, size)
    pub file_sizes: Vec<(String, usize)>,
    /// (field name, whole header line)
    pub part_headers: Pairs,
    pub strict_error: bool,
    pub unmatched_boundary: bool,
    /// What was odd, for `REQBODY_ERROR_MSG`.
    pub error: Option<String>,
    /// Rempart could not read the body as PHP would (a part over its limits):
    /// the request is refused rather than passed half read.
    pub unreadable: bool,
}

/// Values kept at most from one body (JSON leaves, XML values): past it the
/// body is refused as too large to inspect, never half read.
pub const MAX_VALUES: usize = 100_000;

impl Multipart {
    /// Adds what the streaming parser found.
    pub fn add(&mut self, event: crate::util::multipart::Event) {
        use crate::util::multipart::Event;
        match event {
            Event::Field {
                name,
                value,
                headers,
            } => {
                let name = String::from_utf8_lossy(&name).into_owned();
                for h in headers {
                    self.part_headers.push((name.clone(), h));
                }
                self.fields.push((name, value));
            }
            Event::FileStart {
                name,
                filename,
                headers,
            } => {
                // PHP numbers a file part without a name.
                let name = match name {
                    Some(n) => String::from_utf8_lossy(&n).into_owned(),
                    None => self.files.len().to_string(),
                };
                for h in headers {
                    self.part_headers.push((name.clone(), h));
                }
                self.files.push((name.clone(), filename));
                self.file_sizes.push((name, 0));
            }
            Event::FileEnd { size } => {
                if let Some(last) = self.file_sizes.last_mut() {
                    last.1 = usize::try_from(size).unwrap_or(usize::MAX);
                }
            }
        }
    }

    /// The parser's flags and stop reason, once the body has ended.
    pub fn close(&mut self, parser: &crate::util::multipart::Parser) {
        let odd = &parser.oddities;
        self.strict_error |= odd.strict || odd.after_close || odd.unmatched_boundary;
        self.unmatched_boundary |= odd.unmatched_boundary;
        if let Some(stop) = parser.stopped() {
            self.strict_error = true;
            self.error = Some(stop.to_string());
            self.unreadable = !matches!(stop, crate::util::multipart::Stop::Garbled);
        }
    }
}

/// The boundary PHP takes from a multipart Content-Type.
pub fn boundary(content_type: &[u8]) -> Option<Vec<u8>> {
    crate::util::multipart::boundary(content_type)
}

/// Parses a whole `multipart/form-data` body as PHP does.
pub fn multipart(body: &[u8], boundary: &[u8]) -> Multipart {
    let (events, parser) = crate::util::multipart::parse_all(body, boundary, usize::MAX);
    let mut out = Multipart::default();
    for e in events {
        out.add(e);
    }
    out.close(&parser);
    // A body that ended mid-part, or a garbled part, is an error PHP also
    // notices (it stops there); a body with no parts at all is one PHP
    // reads as empty.
    if out.error.is_none() && out.unmatched_boundary {
        out.error = Some(if out.fields.is_empty() && out.files.is_empty() {
            "multipart: no boundary found".into()
        } else {
            "multipart: final boundary missing".into()
        });
    }
    out
}

/// JSON leaves as `json.a.b` / `json.list.0` pairs (ModSecurity's naming),
/// in document order, read as PHP's `json_decode` reads the body (see
/// `util::json`); a key given twice gives two pairs.
pub fn json(body: &[u8]) -> Result<Pairs, String> {
    crate::util::json::flatten(body, MAX_VALUES).map_err(|e| e.to_string())
}

/// (text nodes, attribute values)
pub type XmlValues = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// XML text segments and attribute values (what `XML:/*` and `XML://@*`
/// hold), read as PHP's XML parser reads them (see `util::xml`).
pub fn xml(body: &[u8]) -> Result<XmlValues, String> {
    crate::util::xml::parse(body, MAX_VALUES).map(|v| (v.texts, v.attributes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn url_encoded_pairs_and_errors() {
        let (pairs, bad) = urlencoded(b"a=1+2&b=%27x%27&flag&c=%zz");
        assert_eq!(pairs[0], ("a".into(), b"1 2".to_vec()));
        assert_eq!(pairs[1], ("b".into(), b"'x'".to_vec()));
        assert_eq!(pairs[2], ("flag".into(), Vec::new()));
        assert_eq!(pairs[3].1, b"%zz");
        assert!(bad);
    }

    #[test]
    fn cookie_pairs() {
        let mut out = Vec::new();
        cookies(b"sbjs_current=typ%3Dtypein; session ; a=b=c", &mut out);
        assert_eq!(out[0], ("sbjs_current".into(), b"typ%3Dtypein".to_vec()));
        assert_eq!(out[1], ("session".into(), Vec::new()));
        assert_eq!(out[2], ("a".into(), b"b=c".to_vec()));
    }

    #[test]
    fn multipart_fields_files_and_flags() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nhello\r\n--XX\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"shell.php\"\r\nContent-Type: text/plain\r\n\r\n<?php ?>\r\n--XX--\r\n";
        let m = multipart(body, b"XX");
        assert_eq!(m.fields, vec![("comment".to_string(), b"hello".to_vec())]);
        assert_eq!(m.files, vec![("upload".to_string(), b"shell.php".to_vec())]);
        assert_eq!(m.file_sizes, vec![("upload".to_string(), 8)]);
        assert!(!m.strict_error && !m.unmatched_boundary, "{m:?}");
        assert_eq!(m.part_headers.len(), 3);

        let broken = multipart(
            b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end",
            b"XX",
        );
        assert!(broken.unmatched_boundary && broken.strict_error);
        assert_eq!(broken.fields[0].1, b"no end");
        assert!(multipart(b"garbage", b"XX").unmatched_boundary);
        assert_eq!(
            boundary(b"multipart/form-data; boundary=\"abc\""),
            Some(b"abc".to_vec())
        );
        assert_eq!(boundary(b"multipart/form-data"), None);
    }

    #[test]
    fn json_and_xml_go_through_php_readers() {
        let pairs = json(br#"{"a":{"k":"<x>","k":"2"},"f":[1e400]}"#).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[2], ("json.f.0".to_string(), b"1e400".to_vec()));
        assert!(json(b"{broken").is_err());
        let (texts, attrs) = xml(b"<a x=\"1\"><b>system<!---->.multicall</b></a>").unwrap();
        assert_eq!(texts, vec![b"system.multicall".to_vec()]);
        assert_eq!(attrs, vec![b"1".to_vec()]);
    }
}
