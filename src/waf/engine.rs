//! Runs a rule set over one request, phase by phase, the way ModSecurity
//! does: targets, transformations, operator, then actions (setvar, ctl,
//! skipAfter, disruptive), with TX variables and macro expansion.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use super::compile::{Item, Prefilter, RuleSet, NO_PARENT};
use super::operator::{atoi, Hit};
use super::request::{RequestData, ValueId};
use super::rule::*;
use super::transform::{apply_all, Transform};

/// One rule that matched, as audit records and metrics report it.
#[derive(Debug, Clone)]
pub struct Match {
    pub id: u32,
    pub phase: u8,
    pub msg: String,
    pub data: String,
    pub severity: Option<u8>,
    /// `ARGS:q`, `REQUEST_HEADERS:User-Agent`...
    pub target: String,
    /// Every variable that matched along the chain (audit masking looks at all).
    pub targets: Vec<String>,
    pub fragment: String,
    /// Logged but not scored nor enforced (a detect-only rule).
    pub detect_only: bool,
    /// Whether the rule logs (`nolog` rules are counted, not reported).
    pub log: bool,
}

/// The rule that stopped a request.
#[derive(Debug, Clone)]
pub struct Block {
    pub rule: u32,
    pub status: u16,
    pub msg: String,
}

/// Per-request changes made by `ctl` actions and policy exclusions.
#[derive(Debug, Default, Clone)]
pub struct Tuning {
    pub removed_ids: Vec<IdRange>,
    pub removed_tags: Vec<String>,
    pub targets_by_id: Vec<(IdRange, TargetExclusion)>,
    pub targets_by_tag: Vec<(String, TargetExclusion)>,
    pub detect_ids: Vec<IdRange>,
    pub detect_tags: Vec<String>,
}

impl Tuning {
    fn is_empty(&self) -> bool {
        self.removed_ids.is_empty()
            && self.removed_tags.is_empty()
            && self.targets_by_id.is_empty()
            && self.targets_by_tag.is_empty()
            && self.detect_ids.is_empty()
            && self.detect_tags.is_empty()
    }

    fn removes(&self, rule: &Rule) -> bool {
        self.removed_ids.iter().any(|r| r.contains(rule.id))
            || self.removed_tags.iter().any(|t| rule.has_tag(t))
    }

    fn detect_only(&self, rule: &Rule) -> bool {
        self.detect_ids.iter().any(|r| r.contains(rule.id))
            || self.detect_tags.iter().any(|t| rule.has_tag(t))
    }

    /// Whether a target exclusion names this rule.
    fn retargets(&self, rule: &Rule) -> bool {
        self.targets_by_id.iter().any(|(r, _)| r.contains(rule.id))
            || self.targets_by_tag.iter().any(|(t, _)| rule.has_tag(t))
    }

    fn exclusions_for(&self, rule: &Rule) -> Vec<TargetExclusion> {
        if self.targets_by_id.is_empty() && self.targets_by_tag.is_empty() {
            return Vec::new();
        }
        let by_id = self
            .targets_by_id
            .iter()
            .filter(|(r, _)| r.contains(rule.id))
            .map(|(_, e)| e.clone());
        let by_tag = self
            .targets_by_tag
            .iter()
            .filter(|(t, _)| rule.has_tag(t))
            .map(|(_, e)| e.clone());
        by_id.chain(by_tag).collect()
    }
}

/// A matched variable's name (`ARGS:q`): a collection's own name (`TX`
/// for a count, the CRS's most common match) is not allocated.
type VarName = Cow<'static, str>;

/// Evaluation state of one request.
#[derive(Debug)]
struct State {
    tx: HashMap<String, Vec<u8>, FastHash>,
    tuning: Tuning,
    mode: EngineMode,
    processor: Option<String>,
    body_access: bool,
    /// The last matched variable: an index in `matched_vars`.
    matched_var: Option<usize>,
    matched_vars: Vec<(VarName, Vec<u8>)>,
    /// For a rule that captures: what each of `matched_vars` captured
    /// (`None` for a negated operator's hit).
    captured: Vec<Option<Hit>>,
    matches: Vec<Match>,
    block: Option<Block>,
    would_block: Option<Block>,
    allowed: bool,
}

/// Transformed values shared by the rules of one phase. Each distinct string
/// a value becomes under some chain is kept once, and the prefilter scans it
/// once: a benign value usually comes out of most chains unchanged, so its
/// dozens of (chain, rule) checks mostly read one scan's bits.
#[derive(Default)]
struct Cache {
    /// (chain, value address, value length) -> index in `contents`.
    by_chain: HashMap<(usize, usize, usize), usize, FastHash>,
    /// (value address, value length) -> the contents made from that value.
    by_value: HashMap<(usize, usize), Vec<usize>, FastHash>,
    contents: Vec<Content>,
    /// The prefilter bits of scanned contents, `words` per content.
    bits: Vec<u64>,
    /// Per gate part (`RuleSet::gate_parts`) then per gate: where its bits
    /// (the OR of the bits of all its values) start in `gate_bits`, once
    /// computed in this phase. Only the entries a request asks for are
    /// computed: zeroing bits for every gate showed in profiles.
    gate_at: Vec<u32>,
    gate_bits: Vec<u64>,
    /// By gate part, once computed: the range of `listed` that holds its
    /// values with any prefilter bit set, so that a rule the gate lets run
    /// walks only the values that may match it (a JSON checkout's sixty
    /// names and values, each read by dozens of rules, mostly have none of
    /// their bits). `UNLISTED`: a value of the part has no `ValueId`.
    part_lists: Vec<(u32, u32)>,
    /// (value, where a copy of its bits starts in `gate_bits`).
    listed: Vec<(ValueId, u32)>,
    /// `RuleSet::chain_parents`.
    chain_parents: Arc<Vec<usize>>,
    /// The thread's facts memo, lent to the request while a phase runs
    /// (`Transaction::run_from`): its rules read it without going through
    /// the thread-local.
    memo: FactsMemo,
    /// By `ValueId`: the value's entry in `memo`, plus one (0: not looked
    /// up yet; `NO_FACTS`: it has none).
    facts: Vec<u32>,
}

struct Content {
    /// `None`: the value itself (no transformation changed it).
    bytes: Option<Arc<[u8]>>,
    /// Offset of this content's bits in `Cache::bits`, once scanned.
    bits_at: Option<usize>,
}

impl State {
    /// TX:0 (the match) to TX:9 (its groups), rewritten in place: CRS rules
    /// that capture run for every header or argument.
    fn set_captures(&mut self, hit: &Hit) {
        const NAMES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
        let values = std::iter::once(&hit.fragment).chain(&hit.groups);
        for (name, value) in NAMES.iter().zip(values) {
            self.put_tx(name, value);
        }
    }

    /// Sets a TX variable, reusing the key and the value's buffer when it
    /// exists (the CRS rewrites its scores and counters all along).
    fn put_tx(&mut self, name: &str, value: &[u8]) {
        match self.tx.get_mut(name) {
            Some(slot) => {
                slot.clear();
                slot.extend_from_slice(value);
            }
            None => {
                self.tx.insert(name.to_string(), value.to_vec());
            }
        }
    }

    /// MATCHED_VAR_NAME and MATCHED_VAR.
    fn matched_var(&self) -> (&str, &[u8]) {
        match self.matched_var.and_then(|i| self.matched_vars.get(i)) {
            Some((name, value)) => (name, value),
            None => ("", b""),
        }
    }
}

