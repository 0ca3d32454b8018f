#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! OWASP Core Rule Set regression tests, replayed through the real proxy.
//!
//! The CRS ships its own regression suite in go-ftw format: one YAML file per
//! rule, `tests/regression/tests/<RULE-FILE>/<rule id>.yaml`, each test made of
//! stages that send one raw HTTP request and state which rule ids must (or must
//! not) show in the WAF log. This file replays the request-phase part of it
//! (`REQUEST-*` folders) through `rempart` processes in front of a test origin:
//! four of them, one per paranoia level, in detect-only mode with the debug
//! header on, so that every response names the rules that matched
//! (`x-rempart-waf: 920330,949110`). Each test goes to the proxy of its rule's
//! paranoia level (read from the `paranoia-level/N` tags of `rules/*.conf`;
//! raised to that of any other id its stages name). A second test replays the
//! go-ftw tests of the WordPress rule-exclusion plugin the same way, at PL4; a
//! third, offline one checks the request builder against known bytes.
//!
//! Requests are built byte for byte as go-ftw builds them (request line,
//! headers, its "autocomplete" headers, url-encoding of form data, CRLF line
//! ends in multipart bodies, `encoded_request` sent as is) and sent over a raw
//! TCP connection, so that malformed requests reach the proxy malformed.
//!
//! A stage passes when every `expect_ids` id fired and no `no_expect_ids` id
//! did (`log_contains` / `no_log_contains` written as `id "942100"` count as
//! the same). Log regexes (`match_regex`, `no_match_regex`, other
//! `log_contains`) are matched against a log rebuilt from the fired ids
//! (`[id "942100"] [msg "..."]`, the message read from the rule files); a
//! regex that looks for anything else (argument names, matched data) cannot be
//! judged from ids alone and is left out. `status` is compared only when the
//! stage has no log expectation: CRS statuses describe the reference Apache
//! back end, not Rempart. `expect_error: true` passes when the proxy closes the
//! connection, does not answer or answers 4xx without the WAF (no fired id),
//! or when the stage's log expectations hold. Each run writes a report with
//! pass rates per paranoia level and per rule file and every failing stage:
//! `target/crs-regression-report.txt` and
//! `target/crs-plugin-wordpress-report.txt`. Both tests require a 95 % pass
//! rate over the stages that could be judged.
//!
//! Pointing at another CRS release: set `REMPART_CRS_DIR` to a CRS v4 release
//! or checkout folder (the one holding `rules/` and
//! `tests/regression/tests/`); without it, `../shared/crs` next to this
//! repository is used. The plugin comes from `REMPART_CRS_PLUGINS_DIR` (a
//! folder holding `wordpress-rule-exclusions/`), else `../shared/crs-plugins`.
//! Other knobs: `REMPART_CRS_FILTER=920` replays only the test files whose
//! `<folder>/<file>` contains that text; `REMPART_CRS_REQUEST_TIMEOUT_SECS`
//! (default 5) and `REMPART_CRS_BUDGET_SECS` (default 1200, stages left when it
//! runs out fail) bound the runtime.
//!
//! ```sh
//! cargo test --test crs_regression -- --nocapture
//! ```

mod common;

use common::*;
use regex::Regex;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::ReadHalf;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The response header that names the rules that matched.
const WAF_HEADER: &str = "x-rempart-waf";
/// Required share of passing stages, in percent.
const MIN_PASS_RATE: f64 = 95.0;
/// Tests (each with its stages in sequence) in flight at once. The WAF work is
/// CPU-bound: more would only lengthen each request towards its timeout.
const IN_FLIGHT: usize = 4;
/// The paranoia level of the CRS test setup (`tx.blocking_paranoia_level=4`
/// in its SecAction 900005): used for rule ids absent from the rule files and
/// for the plugin's tests.
const SUITE_LEVEL: u8 = 4;
/// How long a proxy may take to load the rule set and open its listeners.
const PROXY_START_LIMIT: Duration = Duration::from_secs(180);
/// Response bytes kept per request.
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// The TX variables the CRS test setup sets (SecAction 900005).
const TEST_VARIABLES: &[(&str, u32)] = &[
    ("crs_validate_utf8_encoding", 1),
    ("arg_name_length", 100),
    ("arg_length", 400),
    ("total_arg_length", 64000),
    ("max_num_args", 255),
    ("max_file_size", 64100),
    ("combined_file_sizes", 65535),
];
const WORDPRESS_PLUGIN: &str = "wordpress-rule-exclusions";
const CRS_MISSING: &str =
    "OWASP CRS not found: set REMPART_CRS_DIR to a CRS v4 release folder (rules/ and tests/regression/tests/)";
const PLUGINS_MISSING: &str = "OWASP CRS plugins not found: set REMPART_CRS_PLUGINS_DIR to a folder holding wordpress-rule-exclusions/ (plugins/ and tests/regression/)";
const FORM: &str = "application/x-www-form-urlencoded";

/// The suites run one after the other: each loads the whole rule set in its
/// proxies and keeps the CPUs busy.
static ONE_SUITE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------
// The two tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn crs_request_phase_regression_tests_pass_through_the_proxy() {
    let _one_at_a_time = ONE_SUITE_AT_A_TIME.lock().await;
    let crs = crs_dir();
    let rules = Arc::new(load_rules(&[crs.join("rules")]));
    assert!(
        !rules.is_empty(),
        "no rule id found in {}",
        crs.join("rules").display()
    );
    let tests_root = crs.join("tests").join("regression").join("tests");
    let (suite, response_files) = collect_crs_tests(&tests_root, &rules);
    assert!(
        !suite.jobs.is_empty() || !suite.broken.is_empty(),
        "no request-phase test found under {}",
        tests_root.display()
    );
    let preamble = vec![
        format!("CRS folder: {} ({})", crs.display(), crs_version(&crs)),
        suite.describe(),
        format!(
            "RESPONSE-* folders: {response_files} test files not replayed (response-phase rules are out of scope for now)"
        ),
        "Paranoia level of a test: the highest of its rule and of the ids its stages name (PL4, the CRS test setup's, for a rule id absent from rules/*.conf)".to_string(),
    ];

    let origin = TestOrigin::start("crs-origin").await;
    let (pl1, pl2, pl3, pl4) = tokio::join!(
        start_proxy(origin.addr, &crs, &[], 1),
        start_proxy(origin.addr, &crs, &[], 2),
        start_proxy(origin.addr, &crs, &[], 3),
        start_proxy(origin.addr, &crs, &[], 4),
    );
    let proxies = BTreeMap::from([
        (1, pl1.listen),
        (2, pl2.listen),
        (3, pl3.listen),
        (4, pl4.listen),
    ]);
    let mut results = run_jobs(suite.jobs, &proxies, rules).await;
    results.extend(suite.broken);

    let (text, overall) = render_report(
        "OWASP CRS request-phase regression tests through Rempart",
        &preamble,
        &results,
    );
    let path = write_report("crs-regression-report.txt", &text);
    println!("{text}");
    assert_pass_rate(overall, &path);
}

