//! `multipart/form-data` bodies as PHP reads them (`main/rfc1867.c`),
//! streamed: the body is fed in chunks as it arrives and the parser reports
//! fields and files as it finds them, holding only the line or part header
//! it is reading. Field values are handed out whole (bounded by the
//! caller), file contents only as sizes, so a large upload never has to be
//! held in memory to know every field PHP will see.
//!
//! PHP's reading, which differs from RFC 7578 in ways an attacker can use:
//! - the boundary comes from the first `boundary` in the header, searched
//!   case-sensitively first (see [`boundary`]);
//! - a part starts at a line *exactly* equal to `--B` (one CR before the LF
//!   removed); anything else is skipped, and `--B--` does not end the body:
//!   parts after it are read;
//! - a part's data ends at the first `\n--B` (a prefix: `\n--Bjunk` ends it
//!   too, and the rest up to the next `--B` line is dropped), one CR removed;
//! - lines are cut at 5120 bytes and the rest read as the next line;
//! - header lines starting with white space or without `:` continue the
//!   previous header; the first `Content-Disposition` counts; in it only
//!   `name` and `filename` (last one wins) matter, quotes may be `"` or `'`;
//! - a part with a `filename` is a file, even an empty one; a part with
//!   neither `name` nor `filename` aborts the rest of the body.

/// PHP's line buffer (`FILLUNIT`).
const FILLUNIT: usize = 5120;
/// Bytes of header lines kept for one part; more is not a form a browser
/// sends, and is refused.
pub const MAX_PART_HEADERS: usize = 16 << 10;

/// The boundary PHP takes from a `Content-Type` header, or `None` when PHP
/// finds none (it then parses nothing).
pub fn boundary(content_type: &[u8]) -> Option<Vec<u8>> {
    let ct = content_type.split(|b| *b == 0).next().unwrap_or_default();
    let at = find(ct, b"boundary", 0).or_else(|| {
        let lower = ct.to_ascii_lowercase();
        find(&lower, b"boundary", 0)
    })?;
    let eq = ct[at..].iter().position(|b| *b == b'=')? + at;
    let rest = &ct[eq + 1..];
    let value = if let Some(quoted) = rest.strip_prefix(b"\"") {
        let end = quoted.iter().position(|b| *b == b'"')?;
        &quoted[..end]
    } else {
        let end = rest
            .iter()
            .position(|b| *b == b',' || *b == b';')
            .unwrap_or(rest.len());
        &rest[..end]
    };
    // PHP refuses boundaries over FILLUNIT - 4 bytes (CVE-2024-8925); an
    // empty one could never match a line.
    (!value.is_empty() && value.len() <= FILLUNIT - 4).then(|| value.to_vec())
}

/// What the parser found, in body order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A form field, whole (its name as sent in `name=`, not yet PHP's
    /// variable name) and its header lines.
    Field {
        name: Vec<u8>,
        value: Vec<u8>,
        headers: Vec<Vec<u8>>,
    },
    /// A file part has begun.
    FileStart {
        /// `None` for a file part without `name` (PHP numbers it).
        name: Option<Vec<u8>>,
        filename: Vec<u8>,
        headers: Vec<Vec<u8>>,
    },
    /// A file part has ended, with its size.
    FileEnd { size: u64 },
}

/// Why the parser stopped reading, when it did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    #[error("multipart: a part has neither name nor filename (PHP stops reading here)")]
    Garbled,
    #[error("multipart: a field is larger than the inspection limit")]
    FieldTooLarge,
    #[error("multipart: part headers larger than 16KiB")]
    HeadersTooLarge,
}

/// Oddities a browser never sends, for `MULTIPART_STRICT_ERROR`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Oddities {
    /// Text before the first boundary, lines skipped between parts, a part
    /// without Content-Disposition, a folded header, lines cut at 5120 bytes.
    pub strict: bool,
    /// No `--B` line at all, or the body ended inside a part.
    pub unmatched_boundary: bool,
    /// Parts after a `--B--` line.
    pub after_close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading lines until one is exactly `--B`.
    FindBoundary,
    /// Reading a part's header lines until an empty one.
    Headers,
    /// Reading a part's data until `\n--B`.
    Data,
    /// Stopped (garbled, or over a limit).
    Done,
}