impl Cache {
    fn clear(&mut self) {
        self.by_chain.clear();
        self.by_value.clear();
        self.contents.clear();
        self.bits.clear();
        self.gate_at.clear();
        self.gate_bits.clear();
        self.part_lists.clear();
        self.listed.clear();
        self.facts.clear();
    }

    /// Whether the rule of verdict slot `verdict` found nothing in the value
    /// of memo entry `facts` in an earlier request.
    fn known_clean(&self, facts: Option<u32>, verdict: Option<u32>) -> bool {
        match (facts, verdict) {
            (Some(facts), Some(verdict)) => self.memo.is_clean(facts, verdict),
            _ => false,
        }
    }

    fn remember_clean(&mut self, facts: Option<u32>, verdict: Option<u32>) {
        if let (Some(facts), Some(verdict)) = (facts, verdict) {
            self.memo.learn_clean(facts, verdict);
        }
    }

    /// Value `id`'s entry in the facts memo, looked up once per phase.
    /// Asked for every rule and value: the known case is inlined.
    #[inline]
    fn facts(&mut self, set: u64, id: ValueId, value: &[u8]) -> Option<u32> {
        match self.facts.get(id as usize) {
            Some(&NO_FACTS) => None,
            Some(&known) if known != 0 => Some(known - 1),
            _ => self.look_up_facts(set, id, value),
        }
    }

    #[inline(never)]
    fn look_up_facts(&mut self, set: u64, id: ValueId, value: &[u8]) -> Option<u32> {
        let i = id as usize;
        if self.facts.len() <= i {
            self.facts.resize(i + 1, 0);
        }
        let entry = self.memo.entry(set, value);
        self.facts[i] = entry.map_or(NO_FACTS, |e| e + 1);
        entry
    }

    /// The content `value` becomes under `rule`'s chain.
    fn content(&mut self, rule: &Rule, value: &[u8]) -> usize {
        self.intern(rule.transforms_key, &rule.transforms, value)
    }

    /// The content of `value` untransformed.
    fn raw_content(&mut self, value: &[u8]) -> usize {
        self.intern(RAW_CHAIN, &[], value)
    }

    fn intern(&mut self, chain_key: usize, chain: &[Transform], value: &[u8]) -> usize {
        let origin = (value.as_ptr() as usize, value.len());
        let key = (chain_key, origin.0, origin.1);
        if let Some(&id) = self.by_chain.get(&key) {
            return id;
        }
        // The chain's last step, applied to what its start made of the
        // value (interned too: other chains start the same way).
        let parent = self
            .chain_parents
            .get(chain_key)
            .copied()
            .filter(|&p| p != NO_PARENT);
        let out = match (chain.split_last(), parent) {
            (Some((last, start)), Some(parent)) => {
                let from = self.intern(parent, start, value);
                match self.contents[from].bytes.clone() {
                    Some(made) if last.unchanged(&made) => {
                        self.by_chain.insert(key, from);
                        return from;
                    }
                    Some(made) => Cow::Owned(last.apply(&made)),
                    None => apply_all(std::slice::from_ref(last), value),
                }
            }
            _ => apply_all(chain, value),
        };
        let known = self.by_value.entry(origin).or_default();
        let same = known
            .iter()
            .copied()
            .find(|&id| match (&self.contents[id].bytes, &out) {
                (None, Cow::Borrowed(_)) => true,
                (Some(have), Cow::Owned(new)) => **have == **new,
                _ => false,
            });
        let id = same.unwrap_or_else(|| {
            let id = self.contents.len();
            self.contents.push(Content {
                bytes: match out {
                    Cow::Borrowed(_) => None,
                    Cow::Owned(v) => Some(Arc::from(v)),
                },
                bits_at: None,
            });
            known.push(id);
            id
        });
        self.by_chain.insert(key, id);
        id
    }

    /// Whether one of the literals of prefilter slot `slot` occurs in
    /// content `id`, made from `value` by chain `chain`.
    fn may_match(
        &mut self,
        id: usize,
        chain: usize,
        slot: usize,
        prefilter: &Prefilter,
        value: &[u8],
        facts: Option<u32>,
    ) -> bool {
        let at = self.scanned(id, chain, prefilter, value, facts);
        bit(&self.bits[at..], slot)
    }

    /// Where the bits of content `id` (made from `value` by chain `chain`)
    /// start: this request's, else an earlier request's (the memo, at
    /// `facts`), else a new scan. A value whose scan says "maybe" for some
    /// rule used to be scanned again on every request: the overlapping scan
    /// of all the literals is the prefilter's costliest step.
    fn scanned(
        &mut self,
        id: usize,
        chain: usize,
        prefilter: &Prefilter,
        value: &[u8],
        facts: Option<u32>,
    ) -> usize {
        if let Some(at) = self.contents[id].bits_at {
            return at;
        }
        let words = prefilter.words();
        let Some(facts) = facts else {
            return self.scan(id, prefilter, value);
        };
        if let Some(bits) = self.memo.scan(facts, chain, words) {
            let at = self.bits.len();
            self.bits.extend_from_slice(bits);
            self.contents[id].bits_at = Some(at);
            return at;
        }
        let at = self.scan(id, prefilter, value);
        self.memo
            .learn_scan(facts, chain, &self.bits[at..at + words]);
        at
    }

    /// Scans content `id` (made from `value`) into new bits at the end of
    /// `bits` (shared by every chain that makes the same content); returns
    /// where they start.
    fn scan(&mut self, id: usize, prefilter: &Prefilter, value: &[u8]) -> usize {
        let words = prefilter.words();
        let at = self.bits.len();
        let scanned = self.contents[id].bytes.as_deref().unwrap_or(value);
        // The scan ignores ASCII case: what a chain ending in `t:lowercase`
        // makes of a value has the bits of the same chain without it, and a
        // body new to the memo is scanned under a dozen chains.
        let origin = (value.as_ptr() as usize, value.len());
        let same_but_case = self.by_value.get(&origin).and_then(|made| {
            made.iter().find_map(|&other| {
                let from = self.contents[other].bits_at?;
                let bytes = self.contents[other].bytes.as_deref().unwrap_or(value);
                (other != id && bytes.eq_ignore_ascii_case(scanned)).then_some(from)
            })
        });
        match same_but_case {
            Some(from) => self.bits.extend_from_within(from..from + words),
            None => {
                self.bits.resize(at + words, 0);
                prefilter.scan(scanned, &mut self.bits[at..]);
            }
        }
        self.contents[id].bits_at = Some(at);
        at
    }

    /// Whether slot `slot` is set for some value of gate `index`: its parts'
    /// values are interned, scanned and ORed the first time they are asked.
    fn gate_open(
        &mut self,
        set: &RuleSet,
        prefilter: &Prefilter,
        data: &RequestData,
        index: usize,
        slot: usize,
    ) -> bool {
        let words = prefilter.words();
        let parts = set.gate_parts.len();
        if self.gate_at.is_empty() {
            self.gate_at.resize(parts + set.gates.len(), NOT_COMPUTED);
            self.part_lists.resize(parts, (UNLISTED, UNLISTED));
        }
        let entry = parts + index;
        if self.gate_at[entry] == NOT_COMPUTED {
            let parts = &set.gates[index];
            for &part in parts {
                self.gate_part(set, prefilter, data, part);
            }
            self.gate_at[entry] = match parts[..] {
                // A gate of one part is that part.
                [part] => self.gate_at[part],
                _ => {
                    let at = self.gate_bits.len();
                    self.gate_bits.resize(at + words, 0);
                    let (computed, own) = self.gate_bits.split_at_mut(at);
                    for &part in parts {
                        let from = self.gate_at[part] as usize;
                        or_into(own, &computed[from..from + words]);
                    }
                    at as u32
                }
            };
        }
        bit(&self.gate_bits[self.gate_at[entry] as usize..], slot)
    }

