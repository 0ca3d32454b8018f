//! The `waf` block: CRS location and tuning, exclusions and the operator's
//! own rules, checked and turned into a loaded `Waf`.

use std::path::Path;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::raw::{self, WafBlock};
use crate::policy::{Compiler as Checker, Diagnostic, Pos, Section};
use crate::waf::rule::{self, Collection, IdRange, Macro, SetOp, SetVar, Target, TargetExclusion};
use crate::waf::{self, seclang, transform::Transform, Exclusion, Waf, WafSettings};

/// The `waf` block.
pub struct WafSection;

impl Section for WafSection {
    const KEY: &'static str = "waf";
    type Raw = WafBlock;
    type Compiled = Arc<Waf>;

    /// `None` when absent or `enabled: false`.
    fn compile(raw: Option<WafBlock>, c: &mut Checker<'_>) -> Option<Arc<Waf>> {
        compile_waf(c, raw?)
    }
}

fn compile_waf(c: &mut Checker<'_>, b: WafBlock) -> Option<Arc<Waf>> {
    if b.enabled == Some(false) {
        return None;
    }
    let before = c.problems();
    let base = c.base();
    let paranoia = b.paranoia_level.as_ref().map_or(1, |p| p.value);
    if !(1..=4).contains(&paranoia) {
        c.at(
            b.paranoia_level.as_ref(),
            "`waf.paranoia_level` must be 1, 2, 3 or 4",
            Some("1 blocks clear attacks only; each level adds stricter rules and more false positives"),
        );
    }
    let threshold = b.inbound_threshold.as_ref().map_or(5, |t| t.value);
    if threshold < 1 {
        c.at(
            b.inbound_threshold.as_ref(),
            "`waf.inbound_threshold` must be at least 1",
            Some("5 (one critical match) is the CRS default"),
        );
    }
    let body_limit = b.body_limit.map_or(128 << 10, |s| s.0);
    let max_args = b.max_args.as_ref().map_or(2000, |m| m.value);
    if max_args == 0 {
        c.at(
            b.max_args.as_ref(),
            "`waf.max_args` must be at least 1",
            Some("PHP reads 1000 variables by default (max_input_vars); WooCommerce shops often raise it to 3000"),
        );
    }
    let crs = b.crs.map(|crs| {
        let path = match &crs.path {
            Some(p) => base.join(expand_env(&p.value)),
            None => {
                c.at::<()>(None, "`waf.crs.path` is missing", Some("point it at a CRS v4 release folder (the one holding rules/)"));
                Default::default()
            }
        };
        if let Some(p) = &crs.path {
            if !path.join("rules").is_dir() {
                c.error(
                    p,
                    format!("no CRS rules at {} (expected {}/rules/*.conf)", path.display(), path.display()),
                    Some("download a CRS v4 release and point `waf.crs.path` at its folder; `${VAR}` reads an environment variable"),
                );
            }
        }
        let setup = crs.setup.as_ref().map(|s| base.join(expand_env(&s.value)));
        let plugins = crs
            .plugins
            .iter()
            .map(|p| {
                let dir = base.join(expand_env(&p.value));
                if !dir.join("plugins").is_dir() {
                    c.error(p, format!("no plugin at {} (expected {}/plugins/*.conf)", dir.display(), dir.display()), None);
                }
                dir
            })
            .collect();
        let variables = crs
            .variables
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.value.to_string()))
            .collect();
        waf::CrsSource {
            path,
            setup,
            plugins,
            variables,
        }
    });
    let exclusions = b
        .exclusions
        .iter()
        .enumerate()
        .filter_map(|(i, e)| exclusion(c, i, e))
        .collect();
    let mut own = Vec::new();
    let mut ids = Vec::new();
    for r in &b.rules {
        if let Some(rule) = own_rule(c, r, paranoia) {
            if ids.contains(&rule.id) {
                c.at(
                    r.id.as_ref(),
                    format!("rule id {} is used twice", rule.id),
                    None,
                );
            }
            ids.push(rule.id);
            own.push(rule);
        }
    }
    if c.problems() > before {
        return None;
    }
    let settings = WafSettings {
        mode: match b.mode.unwrap_or_default() {
            raw::WafMode::Block => waf::Mode::Block,
            raw::WafMode::Detect => waf::Mode::Detect,
        },
        paranoia,
        threshold,
        body_limit: usize::try_from(body_limit).unwrap_or(usize::MAX),
        overflow: match b.body_overflow.unwrap_or_default() {
            raw::BodyOverflow::InspectPrefix => waf::Overflow::InspectPrefix,
            raw::BodyOverflow::Reject => waf::Overflow::Reject,
        },
        malformed: match b.malformed_body.unwrap_or_default() {
            raw::MalformedBody::InspectRaw => waf::Malformed::InspectRaw,
            raw::MalformedBody::Reject => waf::Malformed::Reject,
        },
        max_args,
        debug_header: b.debug_header.unwrap_or(false),
        ban_on_block: b.ban_on_block.unwrap_or(false),
        crs,
        exclusions,
    };
    match Waf::build(settings, own) {
        Ok(w) => {
            for note in &w.notes {
                c.warning(note_diagnostic(note));
            }
            Some(Arc::new(w))
        }
        Err(problems) => {
            for p in problems {
                let mut d = note_diagnostic(&p);
                d.message = p.rule.map_or_else(
                    || p.message.clone(),
                    |id| format!("rule {id}: {}", p.message),
                );
                c.report(d.with_hint("fix the rules file, or remove it from the CRS folder; the running rules stay in place until it loads"));
            }
            None
        }
    }
}

