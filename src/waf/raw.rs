//! The `waf` block as written: serde structs that mirror the YAML one to
//! one; `section` gives them meaning.

use crate::policy::units::ByteSize;
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WafBlock {
    pub enabled: Option<bool>,
    pub mode: Option<WafMode>,
    pub paranoia_level: Option<Spanned<u8>>,
    pub inbound_threshold: Option<Spanned<i64>>,
    pub body_limit: Option<ByteSize>,
    pub body_overflow: Option<BodyOverflow>,
    pub malformed_body: Option<MalformedBody>,
    pub max_args: Option<Spanned<usize>>,
    pub debug_header: Option<bool>,
    pub ban_on_block: Option<bool>,
    pub crs: Option<CrsBlock>,
    pub exclusions: Vec<WafExclusionBlock>,
    pub rules: Vec<WafRuleBlock>,
}

/// Whether the WAF blocks or only reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WafMode {
    #[default]
    Block,
    Detect,
}

/// What happens to a body longer than `body_limit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyOverflow {
    InspectPrefix,
    #[default]
    Reject,
}

/// What happens to a body its processor cannot parse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedBody {
    InspectRaw,
    #[default]
    Reject,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrsBlock {
    pub path: Option<Spanned<String>>,
    pub setup: Option<Spanned<String>>,
    pub plugins: Vec<Spanned<String>>,
    pub variables: std::collections::BTreeMap<String, Spanned<Scalar>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WafExclusionBlock {
    pub name: Option<String>,
    pub paths: Vec<Spanned<String>>,
    pub path_regex: Option<Spanned<String>>,
    pub methods: Vec<Spanned<String>>,
    /// Query parameters the request must carry (`name: value`, `"*"` for any value).
    pub query: std::collections::BTreeMap<String, String>,
    pub rules: Vec<Spanned<IdOrRange>>,
    pub tags: Vec<Spanned<String>>,
    pub targets: Vec<Spanned<String>>,
    pub mode: Option<ExclusionMode>,
}

/// A rule id (`942100`) or range (`"942100-942999"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdOrRange {
    Id(u32),
    Text(String),
}

/// What an exclusion does to the rules it names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionMode {
    /// The rules do not run (or do not see `targets`).
    #[default]
    Skip,
    /// The rules run and are logged, but neither score nor block.
    Detect,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WafRuleBlock {
    pub id: Option<Spanned<u32>>,
    pub message: Option<String>,
    pub phase: Option<WafPhase>,
    pub targets: Vec<Spanned<String>>,
    pub transforms: Vec<Spanned<String>>,
    pub operator: Option<Spanned<String>>,
    pub action: Option<WafRuleAction>,
    pub severity: Option<Spanned<String>>,
    pub paranoia_level: Option<Spanned<u8>>,
    pub tags: Vec<String>,
}

/// When a YAML rule runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WafPhase {
    /// With the request head (path, query, headers, cookies).
    RequestHeaders,
    /// Once the body is read (form fields, JSON, uploads too).
    #[default]
    RequestBody,
}

/// What a YAML rule does when it matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WafRuleAction {
    /// Refuse the request at once (virtual patches).
    Block,
    /// Add its severity to the anomaly score, like CRS rules.
    #[default]
    Score,
    /// Only record the match.
    Log,
}

/// A YAML scalar written as a TX variable value.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Int(i64),
    Bool(bool),
    Text(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Bool(b) => write!(f, "{}", u8::from(*b)),
            Scalar::Text(s) => f.write_str(s),
        }
    }
}