    /// Whether gate part `part`, computed in this phase, lacks slot `slot`
    /// in all its values (not computed: unknown, so `false`).
    fn part_lacks(&self, part: usize, slot: usize) -> bool {
        match self.gate_at.get(part) {
            Some(&at) if at != NOT_COMPUTED => !bit(&self.gate_bits[at as usize..], slot),
            _ => false,
        }
    }

    /// The values of gate part `part` that have some prefilter bit, as a
    /// range of `listed`, if the part was computed in this phase and all
    /// its values are numbered.
    fn part_list(&self, part: usize) -> Option<std::ops::Range<usize>> {
        match self.part_lists.get(part) {
            Some(&(from, to)) if from != UNLISTED => Some(from as usize..to as usize),
            _ => None,
        }
    }

    /// Computes the bits of gate part `index` (in `gate_bits`, at `gate_at`).
    fn gate_part(
        &mut self,
        set: &RuleSet,
        prefilter: &Prefilter,
        data: &RequestData,
        index: usize,
    ) {
        let words = prefilter.words();
        if self.gate_at[index] != NOT_COMPUTED {
            return;
        }
        let part = &set.gate_parts[index];
        let collection = part.target.collection;
        let at = self.gate_bits.len();
        self.gate_bits.resize(at + words, 0);
        // Unlike `scanned`, this teaches the memo a chain whose content
        // another chain scanned.
        let chain = part.transforms_key;
        let first_listed = self.listed.len() as u32;
        let mut listable = true;
        data.each(collection, &mut |key, value, id| {
            let picked = part.target.selector.as_ref().is_none_or(|s| s.matches(key))
                && !part.exclusions.iter().any(|e| e.covers(collection, key));
            if !picked {
                return true;
            }
            let facts = id.and_then(|id| self.facts(set.id, id, value));
            let bits = match facts.and_then(|f| self.memo.scan(f, chain, words)) {
                Some(bits) => bits,
                None => {
                    let content = self.intern(chain, &part.transforms, value);
                    let from = match self.contents[content].bits_at {
                        Some(from) => from,
                        None => self.scan(content, prefilter, value),
                    };
                    let bits = &self.bits[from..from + words];
                    if let Some(facts) = facts {
                        self.memo.learn_scan(facts, chain, bits);
                    }
                    bits
                }
            };
            // Only the bits of the part's rules: the others are never
            // tested through this part.
            let mut wanted = false;
            for &(word, mask) in &part.slots {
                let b = bits[word] & mask;
                self.gate_bits[at + word] |= b;
                wanted |= b != 0;
            }
            match id {
                Some(id) if wanted => {
                    self.listed.push((id, self.gate_bits.len() as u32));
                    self.gate_bits.extend_from_slice(bits);
                }
                Some(_) => {}
                None => listable = false,
            }
            true
        });
        self.gate_at[index] = at as u32;
        if listable {
            self.part_lists[index] = (first_listed, self.listed.len() as u32);
        }
    }
}

/// What earlier requests on this thread showed about request values:
/// User-Agent, Accept, Referer, most cookies and many arguments repeat from
/// request to request. Per value and rule set: the prefilter bits of what
/// each transformation chain made of the value, and the rules that found
/// nothing in it (a rule's answer on a value depends on the value alone
/// when its operator's parameter has no macro, `Rule::verdict`: a value
/// that repeats is not transformed nor matched again by the rules the
/// prefilter cannot rule out). Only clean answers are kept: a hit has
/// effects (captures, variables, the audit) and runs again.
///
/// A request looks each of its values up once per phase (`Cache::facts`)
/// and its rules then read the facts by index: one lookup per rule and
/// value, hashing the value each time, was a fifth of an inspection.
/// Bounded: values up to 1 KiB, 8,192 values and 8 MiB per thread; once
/// full, nothing more is learnt until the next phase starts from empty.
#[derive(Default)]
struct FactsMemo {
    /// Hash of (rule set, value) -> index in `values`.
    index: HashMap<u64, u32, FastHash>,
    values: Vec<ValueFacts>,
    /// Roughly the memory held by `values`.
    bytes: usize,
}

struct ValueFacts {
    /// `RuleSet::id`: bits and verdict slots mean something in one build.
    set: u64,
    value: Box<[u8]>,
    /// By chain key plus one (0: the value as it is, `RAW_CHAIN`): where
    /// the bits of what the chain made of the value start in `bits`, plus
    /// one (0: not known yet).
    scans: Vec<u32>,
    bits: Vec<u64>,
    /// By verdict slot: the rule found nothing in the value.
    clean: Vec<u64>,
}

impl FactsMemo {
    const VALUES: usize = 8192;
    const BYTES: usize = 8 << 20;
    const LONGEST: usize = 1024;

    fn key(set: u64, value: &[u8]) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = FastHash::default().build_hasher();
        hasher.write_u64(set);
        hasher.write(value);
        hasher.finish()
    }

    fn full(&self) -> bool {
        self.values.len() >= Self::VALUES || self.bytes >= Self::BYTES
    }

    /// Called as a phase starts: no request holds an index then
    /// (`Cache::facts` is emptied with it).
    fn clear_if_full(&mut self) {
        if self.full() {
            self.index.clear();
            self.values.clear();
            self.bytes = 0;
        }
    }

    /// The facts about `value`, made empty if new; `None` for a value too
    /// long to keep, or when the memo is full.
    fn entry(&mut self, set: u64, value: &[u8]) -> Option<u32> {
        if value.len() > Self::LONGEST {
            return None;
        }
        let key = Self::key(set, value);
        if let Some(&at) = self.index.get(&key) {
            let known = &self.values[at as usize];
            if known.set == set && *known.value == *value {
                return Some(at);
            }
        }
        if self.full() {
            return None;
        }
        let at = u32::try_from(self.values.len()).ok()?;
        self.values.push(ValueFacts {
            set,
            value: value.into(),
            scans: Vec::new(),
            bits: Vec::new(),
            clean: Vec::new(),
        });
        self.bytes += value.len() + std::mem::size_of::<ValueFacts>();
        // A hash shared with another value: the newer one takes the slot.
        self.index.insert(key, at);
        Some(at)
    }

    /// The bits of what chain `chain` made of value `at`, if known.
    fn scan(&self, at: u32, chain: usize, words: usize) -> Option<&[u64]> {
        let facts = &self.values[at as usize];
        let from = *facts.scans.get(chain.wrapping_add(1))?;
        let from = (from as usize).checked_sub(1)?;
        facts.bits.get(from..from + words)
    }

    fn learn_scan(&mut self, at: u32, chain: usize, bits: &[u64]) {
        if self.bytes >= Self::BYTES {
            return;
        }
        let facts = &mut self.values[at as usize];
        let slot = chain.wrapping_add(1);
        let Ok(from) = u32::try_from(facts.bits.len() + 1) else {
            return;
        };
        if facts.scans.len() <= slot {
            self.bytes += (slot + 1 - facts.scans.len()) * 4;
            facts.scans.resize(slot + 1, 0);
        }
        facts.scans[slot] = from;
        facts.bits.extend_from_slice(bits);
        self.bytes += bits.len() * 8;
    }

    fn is_clean(&self, at: u32, verdict: u32) -> bool {
        bit(&self.values[at as usize].clean, verdict as usize)
    }

    fn learn_clean(&mut self, at: u32, verdict: u32) {
        if self.bytes >= Self::BYTES {
            return;
        }
        let clean = &mut self.values[at as usize].clean;
        let word = verdict as usize / 64;
        if clean.len() <= word {
            self.bytes += (word + 1 - clean.len()) * 8;
            clean.resize(word + 1, 0);
        }
        clean[word] |= 1 << (verdict % 64);
    }
}