/// The streaming parser.
#[derive(Debug)]
pub struct Parser {
    delimiter: Vec<u8>,
    /// `\n--B`: what ends a part's data.
    next: Vec<u8>,
    bufsize: usize,
    state: State,
    /// The line being read (line states), without its `\n`.
    line: Vec<u8>,
    headers: Vec<Vec<u8>>,
    header_bytes: usize,
    /// The part being read: `Some(name)` for a field, `None` for a file.
    field: Option<Vec<u8>>,
    value: Vec<u8>,
    file_size: u64,
    /// Data held back because it may begin `\n--B`.
    pending: Vec<u8>,
    max_field: usize,
    /// Past `max_field`, keep the start of a field and read on (instead of
    /// stopping).
    truncate: bool,
    pub oddities: Oddities,
    seen_boundary: bool,
    seen_close: bool,
    stop: Option<Stop>,
}

impl Parser {
    /// A parser for `boundary`; a field longer than `max_field` bytes stops it.
    pub fn new(boundary: &[u8], max_field: usize) -> Parser {
        let mut delimiter = b"--".to_vec();
        delimiter.extend_from_slice(boundary);
        let mut next = b"\n".to_vec();
        next.extend_from_slice(&delimiter);
        Parser {
            bufsize: FILLUNIT.max(boundary.len() + 6),
            delimiter,
            next,
            state: State::FindBoundary,
            line: Vec::new(),
            headers: Vec::new(),
            header_bytes: 0,
            field: None,
            value: Vec::new(),
            file_size: 0,
            pending: Vec::new(),
            max_field,
            truncate: false,
            oddities: Oddities::default(),
            seen_boundary: false,
            seen_close: false,
            stop: None,
        }
    }

    /// A parser that keeps only the first `keep` bytes of each field and
    /// reads every part to the end (for readers that need names, not whole
    /// values).
    pub fn truncating(boundary: &[u8], keep: usize) -> Parser {
        let mut p = Parser::new(boundary, keep);
        p.truncate = true;
        p
    }

    /// Whether the parser is inside a file part's data: every part before
    /// it has been read whole.
    pub fn in_file_data(&self) -> bool {
        self.state == State::Data && self.field.is_none()
    }

    /// Why it stopped, if it did.
    pub fn stopped(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    /// Feeds the next bytes of the body; found fields and files go to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) {
        // Data held back at the end of the last chunk is read again first.
        let joined;
        let mut input: &[u8] = if self.pending.is_empty() {
            chunk
        } else {
            let mut j = std::mem::take(&mut self.pending);
            j.extend_from_slice(chunk);
            joined = j;
            &joined
        };
        while !input.is_empty() {
            match self.state {
                State::Done => return,
                State::Data => input = self.data(input, out),
                State::FindBoundary | State::Headers => {
                    let room = self.bufsize - self.line.len();
                    match input.iter().take(room).position(|b| *b == b'\n') {
                        Some(nl) => {
                            self.line.extend_from_slice(&input[..nl]);
                            input = &input[nl + 1..];
                            if self.line.last() == Some(&b'\r') {
                                self.line.pop();
                            }
                            let line = std::mem::take(&mut self.line);
                            self.on_line(line, out);
                        }
                        None if input.len() >= room => {
                            // A line of `bufsize` bytes without LF: PHP hands
                            // it over as it is and reads the rest as a new line.
                            self.line.extend_from_slice(&input[..room]);
                            input = &input[room..];
                            self.oddities.strict = true;
                            let line = std::mem::take(&mut self.line);
                            self.on_line(line, out);
                        }
                        None => {
                            self.line.extend_from_slice(input);
                            input = &[];
                        }
                    }
                }
            }
        }
    }

