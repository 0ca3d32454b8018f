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
#[derive(Debug, Default)]
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
    pub error: Option<String>,
}

/// The boundary parameter of a multipart Content-Type.
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

/// Parses `multipart/form-data` (RFC 7578) leniently, flagging anything odd.
pub fn multipart(body: &[u8], boundary: &str) -> Multipart {
    let mut out = Multipart::default();
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let Some(first) = find(body, delimiter, 0) else {
        out.unmatched_boundary = true;
        out.strict_error = true;
        out.error = Some("multipart: no boundary found".into());
        return out;
    };
    if first != 0 && !body[..first].iter().all(|b| b.is_ascii_whitespace()) {
        out.strict_error = true;
    }
    let mut pos = first + delimiter.len();
    let mut closed = false;
    loop {
        if body[pos..].starts_with(b"--") {
            closed = true;
            break;
        }
        // The rest of the boundary line.
        let Some(line_end) = find(body, b"\n", pos) else {
            break;
        };
        if !body[pos..line_end]
            .iter()
            .all(|b| *b == b'\r' || *b == b' ' || *b == b'\t')
        {
            out.strict_error = true;
        }
        if line_end == 0 || body[line_end - 1] != b'\r' {
            out.strict_error = true;
        }
        let headers_start = line_end + 1;
        let (headers_end, content_start) = match find(body, b"\r\n\r\n", headers_start) {
            Some(end) => (end, end + 4),
            None => match find(body, b"\n\n", headers_start) {
                Some(end) => {
                    out.strict_error = true;
                    (end, end + 2)
                }
                None => {
                    out.strict_error = true;
                    out.error = Some("multipart: part headers never end".into());
                    break;
                }
            },
        };
        let next = find(body, delimiter, content_start);
        let content_end = match next {
            Some(n) => {
                let mut end = n;
                if end > content_start && body[end - 1] == b'\n' {
                    end -= 1;
                    if end > content_start && body[end - 1] == b'\r' {
                        end -= 1;
                    }
                } else {
                    out.strict_error = true;
                }
                end
            }
            None => body.len(),
        };
        let headers = &body[headers_start..headers_end.max(headers_start)];
        let content =
            &body[content_start.min(body.len())..content_end.max(content_start).min(body.len())];
        part(&mut out, headers, content);
        match next {
            Some(n) => pos = n + delimiter.len(),
            None => break,
        }
        if pos >= body.len() {
            break;
        }
    }
    if !closed {
        out.unmatched_boundary = true;
        out.strict_error = true;
        out.error
            .get_or_insert_with(|| "multipart: final boundary missing".into());
    }
    out
}

fn part(out: &mut Multipart, headers: &[u8], content: &[u8]) {
    let text = String::from_utf8_lossy(headers);
    let mut name = None;
    let mut filename = None;
    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    for line in &lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            out.strict_error = true; // folded header lines
        }
        let Some((key, value)) = line.split_once(':') else {
            if !line.trim().is_empty() {
                out.strict_error = true;
            }
            continue;
        };
        if key.trim().eq_ignore_ascii_case("content-disposition") {
            let params = split_params(value);
            let mut params = params.iter().map(String::as_str);
            if !params
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("form-data"))
            {
                out.strict_error = true;
            }
            for param in params {
                let Some((k, v)) = param.split_once('=') else {
                    out.strict_error = true;
                    continue;
                };
                let v = v.trim();
                let unquoted = match v.strip_prefix('"') {
                    Some(rest) => match rest.strip_suffix('"') {
                        Some(inner) => inner.to_string(),
                        None => {
                            out.strict_error = true;
                            rest.to_string()
                        }
                    },
                    None => v.to_string(),
                };
                if unquoted.contains('\'') || unquoted.contains('\\') {
                    // Quotes and backslashes inside names are evasion attempts.
                    out.strict_error = true;
                }
                match k.trim().to_ascii_lowercase().as_str() {
                    "name" => name = Some(unquoted),
                    "filename" | "filename*" => filename = Some(unquoted),
                    _ => {}
                }
            }
        }
    }
    let Some(name) = name else {
        out.strict_error = true;
        return;
    };
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        out.part_headers
            .push((name.clone(), line.as_bytes().to_vec()));
    }
    match filename {
        Some(file) => {
            out.files.push((name.clone(), file.into_bytes()));
            out.file_sizes.push((name, content.len()));
        }
        None => out.fields.push((name, content.to_vec())),
    }
}

