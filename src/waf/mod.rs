//! The web application firewall: an OWASP CRS v4-compatible rule engine.
//!
//! - `seclang` reads SecLang files, `compile` turns them into a `RuleSet`;
//! - `transform` and `operator` are the building blocks of a rule;
//! - `request` and `body` present a request as ModSecurity collections;
//! - `engine` runs the rules over one request;
//! - this module ties them to the policy: CRS path, paranoia level, threshold,
//!   mode, exclusions and the operator's own YAML rules.

pub mod body;
pub mod compile;
pub mod engine;
pub mod filter;
pub mod inspect;
mod offload;
pub mod operator;
pub mod raw;
pub mod request;
pub mod rule;
pub mod seclang;
pub mod section;
pub mod transform;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;

pub use compile::Problem;
pub use engine::{Block, Match, Transaction, Tuning};
pub use filter::WafFilter;
pub use request::{Head, RequestData};
use rule::{EngineMode, IdRange, TargetExclusion};
pub use section::WafSection;

/// Whether matches block or are only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Block,
    Detect,
}

/// What happens to a raw body (no form, JSON or XML parser for it) longer
/// than the inspection limit. Forms, JSON and XML over the limit are always
/// refused: a part of them could never be read as the shop reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    InspectPrefix,
    Reject,
}

/// What happens to a body its processor cannot parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    InspectRaw,
    Reject,
}

/// Where the CRS files are and how to set them up.
#[derive(Debug, Clone, Default)]
pub struct CrsSource {
    /// The CRS folder (holding `rules/`).
    pub path: PathBuf,
    /// An optional `crs-setup.conf`.
    pub setup: Option<PathBuf>,
    /// Plugin folders (each holding `plugins/*.conf`).
    pub plugins: Vec<PathBuf>,
    /// TX variables, like the setup file's `setvar`s (policy values win).
    pub variables: Vec<(String, String)>,
}

/// A policy exclusion: for matching requests, rules or some of their targets are skipped.
#[derive(Debug, Clone)]
pub struct Exclusion {
    pub name: String,
    pub paths: Vec<String>,
    pub path_regex: Option<Regex>,
    pub methods: Vec<String>,
    /// Query parameters (PHP's names) the request must carry, with the value
    /// they must have (`None`: any).
    pub query: Vec<(String, Option<String>)>,
    pub ids: Vec<IdRange>,
    pub tags: Vec<String>,
    pub targets: Vec<TargetExclusion>,
    /// Rules keep running and logging but neither score nor block.
    pub detect_only: bool,
}

impl Exclusion {
    fn applies(&self, method: &str, path: &str, query: &[u8]) -> bool {
        let query_ok = self.query.iter().all(|(name, want)| {
            crate::util::query::value_of(query, name)
                .is_some_and(|v| want.as_ref().is_none_or(|w| v.as_ref() == w.as_bytes()))
        });
        query_ok
            && (self.methods.is_empty()
                || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && (self.paths.is_empty() && self.path_regex.is_none()
                || self.paths.iter().any(|p| path.starts_with(p.as_str()))
                || self.path_regex.as_ref().is_some_and(|r| r.is_match(path)))
    }

    fn tune(&self, t: &mut Tuning) {
        let everything = self.ids.is_empty() && self.tags.is_empty();
        let ids = if everything {
            vec![IdRange {
                from: 0,
                to: u32::MAX,
            }]
        } else {
            self.ids.clone()
        };
        if self.detect_only {
            t.detect_ids.extend(ids);
            t.detect_tags.extend(self.tags.iter().cloned());
        } else if self.targets.is_empty() {
            t.removed_ids.extend(ids);
            t.removed_tags.extend(self.tags.iter().cloned());
        } else {
            for target in &self.targets {
                for range in &ids {
                    t.targets_by_id.push((*range, target.clone()));
                }
                for tag in &self.tags {
                    t.targets_by_tag.push((tag.clone(), target.clone()));
                }
            }
        }
    }
}

/// Everything the WAF needs from the policy.
#[derive(Debug, Clone)]
pub struct WafSettings {
    pub mode: Mode,
    pub paranoia: u8,
    pub threshold: i64,
    pub body_limit: usize,
    pub overflow: Overflow,
    pub malformed: Malformed,
    /// Arguments (query and body) a request may carry; more is refused (400).
    pub max_args: usize,
    pub debug_header: bool,
    /// Ban the client (bans ladder) when the WAF blocks a request.
    pub ban_on_block: bool,
    pub crs: Option<CrsSource>,
    pub exclusions: Vec<Exclusion>,
}

/// A loaded WAF: settings plus compiled rules.
#[derive(Debug)]
pub struct Waf {
    pub settings: WafSettings,
    pub rules: Arc<compile::RuleSet>,
    /// Constructs that could not be run, reported at start-up.
    pub notes: Vec<Problem>,
    /// Rule files read, in order.
    pub files: Vec<PathBuf>,
}

impl Waf {
    /// Loads the CRS (if any), the policy's own rules, and checks them.
    pub fn build(settings: WafSettings, own_rules: Vec<rule::Rule>) -> Result<Waf, Vec<Problem>> {
        let mut loader = compile::Loader::default();
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        if let Some(crs) = &settings.crs {
            let rules_dir = crs.path.join("rules");
            let mut rule_files = match conf_files(&rules_dir) {
                Ok(f) => f,
                Err(message) => {
                    return Err(vec![Problem {
                        file: rules_dir.display().to_string(),
                        line: 0,
                        rule: None,
                        message,
                    }])
                }
            };
            if rule_files.is_empty() {
                return Err(vec![Problem {
                    file: rules_dir.display().to_string(),
                    line: 0,
                    rule: None,
                    message: "no *.conf rule files here".into(),
                }]);
            }
            // Response rules are not run yet: say so once per file.
            rule_files.retain(|f| {
                let response = file_name(f).starts_with("RESPONSE-");
                if response {
                    skipped.push(f.clone());
                }
                !response
            });
            // Engine defaults as crs-setup.conf.example writes them.
            loader.load_text(
                "(engine defaults)",
                "SecDefaultAction \"phase:1,log,auditlog,pass\"\nSecDefaultAction \"phase:2,log,auditlog,pass\"\n",
                Path::new("."),
            );
            if let Some(setup) = &crs.setup {
                loader.load_file(setup);
                files.push(setup.clone());
            }
            loader.push(settings_rule(&settings, crs));
            let plugin_files = |suffix: &str,
                                files: &mut Vec<PathBuf>,
                                loader: &mut compile::Loader| {
                for dir in &crs.plugins {
                    let dir = dir.join("plugins");
                    match conf_files(&dir) {
                        Ok(list) => {
                            for f in list.into_iter().filter(|f| file_name(f).ends_with(suffix)) {
                                loader.load_file(&f);
                                files.push(f);
                            }
                        }
                        Err(message) => loader.errors.push(Problem {
                            file: dir.display().to_string(),
                            line: 0,
                            rule: None,
                            message,
                        }),
                    }
                }
            };
            plugin_files("-config.conf", &mut files, &mut loader);
            plugin_files("-before.conf", &mut files, &mut loader);
            let mut own_pushed = false;
            for f in rule_files {
                // The policy's own rules score before CRS adds the scores up.
                if !own_pushed && file_name(&f).starts_with("REQUEST-949") {
                    for r in own_rules.iter().cloned() {
                        loader.push(r);
                    }
                    own_pushed = true;
                }
                loader.load_file(&f);
                files.push(f);
            }
            if !own_pushed {
                for r in own_rules.iter().cloned() {
                    loader.push(r);
                }
            }
            plugin_files("-after.conf", &mut files, &mut loader);
        } else {
            for r in own_rules {
                loader.push(r);
            }
        }
        let (set, errors, mut notes) = loader.finish();
        let Some(set) = set else {
            return Err(errors);
        };
        for f in skipped {
            notes.push(Problem {
                file: f.display().to_string(),
                line: 0,
                rule: None,
                message:
                    "response rules are not run yet (request inspection only); file not loaded"
                        .into(),
            });
        }
        Ok(Waf {
            settings,
            rules: Arc::new(set),
            notes,
            files,
        })
    }

