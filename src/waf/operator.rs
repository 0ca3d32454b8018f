//! Rule operators (`@rx`, `@pm`, `@detectSQLi`...): does a value match?

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use ipnet::IpNet;
use regex::bytes::{Regex, RegexBuilder};

use super::rule::Macro;

/// A compiled operator. Parameters that may hold `%{...}` are kept as macros
/// and expanded per request.
#[derive(Debug, Clone)]
pub enum Operator {
    Rx(Regex),
    /// The automaton and its phrases (lower-cased: they feed the prefilter).
    Pm(AhoCorasick, std::sync::Arc<[Vec<u8>]>),
    Streq(Macro),
    Eq(Macro),
    Ge(Macro),
    Gt(Macro),
    Le(Macro),
    Lt(Macro),
    Within(Macro),
    Contains(Macro),
    ContainsWord(Macro),
    BeginsWith(Macro),
    EndsWith(Macro),
    DetectSqli,
    DetectXss,
    IpMatch(Vec<IpNet>),
    ValidateByteRange(Box<[bool; 256]>),
    ValidateUrlEncoding,
    ValidateUtf8Encoding,
    Unconditional,
    NoMatch,
}

/// The result of a match: the fragment that matched and regex captures.
#[derive(Debug, Default)]
pub struct Hit {
    /// What matched (the whole capture 0, the phrase, or the fingerprint).
    pub fragment: Vec<u8>,
    /// Capture groups 1..=9 (only when the rule asks for `capture`).
    pub groups: Vec<Vec<u8>>,
}

/// Compiles a regular expression the way ModSecurity runs PCRE: `.` matches
/// newlines, and bytes are bytes (Unicode classes only when the pattern needs them).
pub fn regex(pattern: &str) -> Result<Regex, String> {
    let build = |unicode: bool| {
        RegexBuilder::new(pattern)
            .dot_matches_new_line(true)
            .unicode(unicode)
            .size_limit(256 << 20)
            .dfa_size_limit(64 << 20)
            .build()
    };
    build(false).or_else(|_| build(true)).map_err(|e| match e {
        regex::Error::Syntax(s) => s.lines().last().unwrap_or("syntax error").to_string(),
        other => other.to_string(),
    })
}

/// Literals (lower-cased) one of which occurs in every match of `pattern`,
/// or `None` when no such set is known. The engine scans a value once for
/// all rules' literals and runs only the regexes whose literals occur.
///
/// Written here because regex-syntax only extracts prefixes and suffixes:
/// many CRS patterns begin with a class or a repetition but hold a keyword
/// further in (`[\s\x0b]*\(` ... `child_process`), which this finds.
pub fn required_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let parse = |unicode: bool| {
        regex_syntax::ParserBuilder::new()
            .unicode(unicode)
            .utf8(false)
            .dot_matches_new_line(true)
            .build()
            .parse(pattern)
            .ok()
    };
    let hir = parse(false).or_else(|| parse(true))?;
    literal_info(&hir).required().map(sorted)
}

/// Most strings a literal set may hold before it is given up.
const LITERAL_SET_LIMIT: usize = 256;
/// Most bytes a class may match to be expanded into single-byte literals.
const CLASS_LIMIT: usize = 6;

/// What is known of the strings a regex part matches.
struct LiteralInfo {
    /// Every string it can match (a superset: look-arounds count as empty),
    /// when that set is small.
    exact: Option<Vec<Vec<u8>>>,
    /// A set one of which occurs in every match (no empty string).
    factor: Option<Vec<Vec<u8>>>,
}

impl LiteralInfo {
    fn unknown() -> Self {
        LiteralInfo {
            exact: None,
            factor: None,
        }
    }

    fn exact(set: Vec<Vec<u8>>) -> Self {
        let factor = usable(&set).then(|| set.clone());
        LiteralInfo {
            exact: Some(set),
            factor,
        }
    }

