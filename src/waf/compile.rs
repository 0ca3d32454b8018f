//! Builds a rule set from SecLang files (OWASP CRS, its plugins, setup files)
//! and from rules the engine makes itself (policy settings, YAML rules).
//!
//! Problems come in two kinds: errors (the file does not parse: the policy is
//! refused) and notes (a construct the engine cannot run: reported at start-up
//! with file, line and rule id, and left out).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::operator::{self, Operator};
use super::rule::*;
use super::seclang::{self, RawSelector};
use super::transform::Transform;

/// A problem tied to a place in a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub rule: Option<u32>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if let Some(id) = self.rule {
            write!(f, " (rule {id})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Position of a rule or marker in evaluation order.
#[derive(Debug, Clone)]
pub enum Item {
    Rule(usize),
    Marker(Arc<str>),
}

/// The literals of the prefiltered rules in one automaton: one scan of a
/// transformed value tells which of those rules can possibly match it.
#[derive(Debug)]
pub struct Prefilter {
    /// The literals of two bytes or more.
    automaton: Option<aho_corasick::AhoCorasick>,
    /// For each literal, the bit set (`words()` long) of the slots it stands for.
    masks: Vec<u64>,
    /// For each (lower-cased) byte that is a literal on its own, its slots.
    /// Single bytes (`'`, `(`, `;`...) are in most values: reporting each
    /// occurrence through the automaton cost more than this table.
    byte_masks: Vec<u64>,
    single_bytes: [bool; 256],
    slots: usize,
}

impl Prefilter {
    fn build(
        literals: std::collections::BTreeMap<Vec<u8>, Vec<usize>>,
        slots: usize,
    ) -> Result<Self, String> {
        let words = slots.div_ceil(64);
        let mut byte_masks = vec![0u64; 256 * words];
        let mut single_bytes = [false; 256];
        let mut long = Vec::new();
        let mut masks = Vec::new();
        for (literal, of) in literals {
            let mask = match literal[..] {
                [byte] => {
                    single_bytes[usize::from(byte)] = true;
                    &mut byte_masks[usize::from(byte) * words..][..words]
                }
                _ => {
                    long.push(literal);
                    masks.resize(masks.len() + words, 0);
                    let at = masks.len() - words;
                    &mut masks[at..]
                }
            };
            for slot in of {
                mask[slot / 64] |= 1 << (slot % 64);
            }
        }
        // A contiguous NFA: as fast as a DFA here (measured), and a DFA of
        // the CRS's ~4,700 literals took 29 MB per loaded policy.
        let build = |kind| {
            aho_corasick::AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .kind(kind)
                .build(&long)
        };
        let automaton = if long.is_empty() {
            None
        } else {
            let built =
                build(Some(aho_corasick::AhoCorasickKind::ContiguousNFA)).or_else(|_| build(None));
            Some(built.map_err(|e| e.to_string())?)
        };
        Ok(Prefilter {
            automaton,
            masks,
            byte_masks,
            single_bytes,
            slots,
        })
    }

    /// Words of a bit set over the slots.
    pub fn words(&self) -> usize {
        self.slots.div_ceil(64)
    }

    /// Sets in `bits` (`words()` long, zeroed) the slots whose literals occur in `value`.
    pub fn scan(&self, value: &[u8], bits: &mut [u64]) {
        let words = bits.len();
        let or = |bits: &mut [u64], mask: &[u64]| {
            for (word, m) in bits.iter_mut().zip(mask) {
                *word |= m;
            }
        };
        let mut seen = [false; 256];
        for &byte in value {
            let byte = usize::from(byte.to_ascii_lowercase());
            if self.single_bytes[byte] && !seen[byte] {
                seen[byte] = true;
                or(bits, &self.byte_masks[byte * words..][..words]);
            }
        }
        let Some(automaton) = &self.automaton else {
            return;
        };
        let mut last = usize::MAX;
        for m in automaton.find_overlapping_iter(value) {
            let literal = m.pattern().as_usize();
            if literal == last {
                continue;
            }
            last = literal;
            if let Some(mask) = self.masks.get(literal * words..(literal + 1) * words) {
                or(bits, mask);
            }
        }
    }
}

/// Rules ready to run, split by phase (1: request headers, 2: request body).
#[derive(Debug, Default)]
pub struct RuleSet {
    /// Unique per build: the facts memo (`engine::FactsMemo`) does not mix
    /// the prefilter bits and the rules of two builds.
    pub id: u64,
    /// The literals of every prefiltered rule, scanned once per distinct
    /// transformed value.
    pub prefilter: Option<Prefilter>,
    pub rules: Vec<Rule>,
    pub phases: [Vec<Item>; 3],
    /// For a rule with `skipAfter` at `phases[p][i]`: `skip_to[p][i]` is the
    /// index just past its marker (resolved once here, not per request).
    pub skip_to: [Vec<usize>; 3],
    /// Whether some rule turns the anomaly score into a decision (CRS 949110).
    pub has_blocking_evaluation: bool,
    /// The value sets that prefiltered rules read (`Rule::gate`): each a
    /// list of indexes in `gate_parts`.
    pub gates: Vec<Vec<usize>>,
    pub gate_parts: Vec<GatePart>,
    /// By chain key (`Rule::transforms_key`): the key of the chain without
    /// its last transformation, or `NO_PARENT` for a chain of one or none.
    /// Chains share their starts (`t:urlDecodeUni,t:htmlEntityDecode` then
    /// `t:lowercase` or `t:removeNulls`...): the engine applies only the
    /// last step to what the start already made of a value.
    pub chain_parents: Arc<Vec<usize>>,
    /// Where every request stands after the request-independent rules that
    /// open phase 1, worked out by the first request.
    pub prelude: std::sync::OnceLock<Option<super::engine::Prelude>>,
}

/// One target of a group of rules, with the exclusions that apply to its
/// collection, through one transformation chain. A gate is the union of its
/// parts. The engine ORs the prefilter bits of a part's values once per
/// phase; each rule then reads its own bit in its gate instead of walking
/// its values. On a benign request most bits are clear and most rules cost
/// one bit test. Parts are shared: many CRS rules read ARGS through the same
/// chain, with different other targets.
#[derive(Debug)]
pub struct GatePart {
    pub target: Target,
    pub exclusions: Vec<TargetExclusion>,
    pub transforms: Vec<Transform>,
    pub transforms_key: usize,
    /// The prefilter slots of the rules that read the part, as (word,
    /// bits of that word): the only bits of its values anyone tests.
    pub slots: Vec<(usize, u64)>,
}

/// A chain with no shorter start (`RuleSet::chain_parents`).
pub const NO_PARENT: usize = usize::MAX;

/// Accumulates rules in load order.
#[derive(Default)]
pub struct Loader {
    rules: Vec<Rule>,
    order: Vec<Item>,
    chain_stack: Vec<Rule>,
    chain_keys: HashMap<Vec<Transform>, usize>,
    block_denies: [bool; 6],
    pending_updates: Vec<(IdRange, TargetExclusion, Problem)>,
    has_blocking_evaluation: bool,
    pub errors: Vec<Problem>,
    pub notes: Vec<Problem>,
}

impl Loader {
    /// Loads one SecLang file.
    pub fn load_file(&mut self, path: &Path) {
        let name = path.display().to_string();
        match seclang::read(path) {
            Ok(text) => {
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                self.load_text(&name, &text, &dir);
            }
            Err(message) => self.errors.push(Problem {
                file: name,
                line: 0,
                rule: None,
                message,
            }),
        }
    }

    /// Loads SecLang text; `dir` resolves data files (`@pmFromFile`).
    pub fn load_text(&mut self, file: &str, text: &str, dir: &Path) {
        let file: Arc<str> = Arc::from(file);
        let directives = match seclang::directives(text) {
            Ok(d) => d,
            Err(e) => {
                self.errors.push(Problem {
                    file: file.to_string(),
                    line: e.line,
                    rule: None,
                    message: e.message,
                });
                return;
            }
        };
        for d in directives {
            let place = Origin {
                file: file.clone(),
                line: d.line,
            };
            self.directive(&d, place, dir);
        }
        if let Some(open) = self.chain_stack.first() {
            self.errors.push(Problem {
                file: file.to_string(),
                line: open.origin.line,
                rule: Some(open.id),
                message: "`chain` with no rule after it".into(),
            });
            self.chain_stack.clear();
        }
    }

    fn problem(place: &Origin, rule: Option<u32>, message: String) -> Problem {
        Problem {
            file: place.file.to_string(),
            line: place.line,
            rule,
            message,
        }
    }

    fn directive(&mut self, d: &seclang::Directive, place: Origin, dir: &Path) {
        let arg = |i: usize| d.args.get(i).map(String::as_str).unwrap_or("");
        match d.name.to_ascii_lowercase().as_str() {
            "secrule" => {
                if d.args.len() < 2 || d.args.len() > 3 {
                    self.errors.push(Self::problem(
                        &place,
                        None,
                        "SecRule takes VARIABLES \"OPERATOR\" \"ACTIONS\"".into(),
                    ));
                    return;
                }
                self.rule(Some(arg(0)), arg(1), arg(2), place, dir);
            }
            "secaction" => self.rule(None, "@unconditionalMatch", arg(0), place, dir),
            "secmarker" => {
                if self.chain_stack.is_empty() {
                    self.order.push(Item::Marker(Arc::from(arg(0))));
                }
            }
            "secdefaultaction" => match seclang::actions(arg(0)) {
                Ok(actions) => {
                    let phase = actions
                        .iter()
                        .find(|(n, _)| n == "phase")
                        .and_then(|(_, v)| phase(v.as_deref()?));
                    let denies = actions.iter().any(|(n, _)| n == "deny" || n == "drop");
                    match phase {
                        Some(p) => self.block_denies[p as usize] = denies,
                        None => self.block_denies = [denies; 6],
                    }
                }
                Err(message) => self.errors.push(Self::problem(&place, None, message)),
            },
            "secruleremovebyid" => {
                for part in &d.args {
                    for piece in part.split([' ', ',']).filter(|p| !p.is_empty()) {
                        match IdRange::parse(piece) {
                            Some(range) => self.remove_where(|r| range.contains(r.id)),
                            None => self.errors.push(Self::problem(
                                &place,
                                None,
                                format!("`{piece}` is not a rule id or range"),
                            )),
                        }
                    }
                }
            }
            "secruleremovebytag" => {
                let tag = arg(0).to_string();
                self.remove_where(|r| r.has_tag(&tag));
            }
            "secruleupdatetargetbyid" | "secruleupdatetargetbytag" => {
                let by_tag = d.name.eq_ignore_ascii_case("secruleupdatetargetbytag");
                let vars = match seclang::variables(arg(1)) {
                    Ok(v) => v,
                    Err(message) => {
                        self.errors.push(Self::problem(&place, None, message));
                        return;
                    }
                };
                for var in vars {
                    if !var.exclude {
                        self.notes.push(Self::problem(
                            &place,
                            None,
                            format!("{}: only `!` (remove a target) is supported", d.name),
                        ));
                        continue;
                    }
                    let Some(exclusion) = self.exclusion(&var, &place) else {
                        continue;
                    };
                    if by_tag {
                        let tag = arg(0);
                        for r in self.rules.iter_mut().filter(|r| r.has_tag(tag)) {
                            add_exclusion(r, &exclusion);
                        }
                    } else {
                        for piece in arg(0).split([' ', ',']).filter(|p| !p.is_empty()) {
                            let Some(range) = IdRange::parse(piece) else {
                                self.errors.push(Self::problem(
                                    &place,
                                    None,
                                    format!("`{piece}` is not a rule id or range"),
                                ));
                                continue;
                            };
                            let mut found = false;
                            for r in self.rules.iter_mut().filter(|r| range.contains(r.id)) {
                                add_exclusion(r, &exclusion);
                                found = true;
                            }
                            if !found {
                                self.pending_updates.push((
                                    range,
                                    exclusion.clone(),
                                    Self::problem(
                                        &place,
                                        None,
                                        format!("no rule {piece} to update"),
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
            // Engine-wide settings the policy owns, and informational directives.
            "seccomponentsignature"
            | "seccollectiontimeout"
            | "secrequestbodyaccess"
            | "secresponsebodyaccess"
            | "secrequestbodylimit"
            | "secrequestbodynofileslimit"
            | "secrequestbodylimitaction"
            | "secresponsebodylimit"
            | "secresponsebodymimetype"
            | "secauditengine"
            | "secauditlog"
            | "secauditlogparts"
            | "secauditlogtype"
            | "secauditlogrelevantstatus"
            | "secdebuglog"
            | "secdebugloglevel"
            | "sectmpdir"
            | "secdatadir"
            | "secargumentseparator"
            | "seccookieformat"
            | "secunicodemapfile"
            | "secstatusengine"
            | "secpcrematchlimit"
            | "secpcrematchlimitrecursion"
            | "secruleengine"
            | "secrequestbodyinmemorylimit"
            | "secargumentslimit" => {}
            other => self.notes.push(Self::problem(
                &place,
                None,
                format!("directive `{other}` is not supported; ignored"),
            )),
        }
    }

    /// Takes rules out of evaluation (their index stays, so nothing shifts).
    fn remove_where(&mut self, gone: impl Fn(&Rule) -> bool) {
        let rules = &self.rules;
        self.order
            .retain(|item| !matches!(item, Item::Rule(i) if rules.get(*i).is_some_and(&gone)));
    }

    /// Adds a rule made by the engine (policy settings, YAML rules).
    pub fn push(&mut self, mut rule: Rule) {
        rule.transforms_key = self.chain_key(&rule.transforms);
        let mut link = rule.chain.as_deref_mut();
        while let Some(l) = link {
            l.transforms_key = self.chain_key(&l.transforms);
            link = l.chain.as_deref_mut();
        }
        self.order.push(Item::Rule(self.rules.len()));
        self.rules.push(rule);
    }

    /// The key of a transformation chain; its shorter starts get keys too
    /// (`RuleSet::chain_parents`).
    fn chain_key(&mut self, chain: &[Transform]) -> usize {
        if let Some(&key) = self.chain_keys.get(chain) {
            return key;
        }
        if let Some((_, start)) = chain.split_last() {
            if !start.is_empty() {
                self.chain_key(start);
            }
        }
        let next = self.chain_keys.len();
        self.chain_keys.insert(chain.to_vec(), next);
        next
    }

    fn exclusion(&mut self, var: &seclang::RawVariable, place: &Origin) -> Option<TargetExclusion> {
        let Some(collection) = Collection::parse(&var.collection) else {
            self.notes.push(Self::problem(
                place,
                None,
                format!("variable `{}` is not supported", var.collection),
            ));
            return None;
        };
        let selector = self.selector(var.selector.as_ref(), place)?;
        Some(TargetExclusion {
            collection,
            selector,
        })
    }

    fn selector(&mut self, raw: Option<&RawSelector>, place: &Origin) -> Option<Option<Selector>> {
        Selector::compile(raw)
            .map_err(|e| self.errors.push(Self::problem(place, None, e)))
            .ok()
    }

    fn rule(&mut self, vars: Option<&str>, op: &str, actions: &str, place: Origin, dir: &Path) {
        let in_chain = !self.chain_stack.is_empty();
        let actions = match seclang::actions(actions) {
            Ok(a) => a,
            Err(message) => {
                self.errors.push(Self::problem(&place, None, message));
                return;
            }
        };
        let id = actions
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("id"))
            .and_then(|(_, v)| v.as_deref()?.trim().parse::<u32>().ok());
        if id.is_none() && !in_chain {
            self.errors.push(Self::problem(
                &place,
                None,
                "rule without an `id` action".into(),
            ));
            return;
        }
        let mut rule = Rule {
            id: id.unwrap_or(0),
            phase: 2,
            origin: place.clone(),
            targets: Vec::new(),
            exclusions: Vec::new(),
            operator: Operator::Unconditional,
            negated: false,
            transforms: Vec::new(),
            transforms_key: 0,
            gate: None,
            target_parts: Vec::new(),
            verdict: None,
            multi_match: false,
            capture: false,
            disruptive: Disruptive::Pass,
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
        };
        let mut wants_chain = false;
        let mut uses_block = false;
        let mut runnable = true;
        let rule_id = id;
        for (name, value) in &actions {
            let value = value.as_deref().unwrap_or("");
            match name.to_ascii_lowercase().as_str() {
                "id"
                | "ver"
                | "rev"
                | "maturity"
                | "accuracy"
                | "auditlog"
                | "noauditlog"
                | "sanitisematched"
                | "sanitisearg"
                | "sanitiserequestheader"
                | "sanitisematchedbytes" => {}
                "phase" => match phase(value) {
                    Some(p) => rule.phase = p,
                    None => self.errors.push(Self::problem(
                        &place,
                        rule_id,
                        format!("phase `{value}` is not 1-5, request, response or logging"),
                    )),
                },
                "msg" => rule.msg = Some(Macro::parse(value)),
                "logdata" => rule.logdata = Some(Macro::parse(value)),
                "tag" => rule.tags.push(value.to_string()),
                "severity" => match severity(value) {
                    Some(s) => rule.severity = Some(s),
                    None => self.errors.push(Self::problem(
                        &place,
                        rule_id,
                        format!("severity `{value}` is not a SecLang severity"),
                    )),
                },
                "t" => {
                    if value.eq_ignore_ascii_case("none") {
                        rule.transforms.clear();
                    } else if let Some(t) = Transform::parse(value) {
                        rule.transforms.push(t);
                    } else {
                        self.notes.push(Self::problem(
                            &place,
                            rule_id,
                            format!("transformation `t:{value}` is not supported; rule left out"),
                        ));
                        runnable = false;
                    }
                }
                "log" => rule.log = true,
                "nolog" => rule.log = false,
                "pass" => rule.disruptive = Disruptive::Pass,
                "deny" | "drop" => rule.disruptive = Disruptive::Deny,
                "block" => uses_block = true,
                "allow" => rule.disruptive = Disruptive::Allow,
                "status" => rule.status = value.trim().parse().ok(),
                "capture" => rule.capture = true,
                "multimatch" => rule.multi_match = true,
                "chain" => wants_chain = true,
                "skipafter" => rule.skip_after = Some(value.to_string()),
                "skip" => rule.skip = value.trim().parse().unwrap_or(0),
                "setvar" => match setvar(value) {
                    Ok(Some(s)) => rule.setvars.push(s),
                    Ok(None) => self.notes.push(Self::problem(
                        &place,
                        rule_id,
                        format!("setvar `{value}`: only the TX collection is supported; ignored"),
                    )),
                    Err(message) => self.errors.push(Self::problem(&place, rule_id, message)),
                },
                "ctl" => match self.ctl(value, &place) {
                    Ok(Some(c)) => rule.ctls.push(c),
                    Ok(None) => self.notes.push(Self::problem(
                        &place,
                        rule_id,
                        format!("ctl `{value}` is not supported; ignored"),
                    )),
                    Err(message) => self.errors.push(Self::problem(&place, rule_id, message)),
                },
                "setenv" | "initcol" | "expirevar" | "deprecatevar" | "setuid" | "setsid"
                | "exec" | "append" | "prepend" | "redirect" | "proxy" | "pause" => {
                    self.notes.push(Self::problem(
                        &place,
                        rule_id,
                        format!("action `{name}` is not supported; ignored"),
                    ))
                }
                other => self.errors.push(Self::problem(
                    &place,
                    rule_id,
                    format!("unknown action `{other}`"),
                )),
            }
        }
        if uses_block {
            let p = if in_chain { 2 } else { rule.phase as usize };
            rule.disruptive = if self.block_denies.get(p).copied().unwrap_or(false) {
                Disruptive::Deny
            } else {
                Disruptive::Pass
            };
        }
        if let Some(vars) = vars {
            match seclang::variables(vars) {
                Ok(list) => {
                    for var in list {
                        if var.exclude {
                            if let Some(e) = self.exclusion(&var, &place) {
                                rule.exclusions.push(e);
                            }
                            continue;
                        }
                        let Some(collection) = Collection::parse(&var.collection) else {
                            self.notes.push(Self::problem(
                                &place,
                                rule_id,
                                format!(
                                    "variable `{}` is not supported; target left out",
                                    var.collection
                                ),
                            ));
                            continue;
                        };
                        if collection == Collection::Xml
                            && !matches!(&var.selector, Some(RawSelector::Name(n)) if n == "/*" || n == "//@*")
                        {
                            self.notes.push(Self::problem(
                                &place,
                                rule_id,
                                "XML XPath selectors other than /* and //@* are not supported; target left out".into(),
                            ));
                            continue;
                        }
                        let Some(selector) = self.selector(var.selector.as_ref(), &place) else {
                            continue;
                        };
                        rule.targets.push(Target {
                            collection,
                            selector,
                            count: var.count,
                        });
                    }
                    if rule.targets.is_empty() {
                        runnable = false;
                    }
                }
                Err(message) => {
                    self.errors.push(Self::problem(&place, rule_id, message));
                    return;
                }
            }
        } else {
            rule.targets.push(Target {
                collection: Collection::UniqueId,
                selector: None,
                count: false,
            });
        }
        let raw = seclang::operator(op);
        rule.negated = raw.negated;
        match compile_operator(&raw.name, &raw.param, dir) {
            Ok(o) => rule.operator = o,
            Err(OperatorError::Unsupported(message)) => {
                self.notes.push(Self::problem(
                    &place,
                    rule_id,
                    format!("{message}; rule left out"),
                ));
                runnable = false;
            }
            Err(OperatorError::Invalid(message)) => {
                self.errors.push(Self::problem(&place, rule_id, message));
                return;
            }
        }
        if !in_chain && rule.phase >= 3 && runnable {
            self.notes.push(Self::problem(
                &place,
                rule_id,
                format!(
                    "phase {} (response) rules are not run yet; rule left out",
                    rule.phase
                ),
            ));
            runnable = false;
        }
        if !runnable {
            rule.operator = Operator::NoMatch;
            rule.negated = false;
            rule.targets = vec![Target {
                collection: Collection::UniqueId,
                selector: None,
                count: false,
            }];
        }
        if wants_chain {
            self.chain_stack.push(rule);
            return;
        }
        let mut finished = rule;
        while let Some(mut parent) = self.chain_stack.pop() {
            parent.chain = Some(Box::new(finished));
            finished = parent;
        }
        // A chain that cannot run as a whole does not run at all.
        let mut link = finished.chain.as_deref();
        let mut broken = matches!(finished.operator, Operator::NoMatch);
        while let Some(l) = link {
            broken |= matches!(l.operator, Operator::NoMatch);
            link = l.chain.as_deref();
        }
        if broken {
            finished.operator = Operator::NoMatch;
            finished.chain = None;
        }
        if finished.phase >= 3 {
            return;
        }
        if finished.has_tag("anomaly-evaluation") {
            self.has_blocking_evaluation = true;
        }
        self.push(finished);
    }

    fn ctl(&mut self, value: &str, place: &Origin) -> Result<Option<Ctl>, String> {
        let (name, arg) = value
            .split_once('=')
            .ok_or_else(|| format!("ctl `{value}` has no `=`"))?;
        let (name, arg) = (name.trim(), arg.trim());
        // `None`: a target this engine does not know (a note is already recorded).
        let target =
            |this: &mut Loader, spec: &str| -> Result<Option<(String, TargetExclusion)>, String> {
                let (head, var) = spec
                    .split_once(';')
                    .ok_or_else(|| format!("ctl:{name} needs `ID;TARGET`"))?;
                let raw = seclang::variables(var)?;
                let first = raw
                    .first()
                    .ok_or_else(|| format!("ctl:{name} has no target"))?;
                Ok(this.exclusion(first, place).map(|e| (head.to_string(), e)))
            };
        Ok(Some(match name.to_ascii_lowercase().as_str() {
            "ruleremovebyid" => Ctl::RemoveById(
                arg.split([' ', ','])
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        IdRange::parse(p).ok_or_else(|| format!("`{p}` is not a rule id or range"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "ruleremovebytag" => Ctl::RemoveByTag(arg.to_string()),
            "ruleremovetargetbyid" => {
                let Some((id, exclusion)) = target(self, arg)? else {
                    return Ok(Some(Ctl::Ignored));
                };
                let range = IdRange::parse(&id)
                    .ok_or_else(|| format!("`{id}` is not a rule id or range"))?;
                Ctl::RemoveTargetById(range, exclusion)
            }
            "ruleremovetargetbytag" => {
                let Some((tag, exclusion)) = target(self, arg)? else {
                    return Ok(Some(Ctl::Ignored));
                };
                Ctl::RemoveTargetByTag(tag, exclusion)
            }
            "ruleengine" => Ctl::RuleEngine(match arg.to_ascii_lowercase().as_str() {
                "on" => EngineMode::On,
                "off" => EngineMode::Off,
                "detectiononly" => EngineMode::DetectionOnly,
                _ => {
                    return Err(format!(
                        "ctl:ruleEngine={arg}: expected On, Off or DetectionOnly"
                    ))
                }
            }),
            "requestbodyprocessor" => Ctl::BodyProcessor(arg.to_ascii_uppercase()),
            "forcerequestbodyvariable" => Ctl::ForceBodyVariable(arg.eq_ignore_ascii_case("on")),
            "requestbodyaccess" => Ctl::BodyAccess(arg.eq_ignore_ascii_case("on")),
            "auditengine" | "auditlogparts" => Ctl::Ignored,
            _ => return Ok(None),
        }))
    }

    /// The rule set, or every error found.
    pub fn finish(mut self) -> (Option<RuleSet>, Vec<Problem>, Vec<Problem>) {
        for (range, exclusion, problem) in std::mem::take(&mut self.pending_updates) {
            let mut found = false;
            for r in self.rules.iter_mut().filter(|r| range.contains(r.id)) {
                add_exclusion(r, &exclusion);
                found = true;
            }
            if !found {
                self.notes.push(problem);
            }
        }
        if !self.errors.is_empty() {
            return (None, self.errors, self.notes);
        }
        let mut set = RuleSet {
            has_blocking_evaluation: self.has_blocking_evaluation,
            ..RuleSet::default()
        };
        for item in self.order {
            match item {
                Item::Marker(m) => {
                    set.phases[1].push(Item::Marker(m.clone()));
                    set.phases[2].push(Item::Marker(m));
                }
                Item::Rule(i) => {
                    if let Some(phase) = self.rules.get(i).map(|r| r.phase as usize) {
                        if phase == 1 || phase == 2 {
                            set.phases[phase].push(Item::Rule(i));
                        }
                    }
                }
            }
        }
        for (items, skip_to) in set.phases.iter().zip(set.skip_to.iter_mut()) {
            *skip_to = (0..items.len())
                .map(|i| {
                    let marker = match &items[i] {
                        Item::Rule(r) => self.rules.get(*r).and_then(|r| r.skip_after.as_deref()),
                        Item::Marker(_) => None,
                    };
                    let Some(marker) = marker else {
                        return items.len();
                    };
                    items[i + 1..]
                        .iter()
                        .position(|item| matches!(item, Item::Marker(m) if **m == *marker))
                        .map_or(items.len(), |p| i + 1 + p + 1)
                })
                .collect();
        }
        let mut parents = vec![NO_PARENT; self.chain_keys.len()];
        for (chain, key) in &self.chain_keys {
            if let Some((_, start)) = chain.split_last().filter(|(_, s)| !s.is_empty()) {
                parents[*key] = self.chain_keys.get(start).copied().unwrap_or(NO_PARENT);
            }
        }
        set.chain_parents = Arc::new(parents);
        set.prefilter = build_prefilter(&mut self.rules);
        (set.gates, set.gate_parts) = build_gates(&mut self.rules);
        number_verdicts(&mut self.rules);
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        set.id = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        set.rules = self.rules;
        (Some(set), Vec::new(), self.notes)
    }
}

/// Gives each regex or phrase rule (not negated) whose matches all hold one
/// of known literals a slot in the prefilter (a multi-match rule's slot gates
/// only its untransformed value).
/// A phrase rule's literals are its phrases: its bit is its answer. One
/// automaton serves every transformation chain: a rule's bit is read from
/// the scan of the value its own chain produced.
fn build_prefilter(rules: &mut [Rule]) -> Option<Prefilter> {
    let mut literals: std::collections::BTreeMap<Vec<u8>, Vec<usize>> = Default::default();
    let mut slots = 0;
    let mut assign = |rule: &mut Rule| {
        if rule.negated {
            return;
        }
        let found = match &rule.operator {
            Operator::Rx(re) => operator::required_literals(re.as_str()),
            Operator::Pm(_, phrases) => Some(phrases.to_vec()),
            _ => None,
        };
        let Some(found) = found else {
            return;
        };
        for literal in found {
            literals.entry(literal).or_default().push(slots);
        }
        rule.prefilter = Some(slots);
        slots += 1;
    };
    for rule in rules.iter_mut() {
        let mut link = Some(rule);
        while let Some(l) = link {
            assign(l);
            link = l.chain.as_deref_mut();
        }
    }
    if slots == 0 {
        return None;
    }
    match Prefilter::build(literals, slots) {
        Ok(prefilter) => Some(prefilter),
        Err(_) => {
            // Too big to build: every rule runs its operator.
            for rule in rules.iter_mut() {
                let mut link = Some(rule);
                while let Some(l) = link {
                    l.prefilter = None;
                    link = l.chain.as_deref_mut();
                }
            }
            None
        }
    }
}

/// Groups the rule heads that can be gated into gates of shared parts
/// (`GatePart`, `Rule::gate`): prefiltered, not negated,
/// reading request values only (no counts, no TX), and not multiMatch with
/// transformations (those test intermediate values too). Exclusions added at
/// run time (`ctl`, policy) only take values away, so a gate built without
/// them stays a superset: it may let a rule run, never skip one that matches.
fn build_gates(rules: &mut [Rule]) -> (Vec<Vec<usize>>, Vec<GatePart>) {
    let mut gates: Vec<Vec<usize>> = Vec::new();
    let mut gate_keys: HashMap<Vec<usize>, usize> = HashMap::new();
    let mut parts: Vec<GatePart> = Vec::new();
    let mut part_keys: HashMap<String, usize> = HashMap::new();
    for rule in rules.iter_mut() {
        let eligible = rule.prefilter.is_some()
            && !rule.negated
            && (!rule.multi_match || rule.transforms.is_empty())
            && !rule.targets.is_empty()
            && rule
                .targets
                .iter()
                .all(|t| !t.count && t.collection.in_request());
        if !eligible {
            continue;
        }
        let mut members: Vec<usize> = rule
            .targets
            .iter()
            .map(|target| {
                let exclusions: Vec<TargetExclusion> = rule
                    .exclusions
                    .iter()
                    .filter(|e| e.collection == target.collection)
                    .cloned()
                    .collect();
                let key = format!("{target:?}|{exclusions:?}|{}", rule.transforms_key);
                *part_keys.entry(key).or_insert_with(|| {
                    parts.push(GatePart {
                        target: target.clone(),
                        exclusions,
                        transforms: rule.transforms.clone(),
                        transforms_key: rule.transforms_key,
                        slots: Vec::new(),
                    });
                    parts.len() - 1
                })
            })
            .collect();
        if let Some(slot) = rule.prefilter {
            let (word, bit) = (slot / 64, 1u64 << (slot % 64));
            for &part in &members {
                let slots = &mut parts[part].slots;
                match slots.iter_mut().find(|(w, _)| *w == word) {
                    Some((_, bits)) => *bits |= bit,
                    None => slots.push((word, bit)),
                }
            }
        }
        rule.target_parts = members.clone();
        members.sort_unstable();
        members.dedup();
        let gate = *gate_keys.entry(members.clone()).or_insert_with(|| {
            gates.push(members);
            gates.len() - 1
        });
        rule.gate = Some(gate);
    }
    (gates, parts)
}

/// Gives a verdict slot (`Rule::verdict`) to every link whose answer on a
/// value is worth remembering.
fn number_verdicts(rules: &mut [Rule]) {
    let mut next = 0u32;
    for rule in rules.iter_mut() {
        let mut link = Some(rule);
        while let Some(l) = link {
            let pure = l.operator.param().is_none_or(|m| m.literal().is_some());
            let costly = !l.transforms.is_empty()
                || matches!(
                    l.operator,
                    Operator::Rx(_) | Operator::Pm(..) | Operator::DetectSqli | Operator::DetectXss
                );
            if pure && costly {
                l.verdict = Some(next);
                next += 1;
            }
            link = l.chain.as_deref_mut();
        }
    }
}

fn add_exclusion(rule: &mut Rule, exclusion: &TargetExclusion) {
    rule.exclusions.push(exclusion.clone());
    let mut link = rule.chain.as_deref_mut();
    while let Some(l) = link {
        l.exclusions.push(exclusion.clone());
        link = l.chain.as_deref_mut();
    }
}

fn phase(value: &str) -> Option<u8> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" => Some(1),
        "2" | "request" => Some(2),
        "3" => Some(3),
        "4" | "response" => Some(4),
        "5" | "logging" => Some(5),
        _ => None,
    }
}

/// `tx.name=value`, `tx.name=+5`, `!tx.name`, `tx.name`. `Ok(None)` for other collections.
fn setvar(text: &str) -> Result<Option<SetVar>, String> {
    let (delete, text) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (target, value) = match text.split_once('=') {
        Some((t, v)) => (t, Some(v)),
        None => (text, None),
    };
    let Some((collection, name)) = target.split_once('.') else {
        return Err(format!("setvar `{text}` needs COLLECTION.NAME"));
    };
    if !collection.trim().eq_ignore_ascii_case("tx") {
        return Ok(None);
    }
    let name = Macro::parse(&name.trim().to_ascii_lowercase());
    let op = match (delete, value) {
        (true, _) => SetOp::Delete,
        (false, None) => SetOp::Set(Macro::parse("1")),
        (false, Some(v)) => match (v.strip_prefix('+'), v.strip_prefix('-')) {
            (Some(n), _) => SetOp::Add(Macro::parse(n)),
            (_, Some(n)) => SetOp::Sub(Macro::parse(n)),
            _ => SetOp::Set(Macro::parse(v)),
        },
    };
    Ok(Some(SetVar { name, op }))
}

pub enum OperatorError {
    Unsupported(String),
    Invalid(String),
}

/// Compiles `@name param`.
pub fn compile_operator(name: &str, param: &str, dir: &Path) -> Result<Operator, OperatorError> {
    use OperatorError::*;
    let text = || Macro::parse(param);
    let file_phrases = |param: &str| -> Result<Vec<String>, OperatorError> {
        let mut words = Vec::new();
        for file in param.split_whitespace() {
            let path: PathBuf = if Path::new(file).is_absolute() {
                file.into()
            } else {
                dir.join(file)
            };
            words.extend(operator::phrase_file(&path).map_err(Invalid)?);
        }
        Ok(words)
    };
    Ok(match name.to_ascii_lowercase().as_str() {
        "rx" => Operator::Rx(
            operator::regex(param)
                .map_err(|e| Unsupported(format!("@rx pattern cannot be compiled ({e})")))?,
        ),
        "pm" => {
            operator::phrase_match(param.split_whitespace().map(str::to_string)).map_err(Invalid)?
        }
        "pmfromfile" | "pmf" => operator::phrase_match(file_phrases(param)?).map_err(Invalid)?,
        "streq" => Operator::Streq(text()),
        "eq" => Operator::Eq(text()),
        "ge" => Operator::Ge(text()),
        "gt" => Operator::Gt(text()),
        "le" => Operator::Le(text()),
        "lt" => Operator::Lt(text()),
        "within" => Operator::Within(text()),
        "contains" => Operator::Contains(text()),
        "containsword" => Operator::ContainsWord(text()),
        "beginswith" => Operator::BeginsWith(text()),
        "endswith" => Operator::EndsWith(text()),
        "detectsqli" => Operator::DetectSqli,
        "detectxss" => Operator::DetectXss,
        "ipmatch" => Operator::IpMatch(operator::ip_list(param).map_err(Invalid)?),
        "ipmatchfromfile" | "ipmatchf" => {
            Operator::IpMatch(operator::ip_list(&file_phrases(param)?.join(",")).map_err(Invalid)?)
        }
        "validatebyterange" => {
            Operator::ValidateByteRange(operator::byte_ranges(param).map_err(Invalid)?)
        }
        "validateurlencoding" => Operator::ValidateUrlEncoding,
        "validateutf8encoding" => Operator::ValidateUtf8Encoding,
        "unconditionalmatch" => Operator::Unconditional,
        "nomatch" => Operator::NoMatch,
        other => return Err(Unsupported(format!("operator `@{other}` is not supported"))),
    })
}
