//! The compiled rule model shared by the SecLang loader, the YAML rules and
//! the engine: what a rule inspects, how, and what it does on a match.

use std::sync::Arc;

use regex::bytes::Regex;

use super::operator::Operator;
use super::transform::Transform;

/// The request data a rule can inspect (ModSecurity variable names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    Args,
    ArgsGet,
    ArgsPost,
    ArgsNames,
    ArgsGetNames,
    ArgsPostNames,
    ArgsCombinedSize,
    RequestCookies,
    RequestCookiesNames,
    RequestHeaders,
    RequestHeadersNames,
    RequestFilename,
    RequestBasename,
    RequestUri,
    RequestUriRaw,
    RequestLine,
    RequestMethod,
    RequestProtocol,
    QueryString,
    RequestBody,
    RequestBodyLength,
    ReqbodyProcessor,
    ReqbodyError,
    ReqbodyErrorMsg,
    MultipartStrictError,
    MultipartUnmatchedBoundary,
    MultipartPartHeaders,
    Files,
    FilesNames,
    FilesSizes,
    FilesCombinedSize,
    RemoteAddr,
    RemotePort,
    ServerName,
    ServerPort,
    UniqueId,
    Tx,
    MatchedVar,
    MatchedVarName,
    MatchedVars,
    MatchedVarsNames,
    Xml,
    FullRequestLength,
    UrlencodedError,
}

impl Collection {
    /// Whether the values come from the request itself and stay the same for
    /// a whole phase (not the engine's own TX or MATCHED_* variables).
    pub fn in_request(self) -> bool {
        use Collection::*;
        matches!(
            self,
            Args | ArgsGet
                | ArgsPost
                | ArgsNames
                | ArgsGetNames
                | ArgsPostNames
                | RequestCookies
                | RequestCookiesNames
                | RequestHeaders
                | RequestHeadersNames
                | RequestFilename
                | RequestBasename
                | RequestUri
                | RequestUriRaw
                | RequestLine
                | QueryString
                | RequestBody
                | Files
                | FilesNames
                | MultipartPartHeaders
                | Xml
        )
    }

    /// Looks a variable name up (case-insensitive).
    pub fn parse(name: &str) -> Option<Collection> {
        use Collection::*;
        Some(match name.to_ascii_uppercase().as_str() {
            "ARGS" => Args,
            "ARGS_GET" => ArgsGet,
            "ARGS_POST" => ArgsPost,
            "ARGS_NAMES" => ArgsNames,
            "ARGS_GET_NAMES" => ArgsGetNames,
            "ARGS_POST_NAMES" => ArgsPostNames,
            "ARGS_COMBINED_SIZE" => ArgsCombinedSize,
            "REQUEST_COOKIES" => RequestCookies,
            "REQUEST_COOKIES_NAMES" => RequestCookiesNames,
            "REQUEST_HEADERS" => RequestHeaders,
            "REQUEST_HEADERS_NAMES" => RequestHeadersNames,
            "REQUEST_FILENAME" => RequestFilename,
            "REQUEST_BASENAME" => RequestBasename,
            "REQUEST_URI" => RequestUri,
            "REQUEST_URI_RAW" => RequestUriRaw,
            "REQUEST_LINE" => RequestLine,
            "REQUEST_METHOD" => RequestMethod,
            "REQUEST_PROTOCOL" => RequestProtocol,
            "QUERY_STRING" => QueryString,
            "REQUEST_BODY" => RequestBody,
            "REQUEST_BODY_LENGTH" => RequestBodyLength,
            "REQBODY_PROCESSOR" => ReqbodyProcessor,
            "REQBODY_ERROR" | "REQBODY_PROCESSOR_ERROR" => ReqbodyError,
            "REQBODY_ERROR_MSG" | "REQBODY_PROCESSOR_ERROR_MSG" => ReqbodyErrorMsg,
            "MULTIPART_STRICT_ERROR" => MultipartStrictError,
            "MULTIPART_UNMATCHED_BOUNDARY" => MultipartUnmatchedBoundary,
            "MULTIPART_PART_HEADERS" => MultipartPartHeaders,
            "FILES" => Files,
            "FILES_NAMES" => FilesNames,
            "FILES_SIZES" => FilesSizes,
            "FILES_COMBINED_SIZE" => FilesCombinedSize,
            "REMOTE_ADDR" => RemoteAddr,
            "REMOTE_PORT" => RemotePort,
            "SERVER_NAME" => ServerName,
            "SERVER_PORT" => ServerPort,
            "UNIQUE_ID" => UniqueId,
            "TX" => Tx,
            "MATCHED_VAR" => MatchedVar,
            "MATCHED_VAR_NAME" => MatchedVarName,
            "MATCHED_VARS" => MatchedVars,
            "MATCHED_VARS_NAMES" => MatchedVarsNames,
            "XML" => Xml,
            "FULL_REQUEST_LENGTH" => FullRequestLength,
            "URLENCODED_ERROR" => UrlencodedError,
            _ => return None,
        })
    }