#[tokio::test(flavor = "multi_thread")]
async fn wordpress_exclusion_plugin_tests_pass_through_the_proxy() {
    let _one_at_a_time = ONE_SUITE_AT_A_TIME.lock().await;
    let crs = crs_dir();
    let plugin = plugins_dir().join(WORDPRESS_PLUGIN);
    assert!(
        plugin.join("plugins").is_dir() && plugin.join("tests").join("regression").is_dir(),
        "{PLUGINS_MISSING} (looked in {})",
        plugin.display()
    );
    // Plugin rules are read too, for the messages of the rebuilt log.
    let rules = Arc::new(load_rules(&[crs.join("rules"), plugin.join("plugins")]));
    let suite = collect_plugin_tests(&plugin.join("tests").join("regression"));
    assert!(
        !suite.jobs.is_empty() || !suite.broken.is_empty(),
        "no test found under {}",
        plugin.join("tests").join("regression").display()
    );
    let preamble = vec![
        format!("CRS folder: {} ({})", crs.display(), crs_version(&crs)),
        format!("Plugin folder: {} (loaded through waf.crs.plugins)", plugin.display()),
        suite.describe(),
        format!("Paranoia level: PL{SUITE_LEVEL} for every test, as in the CRS test setup the plugin's tests are written for"),
    ];

    let origin = TestOrigin::start("wordpress-origin").await;
    let proxy = start_proxy(
        origin.addr,
        &crs,
        std::slice::from_ref(&plugin),
        SUITE_LEVEL,
    )
    .await;
    let proxies = BTreeMap::from([(SUITE_LEVEL, proxy.listen)]);
    let mut results = run_jobs(suite.jobs, &proxies, rules).await;
    results.extend(suite.broken);

    let (text, overall) = render_report(
        "WordPress rule-exclusion plugin regression tests through Rempart",
        &preamble,
        &results,
    );
    let path = write_report("crs-plugin-wordpress-report.txt", &text);
    println!("{text}");
    assert_pass_rate(overall, &path);
}

// ---------------------------------------------------------------------------
// Locating the data, starting the proxies
// ---------------------------------------------------------------------------

/// `$var` when set, else `<manifest>/../shared/<fallback>` when it exists.
fn data_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os(var) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("shared")
            .join(fallback),
    };
    dir.is_dir()
        .then(|| std::fs::canonicalize(&dir).unwrap_or(dir))
}

fn crs_dir() -> PathBuf {
    data_dir("REMPART_CRS_DIR", "crs")
        .filter(|dir| {
            dir.join("rules").is_dir()
                && dir.join("tests").join("regression").join("tests").is_dir()
        })
        .unwrap_or_else(|| panic!("{CRS_MISSING}"))
}

fn plugins_dir() -> PathBuf {
    data_dir("REMPART_CRS_PLUGINS_DIR", "crs-plugins")
        .unwrap_or_else(|| panic!("{PLUGINS_MISSING}"))
}

/// The release tag from the folder's `VERSION.txt`, when it has one.
fn crs_version(crs: &Path) -> String {
    std::fs::read_to_string(crs.join("VERSION.txt"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.trim()
                    .strip_prefix("tag:")
                    .map(|tag| tag.trim().to_string())
            })
        })
        .unwrap_or_else(|| "release tag unknown".to_string())
}

/// A detect-only proxy at this paranoia level, with generous limits so that
/// only the WAF judges the test requests (no `bots` nor `rate_limits` block:
/// scanner user agents and bursts pass).
async fn start_proxy(origin: SocketAddr, crs: &Path, plugins: &[PathBuf], level: u8) -> Rempart {
    let (listen, admin) = (free_addr(), free_addr());
    let text = policy(listen, admin, &[origin], &waf_policy(crs, plugins, level));
    Rempart::start_within(&text, listen, admin, PROXY_START_LIMIT).await
}