/// Splits `form-data; name="a;b"; filename=x` on `;` outside double quotes.
fn split_params(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        match c {
            ';' if !quoted => out.push(String::new()),
            _ => {
                if c == '"' && !escaped {
                    quoted = !quoted;
                }
                escaped = c == '\\' && !escaped;
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// JSON leaves as `json.a.b` / `json.list.0` pairs (ModSecurity's naming),
/// in document order; a key given twice gives two pairs (the rules see
/// both, whichever one the application keeps). Read as it is parsed, with
/// no tree in between; serde_json's depth limit stops deep nesting.
pub fn json(body: &[u8]) -> Result<Pairs, String> {
    let error = |e: serde_json::Error| format!("JSON parsing error: {e}");
    let mut out = Vec::new();
    let mut key = "json".to_string();
    let mut parser = serde_json::Deserializer::from_slice(body);
    serde::de::DeserializeSeed::deserialize(
        Flatten {
            key: &mut key,
            out: &mut out,
        },
        &mut parser,
    )
    .map_err(error)?;
    parser.end().map_err(error)?;
    Ok(out)
}

/// Adds the leaves of one JSON value to `out`. `key` is the path so far
/// (`json.a.0.b`), extended in place for each member and cut back after
/// it: one copy per leaf, not per level.
struct Flatten<'a> {
    key: &'a mut String,
    out: &'a mut Pairs,
}

impl Flatten<'_> {
    fn leaf(self, value: Vec<u8>) {
        self.out.push((self.key.clone(), value));
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, parser: D) -> Result<(), D::Error> {
        parser.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.leaf(v.to_string().into_bytes());
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.leaf(v.to_string().into_bytes());
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.leaf(v.to_string().into_bytes());
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // Written as serde_json writes it (`1e20`, not Rust's long form).
        let text = serde_json::Number::from_f64(v).map_or_else(String::new, |n| n.to_string());
        self.leaf(text.into_bytes());
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.leaf(v.as_bytes().to_vec());
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.leaf(v.into_bytes());
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.leaf(Vec::new());
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.key.len();
        loop {
            self.key.push('.');
            if map.next_key_seed(KeyInto(self.key))?.is_none() {
                break;
            }
            map.next_value_seed(Flatten {
                key: self.key,
                out: self.out,
            })?;
            self.key.truncate(at);
        }
        self.key.truncate(at);
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let at = self.key.len();
        for i in 0.. {
            self.key.push('.');
            self.key.push_str(&i.to_string());
            let item = Flatten {
                key: self.key,
                out: self.out,
            };
            let more = items.next_element_seed(item)?.is_some();
            self.key.truncate(at);
            if !more {
                break;
            }
        }
        Ok(())
    }
}

/// A member's name, appended to the path being built.
struct KeyInto<'a>(&'a mut String);

