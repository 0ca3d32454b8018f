//! The policy file as written: serde structs that mirror the YAML one to one.
//! Nothing here is checked beyond its type; `compile` gives it meaning.
//! Every struct denies unknown keys, so a typo is an error, never a default.

use super::units::{ByteSize, Dur, NonZeroDur};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The whole policy: one optional block per concern. Built section by section
/// by `parse`, so that a mistake in one block does not hide those in others.
#[derive(Debug, Default)]
pub struct RawPolicy {
    pub include: Vec<Spanned<String>>,
    pub server: Option<Block<ServerBlock>>,
    pub tls: Option<Block<TlsBlock>>,
    pub limits: Option<Block<LimitsBlock>>,
    pub client_ip: Option<Block<ClientIpBlock>>,
    pub upstream: Option<Block<UpstreamBlock>>,
    pub cache: Option<Block<CacheBlock>>,
    pub stats: Option<Block<StatsBlock>>,
    pub alerts: Option<Block<AlertsBlock>>,
    pub bans: Option<Block<BansBlock>>,
    pub rate_limits: Option<Block<RateLimitsBlock>>,
    pub bots: Option<Block<BotsBlock>>,
    pub brute_force: Option<Block<BruteForceBlock>>,
    pub card_testing: Option<Block<CardTestingBlock>>,
    pub waf: Option<Block<WafBlock>>,
    /// One per file that has an `ip_filter` block; the lists add up.
    pub ip_filter: Vec<Block<IpFilterBlock>>,
    /// Blocks written in any file, even those that failed to parse, so that a
    /// broken block is not also reported as missing.
    pub seen: Vec<String>,
    /// A file could not be read or parsed at all.
    pub unreadable: bool,
}

/// A block and the file it was written in (for diagnostics).
#[derive(Debug)]
pub struct Block<T> {
    pub file: std::path::PathBuf,
    pub value: T,
}