    /// `exact` (when known) and the better of its own literals and `factor`.
    fn of(exact: Option<Vec<Vec<u8>>>, factor: Option<Vec<Vec<u8>>>) -> Self {
        match exact {
            Some(set) => {
                let mut info = LiteralInfo::exact(set);
                info.factor = better(info.factor, factor);
                info
            }
            None => LiteralInfo {
                exact: None,
                factor,
            },
        }
    }

    /// The best set one of which every match holds.
    fn required(self) -> Option<Vec<Vec<u8>>> {
        let from_exact = self.exact.filter(|s| usable(s));
        better(from_exact, self.factor)
    }
}

fn usable(set: &[Vec<u8>]) -> bool {
    !set.is_empty() && set.len() <= LITERAL_SET_LIMIT && set.iter().all(|s| !s.is_empty())
}

/// Of two literal sets, the one that rules out more values: longer
/// shortest literal first (capped, past a few bytes it matters little),
/// then fewer literals.
fn better(a: Option<Vec<Vec<u8>>>, b: Option<Vec<Vec<u8>>>) -> Option<Vec<Vec<u8>>> {
    let score = |s: &Vec<Vec<u8>>| {
        let shortest = s.iter().map(Vec::len).min().unwrap_or(0).min(4);
        (shortest, std::cmp::Reverse(s.len()))
    };
    match (a, b) {
        (Some(a), Some(b)) => Some(if score(&b) > score(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn sorted(mut set: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    set.sort();
    set.dedup();
    set
}

fn cross(left: &[Vec<u8>], right: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if left.len() * right.len() > LITERAL_SET_LIMIT {
        return None;
    }
    let mut out = Vec::with_capacity(left.len() * right.len());
    for l in left {
        for r in right {
            let mut s = l.clone();
            s.extend_from_slice(r);
            out.push(s);
        }
    }
    Some(sorted(out))
}

fn literal_info(hir: &regex_syntax::hir::Hir) -> LiteralInfo {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => LiteralInfo::exact(vec![Vec::new()]),
        HirKind::Literal(lit) => LiteralInfo::exact(vec![lit.0.to_ascii_lowercase()]),
        HirKind::Class(class) => {
            let mut set: Vec<Vec<u8>> = Vec::new();
            match class {
                Class::Bytes(bytes) => {
                    for range in bytes.ranges() {
                        if set.len() + usize::from(range.end() - range.start()) >= CLASS_LIMIT * 2 {
                            return LiteralInfo::unknown();
                        }
                        for b in range.start()..=range.end() {
                            set.push(vec![b.to_ascii_lowercase()]);
                        }
                    }
                }
                Class::Unicode(chars) => {
                    for range in chars.ranges() {
                        let width = range.end() as u32 - range.start() as u32;
                        if set.len() + width as usize >= CLASS_LIMIT * 2 {
                            return LiteralInfo::unknown();
                        }
                        for c in range.start()..=range.end() {
                            let mut buf = [0u8; 4];
                            set.push(c.encode_utf8(&mut buf).as_bytes().to_ascii_lowercase());
                        }
                    }
                }
            }
            let set = sorted(set);
            if set.len() > CLASS_LIMIT {
                return LiteralInfo::unknown();
            }
            LiteralInfo::exact(set)
        }
        HirKind::Capture(capture) => literal_info(&capture.sub),
        HirKind::Repetition(rep) => {
            let sub = literal_info(&rep.sub);
            if rep.min == 0 {
                let exact = match (rep.max, sub.exact) {
                    (Some(1), Some(mut set)) => {
                        set.push(Vec::new());
                        Some(sorted(set))
                    }
                    _ => None,
                };
                return LiteralInfo {
                    exact,
                    factor: None,
                };
            }
            let exact = match (rep.max, &sub.exact) {
                (Some(max), Some(set)) if max == rep.min && max <= 3 => {
                    let mut acc = vec![Vec::new()];
                    for _ in 0..max {
                        match cross(&acc, set) {
                            Some(next) => acc = next,
                            None => return LiteralInfo::unknown().with_factor(sub.required()),
                        }
                    }
                    Some(acc)
                }
                _ => None,
            };
            // `x{2,}` holds `xx`: a longer literal than `x` alone.
            let repeated = match &sub.exact {
                Some(set) if rep.min <= 4 => {
                    let mut acc = Some(vec![Vec::new()]);
                    for _ in 0..rep.min {
                        acc = acc.and_then(|a| cross(&a, set));
                    }
                    acc.filter(|s| usable(s))
                }
                _ => None,
            };
            let factor = better(repeated, sub.required());
            LiteralInfo::of(exact, factor)
        }
        HirKind::Concat(parts) => {
            let mut running: Option<Vec<Vec<u8>>> = Some(vec![Vec::new()]);
            let mut all_exact = true;
            let mut best: Option<Vec<Vec<u8>>> = None;
            for part in parts {
                let info = literal_info(part);
                match (info.exact, running.take()) {
                    (Some(exact), Some(run)) => match cross(&run, &exact) {
                        Some(next) => running = Some(next),
                        None => {
                            // Too many combinations: keep what was built, start over.
                            all_exact = false;
                            best = better(best, Some(run).filter(|s| usable(s)));
                            best = better(best, info.factor);
                            running = Some(exact);
                        }
                    },
                    (exact, run) => {
                        all_exact = false;
                        best = better(best, run.filter(|s| usable(s)));
                        best = better(best, info.factor);
                        running = exact.or_else(|| Some(vec![Vec::new()]));
                    }
                }
            }
            if !all_exact {
                best = better(best, running.take().filter(|s| usable(s)));
            }
            let exact = running.filter(|_| all_exact);
            LiteralInfo::of(exact, best)
        }
        HirKind::Alternation(branches) => {
            let infos: Vec<LiteralInfo> = branches.iter().map(literal_info).collect();
            let exact = infos
                .iter()
                .try_fold(Vec::new(), |mut acc: Vec<Vec<u8>>, i| {
                    acc.extend(i.exact.as_ref()?.iter().cloned());
                    (acc.len() <= LITERAL_SET_LIMIT).then_some(acc)
                })
                .map(sorted);
            let factor = infos
                .into_iter()
                .try_fold(Vec::new(), |mut acc: Vec<Vec<u8>>, i| {
                    acc.extend(i.required()?);
                    (acc.len() <= LITERAL_SET_LIMIT).then_some(acc)
                })
                .map(sorted);
            LiteralInfo::of(exact, factor)
        }
    }
}

impl LiteralInfo {
    fn with_factor(mut self, factor: Option<Vec<Vec<u8>>>) -> Self {
        self.factor = factor;
        self
    }
}

/// `@pm`: phrase matching, case-insensitive, leftmost-first.
pub fn phrase_match<I: IntoIterator<Item = String>>(words: I) -> Result<Operator, String> {
    let words: Vec<String> = words.into_iter().filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        return Err("empty phrase list".into());
    }
    let automaton = AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostFirst)
        .build(&words)
        .map_err(|e| e.to_string())?;
    let lowered = words
        .iter()
        .map(|w| w.as_bytes().to_ascii_lowercase())
        .collect();
    Ok(Operator::Pm(automaton, lowered))
}

/// Reads a `.data` file: one phrase per line, `#` comments and blanks skipped.
pub fn phrase_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// Parses `@validateByteRange 1-255` / `9,10,13,32-126`.
pub fn byte_ranges(param: &str) -> Result<Box<[bool; 256]>, String> {
    let mut allowed = Box::new([false; 256]);
    for part in param.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| {
            s.trim()
                .parse::<u8>()
                .map_err(|_| format!("byte range `{part}` is not within 0-255"))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b {
            return Err(format!("byte range `{part}` is reversed"));
        }
        for byte in a..=b {
            allowed[byte as usize] = true;
        }
    }
    Ok(allowed)
}

pub fn ip_list(param: &str) -> Result<Vec<IpNet>, String> {
    param
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{p}` is not an IP address or network"))
        })
        .collect()
}

/// ModSecurity reads numbers like C's `atoi`: leading digits, else 0.
pub fn atoi(value: &[u8]) -> i64 {
    // On bytes, reading only the leading number: CRS compares TX values
    // hundreds of times per request, some of them long lists.
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let text = &value[start..];
    let (sign, digits) = match text.first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => (1, text),
    };
    let mut n: i64 = 0;
    for &b in digits.iter().take_while(|b| b.is_ascii_digit()) {
        match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(b - b'0')))
        {
            Some(next) => n = next,
            None => return 0,
        }
    }
    sign * n
}

impl Operator {
    /// Runs the operator; `param` is the expanded parameter for operators that
    /// take text. Returns what matched.
    pub fn matches(&self, value: &[u8], param: &[u8], capture: bool) -> Option<Hit> {
        let hit = |fragment: &[u8]| {
            Some(Hit {
                fragment: fragment.to_vec(),
                groups: Vec::new(),
            })
        };
        match self {
            Operator::Rx(re) => {
                // Most values do not match: a yes/no scan is much cheaper than
                // finding where, so where is asked only on a match.
                if !re.is_match(value) {
                    return None;
                }
                if !capture {
                    return re.find(value).map(|m| Hit {
                        fragment: m.as_bytes().to_vec(),
                        groups: Vec::new(),
                    });
                }
                let caps = re.captures(value)?;
                Some(Hit {
                    fragment: caps
                        .get(0)
                        .map(|m| m.as_bytes().to_vec())
                        .unwrap_or_default(),
                    groups: (1..caps.len().min(10))
                        .map(|i| {
                            caps.get(i)
                                .map(|m| m.as_bytes().to_vec())
                                .unwrap_or_default()
                        })
                        .collect(),
                })
            }
            Operator::Pm(ac, _) => ac.find(value).and_then(|m| hit(&value[m.start()..m.end()])),
            Operator::Streq(_) => (value == param).then(|| hit(value)).flatten(),
            Operator::Eq(_) => (atoi(value) == atoi(param)).then(|| hit(value)).flatten(),
            Operator::Ge(_) => (atoi(value) >= atoi(param)).then(|| hit(value)).flatten(),
            Operator::Gt(_) => (atoi(value) > atoi(param)).then(|| hit(value)).flatten(),
            Operator::Le(_) => (atoi(value) <= atoi(param)).then(|| hit(value)).flatten(),
            Operator::Lt(_) => (atoi(value) < atoi(param)).then(|| hit(value)).flatten(),
            Operator::Within(_) => contains(param, value).then(|| hit(value)).flatten(),
            Operator::Contains(_) => contains(value, param).then(|| hit(param)).flatten(),
            Operator::ContainsWord(_) => contains_word(value, param).then(|| hit(param)).flatten(),
            Operator::BeginsWith(_) => value.starts_with(param).then(|| hit(param)).flatten(),
            Operator::EndsWith(_) => value.ends_with(param).then(|| hit(param)).flatten(),
            Operator::DetectSqli => detect_sqli(value).map(|fingerprint| Hit {
                fragment: fingerprint,
                groups: Vec::new(),
            }),
            Operator::DetectXss => detect_xss(value).then(|| hit(value)).flatten(),
            Operator::IpMatch(nets) => {
                let ip: IpAddr = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
                nets.iter()
                    .any(|n| n.contains(&ip))
                    .then(|| hit(value))
                    .flatten()
            }
            Operator::ValidateByteRange(allowed) => value
                .iter()
                .find(|b| !allowed[**b as usize])
                .and_then(|b| hit(&[*b])),
            Operator::ValidateUrlEncoding => bad_url_encoding(value).then(|| hit(value)).flatten(),
            Operator::ValidateUtf8Encoding => std::str::from_utf8(value)
                .is_err()
                .then(|| hit(value))
                .flatten(),
            Operator::Unconditional => hit(value),
            Operator::NoMatch => None,
        }
    }

    /// The parameter macro for operators that compare with text.
    pub fn param(&self) -> Option<&Macro> {
        match self {
            Operator::Streq(m)
            | Operator::Eq(m)
            | Operator::Ge(m)
            | Operator::Gt(m)
            | Operator::Le(m)
            | Operator::Lt(m)
            | Operator::Within(m)
            | Operator::Contains(m)
            | Operator::ContainsWord(m)
            | Operator::BeginsWith(m)
            | Operator::EndsWith(m) => Some(m),
            _ => None,
        }
    }
}

// memchr's substring search: comparing every window (CRS 920450 asks
// `@within` of a 200-byte list for every header) showed in profiles.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

fn contains_word(haystack: &[u8], word: &[u8]) -> bool {
    if word.is_empty() {
        return true;
    }
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    memchr::memmem::find_iter(haystack, word).any(|i| {
        (i == 0 || !is_word(haystack[i - 1]))
            && haystack.get(i + word.len()).is_none_or(|b| !is_word(*b))
    })
}

/// `%` not followed by two hex digits.
fn bad_url_encoding(value: &[u8]) -> bool {
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            let ok = value.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && value.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

/// libinjection's SQL detector; a panic inside it counts as a detection
/// (fail closed), never as a crash of the request.
/// libinjection's recent answers, per thread. Shop traffic sends the same
/// headers and cookies on request after request (User-Agent, Referer,
/// session cookies), and the SQLi detector is the costliest operator the CRS
/// runs on them. The answer depends on the bytes alone, so it is reused
/// as is; the memo is bounded and starts over when full.
struct Memo<T> {
    answers: HashMap<Box<[u8]>, T, super::engine::FastHash>,
}

impl<T: Clone> Memo<T> {
    const ENTRIES: usize = 4096;
    const LONGEST: usize = 1024;

    fn new() -> Self {
        Memo {
            answers: HashMap::default(),
        }
    }

    fn get_or(&mut self, value: &[u8], compute: impl FnOnce(&[u8]) -> T) -> T {
        if value.len() > Self::LONGEST {
            return compute(value);
        }
        if let Some(known) = self.answers.get(value) {
            return known.clone();
        }
        let answer = compute(value);
        if self.answers.len() >= Self::ENTRIES {
            self.answers.clear();
        }
        self.answers.insert(value.into(), answer.clone());
        answer
    }
}

thread_local! {
    static SQLI_MEMO: RefCell<Memo<Option<Vec<u8>>>> = RefCell::new(Memo::new());
    static XSS_MEMO: RefCell<Memo<bool>> = RefCell::new(Memo::new());
}

fn detect_sqli(value: &[u8]) -> Option<Vec<u8>> {
    SQLI_MEMO.with(|memo| memo.borrow_mut().get_or(value, run_sqli))
}

fn detect_xss(value: &[u8]) -> bool {
    XSS_MEMO.with(|memo| memo.borrow_mut().get_or(value, run_xss))
}

fn run_sqli(value: &[u8]) -> Option<Vec<u8>> {
    match catch_unwind(AssertUnwindSafe(|| libinjectionrs::detect_sqli(value))) {
        Ok(result) if result.is_injection() => Some(
            result
                .fingerprint
                .map(|f| f.to_string().into_bytes())
                .unwrap_or_default(),
        ),
        Ok(_) => None,
        Err(_) => Some(b"detector-fault".to_vec()),
    }
}

fn run_xss(value: &[u8]) -> bool {
    catch_unwind(AssertUnwindSafe(|| {
        libinjectionrs::detect_xss(value).is_injection()
    }))
    .unwrap_or(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(op: &Operator, value: &str, param: &str) -> bool {
        op.matches(value.as_bytes(), param.as_bytes(), false)
            .is_some()
    }

    #[test]
    fn comparison_operators() {
        let m = Macro::default;
        let table: &[(Operator, &str, &str, bool)] = &[
            (Operator::Eq(m()), "0", "0", true),
            (Operator::Eq(m()), "abc", "0", true),
            (Operator::Eq(m()), "12x", "12", true),
            (Operator::Gt(m()), "401", "400", true),
            (Operator::Gt(m()), "400", "400", false),
            (Operator::Ge(m()), "400", "400", true),
            (Operator::Lt(m()), "-3", "2", true),
            (Operator::Le(m()), "3", "2", false),
            (Operator::Streq(m()), "POST", "POST", true),
            (Operator::Streq(m()), "post", "POST", false),
            (Operator::Within(m()), "GET", "GET HEAD POST", true),
            (Operator::Within(m()), "PUT", "GET HEAD POST", false),
            (Operator::Contains(m()), "a../b", "..", true),
            (Operator::ContainsWord(m()), "select x", "select", true),
            (Operator::ContainsWord(m()), "selection", "select", false),
            // The first occurrence is inside a word, the second is one.
            (
                Operator::ContainsWord(m()),
                "selection; select 1",
                "select",
                true,
            ),
            (Operator::Contains(m()), "abc", "", true),
            (
                Operator::Within(m()),
                "/proxy/",
                "/content-encoding/ /proxy/ /if/",
                true,
            ),
            (
                Operator::Within(m()),
                "/accept/",
                "/content-encoding/ /proxy/ /if/",
                false,
            ),
            (Operator::BeginsWith(m()), "/wp-admin/x", "/wp-admin", true),
            (Operator::EndsWith(m()), "/wp-login.php", ".php", true),
            (Operator::EndsWith(m()), "/wp-login.phps", ".php", false),
            (Operator::Unconditional, "", "", true),
            (Operator::NoMatch, "x", "", false),
        ];
        for (op, value, param, expected) in table {
            assert_eq!(
                run(op, value, param),
                *expected,
                "{op:?} {value:?} {param:?}"
            );
        }
    }

    #[test]
    fn regex_and_phrases() {
        let re = Operator::Rx(regex("(?i)union\\s+select").unwrap());
        assert!(run(&re, "1 UNION  SELECT 2", ""));
        assert!(!run(&re, "unions elect", ""));
        let dot = Operator::Rx(regex("a.b").unwrap());
        assert!(
            run(&dot, "a\nb", ""),
            "dot matches newline like PCRE_DOTALL"
        );
        let raw = Operator::Rx(regex("\\xff").unwrap());
        assert!(
            Operator::matches(&raw, b"\xff", b"", false).is_some(),
            "bytes are bytes"
        );
        let cap = Operator::Rx(regex("(a+)(b+)").unwrap());
        let hit = cap.matches(b"xaabbb", b"", true).unwrap();
        assert_eq!(hit.fragment, b"aabbb");
        assert_eq!(hit.groups, vec![b"aa".to_vec(), b"bbb".to_vec()]);
        assert!(
            regex("(?<=a)b").is_err(),
            "look-behind is reported, not ignored"
        );
        let pm = phrase_match(["nikto".to_string(), "sqlmap".to_string()]).unwrap();
        let hit = pm.matches(b"Mozilla SQLMap/1.0", b"", false).unwrap();
        assert_eq!(hit.fragment, b"SQLMap");
        assert!(!run(&pm, "Mozilla/5.0", ""));
    }

    #[test]
    fn validators() {
        let range = Operator::ValidateByteRange(byte_ranges("32-126").unwrap());
        assert!(!run(&range, "plain text", ""));
        assert!(run(&range, "tab\there", ""));
        assert!(byte_ranges("1-300").is_err());
        let url = Operator::ValidateUrlEncoding;
        assert!(!run(&url, "a%20b", ""));
        assert!(run(&url, "a%2", ""));
        assert!(run(&url, "a%zzb", ""));
        let utf8 = Operator::ValidateUtf8Encoding;
        assert!(!run(&utf8, "café", ""));
        assert!(utf8.matches(b"caf\xc3", b"", false).is_some());
        assert!(
            utf8.matches(b"\xc0\xaf", b"", false).is_some(),
            "overlong form"
        );
        let ip = Operator::IpMatch(ip_list("10.0.0.0/8, 192.168.1.1,::1").unwrap());
        assert!(run(&ip, "10.2.3.4", ""));
        assert!(run(&ip, "::1", ""));
        assert!(!run(&ip, "11.0.0.1", ""));
        assert!(ip_list("10.0.0.0/99").is_err());
    }

    #[test]
    fn injection_detectors() {
        let sqli = Operator::DetectSqli;
        for attack in [
            "1' OR '1'='1",
            "1 UNION SELECT password FROM users--",
            "admin'--",
            "1;DROP TABLE users",
        ] {
            assert!(run(&sqli, attack, ""), "{attack}");
        }
        for benign in [
            "O'Brien",
            "Rue de l'Église 12",
            "P@ssw0rd!#%&*",
            "blue t-shirt size M",
            "john.doe@example.com",
            "It's a 2-for-1 deal; don't miss it",
        ] {
            assert!(!run(&sqli, benign, ""), "{benign}");
        }
        let xss = Operator::DetectXss;
        for attack in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "\"><svg/onload=alert(1)>",
            "<a href=\"javascript:alert(1)\">x</a>",
        ] {
            assert!(run(&xss, attack, ""), "{attack}");
        }
        for benign in [
            "Tom & Jerry <3",
            "5 < 6 and 7 > 3",
            "l'été",
            "Size: 42 > 40",
        ] {
            assert!(!run(&xss, benign, ""), "{benign}");
        }
    }

    #[test]
    fn required_literals_occur_in_every_match() {
        let lits = |p: &str| {
            required_literals(p).map(|l| {
                l.into_iter()
                    .map(|s| String::from_utf8(s).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(lits("(?i)union\\s+select"), Some(vec!["union".into()]));
        let both = lits("(?:foo|bar)baz").unwrap();
        assert_eq!(both, vec!["barbaz".to_string(), "foobaz".into()]);
        // A keyword after a leading class or repetition is still found.
        assert_eq!(
            lits("[\\s\\x0b]*\\([^a-z]child_process"),
            Some(vec!["child_process".into()])
        );
        assert_eq!(
            lits("(?i)\\b(?:ev|ex)al[\\s\\x0b]*\\("),
            Some(vec!["eval".into(), "exal".into()])
        );
        assert_eq!(
            lits("re(?:ad|quire)\\b"),
            Some(vec!["read".into(), "require".into()])
        );
        assert_eq!(lits("[^a]"), None, "a match may be almost any byte");
        assert_eq!(lits("a?"), None, "a match may be empty");
        assert_eq!(lits("(?:abc|.)"), None, "one branch has no literal");
        assert_eq!(lits("x(?:abc)?y"), Some(vec!["xabcy".into(), "xy".into()]));
        // Every literal set found must occur in real matches.
        for (pattern, samples) in [
            ("(?i)<script[^>]*>", &["<SCRIPT src=x>", "<script>"][..]),
            ("(?:\\.\\./|%2e%2e/)+etc", &["../../etc", "%2e%2e/etc"][..]),
            ("o(?:n|N){1,2}load", &["onload", "onNload"][..]),
        ] {
            let found = required_literals(pattern).unwrap();
            for sample in samples {
                let lower = sample.to_ascii_lowercase();
                assert!(
                    found
                        .iter()
                        .any(|l| lower.as_bytes().windows(l.len()).any(|w| w == &l[..])),
                    "{pattern}: {sample} holds none of {found:?}"
                );
            }
        }
    }

    #[test]
    fn atoi_like_c() {
        assert_eq!(atoi(b"42"), 42);
        assert_eq!(atoi(b" -7x"), -7);
        assert_eq!(atoi(b"x"), 0);
        assert_eq!(atoi(b""), 0);
        assert_eq!(atoi(b"+12 34"), 12);
        assert_eq!(atoi(b"\t 5\xff"), 5);
        assert_eq!(atoi(b"99999999999999999999"), 0, "overflow reads as 0");
    }
}