    /// Starts inspecting a request: exclusions that match it are applied first.
    pub fn transaction(&self, head: Head) -> Transaction {
        let data = RequestData::new(head);
        let mut tuning = Tuning::default();
        if !self.settings.exclusions.is_empty() {
            let path = transform::Transform::NormalizePath.apply(&data.filename);
            let path = String::from_utf8_lossy(&path);
            for e in &self.settings.exclusions {
                if e.applies(&data.head.method, &path, &data.query) {
                    e.tune(&mut tuning);
                }
            }
        }
        let mode = match self.settings.mode {
            Mode::Block => EngineMode::On,
            Mode::Detect => EngineMode::DetectionOnly,
        };
        Transaction::new(self.rules.clone(), data, mode, tuning)
    }
}

/// The policy's values as TX variables, set right after the setup file so
/// that the policy wins over it.
fn settings_rule(settings: &WafSettings, crs: &CrsSource) -> rule::Rule {
    let mut vars: Vec<(String, String)> = vec![
        ("crs_setup_version".into(), "400".into()),
        (
            "blocking_paranoia_level".into(),
            settings.paranoia.to_string(),
        ),
        (
            "inbound_anomaly_score_threshold".into(),
            settings.threshold.to_string(),
        ),
    ];
    vars.extend(crs.variables.iter().cloned());
    let setvars = vars
        .into_iter()
        .map(|(name, value)| rule::SetVar {
            name: rule::Macro {
                parts: vec![rule::MacroPart::Text(name.to_ascii_lowercase())],
            },
            op: rule::SetOp::Set(rule::Macro {
                parts: vec![rule::MacroPart::Text(value)],
            }),
        })
        .collect();
    rule::Rule {
        setvars,
        log: false,
        phase: 1,
        ..own_rule_base(0, "(policy settings)")
    }
}

/// A rule skeleton for rules the policy defines.
pub fn own_rule_base(id: u32, file: &str) -> rule::Rule {
    rule::Rule {
        id,
        phase: 2,
        origin: rule::Origin {
            file: Arc::from(file),
            line: 0,
        },
        targets: vec![rule::Target {
            collection: rule::Collection::UniqueId,
            selector: None,
            count: false,
        }],
        exclusions: Vec::new(),
        operator: operator::Operator::Unconditional,
        negated: false,
        transforms: Vec::new(),
        transforms_key: 0,
        multi_match: false,
        capture: false,
        disruptive: rule::Disruptive::Pass,
        status: None,
        log: true,
        msg: None,
        logdata: None,
        severity: None,
        tags: Vec::new(),
        setvars: Vec::new(),
        ctls: Vec::new(),
        skip_after: None,
        skip: 0,
        chain: None,
        prefilter: None,
        gate: None,
        target_parts: Vec::new(),
        verdict: None,
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `*.conf` files of a folder, sorted by name (the CRS load order).
fn conf_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn compiled(text: &str) -> compile::RuleSet {
        let mut loader = compile::Loader::default();
        loader.load_text("test.conf", text, Path::new("."));
        let (set, errors, _) = loader.finish();
        assert!(errors.is_empty(), "{errors:?}");
        set.unwrap()
    }

    fn load(text: &str) -> Arc<compile::RuleSet> {
        Arc::new(compiled(text))
    }

    fn request(set: &Arc<compile::RuleSet>, uri: &str, body: Option<(&str, &str)>) -> Transaction {
        let mut headers = vec![("Host".to_string(), b"shop.example".to_vec())];
        if let Some((ct, _)) = body {
            headers.push(("Content-Type".to_string(), ct.as_bytes().to_vec()));
        }
        let head = Head {
            method: if body.is_some() { "POST" } else { "GET" }.into(),
            raw_uri: uri.as_bytes().to_vec(),
            protocol: "HTTP/1.1".into(),
            headers,
            ..Head::default()
        };
        let mut tx = Transaction::new(
            set.clone(),
            RequestData::new(head),
            EngineMode::On,
            Tuning::default(),
        );
        tx.run_phase(1);
        let bytes = body.map(|(_, b)| b.as_bytes().to_vec()).unwrap_or_default();
        let len = bytes.len();
        tx.set_body(bytes, len);
        tx.run_phase(2);
        tx
    }

    fn ids(tx: &Transaction) -> Vec<u32> {
        tx.matches().iter().map(|m| m.id).collect()
    }

    /// The rules loaded twice: with the prelude, and made to run in full.
    fn with_and_without_prelude(rules: &str) -> (Arc<compile::RuleSet>, Arc<compile::RuleSet>) {
        let mut without = compiled(rules);
        without.prelude = std::sync::OnceLock::from(None);
        (load(rules), Arc::new(without))
    }

    /// A request through both, which must match the same rules; the
    /// request made with the prelude, then the other.
    fn same_with_and_without_prelude(
        sets: &(Arc<compile::RuleSet>, Arc<compile::RuleSet>),
        uri: &str,
    ) -> (Transaction, Transaction) {
        let a = request(&sets.0, uri, None);
        let b = request(&sets.1, uri, None);
        assert_eq!(
            ids(&a),
            ids(&b),
            "{uri}: with and without the prelude differ"
        );
        (a, b)
    }

    const SCORING: &str = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.score=0,setvar:tx.threshold=5"
SecRule ARGS "@rx (?i)union\s+select" "id:10,phase:2,pass,t:none,t:urlDecodeUni,msg:'SQLi in %{MATCHED_VAR_NAME}',severity:CRITICAL,setvar:'tx.score=+5'"
SecRule REQUEST_COOKIES|!REQUEST_COOKIES:/^_ga/ "@contains <script" "id:11,phase:2,pass,t:lowercase,setvar:tx.score=+5"
SecRule TX:SCORE "@ge %{tx.threshold}" "id:99,phase:2,deny,status:403,msg:'score %{tx.score}',tag:'anomaly-evaluation'"
"#;

    #[test]
    fn scores_add_up_to_a_block() {
        let set = load(SCORING);
        let tx = request(&set, "/?q=1%20UNION%20SELECT%202", None);
        assert_eq!(ids(&tx), vec![1, 10, 99]);
        let block = tx.blocked().unwrap();
        assert_eq!(block.rule, 99);
        assert_eq!(tx.matches()[1].msg, "SQLi in ARGS:q");
        assert_eq!(tx.matches()[1].target, "ARGS:q");
        assert_eq!(tx.matches()[2].msg, "score 5");
        let clean = request(&set, "/?q=union%20station", None);
        assert!(clean.blocked().is_none());
        assert_eq!(ids(&clean), vec![1]);
    }

    #[test]
    fn body_arguments_are_inspected() {
        let set = load(SCORING);
        let form = request(
            &set,
            "/",
            Some(("application/x-www-form-urlencoded", "a=1+union+select+2")),
        );
        assert!(form.blocked().is_some());
        let json = request(
            &set,
            "/",
            Some(("application/json", r#"{"billing":{"note":"union select"}}"#)),
        );
        assert_eq!(json.matches()[1].target, "ARGS:json.billing.note");
        let multipart =
            "--B\r\nContent-Disposition: form-data; name=\"c\"\r\n\r\nunion select\r\n--B--\r\n";
        let upload = request(
            &set,
            "/",
            Some(("multipart/form-data; boundary=B", multipart)),
        );
        assert!(upload.blocked().is_some());
    }

    #[test]
    fn detection_only_records_without_blocking() {
        let set = load(SCORING);
        let head = Head {
            method: "GET".into(),
            raw_uri: b"/?q=union+select".to_vec(),
            protocol: "HTTP/1.1".into(),
            ..Head::default()
        };
        let mut tx = Transaction::new(
            set,
            RequestData::new(head),
            EngineMode::DetectionOnly,
            Tuning::default(),
        );
        tx.run_phase(1);
        tx.run_phase(2);
        assert!(tx.blocked().is_none());
        assert_eq!(tx.would_block().unwrap().rule, 99);
    }

    #[test]
    fn static_target_exclusions_and_ctl() {
        let text = format!(
            "{SCORING}\nSecRule REQUEST_FILENAME \"@streq /login\" \"id:2,phase:1,pass,nolog,ctl:ruleRemoveTargetById=10;ARGS:pwd\"\n"
        );
        // The ctl rule comes after the scoring rules in the file but runs in phase 1.
        let set = load(&text);
        let cookie = request(&set, "/", None);
        assert!(cookie.blocked().is_none());
        let login = request(&set, "/login?pwd=union+select", None);
        assert!(login.blocked().is_none(), "{:?}", ids(&login));
        let elsewhere = request(&set, "/account?pwd=union+select", None);
        assert!(elsewhere.blocked().is_some());
    }

    #[test]
    fn chains_captures_and_skip_after() {
        let set = load(
            r#"
SecRule ARGS:a "@rx ^(\d+)-(\d+)$" "id:20,phase:1,pass,capture,chain"
    SecRule TX:2 "@lt %{tx.1}" "setvar:tx.reversed=1"
SecRule TX:reversed "@eq 1" "id:21,phase:1,pass,skipAfter:END"
SecAction "id:22,phase:1,pass,setvar:tx.skipped=0"
SecMarker END
SecRule &TX:skipped "@eq 0" "id:23,phase:1,pass"
"#,
        );
        let tx = request(&set, "/?a=9-3", None);
        assert_eq!(ids(&tx), vec![20, 21, 23]);
        let tx = request(&set, "/?a=3-9", None);
        assert_eq!(ids(&tx), vec![22]);
    }

    #[test]
    fn bad_files_report_file_and_line() {
        let mut loader = compile::Loader::default();
        loader.load_text(
            "bad.conf",
            "SecRule ARGS \"@rx a\" \"id:1,phase:2,pass\"\n\nSecRule ARGS \"@rx (\" \"id:2,phase:2,bogus:1\"\nSecRule ARGS \"@rx a\" \"phase:2,pass\"\n",
            Path::new("."),
        );
        let (set, errors, notes) = loader.finish();
        assert!(set.is_none());
        let lines: Vec<(usize, Option<u32>)> = errors.iter().map(|e| (e.line, e.rule)).collect();
        assert!(lines.contains(&(3, Some(2))), "{errors:?}");
        assert!(lines.contains(&(4, None)), "{errors:?}");
        assert!(errors.iter().any(|e| e.message.contains("bogus")));
        // An unsupported pattern is a note (rule left out), not a silent skip.
        assert!(
            notes.iter().any(|n| n.rule == Some(2) && n.line == 3),
            "{notes:?}"
        );
    }

    #[test]
    fn unsupported_constructs_are_noted() {
        let mut loader = compile::Loader::default();
        loader.load_text(
            "notes.conf",
            "SecRule ARGS \"@rx (?<=a)b\" \"id:1,phase:2,pass\"\nSecRule RESPONSE_BODY \"@rx x\" \"id:2,phase:4,pass\"\nSecAction \"id:3,phase:1,pass,initcol:ip=%{remote_addr}\"\nSecFoo On\n",
            Path::new("."),
        );
        let (set, errors, notes) = loader.finish();
        assert!(errors.is_empty(), "{errors:?}");
        assert!(set.is_some());
        for (line, id) in [(1, Some(1)), (2, Some(2)), (3, Some(3)), (4, None)] {
            assert!(
                notes.iter().any(|n| n.line == line && n.rule == id),
                "line {line}: {notes:?}"
            );
        }
    }

    #[test]
    fn policy_exclusions_tune_matching_requests() {
        let set = load(SCORING);
        let exclusion = Exclusion {
            name: "login".into(),
            paths: vec!["/wp-login.php".into()],
            path_regex: None,
            methods: vec![],
            query: vec![],
            ids: vec![IdRange { from: 10, to: 10 }],
            tags: vec![],
            targets: vec![TargetExclusion {
                collection: rule::Collection::Args,
                selector: Some(rule::Selector::Name("pwd".into())),
            }],
            detect_only: false,
        };
        let waf = Waf {
            settings: WafSettings {
                mode: Mode::Block,
                paranoia: 1,
                threshold: 5,
                body_limit: 1024,
                overflow: Overflow::InspectPrefix,
                malformed: Malformed::InspectRaw,
                max_args: 2000,
                debug_header: false,
                ban_on_block: false,
                crs: None,
                exclusions: vec![exclusion],
            },
            rules: set,
            notes: vec![],
            files: vec![],
        };
        let run = |uri: &str| {
            let mut tx = waf.transaction(Head {
                method: "GET".into(),
                raw_uri: uri.as_bytes().to_vec(),
                protocol: "HTTP/1.1".into(),
                ..Head::default()
            });
            tx.run_phase(1);
            tx.run_phase(2);
            tx.blocked().is_some()
        };
        assert!(!run("/wp-login.php?pwd=union+select"));
        assert!(
            run("/wp-login.php?log=union+select"),
            "other fields stay inspected"
        );
        assert!(run("/shop/?pwd=union+select"), "other paths stay inspected");
        // Paths are compared normalised, as the origin will resolve them.
        assert!(!run("/x/../wp-login.php?pwd=union+select"));
    }

    /// Rules sharing targets and chains read one gate; a gate that is clear
    /// must only ever skip rules that would not have matched.
    #[test]
    fn gated_rules_fire_exactly_as_ungated_ones() {
        const RULES: &str = r#"
SecRule ARGS|!ARGS:skip|REQUEST_COOKIES "@rx (?i)union\s+select" "id:1,phase:2,pass,t:none,t:urlDecodeUni,t:lowercase"
SecRule ARGS|REQUEST_COOKIES "@pm evil wicked" "id:2,phase:2,pass,t:none,t:lowercase"
SecRule ARGS:q "@rx <script" "id:3,phase:2,pass,t:none,t:htmlEntityDecode,t:lowercase"
SecRule REQUEST_HEADERS:User-Agent|ARGS_NAMES "@rx sqlmap" "id:4,phase:1,pass,t:none,t:lowercase"
SecRule ARGS "!@rx ^[a-z0-9 ]*$" "id:5,phase:2,pass,t:none"
SecRule REQUEST_FILENAME "@rx \.env$" "id:6,phase:1,pass,t:none,t:lowercase,t:normalizePath"
SecRule ARGS|!ARGS:skip "@rx (?i)union\s+select" "id:7,phase:2,pass,t:none,t:urlDecodeUni,t:lowercase,chain"
    SecRule ARGS_NAMES "@rx ^q$" "t:none"
"#;
        let gated = load(RULES);
        let ungated = {
            let mut set = compiled(RULES);
            for rule in &mut set.rules {
                rule.gate = None;
            }
            Arc::new(set)
        };
        assert!(
            gated.rules.iter().filter(|r| r.gate.is_some()).count() >= 5,
            "the prefiltered rules are gated"
        );
        assert!(ungated.rules.iter().all(|r| r.gate.is_none()));
        let form = "application/x-www-form-urlencoded";
        // (URI, form body, ids expected to fire)
        type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a [u32]);
        let cases: &[Case] = &[
            ("/?q=shoes", None, &[]),
            ("/?q=1%2520UNION%2520SELECT%25202", None, &[1, 5, 7]),
            ("/?skip=1+union+select+2", None, &[]),
            ("/?a=an+EVIL+plan", None, &[2, 5]),
            ("/?q=%26lt%3Bscript%26gt%3B", None, &[3, 5]),
            ("/?sqlmap=1", None, &[4]),
            ("/.ENV", None, &[6]),
            ("/x/../.env?q=ok", None, &[6]),
            ("/", Some((form, "q=wicked+union+select+x")), &[1, 2, 7]),
            ("/", Some((form, "skip=union+select&q=fine")), &[]),
        ];
        for (uri, body, expected) in cases {
            let mut a = ids(&request(&gated, uri, *body));
            let mut b = ids(&request(&ungated, uri, *body));
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "{uri} {body:?}: gated and ungated differ");
            assert_eq!(&a[..], *expected, "{uri} {body:?}");
        }
    }

    #[test]
    fn a_capturing_rule_sets_its_variables_once_per_match_with_that_matchs_groups() {
        // As CRS 920450 records every header name, then looks the records
        // up in its list of restricted headers.
        let set = load(
            r#"
SecRule ARGS_NAMES "@rx ^(..)(.*)$" "id:20,phase:1,pass,nolog,capture,setvar:'tx.n_%{tx.1}=%{tx.2}'"
SecRule TX:n_ab "@streq 1" "id:21,phase:1,pass,nolog,setvar:tx.ok=+1"
SecRule TX:n_cd "@streq 2" "id:22,phase:1,pass,nolog,setvar:tx.ok=+1"
SecRule TX:n_ef "@streq 3" "id:23,phase:1,pass,nolog,setvar:tx.ok=+1"
SecRule ARGS_NAMES "@rx ^.*$" "id:24,phase:1,pass,nolog,capture,t:lowercase,setvar:'tx.h_%{tx.0}=/%{tx.0}/',chain"
    SecRule TX:/^h_/ "@within /cd2/ /proxy/" "setvar:tx.restricted=+1"
"#,
        );
        let tx = request(&set, "/?ab1=x&CD2=y&ef3=z", None);
        assert_eq!(ids(&tx), [20, 21, 22, 23, 24]);
        assert_eq!(tx.tx("ok"), 3, "each name recorded with its own groups");
        assert_eq!(tx.tx("restricted"), 1);
        let tx = request(&set, "/?ab1=x&ef3=z", None);
        assert_eq!(ids(&tx), [20, 21, 23]);
    }

    /// A rule that found nothing in a value remembers it for the next
    /// requests (`Rule::verdict`): only for its own rule set, only when its
    /// answer depends on the value alone, and never a hit.
    #[test]
    fn a_remembered_clean_verdict_never_hides_a_match() {
        // Regexes without literals: the prefilter cannot rule these out, so
        // the verdict memo answers for them.
        let quiet = load(r#"SecRule ARGS "@rx ^[0-9]+$" "id:30,phase:1,pass,log,t:lowercase""#);
        let loud = load(r#"SecRule ARGS "@rx ^[a-z]+$" "id:30,phase:1,pass,log,t:lowercase""#);
        assert!(quiet.rules[0].verdict.is_some() && loud.rules[0].verdict.is_some());
        for _ in 0..2 {
            assert_eq!(ids(&request(&quiet, "/?q=Abc", None)), [0u32; 0]);
        }
        // The same rule slot in another build (a reload) sees the value anew.
        for _ in 0..2 {
            assert_eq!(
                ids(&request(&loud, "/?q=Abc", None)),
                [30],
                "a hit is never remembered"
            );
        }
        // A parameter with a macro: the answer depends on the request's
        // variables, not on the value alone.
        let set = load(
            r#"
SecRule ARGS:n "@rx ^(.*)$" "id:40,phase:1,pass,nolog,capture,setvar:tx.needle=%{tx.1}"
SecRule ARGS:v "@contains %{tx.needle}" "id:41,phase:1,pass,log,t:lowercase"
"#,
        );
        assert!(set.rules[1].verdict.is_none());
        assert_eq!(ids(&request(&set, "/?n=zz&v=Abc", None)), [40]);
        assert_eq!(ids(&request(&set, "/?n=bc&v=Abc", None)), [40, 41]);
        // Negated, multiMatch and libinjection rules, twice each: the second
        // request answers from the memo and must say the same.
        let set = load(
            r#"
SecRule ARGS:a "!@rx ^[a-z]+$" "id:50,phase:1,pass,log,t:lowercase"
SecRule ARGS:b "@detectSQLi" "id:51,phase:1,pass,log,t:none,t:urlDecodeUni,multiMatch"
SecRule ARGS:c "@detectXSS" "id:52,phase:1,pass,log,t:none,t:htmlEntityDecode"
"#,
        );
        let cases: &[(&str, &[u32])] = &[
            ("/?a=Word&b=O%2527Brien&c=caf%C3%A9", &[]),
            (
                "/?a=W0rd&b=1%2527%2520OR%25201%253D1--&c=%26lt%3Bscript%26gt%3Balert(1)",
                &[50, 51, 52],
            ),
        ];
        for (uri, expected) in cases {
            for round in 0..2 {
                assert_eq!(
                    ids(&request(&set, uri, None)),
                    *expected,
                    "{uri}, round {round}"
                );
            }
        }
    }

    /// Each GET of `cases` matches its rules, twice over: the second time
    /// the thread's memos know the values.
    fn same_ids_twice(set: &Arc<compile::RuleSet>, cases: &[(&str, &[u32])]) {
        for round in 0..2 {
            for (uri, expected) in cases {
                assert_eq!(
                    ids(&request(set, uri, None)),
                    *expected,
                    "{uri}, round {round}"
                );
            }
        }
    }

    /// A content that differs from one already scanned only in ASCII case
    /// takes its prefilter bits; any other difference is scanned anew.
    #[test]
    fn scans_are_shared_only_across_case() {
        let set = load(
            r#"
SecRule ARGS "@rx zzz" "id:73,phase:1,pass,log"
SecRule ARGS "@rx union" "id:72,phase:1,pass,log,t:urlDecodeUni"
SecRule ARGS "@rx union" "id:74,phase:1,pass,log,t:lowercase"
SecRule ARGS "@rx Union" "id:75,phase:1,pass,log,t:urlDecodeUni,t:lowercase"
"#,
        );
        let cases: &[(&str, &[u32])] = &[
            ("/?q=%2575nion", &[72]),
            ("/?q=UNION", &[74]),
            ("/?q=%2555NION", &[]),
            ("/?q=%2575nion&r=zzz", &[73, 72]),
        ];
        same_ids_twice(&set, cases);
    }

    /// A rule the gate lets run walks only the targets whose values hold
    /// one of its literals; the matches are the same as walking them all.
    #[test]
    fn only_targets_with_the_literal_are_walked() {
        let set = load(
            r#"
SecRule REQUEST_HEADERS|ARGS_NAMES|ARGS "@rx union" "id:90,phase:1,pass,log,t:lowercase"
SecRule ARGS_NAMES|ARGS "@rx ^union$" "id:91,phase:1,pass,log,t:lowercase"
"#,
        );
        let cases: &[(&str, &[u32])] = &[
            ("/?union=1", &[90, 91]),
            ("/?q=UNION", &[90, 91]),
            ("/?q=a+union", &[90]),
            ("/?union_x=1&q=union", &[90, 91]),
            ("/?q=uni", &[]),
        ];
        same_ids_twice(&set, cases);
        let tx = request(&set, "/?union_x=1&q=union", None);
        let matched: Vec<&str> = tx.matches().iter().map(|m| m.target.as_str()).collect();
        assert_eq!(matched, ["ARGS_NAMES:union_x", "ARGS:q"]);
    }

    /// A rule the gate lets run walks only the values of a target that
    /// hold one of its literals (`Cache::part_list`): each rule finds its
    /// own values among those its part shares with other rules, in request
    /// order, with the body's arguments after the query's, and the rule's
    /// own exclusions and the request's (`ctl`) still apply.
    #[test]
    fn rules_walk_only_the_values_with_their_literal() {
        let set = load(
            r#"
SecRule REQUEST_FILENAME "@streq /x" "id:1,phase:1,pass,nolog,ctl:ruleRemoveTargetById=100;ARGS:quiet"
SecRule ARGS|ARGS_NAMES "@rx union" "id:100,phase:2,pass,log,t:lowercase"
SecRule ARGS|ARGS_NAMES "@rx select" "id:101,phase:2,pass,log,t:lowercase"
SecRule ARGS "@rx select" "id:102,phase:2,pass,log,t:lowercase"
SecRuleUpdateTargetById 101 "!ARGS:skip"
"#,
        );
        let form = Some(("application/x-www-form-urlencoded", "c=2&d=union+all&e=x"));
        for round in 0..2 {
            // On /x the request's ctl removes ARGS:quiet from rule 100.
            for (path, quiet_seen) in [("/x", false), ("/y", true)] {
                let uri = format!("{path}?a=1&quiet=UNION&b=Select+it&skip=select&selector=1");
                let tx = request(&set, &uri, form);
                let targets: Vec<(u32, Vec<String>)> = tx
                    .matches()
                    .iter()
                    .filter(|m| m.id >= 100)
                    .map(|m| (m.id, m.targets.clone()))
                    .collect();
                let union: &[&str] = if quiet_seen {
                    &["ARGS:quiet", "ARGS:d"]
                } else {
                    &["ARGS:d"]
                };
                assert_eq!(
                    targets,
                    [
                        (100, union.iter().map(|t| t.to_string()).collect()),
                        (101, vec!["ARGS:b".into(), "ARGS_NAMES:selector".into()]),
                        (102, vec!["ARGS:b".into(), "ARGS:skip".into()]),
                    ],
                    "{path}, round {round}"
                );
            }
        }
    }

    /// A chain's last step applies to what its start made of the value
    /// (`RuleSet::chain_parents`): the same as running the whole chain.
    #[test]
    fn chains_build_on_their_starts() {
        let set = load(
            r#"
SecRule ARGS "@rx zz" "id:80,phase:1,pass,log,t:urlDecodeUni"
SecRule ARGS "@rx <script" "id:81,phase:1,pass,log,t:urlDecodeUni,t:htmlEntityDecode"
SecRule ARGS "@rx <script" "id:82,phase:1,pass,log,t:urlDecodeUni,t:htmlEntityDecode,t:lowercase"
SecRule ARGS "@rx ^abc$" "id:83,phase:1,pass,log,t:urlDecodeUni,t:lowercase"
"#,
        );
        let cases: &[(&str, &[u32])] = &[
            ("/?q=%2526lt%253BSCRIPT", &[82]),
            ("/?q=%2526lt%253Bscript", &[81, 82]),
            ("/?q=A%2542C", &[83]),
            ("/?q=abc&r=zz", &[80, 83]),
        ];
        same_ids_twice(&set, cases);
    }

    /// The memo's facts are found through each value's number in its
    /// request (`ValueId`): the same number holds another value in the
    /// next phase (the body's arguments join ARGS) and in the next request.
    /// What one value taught must never answer for another.
    #[test]
    fn facts_follow_values_not_their_numbers() {
        let set = load(
            r#"
SecRule ARGS "@rx ^[0-9]+$" "id:60,phase:1,pass,log,t:lowercase"
SecRule ARGS "@rx ^[0-9]+$" "id:61,phase:2,pass,log,t:lowercase"
SecRule ARGS "@contains '" "id:62,phase:2,pass,log,t:lowercase"
"#,
        );
        let form = "application/x-www-form-urlencoded";
        let cases: &[(&str, &str, &[u32])] = &[
            ("/?a=x", "b=5", &[61]),
            ("/?a=5", "b=x", &[60, 61]),
            ("/?a=x", "b=x", &[]),
            ("/?a=x&c=y", "b=O%27Brien", &[62]),
            ("/?a=O%27Brien", "b=x", &[62]),
            ("/?a=x", "b=x&d=7", &[61]),
        ];
        for round in 0..2 {
            for (uri, body, expected) in cases {
                let tx = request(&set, uri, Some((form, body)));
                assert_eq!(ids(&tx), *expected, "{uri} {body}, round {round}");
            }
        }
        // More distinct values than the memo keeps: it fills up in phase 1
        // and starts empty in phase 2, where nothing learnt before may
        // answer.
        let many: Vec<String> = (0..9000).map(|i| format!("v{i}=x{i}")).collect();
        let uri = format!("/?{}&a=5", many.join("&"));
        for round in 0..2 {
            let tx = request(&set, &uri, Some((form, "b=x")));
            assert_eq!(ids(&tx), [60, 61], "round {round}");
            let tx = request(&set, "/?a=x", Some((form, "b=7")));
            assert_eq!(ids(&tx), [61], "round {round}");
        }
    }

    /// After the prelude, a rule that reads only TX variables the prelude
    /// set and no later rule writes gives every request the same answer:
    /// it is replayed, with its record and MATCHED_VAR, and must answer
    /// exactly as running it would. A variable a later rule may write, by
    /// name or by a name built with a macro, keeps its rules running.
    #[test]
    fn settled_rules_answer_as_if_they_ran() {
        const RULES: &str = r#"
SecAction "id:10,phase:1,pass,nolog,setvar:tx.level=1,setvar:tx.mode=calm,setvar:tx.floor=1"
SecRule ARGS:q "@contains x" "id:11,phase:1,pass,nolog,setvar:tx.mode=alert,setvar:tx.cap=5"
SecRule ARGS:n "@rx ^(.*)$" "id:12,phase:1,pass,nolog,capture,setvar:tx.dyn_%{tx.1}=1"
SecRule TX:level "@lt 2" "id:13,phase:1,pass,nolog,skipAfter:END-LOW"
SecRule ARGS "@contains y" "id:14,phase:1,pass,log"
SecMarker "END-LOW"
SecRule MATCHED_VAR "@streq 1" "id:15,phase:1,pass,nolog"
SecRule TX:mode "@streq alert" "id:16,phase:1,pass,nolog"
SecRule TX:dyn_a "@eq 1" "id:17,phase:2,pass,nolog"
SecRule TX:level "@ge 2" "id:18,phase:2,pass,log,setvar:tx.high=1"
SecRule &TX:level "@eq 1" "id:19,phase:2,pass,nolog"
SecRule TX:level "@eq 1" "id:20,phase:2,pass,nolog,setvar:tx.seen=1"
SecRule TX:seen "@eq 1" "id:21,phase:2,pass,nolog"
SecRule TX:level "@lt %{tx.floor}" "id:22,phase:2,deny,log"
SecRule TX:level "@lt %{tx.cap}" "id:23,phase:2,pass,nolog"
"#;
        let sets = with_and_without_prelude(RULES);
        let cases: &[(&str, &[u32])] = &[
            ("/?q=y", &[10, 13, 15, 19, 20, 21]),
            ("/?q=xy", &[10, 11, 13, 15, 16, 19, 20, 21, 23]),
            ("/?n=a", &[10, 12, 13, 15, 17, 19, 20, 21]),
        ];
        for (uri, expected) in cases {
            let (a, _) = same_with_and_without_prelude(&sets, uri);
            assert_eq!(ids(&a), *expected, "{uri}");
        }
        let with_prelude = &sets.0;
        let Some(Some(prelude)) = with_prelude.prelude.get() else {
            panic!("rule 10 makes a prelude");
        };
        let settled: Vec<u32> = with_prelude
            .rules
            .iter()
            .enumerate()
            .filter(|(i, _)| prelude.has_settled(*i))
            .map(|(_, r)| r.id)
            .collect();
        // 16 reads what 11 writes, 17 what 12's built name may write, 21
        // what 20 writes, 23's parameter what 11 writes; 20 matches, and a
        // match that sets a variable runs. 18 and 22 do not match: their
        // actions do not matter.
        assert_eq!(settled, [13, 18, 19, 22]);
        // A request that a ctl tuned runs them again: here 13 loses its
        // target, so it no longer skips 14.
        let tuned = RULES.replacen(
            "SecRule TX:level",
            "SecRule ARGS:t \"@streq 1\" \"id:9,phase:1,pass,nolog,ctl:ruleRemoveTargetById=13;TX:level\"\nSecRule TX:level",
            1,
        );
        let (a, _) = same_with_and_without_prelude(&with_and_without_prelude(&tuned), "/?t=1&q=y");
        assert_eq!(ids(&a), [10, 9, 14, 19, 20, 21]);
    }

    /// The rules that open phase 1 and read nothing of the request run once
    /// per rule set: every request starts from their result, which must be
    /// what running them would give.
    #[test]
    fn requests_start_from_the_prelude_exactly_as_if_they_ran_it() {
        const RULES: &str = r#"
SecAction "id:10,phase:1,pass,nolog,setvar:tx.score=0,setvar:tx.limit=3"
SecRule &TX:word "@eq 0" "id:11,phase:1,pass,nolog,setvar:tx.word=evil"
SecRule TX:limit "@lt 2" "id:12,phase:1,pass,nolog,skipAfter:END-SETUP"
SecAction "id:13,phase:1,pass,nolog,setvar:tx.score=+1"
SecMarker "END-SETUP"
SecRule MATCHED_VAR "@streq req-7" "id:18,phase:1,pass,nolog"
SecRule ARGS "@contains %{tx.word}" "id:14,phase:1,pass,log,setvar:tx.score=+5"
SecRule TX:score "@ge 5" "id:15,phase:1,deny,log"
SecAction "id:16,phase:1,pass,nolog,setvar:tx.late=%{tx.score}"
SecRule &TX:late "@eq 1" "id:17,phase:2,pass,log"
"#;
        let sets = with_and_without_prelude(RULES);
        let (with_prelude, without) = (&sets.0, &sets.1);
        let cases: &[(&str, &[u32], i64)] = &[
            ("/?q=fine", &[10, 11, 13, 16, 17], 1),
            ("/?q=pure+evil", &[10, 11, 13, 14, 15], 6),
        ];
        for (uri, expected, score) in cases {
            let (a, b) = same_with_and_without_prelude(&sets, uri);
            assert_eq!(ids(&a), *expected, "{uri}");
            assert_eq!(
                (a.tx("score"), a.tx("limit")),
                (b.tx("score"), b.tx("limit"))
            );
            assert_eq!(a.tx("score"), *score, "{uri}");
        }
        assert!(
            matches!(with_prelude.prelude.get(), Some(Some(_))),
            "rules 10 to 13 make a prelude"
        );
        // After the prelude, MATCHED_VAR is this request's UNIQUE_ID (what
        // SecAction 13 matched), not the one the prelude ran with.
        for set in [with_prelude, without] {
            let mut tx = Transaction::new(
                set.clone(),
                RequestData::new(Head {
                    method: "GET".into(),
                    raw_uri: b"/".to_vec(),
                    protocol: "HTTP/1.1".into(),
                    request_id: "req-7".into(),
                    ..Head::default()
                }),
                EngineMode::On,
                Tuning::default(),
            );
            tx.run_phase(1);
            assert_eq!(ids(&tx), [10, 11, 13, 18, 16]);
        }
        // A request whose tuning removes a prelude rule runs them all.
        let mut tuning = Tuning::default();
        tuning.removed_ids.push(IdRange { from: 13, to: 13 });
        let mut tx = Transaction::new(
            with_prelude.clone(),
            RequestData::new(Head {
                method: "GET".into(),
                raw_uri: b"/?q=fine".to_vec(),
                protocol: "HTTP/1.1".into(),
                ..Head::default()
            }),
            EngineMode::On,
            tuning,
        );
        tx.run_phase(1);
        assert_eq!(ids(&tx), [10, 11, 16]);
        assert_eq!(tx.tx("score"), 0);
        // A request-independent rule that blocks blocks every request.
        let always = load(
            r#"
SecRule &TX:crs_setup_version "@eq 0" "id:20,phase:1,deny,log"
SecRule ARGS "@contains x" "id:21,phase:1,pass,log"
"#,
        );
        for _ in 0..2 {
            let tx = request(&always, "/?q=x", None);
            assert_eq!(ids(&tx), [20]);
            assert!(tx.blocked().is_some());
        }
        assert!(matches!(always.prelude.get(), Some(None)));
    }
}