impl<'de> serde::de::DeserializeSeed<'de> for KeyInto<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, parser: D) -> Result<(), D::Error> {
        parser.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

/// (text nodes, attribute values)
pub type XmlValues = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// XML text nodes and attribute values (what `XML:/*` and `XML://@*` hold).
/// A light scanner, not a validating parser: markup that does not close is an error.
pub fn xml(body: &[u8]) -> Result<XmlValues, String> {
    let mut texts = Vec::new();
    let mut attributes = Vec::new();
    let mut i = 0;
    let mut saw_element = false;
    while i < body.len() {
        if body[i..].starts_with(b"<![CDATA[") {
            // CDATA is text: hiding a payload in it must not hide it from rules.
            let start = i + 9;
            let Some(end) = find(body, b"]]>", start) else {
                return Err("XML parsing error: unclosed CDATA".into());
            };
            let text = trim(&body[start..end]);
            if !text.is_empty() {
                texts.push(text.to_vec());
            }
            i = end + 3;
        } else if body[i] == b'<' {
            let Some(end) = find(body, b">", i) else {
                return Err("XML parsing error: unclosed markup".into());
            };
            let tag = &body[i + 1..end];
            if tag
                .first()
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            {
                saw_element = true;
                attribute_values(tag, &mut attributes);
            }
            i = end + 1;
        } else {
            let end = body[i..]
                .iter()
                .position(|b| *b == b'<')
                .map_or(body.len(), |p| p + i);
            let text = trim(&body[i..end]);
            if !text.is_empty() {
                texts.push(text.to_vec());
            }
            i = end;
        }
    }
    if !saw_element {
        return Err("XML parsing error: no element".into());
    }
    Ok((texts, attributes))
}

fn attribute_values(tag: &[u8], out: &mut Vec<Vec<u8>>) {
    let mut i = 0;
    while i < tag.len() {
        if tag[i] == b'"' || tag[i] == b'\'' {
            let quote = tag[i];
            let start = i + 1;
            let end = tag[start..]
                .iter()
                .position(|b| *b == quote)
                .map_or(tag.len(), |p| p + start);
            out.push(tag[start..end].to_vec());
            i = end + 1;
        } else {
            i += 1;
        }
    }
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
        let m = multipart(body, "XX");
        assert_eq!(m.fields, vec![("comment".to_string(), b"hello".to_vec())]);
        assert_eq!(m.files, vec![("upload".to_string(), b"shell.php".to_vec())]);
        assert_eq!(m.file_sizes, vec![("upload".to_string(), 8)]);
        assert!(!m.strict_error && !m.unmatched_boundary, "{m:?}");
        assert_eq!(m.part_headers.len(), 3);

        let broken = multipart(
            b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end",
            "XX",
        );
        assert!(broken.unmatched_boundary && broken.strict_error);
        assert_eq!(broken.fields[0].1, b"no end");
        assert!(multipart(b"garbage", "XX").unmatched_boundary);
        assert!(
            multipart(
                b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n",
                "XX"
            )
            .strict_error
        );
        assert_eq!(
            boundary("multipart/form-data; boundary=\"abc\""),
            Some("abc".into())
        );
        assert_eq!(boundary("multipart/form-data"), None);
    }

    #[test]
    fn quoted_semicolons_stay_in_names() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"fi;le\"; filename=\"a;b\"\r\n\r\nx\r\n--XX--";
        let m = multipart(body, "XX");
        assert_eq!(m.files, vec![("fi;le".to_string(), b"a;b".to_vec())]);
    }

    #[test]
    fn json_leaves_are_named_by_path() {
        let pairs =
            json(br#"{"billing":{"first_name":"O'Brien"},"items":[{"id":5}],"ok":true,"n":null}"#)
                .unwrap();
        assert!(pairs.contains(&("json.billing.first_name".into(), b"O'Brien".to_vec())));
        assert!(pairs.contains(&("json.items.0.id".into(), b"5".to_vec())));
        assert!(pairs.contains(&("json.ok".into(), b"true".to_vec())));
        assert!(pairs.contains(&("json.n".into(), Vec::new())));
        // Document order; a repeated key is inspected both times.
        let pairs = json(br#"{"z":"1","a":{"k":"<x>","k":"2"},"f":[1.5e300,-0.25]}"#).unwrap();
        let named: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
        assert_eq!(
            named,
            [
                ("json.z", &b"1"[..]),
                ("json.a.k", b"<x>"),
                ("json.a.k", b"2"),
                ("json.f.0", b"1.5e+300"),
                ("json.f.1", b"-0.25"),
            ]
        );
        assert_eq!(
            json(br#""top""#).unwrap(),
            [("json".into(), b"top".to_vec())]
        );
        assert!(json(br#"{"a":1} x"#).is_err(), "trailing text is an error");
        assert!(json(b"{broken").is_err());
        let deep = "[".repeat(5000);
        assert!(
            json(deep.as_bytes()).is_err(),
            "deep nesting is an error, not a stack overflow"
        );
    }

    #[test]
    fn xml_texts_and_attributes() {
        let (texts, attrs) =
            xml(b"<?xml version=\"1.0\"?><a x=\"1\"><b>hi</b> <c>there</c></a>").unwrap();
        assert_eq!(texts, vec![b"hi".to_vec(), b"there".to_vec()]);
        assert_eq!(attrs, vec![b"1".to_vec()]);
        assert!(xml(b"<a").is_err());
        let (texts, _) = xml(b"<a><![CDATA[<b>system.multicall</b>]]></a>").unwrap();
        assert_eq!(texts, vec![b"<b>system.multicall</b>".to_vec()]);
        assert!(xml(b"just text").is_err());
    }
}