fn waf_policy(crs: &Path, plugins: &[PathBuf], level: u8) -> String {
    let plugins = plugins
        .iter()
        .map(|dir| yaml_quote(&dir.display().to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = String::new();
    writeln!(text, "limits:").unwrap();
    writeln!(text, "  max_header_bytes: 1MiB").unwrap();
    writeln!(text, "  max_header_count: 250").unwrap();
    writeln!(text, "  max_body_bytes: 64MiB").unwrap();
    writeln!(text, "waf:").unwrap();
    writeln!(text, "  mode: detect").unwrap();
    writeln!(text, "  paranoia_level: {level}").unwrap();
    writeln!(text, "  debug_header: true").unwrap();
    writeln!(text, "  body_limit: 1MiB").unwrap();
    writeln!(text, "  crs:").unwrap();
    writeln!(text, "    path: {}", yaml_quote(&crs.display().to_string())).unwrap();
    writeln!(text, "    plugins: [{plugins}]").unwrap();
    writeln!(text, "    variables:").unwrap();
    for (name, value) in TEST_VARIABLES {
        writeln!(text, "      {name}: {value}").unwrap();
    }
    text
}

fn yaml_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

// ---------------------------------------------------------------------------
// Rule files: paranoia level and message of every rule id
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct RuleInfo {
    level: u8,
    msg: String,
}

type Rules = BTreeMap<u64, RuleInfo>;

/// Reads every `*.conf` of these folders. A rule's level is its
/// `paranoia-level/N` tag; an untagged rule takes the level of the section it
/// sits in (after `SecRule TX:DETECTION_PARANOIA_LEVEL "@lt N" ... skipAfter`),
/// which is 1 outside any.
fn load_rules(dirs: &[PathBuf]) -> Rules {
    let id = Regex::new(r"\bid:\s*'?(\d+)").unwrap();
    let tag = Regex::new(r"paranoia-level/(\d)").unwrap();
    let section = Regex::new(r#"(?i)DETECTION_PARANOIA_LEVEL\s+"@lt\s+(\d)""#).unwrap();
    let msg = Regex::new(r"\bmsg:'((?:[^'\\]|\\.)*)'").unwrap();
    let mut rules = Rules::new();
    for dir in dirs {
        for path in files_with_ext(dir, &["conf"]) {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let mut section_level = 1;
            for directive in directives(&text) {
                let Some(rule_id) = id
                    .captures(&directive)
                    .and_then(|c| c[1].parse::<u64>().ok())
                else {
                    continue;
                };
                let level = tag
                    .captures(&directive)
                    .and_then(|c| c[1].parse::<u8>().ok())
                    .unwrap_or(section_level);
                let message = msg
                    .captures(&directive)
                    .map(|c| c[1].to_string())
                    .unwrap_or_default();
                rules.insert(
                    rule_id,
                    RuleInfo {
                        level,
                        msg: message,
                    },
                );
                if let Some(next) = section
                    .captures(&directive)
                    .and_then(|c| c[1].parse::<u8>().ok())
                {
                    section_level = next;
                }
            }
        }
    }
    rules
}

/// SecLang directives, with `\`-continued lines joined and comments dropped.
fn directives(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim_end();
        if current.is_empty() && line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        if current.trim().is_empty() {
            current.clear();
        } else {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

// ---------------------------------------------------------------------------
// go-ftw test files
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TestFile {
    rule_id: Option<u64>,
    tests: Option<Vec<TestCase>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TestCase {
    test_id: Option<u64>,
    stages: Option<Vec<Stage>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Stage {
    input: Option<Input>,
    output: Option<Output>,
    /// The go-ftw v1 layout: `- stage: {input, output}`.
    stage: Option<Box<Stage>>,
}

impl Stage {
    fn into_step(self) -> Step {
        match self.stage {
            Some(inner) => inner.into_step(),
            None => Step {
                input: self.input.unwrap_or_default(),
                output: self.output.unwrap_or_default(),
            },
        }
    }
}

/// `dest_addr`, `port`, `save_cookie`, `virtual_host_mode` and `response` are
/// not read: requests go to the proxy of the test's paranoia level.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Input {
    protocol: Option<String>,
    method: Option<String>,
    uri: Option<String>,
    uris: Option<Vec<String>>,
    version: Option<String>,
    headers: Option<BTreeMap<String, Option<String>>>,
    ordered_headers: Option<Vec<HeaderTuple>>,
    data: Option<String>,
    encoded_data: Option<String>,
    encoded_request: Option<String>,
    raw_request: Option<String>,
    autocomplete_headers: Option<bool>,
    stop_magic: Option<bool>,
    follow_redirect: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HeaderTuple {
    name: String,
    value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Output {
    status: Option<StatusList>,
    response_contains: Option<String>,
    log_contains: Option<String>,
    no_log_contains: Option<String>,
    log: Option<LogExpectations>,
    expect_error: Option<bool>,
    retry_once: Option<bool>,
    isolated: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LogExpectations {
    expect_ids: Option<IdList>,
    no_expect_ids: Option<IdList>,
    /// Older spellings.
    expect_id: Option<IdList>,
    no_expect_id: Option<IdList>,
    match_regex: Option<String>,
    no_match_regex: Option<String>,
}

/// `status: 403`, `status: [200, 403]` (older files) or a quoted number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StatusList {
    One(u16),
    Many(Vec<u16>),
    Text(String),
}

impl StatusList {
    fn codes(&self) -> Vec<u16> {
        match self {
            StatusList::One(code) => vec![*code],
            StatusList::Many(codes) => codes.clone(),
            StatusList::Text(text) => text
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|code| code.parse().ok())
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IdList {
    One(IdValue),
    Many(Vec<IdValue>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IdValue {
    Number(u64),
    Text(String),
}

impl IdValue {
    fn id(&self) -> Option<u64> {
        match self {
            IdValue::Number(id) => Some(*id),
            IdValue::Text(text) => text.trim().parse().ok(),
        }
    }
}

impl IdList {
    fn ids(&self) -> Vec<u64> {
        match self {
            IdList::One(value) => value.id().into_iter().collect(),
            IdList::Many(values) => values.iter().filter_map(IdValue::id).collect(),
        }
    }
}

/// One stage, ready to replay.
#[derive(Debug)]
struct Step {
    input: Input,
    output: Output,
}

/// One test case: its stages run in order on the proxy of `level`.
#[derive(Debug)]
struct Job {
    file: String,
    group: String,
    rule_id: u64,
    test_id: u64,
    level: u8,
    steps: Vec<Step>,
}

#[derive(Debug, Default)]
struct Collected {
    jobs: Vec<Job>,
    /// Files that could not be read or parsed, as failed results.
    broken: Vec<StageResult>,
    files: usize,
    /// Files with no test at all (only comments).
    empty: usize,
}

impl Collected {
    fn describe(&self) -> String {
        let stages: usize = self.jobs.iter().map(|job| job.steps.len()).sum();
        format!(
            "Test files: {} ({} without tests, {} unreadable), {} tests, {} stages",
            self.files,
            self.empty,
            self.broken.len(),
            self.jobs.len(),
            stages
        )
    }
}

/// Every `REQUEST-*/*.yaml` under the CRS tests folder, and the number of
/// response-phase files left out.
fn collect_crs_tests(root: &Path, rules: &Rules) -> (Collected, usize) {
    let mut out = Collected::default();
    let mut response_files = 0;
    let level_of =
        |rule_id: u64, stem: &str, steps: &[Step]| crs_level(rules, rule_id, stem, steps);
    for folder in subfolders(root) {
        let group = file_name(&folder);
        if group.starts_with("RESPONSE-") {
            response_files += yaml_files(&folder).len();
            continue;
        }
        if !group.starts_with("REQUEST-") {
            continue;
        }
        for file in yaml_files(&folder) {
            let label = format!("{group}/{}", file_name(&file));
            add_test_file(&mut out, &file, &label, &group, &level_of);
        }
    }
    (out, response_files)
}

/// Every YAML file under the plugin's `tests/regression` (and its folders),
/// all at the CRS test setup's paranoia level.
fn collect_plugin_tests(root: &Path) -> Collected {
    let mut out = Collected::default();
    let level_of = |_: u64, _: &str, _: &[Step]| SUITE_LEVEL;
    let mut files: Vec<(String, PathBuf)> = yaml_files(root)
        .into_iter()
        .map(|file| (file_name(&file), file))
        .collect();
    for folder in subfolders(root) {
        for file in yaml_files(&folder) {
            files.push((format!("{}/{}", file_name(&folder), file_name(&file)), file));
        }
    }
    for (label, file) in files {
        let group = file_name(&file);
        add_test_file(&mut out, &file, &label, &group, &level_of);
    }
    out
}

fn add_test_file(
    out: &mut Collected,
    path: &Path,
    label: &str,
    group: &str,
    level_of: &dyn Fn(u64, &str, &[Step]) -> u8,
) {
    if !filter_matches(label) {
        return;
    }
    out.files += 1;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            out.broken.push(StageResult::unreadable(
                label,
                group,
                format!("cannot read: {error}"),
            ));
            return;
        }
    };
    if is_blank_yaml(&text) {
        out.empty += 1;
        return;
    }
    let file = match serde_saphyr::from_str::<TestFile>(&text) {
        Ok(file) => file,
        Err(error) => {
            out.broken.push(StageResult::unreadable(
                label,
                group,
                format!("cannot parse: {error}"),
            ));
            return;
        }
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // go-ftw falls back on the file name when `rule_id` is missing.
    let rule_id = file
        .rule_id
        .filter(|id| *id > 0)
        .or_else(|| first_number(&stem))
        .unwrap_or(0);
    for (index, case) in file.tests.unwrap_or_default().into_iter().enumerate() {
        let steps: Vec<Step> = case
            .stages
            .unwrap_or_default()
            .into_iter()
            .map(Stage::into_step)
            .collect();
        out.jobs.push(Job {
            file: label.to_string(),
            group: group.to_string(),
            rule_id,
            // go-ftw numbers tests by position when `test_id` is missing.
            test_id: case
                .test_id
                .filter(|id| *id > 0)
                .unwrap_or(index as u64 + 1),
            level: level_of(rule_id, stem.as_str(), steps.as_slice()),
            steps,
        });
    }
}

/// The highest paranoia level among the test's rule and the ids its stages
/// expect or forbid, so that every id it names can fire. A rule id absent
/// from the rule files (a test of several rules, a typo) falls back on the
/// number in the file name, then on the CRS test setup's level.
fn crs_level(rules: &Rules, rule_id: u64, stem: &str, steps: &[Step]) -> u8 {
    let own = rules
        .get(&rule_id)
        .or_else(|| first_number(stem).and_then(|id| rules.get(&id)))
        .map_or(SUITE_LEVEL, |rule| rule.level);
    steps
        .iter()
        .flat_map(|step| {
            let expect = Expect::of(&step.output);
            expect.expected.into_iter().chain(expect.forbidden)
        })
        .filter_map(|id| rules.get(&id).map(|rule| rule.level))
        .fold(own, u8::max)
}

fn filter_matches(label: &str) -> bool {
    match std::env::var("REMPART_CRS_FILTER") {
        Ok(filter) if !filter.is_empty() => label.contains(filter.as_str()),
        _ => true,
    }
}

fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

fn first_number(text: &str) -> Option<u64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut list: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    list.sort();
    list
}

fn subfolders(dir: &Path) -> Vec<PathBuf> {
    entries(dir)
        .into_iter()
        .filter(|path| path.is_dir())
        .collect()
}

fn files_with_ext(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    entries(dir)
        .into_iter()
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .and_then(|ext| ext.to_str())
                    .is_some_and(|ext| exts.contains(&ext))
        })
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    files_with_ext(dir, &["yaml", "yml"])
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------

/// What a stage's `output` asks for, old and new spellings merged.
#[derive(Debug, Default)]
struct Expect {
    expected: Vec<u64>,
    forbidden: Vec<u64>,
    match_regex: Vec<String>,
    no_match_regex: Vec<String>,
    status: Vec<u16>,
    response_contains: Option<String>,
    expect_error: bool,
    isolated: bool,
    retry_once: bool,
}

impl Expect {
    fn of(output: &Output) -> Expect {
        let mut expect = Expect {
            status: output
                .status
                .as_ref()
                .map(StatusList::codes)
                .unwrap_or_default(),
            response_contains: output.response_contains.clone(),
            expect_error: output.expect_error.unwrap_or(false),
            isolated: output.isolated.unwrap_or(false),
            retry_once: output.retry_once.unwrap_or(false),
            ..Expect::default()
        };
        if let Some(log) = &output.log {
            for list in [&log.expect_ids, &log.expect_id].into_iter().flatten() {
                expect.expected.extend(list.ids());
            }
            for list in [&log.no_expect_ids, &log.no_expect_id]
                .into_iter()
                .flatten()
            {
                expect.forbidden.extend(list.ids());
            }
            expect.match_regex.extend(log.match_regex.iter().cloned());
            expect
                .no_match_regex
                .extend(log.no_match_regex.iter().cloned());
        }
        if let Some(text) = &output.log_contains {
            match id_in_pattern(text) {
                Some(id) => expect.expected.push(id),
                None => expect.match_regex.push(text.clone()),
            }
        }
        if let Some(text) = &output.no_log_contains {
            match id_in_pattern(text) {
                Some(id) => expect.forbidden.push(id),
                None => expect.no_match_regex.push(text.clone()),
            }
        }
        for ids in [&mut expect.expected, &mut expect.forbidden] {
            ids.sort_unstable();
            ids.dedup();
        }
        expect
    }

    fn has_log_checks(&self) -> bool {
        !self.expected.is_empty()
            || !self.forbidden.is_empty()
            || !self.match_regex.is_empty()
            || !self.no_match_regex.is_empty()
            || self.isolated
    }
}

/// The id of an old-style `log_contains: 'id "942100"'` (or `\[id "942100"\]`).
fn id_in_pattern(pattern: &str) -> Option<u64> {
    static ONE_ID: OnceLock<Regex> = OnceLock::new();
    let re = ONE_ID.get_or_init(|| {
        Regex::new(r#"^\s*(?:\\?\[)?id\s+\\?["']?(\d+)\\?["']?(?:\\?\])?\s*$"#).unwrap()
    });
    re.captures(pattern).and_then(|c| c[1].parse().ok())
}

/// Whether a log regex can be answered from the rebuilt log: it names rule
/// ids or messages, or it matches the log line of some rule (a rule's
/// message). Anything else (targets, matched data) is only in a real WAF log.
fn judgeable(pattern: &str, re: &Regex, rules: &Rules) -> bool {
    static WORDS: OnceLock<Regex> = OnceLock::new();
    let words = WORDS.get_or_init(|| Regex::new(r"\b(?:id|msg)\b").unwrap());
    words.is_match(pattern)
        || rules
            .iter()
            .any(|(id, rule)| re.is_match(&log_line(*id, &rule.msg)))
}

/// A ModSecurity-style log of the fired rules: `[id "N"] [msg "..."]` lines.
fn waf_log(fired: &BTreeSet<u64>, rules: &Rules) -> String {
    fired
        .iter()
        .map(|id| log_line(*id, rules.get(id).map_or("", |rule| rule.msg.as_str())))
        .collect()
}

fn log_line(id: u64, msg: &str) -> String {
    format!("[id \"{id}\"] [msg \"{msg}\"]\n")
}

// ---------------------------------------------------------------------------
// Building requests the way go-ftw does
// ---------------------------------------------------------------------------

/// The raw bytes go-ftw sends for this input: one request, or one per entry
/// of `uris`. An `Err` is the stage's verdict (the request cannot be built).
fn build_requests(input: &Input) -> Result<Vec<Vec<u8>>, Verdict> {
    if let Some(encoded) = input.encoded_request.as_deref().filter(|e| !e.is_empty()) {
        return base64_decode(encoded)
            .map(|raw| vec![raw])
            .map_err(|e| Verdict::Fail(format!("encoded_request: {e}")));
    }
    if let Some(raw) = input.raw_request.as_deref().filter(|r| !r.is_empty()) {
        return Ok(vec![raw.as_bytes().to_vec()]);
    }
    let data = request_data(input)?;
    let uris = match &input.uris {
        Some(uris) if !uris.is_empty() => uris.clone(),
        _ => vec![input.uri.clone().unwrap_or_else(|| "/".to_string())],
    };
    Ok(uris
        .iter()
        .map(|uri| build_request(input, uri, data.clone()))
        .collect())
}

/// `data` (a Go template in go-ftw) or `encoded_data` (base64).
fn request_data(input: &Input) -> Result<Vec<u8>, Verdict> {
    if let Some(text) = &input.data {
        return render_template(text)
            .map(String::into_bytes)
            .map_err(|e| Verdict::Skip(format!("data: {e}")));
    }
    if let Some(encoded) = &input.encoded_data {
        return base64_decode(encoded).map_err(|e| Verdict::Fail(format!("encoded_data: {e}")));
    }
    Ok(Vec::new())
}

/// go-ftw's `BuildRequest`: `{method} {uri} {version}`, then `ordered_headers`
/// in file order and `headers` sorted by name (go-ftw sorts the map), then,
/// unless `autocomplete_headers: false` (or `stop_magic: true`), a form
/// `Content-Type` when there is data and none was given, `Connection: close`
/// and `Content-Length` when missing. Form data is url-encoded when it holds
/// no `%` nor `+` and the content type is exactly the form one; multipart
/// bodies get CRLF line ends. Everything else is sent as written.
fn build_request(input: &Input, uri: &str, mut data: Vec<u8>) -> Vec<u8> {
    let method = input.method.as_deref().unwrap_or("GET");
    let version = input.version.as_deref().unwrap_or("HTTP/1.1");
    let autocomplete = input
        .autocomplete_headers
        .or_else(|| input.stop_magic.map(|stop| !stop))
        .unwrap_or(true);
    let mut headers: Vec<(String, String)> = Vec::new();
    for tuple in input.ordered_headers.iter().flatten() {
        headers.push((tuple.name.clone(), tuple.value.clone().unwrap_or_default()));
    }
    for (name, value) in input.headers.iter().flatten() {
        headers.push((name.clone(), value.clone().unwrap_or_default()));
    }
    if !data.is_empty() && autocomplete {
        if !has_header(&headers, "Content-Type") {
            headers.push(("Content-Type".to_string(), FORM.to_string()));
        }
        let form = headers.iter().any(|(name, value)| {
            same_header(name, "Content-Type") && value.eq_ignore_ascii_case(FORM)
        });
        if form {
            data = encode_form_data(&data);
        }
    }
    let multipart = headers.iter().any(|(name, value)| {
        same_header(name, "Content-Type")
            && value.to_ascii_lowercase().contains("multipart/form-data;")
    });
    if multipart {
        data = lf_to_crlf(&data);
    }
    if autocomplete {
        if !has_header(&headers, "Connection") {
            headers.push(("Connection".to_string(), "close".to_string()));
        }
        if !has_header(&headers, "Content-Length")
            && (!data.is_empty() || method_takes_body(method))
        {
            headers.push(("Content-Length".to_string(), data.len().to_string()));
        }
    }
    let mut request = format!("{method} {uri} {version}\r\n").into_bytes();
    for (name, value) in &headers {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(&data);
    request
}

/// go-ftw's `^POST|PUT|PATCH|DELETE$`, alternation precedence included.
fn method_takes_body(method: &str) -> bool {
    method.starts_with("POST")
        || method.contains("PUT")
        || method.contains("PATCH")
        || method.ends_with("DELETE")
}

fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(n, _)| same_header(n, name))
}

fn same_header(a: &str, b: &str) -> bool {
    canonical_key(a) == canonical_key(b)
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: a name with a byte outside the
/// token set stays as it is.
fn canonical_key(name: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.bytes().all(token) {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// go-ftw's `encodeDataParameters`: data that unescaping would not change (no
/// `%`, no `+`) has each key and value of its `&`-separated pairs escaped
/// like Go's `url.QueryEscape`.
fn encode_form_data(data: &[u8]) -> Vec<u8> {
    if data.is_empty() || data.contains(&b'%') || data.contains(&b'+') {
        return data.to_vec();
    }
    let mut escaped = Vec::with_capacity(data.len() * 2);
    let mut remaining = data;
    while !remaining.is_empty() {
        let (token, rest): (&[u8], &[u8]) = match remaining.iter().position(|&b| b == b'&') {
            Some(at) => (&remaining[..at], &remaining[at + 1..]),
            None => (remaining, &[]),
        };
        remaining = rest;
        match token.iter().position(|&b| b == b'=') {
            Some(eq) => {
                query_escape(&token[..eq], &mut escaped);
                escaped.push(b'=');
                query_escape(&token[eq + 1..], &mut escaped);
            }
            None => query_escape(token, &mut escaped),
        }
        escaped.push(b'&');
    }
    escaped.pop();
    escaped
}

/// Go's `url.QueryEscape`.
fn query_escape(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
    }
}

/// Every LF becomes CRLF (a CRLF already there becomes CR CRLF, as in go-ftw).
fn lf_to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    for &b in data {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// go-ftw runs `data` through Go's `text/template` with sprig. The CRS tests
/// use one action, `{{ "1" | repeat 64200 }}`; that one and `repeat N "x"`
/// are evaluated, text outside actions is kept as is, any other action is an
/// error.
fn render_template(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let tail = &rest[start + 2..];
        let end = tail.find("}}").ok_or("a `{{` without its `}}`")?;
        let mut action = &tail[..end];
        rest = &tail[end + 2..];
        if let Some(trimmed) = action.strip_prefix("- ") {
            out.truncate(out.trim_end().len());
            action = trimmed;
        }
        if let Some(trimmed) = action.strip_suffix(" -") {
            rest = rest.trim_start();
            action = trimmed;
        }
        out.push_str(&eval_action(action)?);
    }
    out.push_str(rest);
    Ok(out)
}

fn eval_action(action: &str) -> Result<String, String> {
    let action = action.trim();
    let unsupported = || format!("unsupported template action `{{{{{action}}}}}`");
    let (text, count) = if let Some(rest) = action.strip_prefix("repeat") {
        let rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let count: usize = rest[..digits].parse().map_err(|_| unsupported())?;
        let (text, tail) = go_string(rest[digits..].trim_start()).ok_or_else(unsupported)?;
        if !tail.trim().is_empty() {
            return Err(unsupported());
        }
        (text, count)
    } else {
        let (text, tail) = go_string(action).ok_or_else(unsupported)?;
        let count = tail
            .trim_start()
            .strip_prefix('|')
            .and_then(|pipe| pipe.trim().strip_prefix("repeat"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .ok_or_else(unsupported)?;
        (text, count)
    };
    if text.len().saturating_mul(count) > 16 << 20 {
        return Err(format!("template output over 16 MiB: {}", unsupported()));
    }
    Ok(text.repeat(count))
}

/// A Go string literal at the start of `s` ("..." with escapes, or `...`),
/// and what follows it.
fn go_string(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('`') {
        let end = rest.find('`')?;
        return Some((rest[..end].to_string(), &rest[end + 1..]));
    }
    let rest = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((out, &rest[at + 1..])),
            '\\' => {
                let (_, escaped) = chars.next()?;
                out.push(match escaped {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
            }
            other => out.push(other),
        }
    }
    None
}

/// Standard base64 (Go's `StdEncoding`); line breaks and spaces are skipped,
/// decoding stops at the first `=`.
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            c if c.is_ascii_whitespace() => continue,
            other => return Err(format!("invalid base64 byte 0x{other:02x}")),
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Sending a request, reading the answer
// ---------------------------------------------------------------------------

/// What came back for one request.
#[derive(Debug)]
struct Exchange {
    status: Option<u16>,
    /// Rule ids of the `x-rempart-waf` header (empty without the header).
    fired: BTreeSet<u64>,
    /// The response as read (head and body), for `response_contains`.
    raw: String,
    /// Set when no response head came back.
    error: Option<String>,
}

/// Sends the raw request on a new connection and reads the response head and
/// body (by `Content-Length`, chunked, or up to the close), all within `limit`.
/// The request is written while reading, so an answer sent before the whole
/// request was read (a refusal) is still seen.
async fn send(addr: SocketAddr, request: &[u8], limit: Duration) -> Exchange {
    let head_only = request.starts_with(b"HEAD ");
    let mut buf = Vec::new();
    let exchange = async {
        let mut stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(error) => return Err(format!("cannot connect: {error}")),
        };
        let (mut reader, mut writer) = stream.split();
        let write = async {
            // Write errors (a refusal that closed early) are left to the reader.
            let _ = writer.write_all(request).await;
            std::future::pending::<()>().await;
        };
        tokio::select! {
            read = read_response(&mut reader, &mut buf, head_only) => read,
            () = write => Ok(()),
        }
    };
    let io_error = match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error),
        Err(_) => Some(format!("no complete answer within {limit:?}")),
    };
    let raw = String::from_utf8_lossy(&buf).into_owned();
    match parse_head(&buf) {
        Some(head) => Exchange {
            status: Some(head.status),
            fired: head.waf_ids(),
            raw,
            error: None,
        },
        None => {
            let error = match (io_error, buf.is_empty()) {
                (Some(error), true) => format!("no response: {error}"),
                (Some(error), false) => format!("unreadable response: {error}"),
                (None, true) => "connection closed without a response".to_string(),
                (None, false) => "unreadable response head".to_string(),
            };
            Exchange {
                status: None,
                fired: BTreeSet::new(),
                raw,
                error: Some(error),
            }
        }
    }
}

async fn read_response(
    reader: &mut ReadHalf<'_>,
    buf: &mut Vec<u8>,
    head_only: bool,
) -> Result<(), String> {
    let mut chunk = vec![0u8; 16 * 1024];
    while !response_complete(buf, head_only) && buf.len() < MAX_RESPONSE_BYTES {
        match reader.read(&mut chunk).await {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(error) => return Err(format!("read failed: {error}")),
        }
    }
    Ok(())
}

/// A parsed response head (interim 1xx answers skipped).
struct Head {
    status: u16,
    body_start: usize,
    /// Names in lower case.
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }

    fn waf_ids(&self) -> BTreeSet<u64> {
        self.headers
            .iter()
            .filter(|(name, _)| name == WAF_HEADER)
            .flat_map(|(_, value)| value.split(|c: char| c == ',' || c.is_whitespace()))
            .filter_map(|id| id.trim().parse().ok())
            .collect()
    }
}

fn parse_head(buf: &[u8]) -> Option<Head> {
    let mut start = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(&buf[start..]) {
            Ok(httparse::Status::Complete(len)) => len,
            _ => return None,
        };
        let status = response.code?;
        if (100..200).contains(&status) && status != 101 {
            start += len;
            continue;
        }
        let headers = response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        return Some(Head {
            status,
            body_start: start + len,
            headers,
        });
    }
}

fn response_complete(buf: &[u8], head_only: bool) -> bool {
    let Some(head) = parse_head(buf) else {
        return false;
    };
    if head_only || head.status == 204 || head.status == 304 {
        return true;
    }
    let body = &buf[head.body_start..];
    if let Some(length) = head
        .header("content-length")
        .and_then(|value| value.trim().parse::<usize>().ok())
    {
        return body.len() >= length;
    }
    if head
        .header("transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"))
    {
        return body.starts_with(b"0\r\n\r\n") || body.windows(7).any(|w| w == b"\r\n0\r\n\r\n");
    }
    // Delimited by the close.
    false
}

// ---------------------------------------------------------------------------
// Running and judging stages
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Verdict {
    Pass,
    Fail(String),
    /// Not counted in the pass rate (listed in the report with the reason).
    Skip(String),
}

#[derive(Debug)]
struct StageResult {
    file: String,
    group: String,
    rule_id: u64,
    test_id: u64,
    stage: usize,
    level: u8,
    verdict: Verdict,
    expected: Vec<u64>,
    forbidden: Vec<u64>,
    fired: Vec<u64>,
    status: Option<u16>,
}

impl StageResult {
    /// A test file that could not be used, counted as one failure.
    fn unreadable(file: &str, group: &str, reason: String) -> StageResult {
        StageResult {
            file: file.to_string(),
            group: group.to_string(),
            rule_id: 0,
            test_id: 0,
            stage: 0,
            level: 0,
            verdict: Verdict::Fail(reason),
            expected: Vec::new(),
            forbidden: Vec::new(),
            fired: Vec::new(),
            status: None,
        }
    }
}

/// Runs every job on the proxy of its level, `IN_FLIGHT` tests at a time.
async fn run_jobs(
    jobs: Vec<Job>,
    proxies: &BTreeMap<u8, SocketAddr>,
    rules: Arc<Rules>,
) -> Vec<StageResult> {
    let limit = env_secs("REMPART_CRS_REQUEST_TIMEOUT_SECS", 5);
    let deadline = Instant::now() + env_secs("REMPART_CRS_BUDGET_SECS", 20 * 60);
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut set = JoinSet::new();
    for job in jobs {
        let addr = *proxies
            .get(&job.level)
            .unwrap_or_else(|| panic!("no proxy at paranoia level {}", job.level));
        let (permits, rules) = (permits.clone(), rules.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore closed");
            run_job(job, addr, &rules, deadline, limit).await
        });
    }
    let mut results = Vec::new();
    while let Some(done) = set.join_next().await {
        results.extend(done.expect("a test task panicked"));
    }
    results.sort_by(|a, b| (&a.file, a.test_id, a.stage).cmp(&(&b.file, b.test_id, b.stage)));
    results
}

fn env_secs(name: &str, default: u64) -> Duration {
    let secs = std::env::var(name)
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

/// The stages of one test, in order (a failed stage does not stop the next).
async fn run_job(
    job: Job,
    addr: SocketAddr,
    rules: &Rules,
    deadline: Instant,
    limit: Duration,
) -> Vec<StageResult> {
    let mut results = Vec::with_capacity(job.steps.len());
    for (index, step) in job.steps.iter().enumerate() {
        let expect = Expect::of(&step.output);
        let (verdict, exchange) = if Instant::now() >= deadline {
            let reason = "not run: the suite's time budget ran out (REMPART_CRS_BUDGET_SECS)";
            (Verdict::Fail(reason.to_string()), None)
        } else {
            run_step(addr, step, &expect, rules, limit).await
        };
        results.push(StageResult {
            file: job.file.clone(),
            group: job.group.clone(),
            rule_id: job.rule_id,
            test_id: job.test_id,
            stage: index + 1,
            level: job.level,
            verdict,
            fired: exchange
                .as_ref()
                .map(|e| e.fired.iter().copied().collect())
                .unwrap_or_default(),
            status: exchange.as_ref().and_then(|e| e.status),
            expected: expect.expected,
            forbidden: expect.forbidden,
        });
    }
    results
}

async fn run_step(
    addr: SocketAddr,
    step: &Step,
    expect: &Expect,
    rules: &Rules,
    limit: Duration,
) -> (Verdict, Option<Exchange>) {
    let input = &step.input;
    if input.follow_redirect == Some(true) {
        let reason = "follow_redirect is not supported by this replay";
        return (Verdict::Skip(reason.to_string()), None);
    }
    if let Some(protocol) = input
        .protocol
        .as_deref()
        .filter(|p| !p.eq_ignore_ascii_case("http"))
    {
        let reason =
            format!("protocol `{protocol}` is not supported by this replay (plain HTTP only)");
        return (Verdict::Skip(reason), None);
    }
    let requests = match build_requests(input) {
        Ok(requests) => requests,
        Err(verdict) => return (verdict, None),
    };
    let attempts = if expect.retry_once { 2 } else { 1 };
    let mut outcome = (Verdict::Skip("no request to send".to_string()), None);
    for _ in 0..attempts {
        outcome = exchange_all(addr, &requests, expect, rules, limit).await;
        if !matches!(outcome.0, Verdict::Fail(_)) {
            break;
        }
    }
    outcome
}

/// Sends the stage's requests in turn (several only with `uris`); the first
/// one that does not pass decides.
async fn exchange_all(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    expect: &Expect,
    rules: &Rules,
    limit: Duration,
) -> (Verdict, Option<Exchange>) {
    let mut outcome = (Verdict::Skip("no request to send".to_string()), None);
    for request in requests {
        let exchange = send(addr, request, limit).await;
        let verdict = judge(expect, &exchange, rules);
        let passed = matches!(verdict, Verdict::Pass);
        outcome = (verdict, Some(exchange));
        if !passed {
            break;
        }
    }
    outcome
}

/// The verdict for one answer; see the file's documentation for the rules.
fn judge(expect: &Expect, exchange: &Exchange, rules: &Rules) -> Verdict {
    if expect.expect_error {
        if exchange.error.is_some() {
            return Verdict::Pass;
        }
        let refused_before_waf =
            exchange.status.is_some_and(|s| (400..500).contains(&s)) && exchange.fired.is_empty();
        if refused_before_waf {
            return Verdict::Pass;
        }
        if !expect.has_log_checks() {
            return Verdict::Fail(format!(
                "expected an error or a refusal, got status {}",
                show_status(exchange.status)
            ));
        }
    } else if let Some(error) = &exchange.error {
        return Verdict::Fail(error.clone());
    }

    let mut problems = Vec::new();
    let mut checks = 0;
    if !expect.status.is_empty() && !expect.has_log_checks() {
        checks += 1;
        if !exchange.status.is_some_and(|s| expect.status.contains(&s)) {
            problems.push(format!(
                "status {} instead of {:?}",
                show_status(exchange.status),
                expect.status
            ));
        }
    }
    if let Some(text) = &expect.response_contains {
        checks += 1;
        if !exchange.raw.contains(text.as_str()) {
            problems.push(format!("the response does not contain {text:?}"));
        }
    }
    if !expect.expected.is_empty() {
        checks += 1;
        let missing: Vec<u64> = expect
            .expected
            .iter()
            .copied()
            .filter(|id| !exchange.fired.contains(id))
            .collect();
        if !missing.is_empty() {
            problems.push(format!("{missing:?} did not fire"));
        }
    }
    if !expect.forbidden.is_empty() {
        checks += 1;
        let present: Vec<u64> = expect
            .forbidden
            .iter()
            .copied()
            .filter(|id| exchange.fired.contains(id))
            .collect();
        if !present.is_empty() {
            problems.push(format!("{present:?} fired"));
        }
    }
    let log = waf_log(&exchange.fired, rules);
    let mut unjudged = Vec::new();
    let regexes = expect
        .match_regex
        .iter()
        .map(|pattern| (pattern, true))
        .chain(expect.no_match_regex.iter().map(|pattern| (pattern, false)));
    for (pattern, wanted) in regexes {
        match Regex::new(pattern) {
            Ok(re) if judgeable(pattern, &re, rules) => {
                checks += 1;
                if re.is_match(&log) != wanted {
                    let verb = if wanted { "does not match" } else { "matches" };
                    problems.push(format!("the rebuilt log {verb} /{pattern}/"));
                }
            }
            _ => unjudged.push(pattern.as_str()),
        }
    }
    if expect.isolated {
        checks += 1;
        if exchange.fired.len() != 1 {
            problems.push(format!(
                "isolated test, {} rules fired",
                exchange.fired.len()
            ));
        }
    }

    if !problems.is_empty() {
        Verdict::Fail(problems.join("; "))
    } else if checks > 0 {
        Verdict::Pass
    } else if !unjudged.is_empty() {
        Verdict::Skip(format!(
            "only log-text checks that rule ids cannot answer: /{}/",
            unjudged.join("/, /")
        ))
    } else {
        Verdict::Skip("the stage states no expectation".to_string())
    }
}

fn show_status(status: Option<u16>) -> String {
    status.map_or_else(|| "-".to_string(), |s| s.to_string())
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Tally {
    fn add(&mut self, verdict: &Verdict) {
        match verdict {
            Verdict::Pass => self.passed += 1,
            Verdict::Fail(_) => self.failed += 1,
            Verdict::Skip(_) => self.skipped += 1,
        }
    }

    fn judged(&self) -> usize {
        self.passed + self.failed
    }

    /// Passed share of the judged stages, in percent.
    fn rate(&self) -> f64 {
        if self.judged() == 0 {
            0.0
        } else {
            self.passed as f64 * 100.0 / self.judged() as f64
        }
    }

    fn summary(&self) -> String {
        let rate = if self.judged() == 0 {
            "   n/a  ".to_string()
        } else {
            format!("{:6.2} %", self.rate())
        };
        format!(
            "{rate}  ({} passed, {} failed, {} skipped)",
            self.passed, self.failed, self.skipped
        )
    }
}

fn level_name(level: u8) -> String {
    if level == 0 {
        "none".to_string()
    } else {
        format!("PL{level}")
    }
}

fn render_report(title: &str, preamble: &[String], results: &[StageResult]) -> (String, Tally) {
    let mut overall = Tally::default();
    let mut by_level: BTreeMap<u8, Tally> = BTreeMap::new();
    let mut by_group: BTreeMap<&str, Tally> = BTreeMap::new();
    for result in results {
        overall.add(&result.verdict);
        by_level
            .entry(result.level)
            .or_default()
            .add(&result.verdict);
        by_group
            .entry(result.group.as_str())
            .or_default()
            .add(&result.verdict);
    }

    let mut out = String::new();
    writeln!(out, "{title}").unwrap();
    writeln!(out, "{}", "=".repeat(title.len())).unwrap();
    for line in preamble {
        writeln!(out, "{line}").unwrap();
    }
    writeln!(
        out,
        "A stage passes when its expected rule ids are in {WAF_HEADER} and its forbidden ones are not. \
         Pass rate = passed / (passed + failed); skipped stages are listed at the end. Required: {MIN_PASS_RATE} %."
    )
    .unwrap();
    writeln!(out).unwrap();
    writeln!(out, "Overall: {}", overall.summary()).unwrap();

    writeln!(out, "\nBy paranoia level:").unwrap();
    for (level, tally) in &by_level {
        writeln!(out, "  {:<5} {}", level_name(*level), tally.summary()).unwrap();
    }

    writeln!(out, "\nBy rule file:").unwrap();
    let width = by_group.keys().map(|group| group.len()).max().unwrap_or(0);
    for (group, tally) in &by_group {
        writeln!(out, "  {group:<width$}  {}", tally.summary()).unwrap();
    }

    let failed: Vec<&StageResult> = results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Fail(_)))
        .collect();
    writeln!(out, "\nFailing stages ({}):", failed.len()).unwrap();
    for result in failed {
        writeln!(out, "  {}", describe(result)).unwrap();
        writeln!(
            out,
            "      expected {:?}  forbidden {:?}  fired {:?}  status {}",
            result.expected,
            result.forbidden,
            result.fired,
            show_status(result.status)
        )
        .unwrap();
    }

    let skipped: Vec<&StageResult> = results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Skip(_)))
        .collect();
    writeln!(out, "\nSkipped stages ({}):", skipped.len()).unwrap();
    for result in skipped {
        writeln!(out, "  {}", describe(result)).unwrap();
    }
    (out, overall)
}

/// `file rule R test T stage S (PLn): reason`.
fn describe(result: &StageResult) -> String {
    let reason = match &result.verdict {
        Verdict::Pass => "passed",
        Verdict::Fail(reason) | Verdict::Skip(reason) => reason.as_str(),
    };
    format!(
        "{} rule {} test {} stage {} ({}): {reason}",
        result.file,
        result.rule_id,
        result.test_id,
        result.stage,
        level_name(result.level)
    )
}

/// Writes `target/<name>` (the folder created if needed) and returns its path.
fn write_report(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

fn assert_pass_rate(overall: Tally, report: &Path) {
    assert!(
        overall.judged() > 0,
        "no stage could be judged; see {}",
        report.display()
    );
    assert!(
        overall.rate() >= MIN_PASS_RATE,
        "pass rate {:.2} % is under {MIN_PASS_RATE} % ({} of {} judged stages failed); the failing stages are listed in {}",
        overall.rate(),
        overall.failed,
        overall.judged(),
        report.display()
    );
}

// ---------------------------------------------------------------------------
// Checks of the request builder itself (no proxy needed)
// ---------------------------------------------------------------------------

#[test]
fn requests_are_built_like_go_ftw() {
    let input = Input {
        method: Some("POST".to_string()),
        headers: Some(BTreeMap::from([
            (
                "User-Agent".to_string(),
                Some("OWASP CRS test agent".to_string()),
            ),
            ("Host".to_string(), Some("localhost".to_string())),
        ])),
        data: Some("a=1 2&b=<x>".to_string()),
        ..Input::default()
    };
    let requests = build_requests(&input).unwrap();
    assert_eq!(
        String::from_utf8(requests[0].clone()).unwrap(),
        "POST / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: OWASP CRS test agent\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\nContent-Length: 15\r\n\r\n\
         a=1+2&b=%3Cx%3E"
    );
    // Already escaped data is kept; no autocomplete, no extra header.
    let input = Input {
        uri: Some("/x".to_string()),
        version: Some(String::new()),
        data: Some("a=%41".to_string()),
        autocomplete_headers: Some(false),
        ..Input::default()
    };
    assert_eq!(
        build_requests(&input).unwrap()[0],
        b"GET /x \r\n\r\na=%41".to_vec()
    );
    // Multipart bodies get CRLF line ends.
    let input = Input {
        method: Some("POST".to_string()),
        headers: Some(BTreeMap::from([(
            "Content-Type".to_string(),
            Some("multipart/form-data; boundary=b".to_string()),
        )])),
        data: Some("--b\nx\n".to_string()),
        ..Input::default()
    };
    let request = String::from_utf8(build_requests(&input).unwrap()[0].clone()).unwrap();
    assert!(
        request.ends_with("Content-Length: 8\r\n\r\n--b\r\nx\r\n"),
        "{request}"
    );
    assert_eq!(
        render_template("a{{ \"1\" | repeat 3 }}b").unwrap(),
        "a111b"
    );
    assert_eq!(render_template("{{ repeat 2 \"xy\" }}").unwrap(), "xyxy");
    assert!(render_template("{{constructor.constructor('alert(1)')()}}").is_err());
    assert_eq!(base64_decode("R0VU\nIC8=").unwrap(), b"GET /".to_vec());
    assert_eq!(canonical_key("content-TYPE"), "Content-Type");
    assert_eq!(id_in_pattern(r#"id "942100""#), Some(942100));
    assert_eq!(id_in_pattern(r#"\[id "942100"\]"#), Some(942100));
    assert_eq!(id_in_pattern(r#"\[id "\d+"\]"#), None);
}
