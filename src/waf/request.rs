//! What the rules see of one request: the ModSecurity collections, filled
//! from the request head and, in phase 2, from the inspected body.

use super::body::{self, Pairs};
use super::rule::Collection;

/// The request head as the proxy received it.
#[derive(Debug, Default, Clone)]
pub struct Head {
    pub method: String,
    /// Path and query exactly as sent.
    pub raw_uri: Vec<u8>,
    /// `HTTP/1.1`, `HTTP/2.0`...
    pub protocol: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub remote_addr: String,
    pub remote_port: u16,
    pub server_port: u16,
    pub request_id: String,
}

/// Whether a body's first byte past white space is `<`.
fn looks_like_xml(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'<')
}

/// Body processors, as `REQBODY_PROCESSOR` names them.
pub const URLENCODED: &str = "URLENCODED";
pub const MULTIPART: &str = "MULTIPART";
pub const JSON: &str = "JSON";
pub const XML: &str = "XML";

/// The collections of one request. Filled by `new` and `set_body` only:
/// they keep `bases` in step with the lists.
#[derive(Debug, Default)]
pub struct RequestData {
    pub head: Head,
    pub line: Vec<u8>,
    pub filename: Vec<u8>,
    pub basename: Vec<u8>,
    pub uri: Vec<u8>,
    pub query: Vec<u8>,
    pub server_name: Vec<u8>,
    pub cookies: Pairs,
    pub args_get: Pairs,
    pub args_post: Pairs,
    pub body: Vec<u8>,
    pub body_length: usize,
    pub processor: Option<String>,
    pub body_error: Option<String>,
    pub urlencoded_error: bool,
    pub multipart: body::Multipart,
    pub xml_texts: Vec<Vec<u8>>,
    pub xml_attributes: Vec<Vec<u8>>,
    pub args_combined_size: usize,
    /// `ctl:forceRequestBodyVariable=On`: `REQUEST_BODY` whatever the processor.
    pub force_body_variable: bool,
    /// By `List`: the list's first `ValueId`; then one past the last.
    bases: [ValueId; List::ALL.len() + 1],
}

impl RequestData {
    pub fn new(head: Head) -> RequestData {
        let mut data = RequestData::default();
        let raw = &head.raw_uri;
        let (path, query) = match raw.iter().position(|b| *b == b'?') {
            Some(q) => (&raw[..q], &raw[q + 1..]),
            None => (&raw[..], &b""[..]),
        };
        // Fragments are never sent by browsers; drop one if a client does.
        let path = path.split(|b| *b == b'#').next().unwrap_or_default();
        let (decoded_path, bad_path) = body::url_decode(path, false);
        data.filename = decoded_path;
        data.basename = match data
            .filename
            .iter()
            .rposition(|b| *b == b'/' || *b == b'\\')
        {
            Some(i) => data.filename[i + 1..].to_vec(),
            None => data.filename.clone(),
        };
        data.uri = data.filename.clone();
        if raw.contains(&b'?') {
            data.uri.push(b'?');
            data.uri.extend_from_slice(query);
        }
        data.query = query.to_vec();
        let (args, bad_query) = body::urlencoded(query);
        data.args_get = args;
        data.urlencoded_error = bad_path || bad_query;
        let mut line = Vec::new();
        line.extend_from_slice(head.method.as_bytes());
        line.push(b' ');
        line.extend_from_slice(raw);
        line.push(b' ');
        line.extend_from_slice(head.protocol.as_bytes());
        data.line = line;
        for (name, value) in &head.headers {
            if name.eq_ignore_ascii_case("cookie") {
                body::cookies(value, &mut data.cookies);
            }
            if name.eq_ignore_ascii_case("host") && data.server_name.is_empty() {
                let host = value.split(|b| *b == b':').next().unwrap_or_default();
                data.server_name = host.to_vec();
            }
        }
        data.head = head;
        data.update_sizes();
        data
    }