/// The top-level keys a policy may have, in documentation order.
pub const SECTIONS: &[&str] = &[
    "include",
    "server",
    "tls",
    "limits",
    "client_ip",
    "upstream",
    "ip_filter",
    "cache",
    "stats",
    "alerts",
    "bans",
    "rate_limits",
    "bots",
    "brute_force",
    "card_testing",
    "waf",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerBlock {
    pub listen: Option<Vec<Spanned<String>>>,
    pub admin_listen: Option<Spanned<String>>,
    pub threads: Option<Spanned<usize>>,
    pub grace_period: Option<Dur>,
    pub shutdown_timeout: Option<Dur>,
    pub log_format: Option<LogFormat>,
    pub access_log: Option<bool>,
    pub log_file: Option<Spanned<String>>,
    pub audit_log: Option<Spanned<String>>,
    pub anonymize_ips: Option<bool>,
    pub admin_hosts: Vec<Spanned<String>>,
    pub upgrade_socket: Option<Spanned<String>>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsBlock {
    pub listen: Vec<Spanned<String>>,
    pub certs_dir: Option<Spanned<String>>,
    pub redirect_http: bool,
    pub http2: Option<bool>,
    pub hsts: Option<HstsBlock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HstsBlock {
    pub max_age: Dur,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsBlock {
    pub max_header_bytes: Option<Spanned<ByteSize>>,
    pub max_header_count: Option<Spanned<usize>>,
    pub max_body_bytes: Option<ByteSize>,
    pub header_timeout: Option<Spanned<NonZeroDur>>,
    pub max_connections_per_ip: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientIpBlock {
    pub trusted_proxies: Vec<Spanned<String>>,
    pub header: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamBlock {
    pub servers: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub host_header: Option<Spanned<String>>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub timeouts: TimeoutsBlock,
    #[serde(default)]
    pub health_check: Option<HealthCheckBlock>,
    #[serde(default)]
    pub passive: PassiveBlock,
}

/// How requests are spread over healthy upstream servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each server in turn.
    #[default]
    RoundRobin,
    /// The server with the fewest requests in flight.
    LeastConnections,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsBlock {
    pub connect: Option<NonZeroDur>,
    pub read: Option<NonZeroDur>,
    pub write: Option<NonZeroDur>,
    pub idle: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckBlock {
    pub path: Option<Spanned<String>>,
    pub host: Option<String>,
    pub interval: Option<NonZeroDur>,
    pub timeout: Option<NonZeroDur>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub expect_status: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveBlock {
    pub max_failures: Option<u32>,
    pub cooldown: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpFilterBlock {
    pub allow: Vec<Spanned<String>>,
    pub deny: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheBlock {
    pub enabled: Option<bool>,
    pub max_size: Option<Spanned<ByteSize>>,
    pub max_object_size: Option<Spanned<ByteSize>>,
    pub default_ttl: Option<Dur>,
    pub statuses: Option<Vec<Spanned<u16>>>,
    pub status_ttl: std::collections::BTreeMap<u16, Dur>,
    pub ttl_overrides: Vec<TtlOverrideBlock>,
    pub stale_while_revalidate: Option<Dur>,
    pub stale_if_error: Option<Dur>,
    pub lock_timeout: Option<NonZeroDur>,
    pub bypass: BypassBlock,
    pub key: CacheKeyBlock,
    pub vary_allow: Vec<Spanned<String>>,
    pub tag_header: Option<Spanned<String>>,
    pub compression_level: Option<Spanned<u32>>,
    pub shared_assets: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlOverrideBlock {
    /// A path prefix (`/wp-content/uploads/`) or, with `~`, a regex (`~\\.css$`).
    pub path: Spanned<String>,
    pub ttl: Dur,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BypassBlock {
    pub cookies: Option<Vec<Spanned<String>>>,
    pub paths: Option<Vec<Spanned<String>>>,
    pub query_params: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheKeyBlock {
    pub drop_query_params: Option<Vec<Spanned<String>>>,
    pub device_class: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsBlock {
    pub slot: Option<NonZeroDur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsBlock {
    pub enabled: Option<bool>,
    pub webhook: Option<Spanned<String>>,
    pub cooldown: Option<Dur>,
    pub max_per_hour: Option<usize>,
    pub warmup_slots: Option<u64>,
    pub min_requests: Option<u64>,
    pub latency_factor: Option<Spanned<f64>>,
    pub latency_floor: Option<Dur>,
    pub error_rate: Option<Spanned<f64>>,
    pub spike_factor: Option<Spanned<f64>>,
    pub spike_min_rpm: Option<f64>,
    pub flap_changes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BansBlock {
    pub ladder: Option<Spanned<Vec<NonZeroDur>>>,
    #[serde(default)]
    pub ipv6_prefix: Option<Spanned<u8>>,
    pub allowlist: Vec<Spanned<String>>,
    pub memory: Option<Dur>,
    pub state_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsBlock {
    pub max_keys: Option<usize>,
    pub limits: Vec<LimitBlock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitBlock {
    pub name: Spanned<String>,
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    #[serde(default)]
    pub forms: Vec<Spanned<Vec<Spanned<String>>>>,
    pub key: Spanned<Vec<Spanned<String>>>,
    pub rate: Spanned<String>,
    #[serde(default)]
    pub burst: Option<Spanned<u32>>,
    #[serde(default)]
    pub scope: LimitScope,
    #[serde(default)]
    pub action: LimitAction,
}

/// Which requests a limit counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    #[default]
    All,
    Origin,
}

/// What a limit does past its rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitAction {
    #[default]
    Block,
    Ban,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotsBlock {
    pub enabled: Option<bool>,
    pub deny_user_agents: Option<Vec<Spanned<String>>>,
    pub allow_user_agents: Vec<Spanned<String>>,
    pub ban_scanners: Option<bool>,
    pub not_found_flood: Option<NotFoundFloodBlock>,
    pub crawlers: Option<CrawlersBlock>,
    pub score_threshold: Option<u32>,
    pub challenge: Option<ChallengeBlock>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrawlersBlock {
    pub verify: Option<bool>,
    pub timeout: Option<NonZeroDur>,
    pub cache_ttl: Option<NonZeroDur>,
    /// Fixed reverse records (`ip: name`) instead of the system resolver.
    pub static_records: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChallengeBlock {
    pub mode: ChallengeMode,
    pub difficulty: Option<Spanned<u32>>,
    pub pass_ttl: Option<NonZeroDur>,
    pub exempt_paths: Vec<Spanned<String>>,
    pub risky_paths: Vec<Spanned<String>>,
    pub risky_forms: Vec<Spanned<Vec<Spanned<String>>>>,
}

/// When the proof-of-work challenge is shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeMode {
    /// Never.
    #[default]
    Off,
    /// Any page, to clients whose bot score reaches the threshold.
    Score,
    /// Only risky actions (logins, checkout, add to cart), to such clients.
    StepUp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotFoundFloodBlock {
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BruteForceBlock {
    pub logins: Vec<LoginBlock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBlock {
    pub name: Spanned<String>,
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    #[serde(default)]
    pub forms: Vec<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    #[serde(default)]
    pub username_field: Option<String>,
    #[serde(default)]
    pub failure_status: Vec<u16>,
    #[serde(default)]
    pub xmlrpc: bool,
    #[serde(default)]
    pub max_per_ip: Option<u64>,
    #[serde(default)]
    pub max_per_user: Option<u64>,
    #[serde(default)]
    pub window: Option<NonZeroDur>,
    #[serde(default)]
    pub failure_body: Option<String>,
    #[serde(default)]
    pub session_cookie: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardTestingBlock {
    pub checkouts: Vec<LoginBlock>,
}

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