thread_local! {
    static FACTS: std::cell::RefCell<FactsMemo> = std::cell::RefCell::default();
}

/// The chain key of values as they are (`Cache::raw_content`).
const RAW_CHAIN: usize = usize::MAX;

/// A gate entry not computed yet in this phase.
const NOT_COMPUTED: u32 = u32::MAX;
/// `Cache::part_lists`: the part is not computed, or not listed.
const UNLISTED: u32 = u32::MAX;

/// A value the facts memo does not keep (`Cache::facts`).
const NO_FACTS: u32 = u32::MAX;

/// Sets in `into` every bit set in `bits`.
fn or_into(into: &mut [u64], bits: &[u64]) {
    for (word, b) in into.iter_mut().zip(bits) {
        *word |= b;
    }
}

fn bit(words: &[u64], slot: usize) -> bool {
    words
        .get(slot / 64)
        .is_some_and(|w| w & (1 << (slot % 64)) != 0)
}

/// The hasher of the engine's per-request maps and memos: keys come from
/// the rules and the engine, and SipHash's cost showed in profiles.
pub(crate) type FastHash = foldhash::fast::FixedState;

/// The state every request reaches after the rules that open phase 1 and
/// read nothing of the request (`Rule::is_request_independent`): the CRS's
/// setup and initialization, about 20 rules that set the same ~45 TX
/// variables for every request. A request starts from a copy of it instead
/// of running them again.
#[derive(Debug)]
pub struct Prelude {
    /// Where phase 1 goes on.
    resume_at: usize,
    tx: HashMap<String, Vec<u8>, FastHash>,
    matches: Vec<Match>,
    matched_var: Option<usize>,
    matched_vars: Vec<(VarName, Vec<u8>)>,
    /// By rule index: the outcome of the rules after the prelude whose
    /// answer it already settles (`reads_settled_values`).
    settled: Vec<Option<Box<Settled>>>,
}

/// The outcome of a rule whose first link reads only TX variables the
/// prelude set and no later rule can write: the same for every request
/// that starts from the prelude. At PL1 the CRS asks about 75 of them per
/// request (each rule file's paranoia-level skips, `TX:DETECTION_PARANOIA_LEVEL
/// "@lt 2"`; the scores of the levels above the policy's), each a full
/// rule evaluation for a known answer.
#[derive(Debug)]
struct Settled {
    /// `None`: the rule does not match.
    hit: Option<SettledHit>,
}

#[derive(Debug)]
struct SettledHit {
    /// What the match records.
    record: Match,
    matched_vars: Vec<(VarName, Vec<u8>)>,
}

/// The TX variables the rules past the prelude may write: literal names,
/// and the literal start of names built with macros (`header_name_920450_`
/// from `tx.header_name_920450_%{tx.0}`; an empty start means any name).
#[derive(Default)]
struct LaterWrites {
    names: std::collections::HashSet<String>,
    starts: Vec<String>,
}

impl LaterWrites {
    fn of(set: &RuleSet, resume_at: usize) -> LaterWrites {
        let mut later = LaterWrites::default();
        for (phase, items) in set.phases.iter().enumerate() {
            for (i, item) in items.iter().enumerate() {
                let Item::Rule(index) = item else {
                    continue;
                };
                if phase == 1 && i < resume_at {
                    continue;
                }
                let mut link = set.rules.get(*index);
                while let Some(rule) = link {
                    if rule.capture {
                        // TX:0 to TX:9.
                        later.names.extend((0..10).map(|d| d.to_string()));
                    }
                    for setvar in &rule.setvars {
                        match setvar.name.literal() {
                            Some(name) => {
                                later.names.insert(name.to_string());
                            }
                            None => later.starts.push(
                                setvar
                                    .name
                                    .parts
                                    .iter()
                                    .map_while(|p| match p {
                                        MacroPart::Text(t) => Some(t.as_str()),
                                        MacroPart::Var(..) => None,
                                    })
                                    .collect(),
                            ),
                        }
                    }
                    link = rule.chain.as_deref();
                }
            }
        }
        later
    }

    fn may_write(&self, name: &str) -> bool {
        self.names.contains(name) || self.starts.iter().any(|s| name.starts_with(s.as_str()))
    }
}

/// Whether the prelude settles what `rule`'s first link answers: it reads
/// only TX variables, by name, that no later rule writes, in its targets
/// and in its operator's parameter (CRS 901500 compares two settings).
fn reads_settled_values(rule: &Rule, later: &LaterWrites) -> bool {
    let settled_macro = |m: &Macro| {
        m.parts.iter().all(|p| match p {
            MacroPart::Text(_) => true,
            MacroPart::Var(collection, Some(name)) => collection == "TX" && !later.may_write(name),
            MacroPart::Var(_, None) => false,
        })
    };
    rule.exclusions.is_empty()
        && rule.operator.param().is_none_or(settled_macro)
        && !rule.targets.is_empty()
        && rule.targets.iter().all(|t| {
            t.collection == Collection::Tx
                && matches!(&t.selector, Some(Selector::Name(name)) if !later.may_write(name))
        })
}

/// Whether a match of `rule` has no effect but its record and matched
/// variables: one link, no setvar, ctl, capture, log or decision.
fn quiet(rule: &Rule) -> bool {
    rule.chain.is_none()
        && rule.setvars.is_empty()
        && rule.ctls.is_empty()
        && !rule.capture
        && !rule.log
        && rule.disruptive == Disruptive::Pass
}

impl Prelude {
    /// Whether the prelude settles the answer of rule `index`.
    #[cfg(test)]
    pub(crate) fn has_settled(&self, index: usize) -> bool {
        self.settled.get(index).is_some_and(Option::is_some)
    }

    fn compute(set: Arc<RuleSet>) -> Option<Prelude> {
        let data = RequestData::new(super::request::Head::default());
        let mut tx =
            Transaction::without_prelude(set.clone(), data, EngineMode::On, Tuning::default());
        let resume_at = tx.run_from(1, 0, true);
        // A rule of the prelude that decides or logs (CRS 901001 when the
        // setup file is missing) does so for every request: such a rule set
        // runs in full for every request, as without a prelude.
        let s = &tx.state;
        if s.block.is_some()
            || s.would_block.is_some()
            || s.allowed
            || s.matches.iter().any(|m| m.log)
            || resume_at == 0
        {
            return None;
        }
        let later = LaterWrites::of(&set, resume_at);
        let mut settled: Vec<Option<Box<Settled>>> = set.rules.iter().map(|_| None).collect();
        let mut scratch = Transaction::without_prelude(
            set.clone(),
            RequestData::new(super::request::Head::default()),
            EngineMode::On,
            Tuning::default(),
        );
        scratch.state.tx = tx.state.tx.clone();
        for (index, rule) in set.rules.iter().enumerate() {
            if !reads_settled_values(rule, &later) {
                continue;
            }
            // A first link that does not match settles any rule: nothing
            // of it runs. A match is replayed only where it has no effects.
            let hit = match scratch.evaluate(rule, rule, &[], false) {
                None => None,
                Some(_) if quiet(rule) && scratch.evaluate_chain(rule) => {
                    let Some(record) = scratch.state.matches.pop() else {
                        continue;
                    };
                    Some(SettledHit {
                        record,
                        matched_vars: std::mem::take(&mut scratch.state.matched_vars),
                    })
                }
                Some(_) => continue,
            };
            settled[index] = Some(Box::new(Settled { hit }));
        }
        Some(Prelude {
            resume_at,
            settled,
            tx: tx.state.tx,
            matches: tx.state.matches,
            matched_var: tx.state.matched_var,
            matched_vars: tx.state.matched_vars,
        })
    }
}