    /// The first value of a request header.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.head
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The processor a Content-Type calls for, as the shop reads the body:
    /// the form parsers as PHP picks them (the type cut at `;`, `,` or a
    /// space), JSON as WordPress REST recognises it, XML by its types.
    pub fn processor_for(&self) -> Option<&'static str> {
        use crate::util::content_type::{form_kind, is_xml, wp_is_json, PostKind};
        let ct = self.header("content-type")?;
        match form_kind(ct) {
            Some(PostKind::Urlencoded) => Some(URLENCODED),
            Some(PostKind::Multipart) => Some(MULTIPART),
            None if wp_is_json(ct) => Some(JSON),
            None if is_xml(ct) => Some(XML),
            None => None,
        }
    }

    /// Parses the inspected body with `processor` (or none: raw text only).
    ///
    /// Besides the declared processor, the body is read the way the shop may
    /// read it too: WordPress decodes JSON for any type its test accepts
    /// (`application/x-www-form-urlencoded, application/json` fills both),
    /// and XML-RPC reads an XML document whatever the type, so a body that
    /// starts with `<` also fills the XML collections when it parses.
    pub fn set_body(&mut self, bytes: Vec<u8>, total_length: usize, processor: Option<&str>) {
        self.body_length = total_length;
        match processor {
            Some(URLENCODED) => {
                let (pairs, bad) = body::urlencoded(&bytes);
                self.args_post = pairs;
                self.urlencoded_error |= bad;
                let json_too = self
                    .header("content-type")
                    .is_some_and(crate::util::content_type::wp_is_json);
                if json_too {
                    match body::json(&bytes) {
                        Ok(pairs) => self.args_post.extend(pairs),
                        Err(e) => self.body_error = Some(e),
                    }
                }
            }
            Some(MULTIPART) => {
                let ct = self.header("content-type").unwrap_or_default().to_vec();
                match body::boundary(&ct) {
                    Some(boundary) => {
                        let parsed = body::multipart(&bytes, &boundary);
                        self.set_multipart_parts(parsed);
                    }
                    None => {
                        // PHP parses nothing without a boundary; the raw
                        // body is inspected instead.
                        self.multipart.strict_error = true;
                        self.processor = None;
                        self.body = bytes;
                        self.update_sizes();
                        return;
                    }
                }
            }
            Some(JSON) => match body::json(&bytes) {
                Ok(pairs) => self.args_post = pairs,
                Err(e) => self.body_error = Some(e),
            },
            Some(XML) => match body::xml(&bytes) {
                Ok((texts, attributes)) => {
                    self.xml_texts = texts;
                    self.xml_attributes = attributes;
                }
                Err(e) => self.body_error = Some(e),
            },
            _ => {}
        }
        if processor != Some(XML) && looks_like_xml(&bytes) {
            if let Ok((texts, attributes)) = body::xml(&bytes) {
                self.xml_texts = texts;
                self.xml_attributes = attributes;
            }
        }
        self.processor = processor.map(str::to_string);
        self.body = bytes;
        self.update_sizes();
    }

    /// A multipart body read as it streamed (fields whole, files as names
    /// and sizes); `raw` is what of it is kept for `REQUEST_BODY`.
    pub fn set_multipart(&mut self, parts: body::Multipart, total_length: usize) {
        self.body_length = total_length;
        self.set_multipart_parts(parts);
        self.processor = Some(MULTIPART.to_string());
        self.update_sizes();
    }

    fn set_multipart_parts(&mut self, parts: body::Multipart) {
        // A body cut mid-part or garbled: PHP stops there too, and keeps
        // the fields read so far, which are inspected. Only a body Rempart
        // could not read to its end is an error.
        if parts.unreadable {
            self.body_error = parts.error.clone();
        }
        self.args_post = parts.fields.clone();
        self.multipart = parts;
    }

    /// The number of arguments (query and body), for the policy's cap.
    pub fn args_count(&self) -> usize {
        self.args_get.len() + self.args_post.len()
    }

    fn update_sizes(&mut self) {
        self.args_combined_size = self
            .args_get
            .iter()
            .chain(self.args_post.iter())
            .map(|(n, v)| n.len() + v.len())
            .sum();
        let mut next = SCALARS;
        for (i, list) in List::ALL.into_iter().enumerate() {
            self.bases[i] = next;
            next += self.list_len(list) as ValueId;
        }
        self.bases[List::ALL.len()] = next;
    }

    /// Calls `each(key, value, id)` for every entry of a request collection.
    /// Scalars have an empty key. Returns early when `each` returns false.
    /// Values the request holds (not counts nor lengths) come with their
    /// `ValueId`.
    /// Generic, not `dyn`: each caller's closure is inlined into the walk
    /// (the engine calls it a few thousand times per request).
    pub fn each<F>(&self, collection: Collection, each: &mut F)
    where
        F: FnMut(&str, &[u8], Option<ValueId>) -> bool + ?Sized,
    {
        use Collection::*;
        let pairs = |list: &[(String, Vec<u8>)], base: ValueId, each: &mut F| {
            for ((k, v), id) in list.iter().zip(base..) {
                if !each(k, v, Some(id)) {
                    return false;
                }
            }
            true
        };
        let names = |list: &[(String, Vec<u8>)], base: ValueId, each: &mut F| {
            for ((k, _), id) in list.iter().zip(base..) {
                if !each(k, k.as_bytes(), Some(id)) {
                    return false;
                }
            }
            true
        };
        let number = |n: usize, each: &mut F| {
            each("", n.to_string().as_bytes(), None);
        };
        let scalar = |value: &[u8], id: ValueId, each: &mut F| {
            each("", value, Some(id));
        };
        let base = |list: List| self.base(list);
        match collection {
            Args => {
                if pairs(&self.args_get, base(List::ArgsGet), each) {
                    pairs(&self.args_post, base(List::ArgsPost), each);
                }
            }
            ArgsGet => {
                pairs(&self.args_get, base(List::ArgsGet), each);
            }
            ArgsPost => {
                pairs(&self.args_post, base(List::ArgsPost), each);
            }
            ArgsNames => {
                if names(&self.args_get, base(List::ArgsGetNames), each) {
                    names(&self.args_post, base(List::ArgsPostNames), each);
                }
            }
            ArgsGetNames => {
                names(&self.args_get, base(List::ArgsGetNames), each);
            }
            ArgsPostNames => {
                names(&self.args_post, base(List::ArgsPostNames), each);
            }
            ArgsCombinedSize => number(self.args_combined_size, each),
            RequestCookies => {
                pairs(&self.cookies, base(List::Cookies), each);
            }
            RequestCookiesNames => {
                names(&self.cookies, base(List::CookieNames), each);
            }
            RequestHeaders => {
                pairs(&self.head.headers, base(List::Headers), each);
            }
            RequestHeadersNames => {
                names(&self.head.headers, base(List::HeaderNames), each);
            }
            RequestFilename => scalar(&self.filename, Scalar::Filename as ValueId, each),
            RequestBasename => scalar(&self.basename, Scalar::Basename as ValueId, each),
            RequestUri => scalar(&self.uri, Scalar::Uri as ValueId, each),
            RequestUriRaw => scalar(&self.head.raw_uri, Scalar::UriRaw as ValueId, each),
            RequestLine => scalar(&self.line, Scalar::Line as ValueId, each),
            RequestMethod => {
                each("", self.head.method.as_bytes(), None);
            }
            RequestProtocol => {
                each("", self.head.protocol.as_bytes(), None);
            }
            QueryString => scalar(&self.query, Scalar::Query as ValueId, each),
            // As in ModSecurity, the raw body is a variable when no processor
            // took it apart (or a form's), when parsing failed, or when forced:
            // JSON, XML and multipart are inspected through their parts.
            RequestBody => {
                let raw = self.force_body_variable
                    || self.body_error.is_some()
                    || matches!(self.processor.as_deref(), None | Some(URLENCODED));
                if raw && !self.body.is_empty() {
                    scalar(&self.body, Scalar::Body as ValueId, each);
                }
            }
            RequestBodyLength => number(self.body_length, each),
            ReqbodyProcessor => {
                if let Some(p) = &self.processor {
                    each("", p.as_bytes(), None);
                }
            }
            ReqbodyError => number(usize::from(self.body_error.is_some()), each),
            ReqbodyErrorMsg => {
                each(
                    "",
                    self.body_error.as_deref().unwrap_or("").as_bytes(),
                    None,
                );
            }
            MultipartStrictError => number(usize::from(self.multipart.strict_error), each),
            MultipartUnmatchedBoundary => {
                number(usize::from(self.multipart.unmatched_boundary), each)
            }
            MultipartPartHeaders => {
                pairs(&self.multipart.part_headers, base(List::PartHeaders), each);
            }
            Files => {
                pairs(&self.multipart.files, base(List::Files), each);
            }
            FilesNames => {
                names(&self.multipart.files, base(List::FileNames), each);
            }
            FilesSizes => {
                for (k, size) in &self.multipart.file_sizes {
                    if !each(k, size.to_string().as_bytes(), None) {
                        break;
                    }
                }
            }
            FilesCombinedSize => {
                number(self.multipart.file_sizes.iter().map(|(_, s)| s).sum(), each)
            }
            RemoteAddr => {
                each("", self.head.remote_addr.as_bytes(), None);
            }
            RemotePort => number(self.head.remote_port as usize, each),
            ServerName => {
                each("", &self.server_name, None);
            }
            ServerPort => number(self.head.server_port as usize, each),
            UniqueId => {
                each("", self.head.request_id.as_bytes(), None);
            }
            // `XML:/*` selects the text nodes, `XML://@*` the attribute values.
            Xml => {
                let texts = (self.xml_texts.iter().map(|t| ("/*", t))).zip(base(List::XmlTexts)..);
                let attributes = (self.xml_attributes.iter().map(|a| ("//@*", a)))
                    .zip(base(List::XmlAttributes)..);
                for ((key, value), id) in texts.chain(attributes) {
                    if !each(key, value, Some(id)) {
                        return;
                    }
                }
            }
            FullRequestLength => number(
                self.line.len()
                    + self
                        .head
                        .headers
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 4)
                        .sum::<usize>()
                    + self.body_length,
                each,
            ),
            UrlencodedError => number(usize::from(self.urlencoded_error), each),
            Tx | MatchedVar | MatchedVarName | MatchedVars | MatchedVarsNames => {}
        }
    }

    /// The key and value a `ValueId` of this request numbers, as
    /// `each` hands them out (a name's value is the name itself).
    pub fn value(&self, id: ValueId) -> Option<(&str, &[u8])> {
        const SCALAR_IDS: [Scalar; SCALARS as usize] = [
            Scalar::Filename,
            Scalar::Basename,
            Scalar::Uri,
            Scalar::UriRaw,
            Scalar::Line,
            Scalar::Query,
            Scalar::Body,
        ];
        if let Some(scalar) = SCALAR_IDS.get(id as usize) {
            let value = match scalar {
                Scalar::Filename => &self.filename,
                Scalar::Basename => &self.basename,
                Scalar::Uri => &self.uri,
                Scalar::UriRaw => &self.head.raw_uri,
                Scalar::Line => &self.line,
                Scalar::Query => &self.query,
                Scalar::Body => &self.body,
            };
            return Some(("", value));
        }
        // The last list starting at or before `id` (lists may be empty).
        let index = self
            .bases
            .partition_point(|base| *base <= id)
            .checked_sub(1)?;
        let (list, at) = (*List::ALL.get(index)?, (id - self.bases[index]) as usize);
        let pairs = match list {
            List::Headers | List::HeaderNames => &self.head.headers,
            List::Cookies | List::CookieNames => &self.cookies,
            List::ArgsGet | List::ArgsGetNames => &self.args_get,
            List::ArgsPost | List::ArgsPostNames => &self.args_post,
            List::PartHeaders => &self.multipart.part_headers,
            List::Files | List::FileNames => &self.multipart.files,
            List::XmlTexts => return Some(("/*", self.xml_texts.get(at)?)),
            List::XmlAttributes => return Some(("//@*", self.xml_attributes.get(at)?)),
        };
        let (key, value) = pairs.get(at)?;
        Some(match list {
            List::HeaderNames
            | List::CookieNames
            | List::ArgsGetNames
            | List::ArgsPostNames
            | List::FileNames => (key, key.as_bytes()),
            _ => (key, value),
        })
    }

    fn list_len(&self, list: List) -> usize {
        match list {
            List::Headers | List::HeaderNames => self.head.headers.len(),
            List::Cookies | List::CookieNames => self.cookies.len(),
            List::ArgsGet | List::ArgsGetNames => self.args_get.len(),
            List::ArgsPost | List::ArgsPostNames => self.args_post.len(),
            List::PartHeaders => self.multipart.part_headers.len(),
            List::Files | List::FileNames => self.multipart.files.len(),
            List::XmlTexts => self.xml_texts.len(),
            List::XmlAttributes => self.xml_attributes.len(),
        }
    }

    /// The first `ValueId` of a list's values: the scalars come first, then
    /// each list after the ones before it.
    fn base(&self, list: List) -> ValueId {
        self.bases[list as usize]
    }
}