    /// The name used in `MATCHED_VAR_NAME` and audit records.
    pub fn name(self) -> &'static str {
        use Collection::*;
        match self {
            Args => "ARGS",
            ArgsGet => "ARGS_GET",
            ArgsPost => "ARGS_POST",
            ArgsNames => "ARGS_NAMES",
            ArgsGetNames => "ARGS_GET_NAMES",
            ArgsPostNames => "ARGS_POST_NAMES",
            ArgsCombinedSize => "ARGS_COMBINED_SIZE",
            RequestCookies => "REQUEST_COOKIES",
            RequestCookiesNames => "REQUEST_COOKIES_NAMES",
            RequestHeaders => "REQUEST_HEADERS",
            RequestHeadersNames => "REQUEST_HEADERS_NAMES",
            RequestFilename => "REQUEST_FILENAME",
            RequestBasename => "REQUEST_BASENAME",
            RequestUri => "REQUEST_URI",
            RequestUriRaw => "REQUEST_URI_RAW",
            RequestLine => "REQUEST_LINE",
            RequestMethod => "REQUEST_METHOD",
            RequestProtocol => "REQUEST_PROTOCOL",
            QueryString => "QUERY_STRING",
            RequestBody => "REQUEST_BODY",
            RequestBodyLength => "REQUEST_BODY_LENGTH",
            ReqbodyProcessor => "REQBODY_PROCESSOR",
            ReqbodyError => "REQBODY_ERROR",
            ReqbodyErrorMsg => "REQBODY_ERROR_MSG",
            MultipartStrictError => "MULTIPART_STRICT_ERROR",
            MultipartUnmatchedBoundary => "MULTIPART_UNMATCHED_BOUNDARY",
            MultipartPartHeaders => "MULTIPART_PART_HEADERS",
            Files => "FILES",
            FilesNames => "FILES_NAMES",
            FilesSizes => "FILES_SIZES",
            FilesCombinedSize => "FILES_COMBINED_SIZE",
            RemoteAddr => "REMOTE_ADDR",
            RemotePort => "REMOTE_PORT",
            ServerName => "SERVER_NAME",
            ServerPort => "SERVER_PORT",
            UniqueId => "UNIQUE_ID",
            Tx => "TX",
            MatchedVar => "MATCHED_VAR",
            MatchedVarName => "MATCHED_VAR_NAME",
            MatchedVars => "MATCHED_VARS",
            MatchedVarsNames => "MATCHED_VARS_NAMES",
            Xml => "XML",
            FullRequestLength => "FULL_REQUEST_LENGTH",
            UrlencodedError => "URLENCODED_ERROR",
        }
    }
}

/// Picks entries of a collection by key.
#[derive(Debug, Clone)]
pub enum Selector {
    /// Lower-cased key, compared case-insensitively.
    Name(String),
    /// A regex that is only `^` and a literal (`TX:/^header_name_920450_/`):
    /// the lower-cased literal, compared case-insensitively with the start
    /// of the key. CRS runs such selectors over every TX variable.
    Prefix(String),
    Regex(Regex),
}