/// A request under inspection.
pub struct Transaction {
    set: Arc<RuleSet>,
    pub data: RequestData,
    state: State,
    cache: Cache,
    /// An empty list of hits, its allocation kept for the next rule.
    spare_hits: Vec<(VarName, Vec<u8>)>,
    /// Where phase 1 starts (past the prelude).
    resume_at: usize,
    /// Whether this request started from the prelude (so the prelude's
    /// settled answers are its answers).
    from_prelude: bool,
}

impl Transaction {
    /// A transaction that starts from the rule set's prelude when the
    /// request's tuning leaves the prelude's rules alone (policy exclusions
    /// may remove or relax them).
    pub fn new(set: Arc<RuleSet>, data: RequestData, mode: EngineMode, tuning: Tuning) -> Self {
        let untuned = tuning.is_empty();
        let mut tx = Self::without_prelude(set.clone(), data, mode, tuning);
        let prelude = set.prelude.get_or_init(|| Prelude::compute(set.clone()));
        if let (Some(prelude), true) = (prelude, untuned) {
            tx.resume_at = prelude.resume_at;
            tx.from_prelude = true;
            tx.state.tx.clone_from(&prelude.tx);
            tx.state.matches.extend(prelude.matches.iter().cloned());
            tx.state.matched_var = prelude.matched_var;
            tx.state.matched_vars.clone_from(&prelude.matched_vars);
            // A SecAction of the prelude matched the UNIQUE_ID of the
            // request the prelude ran on: it is this request's.
            let id = tx.data.head.request_id.as_bytes();
            for (name, value) in &mut tx.state.matched_vars {
                if name == "UNIQUE_ID" {
                    value.clear();
                    value.extend_from_slice(id);
                }
            }
        }
        tx
    }

    fn without_prelude(
        set: Arc<RuleSet>,
        data: RequestData,
        mode: EngineMode,
        tuning: Tuning,
    ) -> Self {
        let chain_parents = set.chain_parents.clone();
        Transaction {
            set,
            data,
            state: State {
                // Sized for the full CRS (about 150 variables): growing
                // the map showed in profiles.
                tx: HashMap::with_capacity_and_hasher(256, FastHash::default()),
                tuning,
                mode,
                processor: None,
                body_access: true,
                matched_var: None,
                matched_vars: Vec::new(),
                captured: Vec::new(),
                matches: Vec::with_capacity(64),
                block: None,
                would_block: None,
                allowed: false,
            },
            cache: Cache {
                chain_parents,
                ..Cache::default()
            },
            spare_hits: Vec::new(),
            resume_at: 0,
            from_prelude: false,
        }
    }

    /// Runs phase 1 (request headers) or 2 (request body).
    pub fn run_phase(&mut self, phase: usize) {
        let from = if phase == 1 {
            std::mem::take(&mut self.resume_at)
        } else {
            0
        };
        self.run_from(phase, from, false);
    }

    /// Runs the items of `phase` from index `i`. With `independent_only`,
    /// stops before the first rule that depends on the request and returns
    /// its index.
    fn run_from(&mut self, phase: usize, i: usize, independent_only: bool) -> usize {
        self.cache.clear();
        self.cache.memo = FACTS.with(|memo| std::mem::take(&mut *memo.borrow_mut()));
        self.cache.memo.clear_if_full();
        let end = self.run_items(phase, i, independent_only);
        // Given back, and the entries that pointed into it forgotten.
        let memo = std::mem::take(&mut self.cache.memo);
        self.cache.facts.clear();
        FACTS.with(|m| *m.borrow_mut() = memo);
        end
    }

    fn run_items(&mut self, phase: usize, mut i: usize, independent_only: bool) -> usize {
        let set = self.set.clone();
        let Some(items) = set.phases.get(phase) else {
            return 0;
        };
        while i < items.len() {
            if self.state.block.is_some()
                || self.state.allowed
                || self.state.mode == EngineMode::Off
            {
                return items.len();
            }
            let Item::Rule(index) = &items[i] else {
                i += 1;
                continue;
            };
            let Some(rule) = set.rules.get(*index) else {
                i += 1;
                continue;
            };
            if independent_only && !rule.is_request_independent() {
                return i;
            }
            i += 1;
            if self.state.tuning.removes(rule) {
                continue;
            }
            if let (Some(gate), Some(slot), Some(prefilter)) =
                (rule.gate, rule.prefilter, set.prefilter.as_ref())
            {
                if !self
                    .cache
                    .gate_open(&set, prefilter, &self.data, gate, slot)
                {
                    continue;
                }
            }
            if !self.run_rule(&set, *index, rule) {
                continue;
            }
            if rule.skip_after.is_some() {
                i = set.skip_to[phase]
                    .get(i - 1)
                    .copied()
                    .unwrap_or(items.len());
            } else if rule.skip > 0 {
                let mut left = rule.skip;
                while left > 0 && i < items.len() {
                    if matches!(items[i], Item::Rule(_)) {
                        left -= 1;
                    }
                    i += 1;
                }
            }
        }
        i
    }

    /// Sets the body the policy lets us inspect and parses it.
    pub fn set_body(&mut self, bytes: Vec<u8>, total_length: usize) {
        if !self.state.body_access {
            return;
        }
        let processor = self
            .state
            .processor
            .clone()
            .or_else(|| self.data.processor_for().map(str::to_string));
        self.data
            .set_body(bytes, total_length, processor.as_deref());
    }

    /// Sets a multipart body read as it streamed.
    pub fn set_multipart(&mut self, parts: super::body::Multipart, total_length: usize) {
        if !self.state.body_access {
            return;
        }
        self.data.set_multipart(parts, total_length);
    }

    /// The anomaly-score fallback when the rules hold no blocking evaluation
    /// (only YAML rules, no CRS): sums the per-level scores up to `paranoia`.
    pub fn evaluate_score(&mut self, paranoia: u8, threshold: i64) {
        if self.set.has_blocking_evaluation {
            return;
        }
        let score = self.score(paranoia);
        if score >= threshold && threshold > 0 {
            let block = Block {
                rule: 0,
                status: 403,
                msg: format!("Inbound anomaly score {score} reached the threshold {threshold}"),
            };
            self.disrupt(block);
        }
    }

    /// The inbound anomaly score so far.
    pub fn score(&self, paranoia: u8) -> i64 {
        match self.state.tx.get("blocking_inbound_anomaly_score") {
            Some(v) if self.set.has_blocking_evaluation => atoi(v),
            _ => (1..=paranoia.min(4))
                .map(|pl| self.tx(&format!("inbound_anomaly_score_pl{pl}")))
                .sum(),
        }
    }