/// A request value's number, dense over the values one request holds (its
/// path, headers, cookies, arguments...), so that per-request tables are
/// arrays indexed by it. A phase's values keep their numbers for the phase.
pub type ValueId = u32;

/// The single values, numbered first.
enum Scalar {
    Filename,
    Basename,
    Uri,
    UriRaw,
    Line,
    Query,
    Body,
}

const SCALARS: ValueId = Scalar::Body as ValueId + 1;

/// The lists of values, in numbering order.
#[derive(Clone, Copy)]
enum List {
    Headers,
    HeaderNames,
    Cookies,
    CookieNames,
    ArgsGet,
    ArgsGetNames,
    ArgsPost,
    ArgsPostNames,
    PartHeaders,
    Files,
    FileNames,
    XmlTexts,
    XmlAttributes,
}

impl List {
    const ALL: [List; 13] = [
        List::Headers,
        List::HeaderNames,
        List::Cookies,
        List::CookieNames,
        List::ArgsGet,
        List::ArgsGetNames,
        List::ArgsPost,
        List::ArgsPostNames,
        List::PartHeaders,
        List::Files,
        List::FileNames,
        List::XmlTexts,
        List::XmlAttributes,
    ];
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn collect(data: &RequestData, c: Collection) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        data.each(c, &mut |k, v, _| {
            out.push((k.to_string(), v.to_vec()));
            true
        });
        out
    }

    #[test]
    fn head_fills_collections() {
        let data = RequestData::new(Head {
            method: "GET".into(),
            raw_uri: b"/shop/caf%C3%A9/item.php?q=a+b&x=%27".to_vec(),
            protocol: "HTTP/1.1".into(),
            headers: vec![
                ("Host".into(), b"shop.example:8080".to_vec()),
                ("Cookie".into(), b"a=1; sbjs_first=typ%3Dorganic".to_vec()),
            ],
            ..Head::default()
        });
        assert_eq!(data.filename, "/shop/café/item.php".as_bytes());
        assert_eq!(data.basename, b"item.php");
        assert_eq!(data.query, b"q=a+b&x=%27");
        assert_eq!(
            collect(&data, Collection::Args),
            vec![("q".into(), b"a b".to_vec()), ("x".into(), b"'".to_vec())]
        );
        assert_eq!(collect(&data, Collection::ArgsNames)[1].1, b"x");
        assert_eq!(collect(&data, Collection::RequestCookies).len(), 2);
        assert_eq!(data.server_name, b"shop.example");
        assert_eq!(
            data.line,
            b"GET /shop/caf%C3%A9/item.php?q=a+b&x=%27 HTTP/1.1"
        );
        assert_eq!(collect(&data, Collection::RequestBody), vec![]);
    }

    /// Every value a request holds has its own id, the same whichever
    /// collection reads it (ARGS and ARGS_GET share their values); values
    /// made on the spot (counts, lengths) have none.
    #[test]
    fn value_ids_are_dense_and_distinct() {
        let mut data = RequestData::new(Head {
            method: "POST".into(),
            raw_uri: b"/a/b.php?q=1&r=2".to_vec(),
            protocol: "HTTP/1.1".into(),
            headers: vec![
                ("Host".into(), b"shop.example".to_vec()),
                ("Cookie".into(), b"a=1; b=2".to_vec()),
                (
                    "Content-Type".into(),
                    b"application/x-www-form-urlencoded".to_vec(),
                ),
            ],
            ..Head::default()
        });
        data.set_body(b"x=1&y=2&z=3".to_vec(), 11, Some(URLENCODED));
        let all = all_collections();
        let mut by_id: std::collections::HashMap<ValueId, *const u8> = Default::default();
        let mut held = 0;
        for c in all {
            data.each(c, &mut |_, v, id| {
                match id {
                    Some(id) => {
                        assert!(c.in_request(), "{c:?} numbers its values");
                        let at = *by_id.entry(id).or_insert(v.as_ptr());
                        assert_eq!(at, v.as_ptr(), "{c:?}: id {id} names two values");
                        held += 1;
                    }
                    None => assert!(!c.in_request(), "{c:?} does not number its values"),
                }
                true
            });
        }
        // The path, its parts, the request line, the query and the body (7),
        // 3 headers and their names, 2 cookies and their names, 2 + 3
        // arguments and their names: 27 values, numbered 0 to 26. ARGS and
        // ARGS_NAMES read 10 of them again.
        assert_eq!(by_id.len(), 27);
        assert_eq!(held, 27 + 10);
        assert!(by_id.keys().all(|id| *id < 27));
    }

    /// Every collection, by its SecLang name.
    fn all_collections() -> impl Iterator<Item = Collection> {
        "ARGS ARGS_GET ARGS_POST ARGS_NAMES ARGS_GET_NAMES ARGS_POST_NAMES \
            ARGS_COMBINED_SIZE REQUEST_COOKIES REQUEST_COOKIES_NAMES REQUEST_HEADERS \
            REQUEST_HEADERS_NAMES REQUEST_FILENAME REQUEST_BASENAME REQUEST_URI REQUEST_URI_RAW \
            REQUEST_LINE REQUEST_METHOD REQUEST_PROTOCOL QUERY_STRING REQUEST_BODY \
            REQUEST_BODY_LENGTH REQBODY_PROCESSOR REQBODY_ERROR REQBODY_ERROR_MSG \
            MULTIPART_STRICT_ERROR MULTIPART_UNMATCHED_BOUNDARY MULTIPART_PART_HEADERS FILES \
            FILES_NAMES FILES_SIZES FILES_COMBINED_SIZE REMOTE_ADDR REMOTE_PORT SERVER_NAME \
            SERVER_PORT UNIQUE_ID XML FULL_REQUEST_LENGTH URLENCODED_ERROR"
            .split_whitespace()
            .map(|name| Collection::parse(name).unwrap())
    }

    /// `value(id)` gives back the key and value `each` hands out with that
    /// id, whatever the body made of the request (its parts, files, XML).
    #[test]
    fn value_ids_name_what_each_hands_out() {
        let multipart = "--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n\
            --b\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.png\"\r\n\
            Content-Type: image/png\r\n\r\nPNG\r\n--b--\r\n";
        let bodies = [
            (
                "application/x-www-form-urlencoded",
                "x=1&y=2",
                Some(URLENCODED),
            ),
            (
                "multipart/form-data; boundary=b",
                multipart,
                Some(MULTIPART),
            ),
            (
                "text/xml",
                "<a k=\"v\"><b>text</b><c>more</c></a>",
                Some(XML),
            ),
            ("application/json", r#"{"a":{"b":[1,"x"]}}"#, Some(JSON)),
        ];
        for (content_type, body, processor) in bodies {
            let mut data = RequestData::new(Head {
                method: "POST".into(),
                raw_uri: b"/a.php?q=1".to_vec(),
                protocol: "HTTP/1.1".into(),
                headers: vec![
                    ("Cookie".into(), b"c=3".to_vec()),
                    ("Content-Type".into(), content_type.as_bytes().to_vec()),
                ],
                ..Head::default()
            });
            data.set_body(body.as_bytes().to_vec(), body.len(), processor);
            assert!(
                data.body_error.is_none(),
                "{content_type}: {:?}",
                data.body_error
            );
            let mut seen = 0;
            for c in all_collections() {
                data.each(c, &mut |k, v, id| {
                    if let Some(id) = id {
                        let (key, value) = data.value(id).unwrap();
                        assert_eq!((key, value), (k, v), "{content_type}, {c:?}, id {id}");
                        assert_eq!(value.as_ptr(), v.as_ptr(), "{content_type}, {c:?}");
                        seen += 1;
                    }
                    true
                });
            }
            assert!(seen > 12, "{content_type}: {seen} values");
        }
    }

    #[test]
    fn bodies_by_processor() {
        let mut data = RequestData::new(Head {
            method: "POST".into(),
            raw_uri: b"/?a=1".to_vec(),
            headers: vec![(
                "Content-Type".into(),
                b"application/json; charset=utf-8".to_vec(),
            )],
            ..Head::default()
        });
        assert_eq!(data.processor_for(), Some(JSON));
        data.set_body(br#"{"q":"x"}"#.to_vec(), 9, Some(JSON));
        assert_eq!(
            collect(&data, Collection::ArgsPost),
            vec![("json.q".into(), b"x".to_vec())]
        );
        assert_eq!(collect(&data, Collection::Args).len(), 2);
        assert_eq!(collect(&data, Collection::ReqbodyError)[0].1, b"0");
        data.set_body(b"{bad".to_vec(), 4, Some(JSON));
        assert_eq!(collect(&data, Collection::ReqbodyError)[0].1, b"1");
        assert_eq!(collect(&data, Collection::RequestBody)[0].1, b"{bad");
    }
}