impl Selector {
    /// Compiles a selector as written (`ARGS:pwd`, `REQUEST_COOKIES:/^sbjs_/`):
    /// names and regexes both compare case-insensitively.
    pub fn compile(raw: Option<&super::seclang::RawSelector>) -> Result<Option<Selector>, String> {
        use super::seclang::RawSelector;
        Ok(match raw {
            None => None,
            Some(RawSelector::Name(n)) => Some(Selector::Name(n.to_ascii_lowercase())),
            Some(RawSelector::Regex(p))
                if p.len() > 1
                    && p.starts_with('^')
                    && p[1..]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                Some(Selector::Prefix(p[1..].to_ascii_lowercase()))
            }
            Some(RawSelector::Regex(p)) => Some(Selector::Regex(
                super::operator::regex(&format!("(?i){p}"))
                    .map_err(|e| format!("selector /{p}/: {e}"))?,
            )),
        })
    }

    pub fn matches(&self, key: &str) -> bool {
        match self {
            Selector::Name(name) => key.eq_ignore_ascii_case(name),
            Selector::Prefix(prefix) => key
                .as_bytes()
                .get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes())),
            Selector::Regex(re) => re.is_match(key.as_bytes()),
        }
    }
}

/// One variable of a rule: a collection, optionally narrowed by a key, or its count.
#[derive(Debug, Clone)]
pub struct Target {
    pub collection: Collection,
    pub selector: Option<Selector>,
    pub count: bool,
}

/// Keys taken out of a collection (`!ARGS:pwd`, `ctl:ruleRemoveTargetById`, YAML exclusions).
#[derive(Debug, Clone)]
pub struct TargetExclusion {
    pub collection: Collection,
    pub selector: Option<Selector>,
}

impl TargetExclusion {
    pub fn covers(&self, collection: Collection, key: &str) -> bool {
        self.collection == collection && self.selector.as_ref().is_none_or(|s| s.matches(key))
    }
}

/// A text with `%{collection.key}` references, expanded at run time.
#[derive(Debug, Clone, Default)]
pub struct Macro {
    pub parts: Vec<MacroPart>,
}

#[derive(Debug, Clone)]
pub enum MacroPart {
    Text(String),
    /// Upper-cased collection name and lower-cased key.
    Var(String, Option<String>),
}

impl Macro {
    pub fn parse(text: &str) -> Macro {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            let Some(len) = rest[start + 2..].find('}') else {
                break;
            };
            if start > 0 {
                parts.push(MacroPart::Text(rest[..start].to_string()));
            }
            let inner = &rest[start + 2..start + 2 + len];
            let (coll, key) = match inner.split_once('.') {
                Some((c, k)) => (c, Some(k.to_ascii_lowercase())),
                None => (inner, None),
            };
            parts.push(MacroPart::Var(coll.to_ascii_uppercase(), key));
            rest = &rest[start + 3 + len..];
        }
        if !rest.is_empty() {
            parts.push(MacroPart::Text(rest.to_string()));
        }
        Macro { parts }
    }

    /// The text when it has no references.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [MacroPart::Text(t)] => Some(t),
            _ => None,
        }
    }
}

/// `setvar` on the TX collection.
#[derive(Debug, Clone)]
pub struct SetVar {
    pub name: Macro,
    pub op: SetOp,
}

impl SetVar {
    /// Whether the name or value reads a capture (`%{TX.1}`).
    pub fn uses_capture(&self) -> bool {
        let refers = |m: &Macro| {
            m.parts.iter().any(|p| {
                matches!(p, MacroPart::Var(c, Some(k)) if c == "TX" && k.len() == 1 && k.bytes().all(|b| b.is_ascii_digit()))
            })
        };
        refers(&self.name)
            || match &self.op {
                SetOp::Set(v) | SetOp::Add(v) | SetOp::Sub(v) => refers(v),
                SetOp::Delete => false,
            }
    }

    /// Whether the name or value refers to the matched variable.
    pub fn uses_matched_var(&self) -> bool {
        let refers = |m: &Macro| {
            m.parts
                .iter()
                .any(|p| matches!(p, MacroPart::Var(c, _) if c.starts_with("MATCHED_VAR")))
        };
        refers(&self.name)
            || match &self.op {
                SetOp::Set(v) | SetOp::Add(v) | SetOp::Sub(v) => refers(v),
                SetOp::Delete => false,
            }
    }

    /// Whether this adds to an anomaly score (what a detect-only rule must not do).
    pub fn is_score(&self) -> bool {
        self.name.parts.iter().any(|p| match p {
            MacroPart::Text(t) => t.contains("score"),
            MacroPart::Var(..) => false,
        })
    }
}