    pub fn tx(&self, name: &str) -> i64 {
        self.state.tx.get(name).map(|v| atoi(v)).unwrap_or(0)
    }

    pub fn blocked(&self) -> Option<&Block> {
        self.state.block.as_ref()
    }

    /// What would have been blocked in detect-only mode.
    pub fn would_block(&self) -> Option<&Block> {
        self.state.would_block.as_ref()
    }

    pub fn matches(&self) -> &[Match] {
        &self.state.matches
    }

    pub fn allowed(&self) -> bool {
        self.state.allowed
    }

    /// Whether body inspection was switched off by a rule (`ctl:requestBodyAccess=Off`)
    /// or the engine was turned off for this request.
    pub fn wants_body(&self) -> bool {
        self.state.body_access
            && !self.state.allowed
            && self.state.block.is_none()
            && self.state.mode != EngineMode::Off
    }

    fn disrupt(&mut self, block: Block) {
        match self.state.mode {
            EngineMode::On => self.state.block = Some(block),
            _ => {
                self.state.would_block.get_or_insert(block);
            }
        }
    }

    /// Evaluates rule `index`, or replays the answer the prelude settled
    /// for it; whether it matched.
    fn run_rule(&mut self, set: &RuleSet, index: usize, rule: &Rule) -> bool {
        // A ctl may have tuned this rule since the request started (a
        // removed target, detect-only): then it runs. (Removed rules do not
        // get here.) Most requests are tuned for other rules: CRS 941010
        // takes REQUEST_FILENAME from the rules tagged xss-perf-disable.
        let settled = match set.prelude.get() {
            Some(Some(prelude)) if self.from_prelude => {
                prelude.settled.get(index).and_then(Option::as_deref)
            }
            _ => None,
        };
        let tuning = &self.state.tuning;
        let Some(settled) =
            settled.filter(|_| !tuning.retargets(rule) && !tuning.detect_only(rule))
        else {
            return self.evaluate_chain(rule);
        };
        let Some(hit) = &settled.hit else {
            return false;
        };
        self.state.matched_vars.clone_from(&hit.matched_vars);
        self.state.matched_var = hit.matched_vars.len().checked_sub(1);
        self.state.matches.push(hit.record.clone());
        true
    }

    /// Evaluates a rule and its chain; on a full match runs the actions.
    fn evaluate_chain(&mut self, head: &Rule) -> bool {
        let exclusions = self.state.tuning.exclusions_for(head);
        let detect_only = self.state.tuning.detect_only(head);
        // Rules that neither log nor decide (CRS bookkeeping: most of a
        // request's matches) are not described: nobody reads it.
        let described = head.log || head.disruptive != Disruptive::Pass;
        let mut link = Some(head);
        let mut first = None;
        let mut names: Vec<String> = Vec::new();
        while let Some(rule) = link {
            let describe_link = described && first.is_none();
            match self.evaluate(rule, head, &exclusions, describe_link) {
                Some(m) if first.is_none() => first = Some(m),
                Some(_) => {}
                None => return false,
            }
            // As in ModSecurity, a link's variables are set as soon as it
            // matches: the next link may read them (CRS 931130, 920420).
            // A setvar naming the matched variable, or a capture, runs once
            // per match (CRS 920450 records every restricted header, 922150
            // every part's content type), with that match's captures.
            let per_match = rule
                .setvars
                .iter()
                .any(|s| s.uses_matched_var() || (rule.capture && s.uses_capture()));
            if per_match && self.state.matched_vars.len() > 1 {
                let last = self.state.matched_var;
                let captured = std::mem::take(&mut self.state.captured);
                for i in 0..self.state.matched_vars.len() {
                    if let (true, Some(Some(hit))) = (rule.capture, captured.get(i)) {
                        self.state.set_captures(hit);
                    }
                    self.state.matched_var = Some(i);
                    self.setvars(rule, head, detect_only);
                }
                self.state.captured = captured;
                self.state.matched_var = last;
            } else {
                self.setvars(rule, head, detect_only);
            }
            if described {
                for (name, _) in &self.state.matched_vars {
                    if !names.iter().any(|n| n == name) {
                        names.push(name.to_string());
                    }
                }
            }
            link = rule.chain.as_deref();
        }
        let mut link = Some(head);
        while let Some(rule) = link {
            for ctl in &rule.ctls {
                self.ctl(ctl);
            }
            link = rule.chain.as_deref();
        }
        let (target, fragment) = first.unwrap_or_default();
        let describe = |m: &Option<Macro>| match m {
            Some(m) if described => lossy(&self.expand(m, head)),
            _ => String::new(),
        };
        let msg = describe(&head.msg);
        let data = describe(&head.logdata);
        let fragment = if described {
            truncate(&fragment, 120)
        } else {
            String::new()
        };
        self.state.matches.push(Match {
            id: head.id,
            phase: head.phase,
            msg: msg.clone(),
            data,
            severity: head.severity,
            target,
            targets: names,
            fragment,
            detect_only,
            log: head.log,
        });
        match head.disruptive {
            Disruptive::Deny if !detect_only => self.disrupt(Block {
                rule: head.id,
                status: head.status.unwrap_or(403),
                msg,
            }),
            Disruptive::Allow if !detect_only => self.state.allowed = true,
            _ => {}
        }
        true
    }

    /// One link: whether it matched, with the first matched (target name,
    /// fragment) when `describe` asks for it (else empty).
    fn evaluate(
        &mut self,
        rule: &Rule,
        head: &Rule,
        exclusions: &[TargetExclusion],
        describe: bool,
    ) -> Option<(String, Vec<u8>)> {
        let param = rule
            .operator
            .param()
            .map(|m| self.expand(m, head))
            .unwrap_or_default();
        self.state.captured.clear();
        let mut visit = Visit {
            rule,
            exclusions,
            param: &param,
            state: &mut self.state,
            cache: &mut self.cache,
            prefilter: self.set.prefilter.as_ref(),
            set: self.set.id,
            hits: std::mem::take(&mut self.spare_hits),
            describe,
            first: None,
            count: 0,
        };
        for (i, target) in rule.targets.iter().enumerate() {
            // The gate let the rule run: some of its targets hold a value
            // with the rule's bit, not necessarily this one, and not
            // necessarily all of this one's values.
            let Some((slot, part)) = rule.prefilter.zip(rule.target_parts.get(i).copied()) else {
                visit.target(&self.data, target);
                continue;
            };
            if let Some(values) = visit.cache.part_list(part) {
                visit.listed(&self.data, target, slot, values);
            } else if !visit.cache.part_lacks(part, slot) {
                visit.target(&self.data, target);
            }
        }
        let Visit { hits, first, .. } = visit;
        if hits.is_empty() {
            self.spare_hits = hits;
            return None;
        }
        self.state.matched_var = Some(hits.len() - 1);
        // The previous list's allocation serves the next rule.
        self.spare_hits = std::mem::replace(&mut self.state.matched_vars, hits);
        self.spare_hits.clear();
        Some(first.unwrap_or_default())
    }

    fn setvars(&mut self, rule: &Rule, head: &Rule, detect_only: bool) {
        for setvar in &rule.setvars {
            if !(detect_only && setvar.is_score()) {
                self.setvar(setvar, head);
            }
        }
    }