fn note_diagnostic(p: &waf::Problem) -> Diagnostic {
    let mut d = Diagnostic::new(
        Path::new(&p.file),
        Pos {
            line: u32::try_from(p.line.max(1)).unwrap_or(u32::MAX),
            col: 1,
        },
        match p.rule {
            Some(id) => format!("note: rule {id}: {}", p.message),
            None => format!("note: {}", p.message),
        },
    );
    d.hint = None;
    d
}

/// `${NAME}` and `${NAME:-default}` from the environment (CRS installed in different places).
fn expand_env(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let inner = &rest[start + 2..start + len];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        out.push_str(&std::env::var(name).unwrap_or_else(|_| default.to_string()));
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

fn id_range(c: &mut Checker<'_>, r: &Spanned<raw::IdOrRange>) -> Option<IdRange> {
    let parsed = match &r.value {
        raw::IdOrRange::Id(id) => Some(IdRange { from: *id, to: *id }),
        raw::IdOrRange::Text(t) => IdRange::parse(t),
    };
    if parsed.is_none() {
        c.error(
            r,
            "not a rule id or range",
            Some("write `942100` or `\"942100-942999\"`"),
        );
    }
    parsed
}

fn target_exclusion(c: &mut Checker<'_>, t: &Spanned<String>) -> Option<TargetExclusion> {
    let vars = match seclang::variables(&t.value) {
        Ok(v) => v,
        Err(e) => {
            c.error(t, e, None);
            return None;
        }
    };
    let [var] = vars.as_slice() else {
        c.error(
            t,
            "one target per entry",
            Some("write `ARGS:pwd` or `REQUEST_COOKIES:/^sbjs_/`"),
        );
        return None;
    };
    let Some(collection) = Collection::parse(&var.collection) else {
        c.error(
            t,
            format!("`{}` is not a variable the WAF knows", var.collection),
            Some("e.g. ARGS, ARGS_NAMES, REQUEST_COOKIES, REQUEST_HEADERS, REQUEST_FILENAME"),
        );
        return None;
    };
    let selector = match rule::Selector::compile(var.selector.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            c.error(t, e, None);
            return None;
        }
    };
    Some(TargetExclusion {
        collection,
        selector,
    })
}

fn exclusion(c: &mut Checker<'_>, index: usize, e: &raw::WafExclusionBlock) -> Option<Exclusion> {
    let ids: Vec<IdRange> = e.rules.iter().filter_map(|r| id_range(c, r)).collect();
    let targets: Vec<TargetExclusion> = e
        .targets
        .iter()
        .filter_map(|t| target_exclusion(c, t))
        .collect();
    let path_regex = e
        .path_regex
        .as_ref()
        .and_then(|r| match regex::Regex::new(&r.value) {
            Ok(re) => Some(re),
            Err(err) => {
                c.error(r, format!("invalid regex: {err}"), None);
                None
            }
        });
    for p in &e.paths {
        if !p.value.starts_with('/') {
            c.error(
                p,
                "a path starts with `/`",
                Some("paths are prefixes of the request path, e.g. `/wp-admin/`"),
            );
        }
    }
    let mode = e.mode.unwrap_or_default();
    if e.paths.is_empty()
        && e.path_regex.is_none()
        && ids.is_empty()
        && e.tags.is_empty()
        && targets.is_empty()
    {
        c.at::<()>(
            None,
            format!("waf.exclusions[{index}] excludes everything everywhere"),
            Some(
                "name rules, tags, targets or paths; use `waf.enabled: false` to turn the WAF off",
            ),
        );
    }
    Some(Exclusion {
        name: e
            .name
            .clone()
            .unwrap_or_else(|| format!("exclusion {}", index + 1)),
        paths: e.paths.iter().map(|p| p.value.clone()).collect(),
        path_regex,
        methods: e
            .methods
            .iter()
            .map(|m| m.value.to_ascii_uppercase())
            .collect(),
        query: e
            .query
            .iter()
            .map(|(k, v)| (k.clone(), (v != "*").then(|| v.clone())))
            .collect(),
        ids,
        tags: e.tags.iter().map(|t| t.value.clone()).collect(),
        targets,
        detect_only: mode == raw::ExclusionMode::Detect,
    })
}