#[derive(Debug, Clone)]
pub enum SetOp {
    Set(Macro),
    Add(Macro),
    Sub(Macro),
    Delete,
}

/// Rule id ranges as `ctl:ruleRemoveById` and exclusions write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub from: u32,
    pub to: u32,
}

impl IdRange {
    pub fn parse(text: &str) -> Option<IdRange> {
        let text = text.trim();
        match text.split_once('-') {
            Some((a, b)) => {
                let (from, to) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                (from <= to).then_some(IdRange { from, to })
            }
            None => {
                let id = text.parse().ok()?;
                Some(IdRange { from: id, to: id })
            }
        }
    }

    pub fn contains(&self, id: u32) -> bool {
        (self.from..=self.to).contains(&id)
    }
}

/// `ctl:` actions: changes to this request's evaluation.
#[derive(Debug, Clone)]
pub enum Ctl {
    RemoveById(Vec<IdRange>),
    RemoveByTag(String),
    RemoveTargetById(IdRange, TargetExclusion),
    RemoveTargetByTag(String, TargetExclusion),
    RuleEngine(EngineMode),
    BodyProcessor(String),
    ForceBodyVariable(bool),
    BodyAccess(bool),
    /// Accepted and without effect here (`auditEngine`, `auditLogParts`).
    Ignored,
}

/// `SecRuleEngine` / `ctl:ruleEngine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineMode {
    On,
    DetectionOnly,
    Off,
}

/// What a matching rule does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruptive {
    Pass,
    /// Deny (also `drop`, and `block` when the default action denies).
    Deny,
    /// Stop evaluating rules for this request and let it through.
    Allow,
}

/// Where a rule came from, for reports and audit records.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: usize,
}

/// One rule (a chain is a head with `chain` links).
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: u32,
    pub phase: u8,
    pub origin: Origin,
    pub targets: Vec<Target>,
    pub exclusions: Vec<TargetExclusion>,
    pub operator: Operator,
    pub negated: bool,
    pub transforms: Vec<Transform>,
    /// Index of this transformation chain, for reusing transformed values.
    pub transforms_key: usize,
    pub multi_match: bool,
    pub capture: bool,
    pub disruptive: Disruptive,
    pub status: Option<u16>,
    pub log: bool,
    pub msg: Option<Macro>,
    pub logdata: Option<Macro>,
    pub severity: Option<u8>,
    pub tags: Vec<String>,
    pub setvars: Vec<SetVar>,
    pub ctls: Vec<Ctl>,
    pub skip_after: Option<String>,
    pub skip: usize,
    pub chain: Option<Box<Rule>>,
    /// This rule's slot in the literal prefilter: when none of its literals
    /// occurs in its transformed value, its operator cannot match.
    pub prefilter: Option<usize>,
    /// The gate (`RuleSet::gates`) this rule shares with the rules that read
    /// the same values through the same chain: when the rule's prefilter bit
    /// is clear in it, none of its values can match.
    pub gate: Option<usize>,
    /// With a gate: the gate part (`RuleSet::gate_parts`) of each target,
    /// in order. A target whose part does not have the rule's bit holds no
    /// value that can match: it is not walked.
    pub target_parts: Vec<usize>,
    /// This link's slot in the memo of clean verdicts (`engine::FactsMemo`):
    /// set when its answer on a value depends on that value alone (its
    /// operator's parameter has no macro) and working it out costs more
    /// than a memo lookup (a transformation chain, a regex, a phrase list,
    /// libinjection).
    pub verdict: Option<u32>,
}