    fn setvar(&mut self, setvar: &SetVar, rule: &Rule) {
        // Names are lower-cased at load time; most are literal (no copy).
        let expanded;
        let name: &str = match setvar.name.literal() {
            Some(literal) => literal,
            None => {
                expanded = lossy(&self.expand(&setvar.name, rule)).to_ascii_lowercase();
                &expanded
            }
        };
        match &setvar.op {
            SetOp::Delete => {
                self.state.tx.remove(name);
            }
            SetOp::Set(value) => {
                let value = self.expand(value, rule);
                self.state.put_tx(name, &value);
            }
            SetOp::Add(value) | SetOp::Sub(value) => {
                let delta = self.expand_number(value, rule);
                let delta = if matches!(setvar.op, SetOp::Sub(_)) {
                    -delta
                } else {
                    delta
                };
                let current = self.state.tx.get(name).map(|v| atoi(v)).unwrap_or(0);
                let mut digits = itoa::Buffer::new();
                let sum = digits.format(current.saturating_add(delta));
                self.state.put_tx(name, sum.as_bytes());
            }
        }
    }

    /// A macro read as a number; `%{tx.name}` alone (the CRS's scores) is
    /// read in place.
    fn expand_number(&self, m: &Macro, rule: &Rule) -> i64 {
        if let [MacroPart::Var(collection, Some(key))] = &m.parts[..] {
            if collection == "TX" {
                return self
                    .state
                    .tx
                    .get(key.as_str())
                    .map(|v| atoi(v))
                    .unwrap_or(0);
            }
        }
        atoi(&self.expand(m, rule))
    }

    fn ctl(&mut self, ctl: &Ctl) {
        let t = &mut self.state.tuning;
        match ctl {
            Ctl::RemoveById(ranges) => t.removed_ids.extend(ranges.iter().copied()),
            Ctl::RemoveByTag(tag) => t.removed_tags.push(tag.clone()),
            Ctl::RemoveTargetById(range, e) => t.targets_by_id.push((*range, e.clone())),
            Ctl::RemoveTargetByTag(tag, e) => t.targets_by_tag.push((tag.clone(), e.clone())),
            Ctl::RuleEngine(mode) => {
                // A rule may relax the engine for a request, never harden what the policy set.
                if !(self.state.mode == EngineMode::DetectionOnly && *mode == EngineMode::On) {
                    self.state.mode = *mode;
                }
            }
            Ctl::BodyProcessor(p) => self.state.processor = Some(p.clone()),
            Ctl::BodyAccess(on) => self.state.body_access = *on,
            Ctl::ForceBodyVariable(on) => self.data.force_body_variable = *on,
            Ctl::Ignored => {}
        }
    }

    /// Expands `%{...}` references.
    fn expand<'m>(&self, m: &'m Macro, rule: &Rule) -> Cow<'m, [u8]> {
        if let Some(text) = m.literal() {
            return Cow::Borrowed(text.as_bytes());
        }
        let mut out = Vec::new();
        for part in &m.parts {
            match part {
                MacroPart::Text(t) => out.extend_from_slice(t.as_bytes()),
                MacroPart::Var(collection, key) => {
                    out.extend_from_slice(&self.lookup(collection, key.as_deref(), rule))
                }
            }
        }
        Cow::Owned(out)
    }

    fn lookup(&self, collection: &str, key: Option<&str>, rule: &Rule) -> Vec<u8> {
        match (collection, key) {
            ("TX", Some(k)) => self.state.tx.get(k).cloned().unwrap_or_default(),
            ("RULE", Some("id")) => rule.id.to_string().into_bytes(),
            ("RULE", Some("msg")) => rule
                .msg
                .as_ref()
                .and_then(|m| m.literal().map(|s| s.as_bytes().to_vec()))
                .unwrap_or_default(),
            ("RULE", Some("severity")) => rule
                .severity
                .map(|s| severity_name(s).as_bytes().to_vec())
                .unwrap_or_default(),
            ("MATCHED_VAR", _) => self.state.matched_var().1.to_vec(),
            ("MATCHED_VAR_NAME", _) => self.state.matched_var().0.as_bytes().to_vec(),
            (other, key) => {
                let Some(c) = Collection::parse(other) else {
                    return Vec::new();
                };
                let mut out = None;
                self.data.each(c, &mut |k, v, _| {
                    if key.is_none_or(|key| k.eq_ignore_ascii_case(key)) {
                        out = Some(v.to_vec());
                        return false;
                    }
                    true
                });
                out.unwrap_or_default()
            }
        }
    }
}

/// Walks the values of a rule's targets.
struct Visit<'a> {
    rule: &'a Rule,
    exclusions: &'a [TargetExclusion],
    param: &'a [u8],
    state: &'a mut State,
    cache: &'a mut Cache,
    prefilter: Option<&'a Prefilter>,
    /// The rule set's id (`RuleSet::id`), for the verdict memo.
    set: u64,
    hits: Vec<(VarName, Vec<u8>)>,
    /// Whether the first hit's name and fragment are wanted (in `first`).
    describe: bool,
    first: Option<(String, Vec<u8>)>,
    count: usize,
}