/// A YAML rule as a compiled rule (skipped when above the paranoia level).
fn own_rule(c: &mut Checker<'_>, r: &raw::WafRuleBlock, paranoia: u8) -> Option<rule::Rule> {
    let Some(id) = r.id.as_ref() else {
        c.at::<()>(
            None,
            "a WAF rule needs an `id`",
            Some("use ids from 1000000 up so they never collide with CRS (9xxxxx)"),
        );
        return None;
    };
    let mut ok = true;
    let mut targets = Vec::new();
    let mut exclusions = Vec::new();
    for t in &r.targets {
        match seclang::variables(&t.value) {
            Ok(vars) => {
                for var in vars {
                    let Some(collection) = Collection::parse(&var.collection) else {
                        c.error(t, format!("`{}` is not a variable the WAF knows", var.collection), Some("e.g. ARGS, ARGS_NAMES, REQUEST_FILENAME, REQUEST_HEADERS:User-Agent, REQUEST_COOKIES, REQUEST_BODY"));
                        ok = false;
                        continue;
                    };
                    let selector = match rule::Selector::compile(var.selector.as_ref()) {
                        Ok(s) => s,
                        Err(e) => {
                            c.error(t, e, None);
                            ok = false;
                            continue;
                        }
                    };
                    if var.exclude {
                        exclusions.push(TargetExclusion {
                            collection,
                            selector,
                        });
                    } else {
                        targets.push(Target {
                            collection,
                            selector,
                            count: var.count,
                        });
                    }
                }
            }
            Err(e) => {
                c.error(t, e, None);
                ok = false;
            }
        }
    }
    if targets.is_empty() && ok {
        c.at(
            r.id.as_ref(),
            format!("rule {}: no `targets`", id.value),
            Some("e.g. targets: [REQUEST_FILENAME] or [ARGS, REQUEST_COOKIES]"),
        );
        ok = false;
    }
    let mut transforms = Vec::new();
    for t in &r.transforms {
        if t.value.eq_ignore_ascii_case("none") {
            transforms.clear();
            continue;
        }
        match Transform::parse(&t.value) {
            Some(x) => transforms.push(x),
            None => {
                c.error(t, format!("`{}` is not a transformation", t.value), Some("e.g. urlDecodeUni, htmlEntityDecode, lowercase, normalizePath, removeNulls, compressWhitespace"));
                ok = false;
            }
        }
    }
    let Some(op_text) = r.operator.as_ref() else {
        c.at(
            r.id.as_ref(),
            format!("rule {}: no `operator`", id.value),
            Some("e.g. operator: \"@rx (?i)\\\\.env$\" or \"@pm union select\""),
        );
        return None;
    };
    let raw_op = seclang::operator(&op_text.value);
    let operator = match waf::compile::compile_operator(&raw_op.name, &raw_op.param, &c.base()) {
        Ok(o) => Some(o),
        Err(
            waf::compile::OperatorError::Unsupported(m) | waf::compile::OperatorError::Invalid(m),
        ) => {
            c.error(op_text, m, Some("operators: @rx, @pm, @pmFromFile, @streq, @contains, @beginsWith, @endsWith, @within, @eq/@gt/@ge/@lt/@le, @detectSQLi, @detectXSS, @ipMatch, @validateByteRange, @validateUrlEncoding, @validateUtf8Encoding"));
            None
        }
    };
    let severity = match &r.severity {
        Some(s) => match rule::severity(&s.value) {
            Some(v) => v,
            None => {
                c.error(
                    s,
                    format!("`{}` is not a severity", s.value),
                    Some("critical, error, warning or notice"),
                );
                ok = false;
                2
            }
        },
        None => 2,
    };
    let pl = r.paranoia_level.as_ref().map_or(1, |p| p.value);
    if !(1..=4).contains(&pl) {
        c.at(
            r.paranoia_level.as_ref(),
            "a rule's `paranoia_level` is 1 to 4",
            None,
        );
        ok = false;
    }
    let operator = operator?;
    if !ok || pl > paranoia {
        return None;
    }
    let action = r.action.unwrap_or_default();
    let score = match severity {
        0..=2 => 5,
        3 => 4,
        4 => 3,
        _ => 2,
    };
    let mut tags = r.tags.clone();
    tags.push(format!("paranoia-level/{pl}"));
    tags.push("rempart-policy".into());
    let mut rule = waf::own_rule_base(id.value, &c.file.display().to_string());
    rule.origin.line = c.pos(id).line as usize;
    rule.phase = match r.phase.unwrap_or_default() {
        raw::WafPhase::RequestHeaders => 1,
        raw::WafPhase::RequestBody => 2,
    };
    rule.targets = targets;
    rule.exclusions = exclusions;
    rule.negated = raw_op.negated;
    rule.operator = operator;
    rule.transforms = transforms;
    rule.severity = Some(severity);
    rule.msg = r.message.as_deref().map(Macro::parse);
    rule.logdata = Some(Macro::parse("Matched %{MATCHED_VAR_NAME}: %{MATCHED_VAR}"));
    rule.tags = tags;
    match action {
        raw::WafRuleAction::Block => rule.disruptive = rule::Disruptive::Deny,
        raw::WafRuleAction::Score => rule.setvars.push(SetVar {
            name: Macro::parse(&format!("inbound_anomaly_score_pl{pl}")),
            op: SetOp::Add(Macro::parse(&score.to_string())),
        }),
        raw::WafRuleAction::Log => {}
    }
    Some(rule)
}