    /// The body has ended.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        match self.state {
            State::Data => {
                // PHP drops a trailing partial `\n--B` at the end, and keeps
                // the rest: an open field gets everything up to the end.
                let mut tail = std::mem::take(&mut self.pending);
                let partial = tail.strip_prefix(b"\r").unwrap_or(&tail);
                if !partial.is_empty() && self.next.starts_with(partial) {
                    tail.clear();
                }
                self.emit_data(&tail);
                self.end_part(out);
                self.oddities.unmatched_boundary = true;
            }
            State::Headers | State::FindBoundary => {
                if !self.line.is_empty() {
                    let line = std::mem::take(&mut self.line);
                    self.on_line(line, out);
                }
                if self.state == State::Headers {
                    self.oddities.unmatched_boundary = true;
                }
            }
            State::Done => {}
        }
        if !self.seen_boundary {
            self.oddities.unmatched_boundary = true;
        }
        if !self.seen_close {
            self.oddities.strict = true;
        }
        self.state = State::Done;
    }

    fn on_line(&mut self, line: Vec<u8>, out: &mut Vec<Event>) {
        match self.state {
            State::FindBoundary => {
                if line == self.delimiter {
                    self.seen_boundary = true;
                    if self.seen_close {
                        self.oddities.after_close = true;
                    }
                    self.headers.clear();
                    self.header_bytes = 0;
                    self.state = State::Headers;
                } else {
                    if line.len() == self.delimiter.len() + 2
                        && line.starts_with(&self.delimiter)
                        && line.ends_with(b"--")
                    {
                        self.seen_close = true;
                    } else if !line.is_empty() || !self.seen_boundary {
                        self.oddities.strict |= !line.iter().all(u8::is_ascii_whitespace);
                    }
                }
            }
            State::Headers => {
                if line.is_empty() {
                    self.start_part(out);
                    return;
                }
                self.header_bytes += line.len();
                if self.header_bytes > MAX_PART_HEADERS {
                    self.halt(Stop::HeadersTooLarge);
                    return;
                }
                let starts_header =
                    line.first().is_some_and(|b| !is_space(*b)) && line.contains(&b':');
                match self.headers.last_mut() {
                    Some(last) if !starts_header => {
                        // Continuation: appended with no separator.
                        self.oddities.strict = true;
                        last.extend_from_slice(&line);
                    }
                    None if !starts_header => self.oddities.strict = true,
                    _ => self.headers.push(line),
                }
            }
            State::Data | State::Done => {}
        }
    }

    /// The headers are read: a field, a file, a part to skip, or the end.
    fn start_part(&mut self, out: &mut Vec<Event>) {
        let headers = std::mem::take(&mut self.headers);
        let disposition = headers.iter().find_map(|h| {
            let h = h.split(|b| *b == 0).next().unwrap_or_default();
            let colon = h.iter().position(|b| *b == b':')?;
            h[..colon]
                .eq_ignore_ascii_case(b"content-disposition")
                .then(|| trim_start(&h[colon + 1..]).to_vec())
        });
        let Some(disposition) = disposition else {
            // No Content-Disposition: PHP skips the part.
            self.oddities.strict = true;
            self.state = State::FindBoundary;
            return;
        };
        let (name, filename) = disposition_names(&disposition);
        match (name, filename) {
            (None, None) => self.halt(Stop::Garbled),
            (name, Some(filename)) => {
                out.push(Event::FileStart {
                    name,
                    filename,
                    headers,
                });
                self.field = None;
                self.file_size = 0;
                self.state = State::Data;
            }
            (Some(name), None) => {
                self.headers = headers;
                self.field = Some(name);
                self.value.clear();
                self.state = State::Data;
            }
        }
    }

    /// Part data: everything up to `\n--B`; a tail that may be the start
    /// of it is held back for the next chunk. Returns what follows the part.
    fn data<'c>(&mut self, input: &'c [u8], out: &mut Vec<Event>) -> &'c [u8] {
        match find(input, &self.next, 0) {
            Some(at) => {
                let mut data = &input[..at];
                if data.last() == Some(&b'\r') {
                    data = &data[..data.len() - 1];
                }
                self.emit_data(data);
                self.end_part(out);
                if self.state == State::Done {
                    return &[];
                }
                // Line reading resumes at the `\n`: an empty line, then the
                // `--B...` line decides.
                self.state = State::FindBoundary;
                self.line.clear();
                &input[at..]
            }
            None => {
                // Keep the longest tail that could begin `\n--B`, and a CR
                // before it (one CR before the `\n` is not data).
                let mut keep = (1..self.next.len())
                    .rev()
                    .find(|&n| n <= input.len() && self.next.starts_with(&input[input.len() - n..]))
                    .unwrap_or(0);
                if input.len() > keep && input[input.len() - keep - 1] == b'\r' {
                    keep += 1;
                }
                let cut = input.len() - keep;
                self.emit_data(&input[..cut]);
                if self.state != State::Done {
                    self.pending = input[cut..].to_vec();
                }
                &[]
            }
        }
    }

    fn emit_data(&mut self, data: &[u8]) {
        match &self.field {
            Some(_) => {
                if self.value.len() + data.len() > self.max_field {
                    if self.truncate {
                        let room = self.max_field.saturating_sub(self.value.len());
                        self.value.extend_from_slice(&data[..room.min(data.len())]);
                        return;
                    }
                    self.halt(Stop::FieldTooLarge);
                    return;
                }
                self.value.extend_from_slice(data);
            }
            None => self.file_size += data.len() as u64,
        }
    }

    fn end_part(&mut self, out: &mut Vec<Event>) {
        if self.state == State::Done {
            return;
        }
        match self.field.take() {
            Some(name) => out.push(Event::Field {
                name,
                value: std::mem::take(&mut self.value),
                headers: std::mem::take(&mut self.headers),
            }),
            None => out.push(Event::FileEnd {
                size: self.file_size,
            }),
        }
    }

    fn halt(&mut self, why: Stop) {
        self.stop = Some(why);
        self.state = State::Done;
        self.pending.clear();
        self.value.clear();
    }
}