impl Visit<'_> {
    fn target(&mut self, data: &RequestData, target: &Target) {
        let collection = target.collection;
        if target.count {
            self.count = 0;
            if let (Collection::Tx, Some(Selector::Name(name))) = (collection, &target.selector) {
                // `&TX:name` (CRS asks it dozens of times per request): a
                // lookup, without copying the value.
                let present =
                    self.state.tx.contains_key(name.as_str()) && !self.excluded(collection, name);
                let count: &[u8] = if present { b"1" } else { b"0" };
                self.check(collection, "", count, None);
                return;
            }
            self.entries(
                data,
                collection,
                target.selector.as_ref(),
                &mut |visit, key, _, _| {
                    if visit.selected(target, key) {
                        visit.count += 1;
                    }
                    true
                },
            );
            let count = self.count.to_string();
            self.check(collection, "", count.as_bytes(), None);
            return;
        }
        self.entries(
            data,
            collection,
            target.selector.as_ref(),
            &mut |visit, key, value, id| {
                visit.value(target, key, value, id);
                true
            },
        );
    }

    /// The values of a gate part's list (`Cache::part_list`) that have the
    /// rule's bit: the only ones of the target its operator may match.
    fn listed(
        &mut self,
        data: &RequestData,
        target: &Target,
        slot: usize,
        values: std::ops::Range<usize>,
    ) {
        for i in values {
            let (id, at) = self.cache.listed[i];
            if !bit(&self.cache.gate_bits[at as usize..], slot) {
                continue;
            }
            if let Some((key, value)) = data.value(id) {
                self.value(target, key, value, Some(id));
            }
        }
    }

    /// One value of a target: checked unless the rule or the policy
    /// excludes it.
    fn value(&mut self, target: &Target, key: &str, value: &[u8], id: Option<ValueId>) {
        let collection = target.collection;
        if self.selected(target, key) {
            let memorable = id.filter(|_| collection.in_request() && !value.is_empty());
            self.check(collection, key, value, memorable);
        }
    }

    fn selected(&self, target: &Target, key: &str) -> bool {
        target.selector.as_ref().is_none_or(|s| s.matches(key))
            && !self.excluded(target.collection, key)
    }

    fn excluded(&self, collection: Collection, key: &str) -> bool {
        self.rule
            .exclusions
            .iter()
            .any(|e| e.covers(collection, key))
            || self.exclusions.iter().any(|e| e.covers(collection, key))
    }

    /// Calls `each` for every entry; the engine's own collections are copied
    /// first because `each` may change them (captures).
    fn entries<F>(
        &mut self,
        data: &RequestData,
        collection: Collection,
        only: Option<&Selector>,
        each: &mut F,
    ) where
        F: FnMut(&mut Self, &str, &[u8], Option<ValueId>) -> bool,
    {
        if let (Collection::Tx, Some(Selector::Name(name))) = (collection, only) {
            // One variable by name: only its value is copied.
            if let Some(value) = self.state.tx.get(name.as_str()).cloned() {
                each(self, name, &value, None);
            }
            return;
        }
        let own: Vec<(String, Vec<u8>)> = match collection {
            Collection::Tx => self
                .state
                .tx
                .iter()
                .filter(|(k, _)| only.is_none_or(|s| s.matches(k)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Collection::MatchedVar => vec![(String::new(), self.state.matched_var().1.to_vec())],
            Collection::MatchedVarName => {
                vec![(
                    String::new(),
                    self.state.matched_var().0.as_bytes().to_vec(),
                )]
            }
            Collection::MatchedVars => self
                .state
                .matched_vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            Collection::MatchedVarsNames => self
                .state
                .matched_vars
                .iter()
                .map(|(k, _)| (k.to_string(), k.as_bytes().to_vec()))
                .collect(),
            _ => {
                data.each(collection, &mut |k, v, id| each(self, k, v, id));
                return;
            }
        };
        for (k, v) in &own {
            if !each(self, k, v, None) {
                break;
            }
        }
    }

    /// Transforms a value, runs the operator and records a hit. A value the
    /// rule found clean in an earlier request is not looked at again (the
    /// facts memo), unless the prefilter, cheaper, rules it out first.
    /// `memorable`: the id of a request value the memo may keep facts about.
    fn check(
        &mut self,
        collection: Collection,
        key: &str,
        value: &[u8],
        memorable: Option<ValueId>,
    ) {
        let rule = self.rule;
        let prefilter = rule.prefilter.zip(self.prefilter);
        let verdict = rule.verdict.filter(|_| memorable.is_some());
        let uses_memo = verdict.is_some() || (prefilter.is_some() && memorable.is_some());
        let facts = match memorable.filter(|_| uses_memo) {
            Some(id) => self.cache.facts(self.set, id, value),
            None => None,
        };
        if rule.multi_match && !rule.transforms.is_empty() {
            if self.cache.known_clean(facts, verdict) {
                return;
            }
            // The value as it is, gated by the prefilter scan of the value
            // itself (shared with every rule that sees it untransformed)...
            let raw_may_match = match prefilter {
                Some((slot, p)) if memorable.is_some() => {
                    let id = self.cache.raw_content(value);
                    self.cache.may_match(id, RAW_CHAIN, slot, p, value, facts)
                }
                _ => true,
            };
            if raw_may_match && self.test(collection, key, value) {
                return;
            }
            // ...then every intermediate a transformation changes.
            let mut current = Cow::Borrowed(value);
            for t in &rule.transforms {
                if t.unchanged(&current) {
                    continue;
                }
                let next = t.apply(&current);
                if next[..] != current[..] {
                    current = Cow::Owned(next);
                    if self.test(collection, key, &current) {
                        return;
                    }
                }
            }
            self.cache.remember_clean(facts, verdict);
            return;
        }
        if memorable.is_some() && (prefilter.is_some() || !rule.transforms.is_empty()) {
            // A value seen in an earlier request: its bits are known without
            // transforming or scanning it again.
            let mut bits_known = false;
            if let (Some((slot, p)), Some(facts)) = (prefilter, facts) {
                let known = self
                    .cache
                    .memo
                    .scan(facts, rule.transforms_key, p.words())
                    .map(|bits| bit(bits, slot));
                if known == Some(false) {
                    return;
                }
                bits_known = known.is_some();
            }
            // A value new to the scan memo is new to this one too.
            if (prefilter.is_none() || bits_known) && self.cache.known_clean(facts, verdict) {
                return;
            }
            let id = self.cache.content(rule, value);
            // None of the rule's literals is in the value: its operator cannot
            // match (decided before anything is copied: the common case).
            if let Some((slot, p)) = prefilter {
                if !self
                    .cache
                    .may_match(id, rule.transforms_key, slot, p, value, facts)
                {
                    return;
                }
            }
            let transformed = self.cache.contents[id].bytes.clone();
            if !self.test(collection, key, transformed.as_deref().unwrap_or(value)) {
                self.cache.remember_clean(facts, verdict);
            }
        } else if rule.transforms.is_empty() {
            if self.cache.known_clean(facts, verdict) {
                return;
            }
            if !self.test(collection, key, value) {
                self.cache.remember_clean(facts, verdict);
            }
        } else {
            let transformed = apply_all(&rule.transforms, value);
            self.test(collection, key, &transformed);
        }
    }

    fn test(&mut self, collection: Collection, key: &str, value: &[u8]) -> bool {
        let rule = self.rule;
        let hit = rule.operator.matches(value, self.param, rule.capture);
        let (fragment, captured) = match (hit, rule.negated) {
            (Some(hit), false) if rule.capture => {
                self.state.set_captures(&hit);
                (hit.fragment.clone(), Some(hit))
            }
            (Some(hit), false) => (hit.fragment, None),
            (None, true) => (value.to_vec(), None),
            _ => return false,
        };
        if rule.capture {
            // Kept for the setvars that run once per match.
            self.state.captured.push(captured);
        }
        // Built by hand: `format!` showed in profiles (one name per hit).
        let name: VarName = if key.is_empty() {
            Cow::Borrowed(collection.name())
        } else {
            let mut name = String::with_capacity(collection.name().len() + 1 + key.len());
            name.push_str(collection.name());
            name.push(':');
            name.push_str(key);
            Cow::Owned(name)
        };
        if self.describe && self.first.is_none() {
            self.first = Some((name.to_string(), fragment));
        }
        self.hits.push((name, value.to_vec()));
        true
    }
}

/// Bytes as text for messages and the audit log: UTF-8 kept as it is
/// (French shop content stays readable). A byte that is not part of UTF-8
/// is what a transformation such as `utf8toUnicode` + `urlDecodeUni` made
/// of a character (`é` is `%u00e9`, then the byte E9): it is shown as that
/// Latin-1 character; only control bytes are escaped as `\xNN`.
fn lossy(bytes: &[u8]) -> String {
    truncate(bytes, usize::MAX)
}

/// At most `max` characters of `bytes` as text (see [`lossy`]), cut on a
/// character boundary and marked with `…`.
pub fn truncate(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    let mut count = 0usize;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if count == max {
                out.push('…');
                return out;
            }
            out.push(c);
            count += 1;
        }
        for &b in chunk.invalid() {
            if count == max {
                out.push('…');
                return out;
            }
            if b >= 0xA0 {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("\\x{b:02X}"));
            }
            count += 1;
        }
    }
    out
}

#[cfg(test)]
mod text_tests {
    use super::truncate;

    #[test]
    fn audit_text_keeps_utf8_and_escapes_only_what_is_not() {
        assert_eq!(truncate("crème brûlée".as_bytes(), 100), "crème brûlée");
        assert_eq!(truncate("été".as_bytes(), 2), "ét…");
        assert_eq!(truncate(b"caf\xe9 \x85", 100), "café \\x85");
        assert!(!truncate("Élodie, ça va?".as_bytes(), 200).contains('\u{fffd}'));
    }
}