impl Rule {
    /// Whether this rule, with its chain, gives every request the same
    /// result: it reads only TX variables and constants and runs no `ctl`
    /// (the CRS's initialization: defaults, score counters).
    pub fn is_request_independent(&self) -> bool {
        let constant = |m: &Macro| {
            m.parts.iter().all(|p| match p {
                MacroPart::Text(_) => true,
                MacroPart::Var(collection, _) => collection == "TX" || collection == "RULE",
            })
        };
        let mut link = Some(self);
        while let Some(rule) = link {
            // SecAction matches the request's UNIQUE_ID without reading it;
            // the engine puts the request's own id in MATCHED_VAR.
            let unconditional = matches!(rule.operator, Operator::Unconditional);
            let independent = rule.targets.iter().all(|t| {
                t.collection == Collection::Tx
                    || (unconditional && t.collection == Collection::UniqueId)
            }) && rule.operator.param().is_none_or(constant)
                && rule.setvars.iter().all(|s| {
                    constant(&s.name)
                        && match &s.op {
                            SetOp::Set(v) | SetOp::Add(v) | SetOp::Sub(v) => constant(v),
                            SetOp::Delete => true,
                        }
                })
                && rule.ctls.is_empty();
            if !independent {
                return false;
            }
            link = rule.chain.as_deref();
        }
        true
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// The paranoia level from CRS's `paranoia-level/N` tag (1 when absent).
    pub fn paranoia_level(&self) -> u8 {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix("paranoia-level/")?.parse().ok())
            .unwrap_or(1)
    }
}

/// Severity names as SecLang writes them.
pub fn severity(text: &str) -> Option<u8> {
    Some(match text.to_ascii_uppercase().as_str() {
        "EMERGENCY" | "0" => 0,
        "ALERT" | "1" => 1,
        "CRITICAL" | "2" => 2,
        "ERROR" | "3" => 3,
        "WARNING" | "4" => 4,
        "NOTICE" | "5" => 5,
        "INFO" | "6" => 6,
        "DEBUG" | "7" => 7,
        _ => return None,
    })
}

pub fn severity_name(level: u8) -> &'static str {
    match level {
        0 => "EMERGENCY",
        1 => "ALERT",
        2 => "CRITICAL",
        3 => "ERROR",
        4 => "WARNING",
        5 => "NOTICE",
        6 => "INFO",
        _ => "DEBUG",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn macros_split_text_and_references() {
        let m = Macro::parse("score %{TX.Anomaly_Score} by %{rule.id}!");
        assert_eq!(m.parts.len(), 5);
        assert!(
            matches!(&m.parts[1], MacroPart::Var(c, Some(k)) if c == "TX" && k == "anomaly_score")
        );
        assert!(matches!(&m.parts[3], MacroPart::Var(c, Some(k)) if c == "RULE" && k == "id"));
        assert_eq!(Macro::parse("plain").literal(), Some("plain"));
        assert_eq!(Macro::parse("%{MATCHED_VAR}").literal(), None);
    }

    #[test]
    fn selectors_match_keys_case_insensitively() {
        use crate::waf::seclang::RawSelector;
        let compile = |raw: RawSelector| Selector::compile(Some(&raw)).unwrap().unwrap();
        let prefix = compile(RawSelector::Regex("^header_name_920450_".into()));
        assert!(matches!(prefix, Selector::Prefix(_)), "{prefix:?}");
        assert!(prefix.matches("header_name_920450_x-forwarded"));
        assert!(prefix.matches("HEADER_NAME_920450_"));
        assert!(!prefix.matches("header_name_920450"));
        assert!(!prefix.matches("x_header_name_920450_a"));
        for pattern in ["^(?:_ga|_gid)$", "^a.b", "sbjs_", "^"] {
            let re = compile(RawSelector::Regex(pattern.into()));
            assert!(matches!(re, Selector::Regex(_)), "{pattern}: {re:?}");
        }
        let re = compile(RawSelector::Regex("^(?:_ga|_gid)$".into()));
        assert!(re.matches("_GA") && !re.matches("_gat"));
        let name = compile(RawSelector::Name("PWD".into()));
        assert!(name.matches("pwd") && name.matches("Pwd") && !name.matches("pwd2"));
    }

    #[test]
    fn id_ranges() {
        let r = IdRange::parse("942100-942199").unwrap();
        assert!(r.contains(942150) && !r.contains(942200));
        assert_eq!(IdRange::parse("5"), Some(IdRange { from: 5, to: 5 }));
        assert!(IdRange::parse("9-1").is_none());
        assert!(IdRange::parse("x").is_none());
    }

    #[test]
    fn collection_names_round_trip() {
        for name in [
            "ARGS",
            "request_headers",
            "TX",
            "XML",
            "FILES_COMBINED_SIZE",
        ] {
            let c = Collection::parse(name).unwrap();
            assert_eq!(c.name(), name.to_ascii_uppercase());
        }
        assert!(Collection::parse("RESPONSE_BODY").is_none());
    }
}