/// `name` and `filename` of a Content-Disposition value, as
/// `php_ap_getword` / `php_ap_getword_conf` read them.
fn disposition_names(cd: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut name = None;
    let mut filename = None;
    let mut rest = cd;
    while !rest.is_empty() {
        let (piece, after) = getword(rest, b';');
        rest = after;
        if !piece.contains(&b'=') {
            continue;
        }
        let (key, value) = getword(piece, b'=');
        let value = getword_conf(value);
        if key.eq_ignore_ascii_case(b"name") {
            name = Some(value);
        } else if key.eq_ignore_ascii_case(b"filename") {
            filename = Some(value);
        }
    }
    (name, filename)
}

/// `php_ap_getword`: the text up to `stop` outside quotes; runs of `stop`
/// and the white space after them are skipped.
fn getword(line: &[u8], stop: u8) -> (&[u8], &[u8]) {
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < line.len() {
        let b = line[i];
        match quote {
            Some(q) => {
                if b == b'\\' && line.get(i + 1) == Some(&q) {
                    i += 2;
                    continue;
                }
                if b == q {
                    quote = None;
                }
            }
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == stop => break,
            None => {}
        }
        i += 1;
    }
    let word = &line[..i.min(line.len())];
    let mut rest = &line[i.min(line.len())..];
    while let Some((&b, r)) = rest.split_first() {
        if b == stop {
            rest = r;
        } else {
            break;
        }
    }
    if stop == b';' {
        rest = trim_start(rest);
    }
    (word, rest)
}

