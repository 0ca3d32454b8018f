//! Policy diagnostics: every problem found in a policy file, pointing at the
//! exact spot (`file:line:col`) with a hint where one helps.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line (1 when the problem concerns the whole file).
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &Path, at: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: at.line,
            col: at.col,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// A position in a policy file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// Problems that concern a whole file point at its start.
impl Default for Pos {
    fn default() -> Self {
        Pos { line: 1, col: 1 }
    }
}

/// Every problem of one `check` or reload, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn sort(&mut self) {
        self.0
            .sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The candidate closest to `word` (edit distance), if it is close enough to be
/// a plausible typo.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let (best, distance) = candidates
        .iter()
        .map(|c| (*c, edit_distance(word, c)))
        .min_by_key(|(_, d)| *d)?;
    (distance <= (word.len().max(3) / 3).max(2)).then_some(best)
}

/// A hint for an unknown key: the nearest valid key, then all valid keys.
pub fn unknown_key_hint(word: &str, candidates: &[&str]) -> String {
    let all = candidates
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match nearest(word, candidates) {
        Some(best) => format!("did you mean `{best}`? valid keys: {all}"),
        None => format!("valid keys: {all}"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_key() {
        let keys = ["listen", "admin_listen", "threads"];
        assert_eq!(nearest("lisen", &keys), Some("listen"));
        assert_eq!(nearest("admin_listn", &keys), Some("admin_listen"));
        assert_eq!(nearest("completely_else", &keys), None);
    }

    #[test]
    fn display_has_file_line_col_and_hint() {
        let d = Diagnostic::new(Path::new("p.yaml"), Pos { line: 3, col: 5 }, "bad")
            .with_hint("fix it");
        assert_eq!(d.to_string(), "p.yaml:3:5: bad\n  hint: fix it");
    }
}