/// `php_ap_getword_conf`: a quoted value (with `\\` and `\<quote>` escapes,
/// anything after the closing quote ignored) or a bare one up to white space.
fn getword_conf(value: &[u8]) -> Vec<u8> {
    let value = trim_start(value);
    let mut out = Vec::new();
    match value.first() {
        Some(&q) if q == b'"' || q == b'\'' => {
            let mut i = 1;
            while i < value.len() {
                let b = value[i];
                if b == b'\\' && matches!(value.get(i + 1), Some(&n) if n == q || n == b'\\') {
                    out.push(value[i + 1]);
                    i += 2;
                    continue;
                }
                if b == q {
                    break;
                }
                out.push(b);
                i += 1;
            }
        }
        _ => {
            let mut i = 0;
            while i < value.len() && !is_space(value[i]) {
                if value[i] == b'\\' && value.get(i + 1) == Some(&b'\\') {
                    out.push(b'\\');
                    i += 2;
                    continue;
                }
                out.push(value[i]);
                i += 1;
            }
        }
    }
    out
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn trim_start(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !is_space(*c)).unwrap_or(b.len());
    &b[start..]
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    memchr::memmem::find(&haystack[from..], needle).map(|p| p + from)
}

/// Parses a whole body at once (tests, small bodies).
pub fn parse_all(body: &[u8], boundary: &[u8], max_field: usize) -> (Vec<Event>, Parser) {
    let mut parser = Parser::new(boundary, max_field);
    let mut out = Vec::new();
    parser.feed(body, &mut out);
    parser.finish(&mut out);
    (out, parser)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &[u8], b: &str) -> Vec<(String, String)> {
        parse_all(body, b.as_bytes(), 1 << 20)
            .0
            .into_iter()
            .filter_map(|e| match e {
                Event::Field { name, value, .. } => Some((
                    String::from_utf8_lossy(&name).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                )),
                _ => None,
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn boundaries_as_php_finds_them() {
        for (ct, expected) in [
            ("multipart/form-data; boundary=abc", Some("abc")),
            ("multipart/form-data; boundary=\"abc\"x", Some("abc")),
            (
                "multipart/form-data; xboundary=zzz; boundary=abc",
                Some("zzz"),
            ),
            (
                "multipart/form-data; Boundary=zzz; boundary=abc",
                Some("abc"),
            ),
            ("multipart/form-data; BOUNDARY=abc", Some("abc")),
            ("multipart/form-data; boundary =abc", Some("abc")),
            ("multipart/form-data; boundary=A,B", Some("A")),
            ("multipart/form-data; boundary=a b", Some("a b")),
            ("multipart/form-data; boundary=\"open", None),
            ("multipart/form-data", None),
        ] {
            assert_eq!(
                boundary(ct.as_bytes())
                    .map(|b| String::from_utf8(b).unwrap())
                    .as_deref(),
                expected,
                "{ct}"
            );
        }
    }

    #[test]
    fn fields_and_files() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nhello\r\n--XX\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"shell.php\"\r\nContent-Type: text/plain\r\n\r\n<?php ?>\r\n--XX--\r\n";
        let (events, p) = parse_all(body, b"XX", 1 << 20);
        assert_eq!(
            events[0],
            Event::Field {
                name: b"comment".to_vec(),
                value: b"hello".to_vec(),
                headers: vec![b"Content-Disposition: form-data; name=\"comment\"".to_vec()]
            }
        );
        assert!(
            matches!(&events[1], Event::FileStart { filename, .. } if filename == b"shell.php")
        );
        assert_eq!(events[2], Event::FileEnd { size: 8 });
        assert_eq!(p.oddities, Oddities::default());
    }

    #[test]
    fn the_boundary_inside_a_line_is_data() {
        let body =
            b"--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nfoo--X bar\r\n--X--\r\n";
        assert_eq!(fields(body, "X"), pairs(&[("a", "foo--X bar")]));
    }

    #[test]
    fn parts_after_the_close_delimiter_are_read() {
        let body = b"--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--X--\r\n--X\r\nContent-Disposition: form-data; name=\"evil\"\r\n\r\nv\r\n--X--";
        let (_, p) = parse_all(body, b"X", 1 << 20);
        assert_eq!(fields(body, "X"), pairs(&[("a", "1"), ("evil", "v")]));
        assert!(p.oddities.after_close);
    }

    #[test]
    fn a_prefix_terminator_ends_the_value_and_drops_the_rest() {
        let body = b"--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--Xjunk\r\nhidden\r\n--X\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n2\r\n--X--";
        assert_eq!(fields(body, "X"), pairs(&[("a", "v"), ("b", "2")]));
    }

    #[test]
    fn dispositions_as_php_reads_them() {
        let part = |cd: &str| -> Vec<(String, String)> {
            let body = format!("--X\r\nContent-Disposition: {cd}\r\n\r\nv\r\n--X--");
            fields(body.as_bytes(), "X")
        };
        assert_eq!(
            part("form-data; name=\"a\\\"b;c\""),
            pairs(&[("a\"b;c", "v")])
        );
        assert_eq!(part("attachment; NaMe=d e"), pairs(&[("d", "v")]));
        assert_eq!(part("name=f"), pairs(&[("f", "v")]));
        assert_eq!(
            part("form-data; name=\"g\"; name=\"h\""),
            pairs(&[("h", "v")])
        );
        assert_eq!(part("form-data; name='j k'"), pairs(&[("j k", "v")]));
        assert_eq!(part("form-data; name=\"o\"junk"), pairs(&[("o", "v")]));
        assert_eq!(
            part("form-data; name=\"unterminated"),
            pairs(&[("unterminated", "v")])
        );
        assert_eq!(
            part("form-data; name=x; filename*=UTF-8''a.txt"),
            pairs(&[("x", "v")])
        );
    }

    #[test]
    fn a_part_without_name_or_filename_stops_the_body() {
        let body = b"--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--X\r\nContent-Disposition: form-data; name =\"x\"\r\n\r\n2\r\n--X\r\nContent-Disposition: form-data; name=\"c\"\r\n\r\n3\r\n--X--";
        let (events, p) = parse_all(body, b"X", 1 << 20);
        assert_eq!(events.len(), 1);
        assert_eq!(p.stopped(), Some(&Stop::Garbled));
    }

    #[test]
    fn long_header_lines_are_cut_as_php_cuts_them() {
        let pad = "p".repeat(FILLUNIT - "X-Pad: ".len());
        let body = format!("--X\r\nContent-Disposition: form-data; name=\"ok\"\r\nX-Pad: {pad}Content-Disposition: form-data; name=\"evil\"\r\n\r\nv\r\n--X--");
        // The cut line is read as its own header; the first disposition wins.
        assert_eq!(fields(body.as_bytes(), "X"), pairs(&[("ok", "v")]));
        let body = format!(
            "--X\r\nX-Pad: {pad}Content-Disposition: form-data; name=\"evil\"\r\n\r\nv\r\n--X--"
        );
        assert_eq!(fields(body.as_bytes(), "X"), pairs(&[("evil", "v")]));
    }

    #[test]
    fn an_open_field_takes_the_rest_of_the_body() {
        let body = b"--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv1\r\nmore";
        let (_, p) = parse_all(body, b"X", 1 << 20);
        assert_eq!(fields(body, "X"), pairs(&[("a", "v1\r\nmore")]));
        assert!(p.oddities.unmatched_boundary);
    }

    #[test]
    fn any_chunking_gives_the_same_reading() {
        let body = b"preamble\r\n--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\n\r\n0123456789\r\n--B--not-a-boundary\r\n--B\r\nContent-Disposition: form-data; name=\"c\"\r\n\r\nlast\n--B--\r\n";
        let (whole, _) = parse_all(body, b"B", 1 << 20);
        for size in 1..body.len() {
            let mut p = Parser::new(b"B", 1 << 20);
            let mut events = Vec::new();
            for c in body.chunks(size) {
                p.feed(c, &mut events);
            }
            p.finish(&mut events);
            assert_eq!(events, whole, "chunks of {size}");
        }
    }

    #[test]
    fn fields_over_the_limit_stop_the_parser() {
        let body = format!(
            "--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n{}\r\n--X--",
            "v".repeat(100)
        );
        let (_, p) = parse_all(body.as_bytes(), b"X", 50);
        assert_eq!(p.stopped(), Some(&Stop::FieldTooLarge));
    }
}
