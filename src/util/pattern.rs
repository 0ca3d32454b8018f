//! The patterns rules are written with: paths (a prefix or a `~regex`),
//! cookie and parameter names (with `*`), and the actions the abuse
//! controls protect (paths, forms and methods, matched on the request's
//! reading in `util::target`).

use super::target::Target;
use regex::Regex;

/// A path rule: a prefix matched on segment boundaries, or a regex (`~...`)
/// matched against path and query.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Regex(Regex),
}

impl PathMatch {
    /// `~regex` or a prefix.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.strip_prefix('~') {
            Some(re) => Regex::new(re)
                .map(PathMatch::Regex)
                .map_err(|e| format!("invalid regex `{re}`: {e}")),
            None if text.starts_with('/') => Ok(PathMatch::Prefix(text.to_string())),
            None => Err(format!(
                "path `{text}` must start with `/` (a prefix) or `~` (a regex)"
            )),
        }
    }

    /// Matches the path as sent (the cache's TTL rules: the key is the path as sent).
    pub fn matches(&self, path: &str, path_and_query: &str) -> bool {
        match self {
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (p.ends_with('/')
                        || path.len() == p.len()
                        || path[p.len()..].starts_with(['/', '?', '.']))
            }
            PathMatch::Regex(re) => re.is_match(path_and_query),
        }
    }
}

impl PathMatch {
    /// Matches any path the request reaches, as the shop reads it: a prefix
    /// ignoring ASCII case, a regex on each path followed by `?` and the
    /// query as PHP and WordPress read it.
    pub fn matches_target(&self, t: &Target) -> bool {
        match self {
            PathMatch::Prefix(p) => t.paths().any(|path| prefix_ci(path, p)),
            PathMatch::Regex(re) => t.paths_with_query().any(|pq| re.is_match(&pq)),
        }
    }
}

/// `prefix` on a segment boundary, ASCII case ignored.
fn prefix_ci(path: &str, prefix: &str) -> bool {
    let (p, x) = (path.as_bytes(), prefix.as_bytes());
    p.len() >= x.len()
        && p[..x.len()].eq_ignore_ascii_case(x)
        && (x.ends_with(b"/") || p.len() == x.len() || matches!(p[x.len()], b'/' | b'?' | b'.'))
}

/// Which requests an action rule covers: any path the request reaches, or
/// any form (every field of the set present, in the query or the body, as
/// PHP's `$_REQUEST`), and the methods it runs as. With neither paths nor
/// forms, every request.
#[derive(Debug, Clone, Default)]
pub struct ActionMatch {
    pub paths: Vec<PathMatch>,
    /// Each form: field names (`name`) or `name=value`, all present.
    pub forms: Vec<Vec<String>>,
    /// Empty: every method.
    pub methods: Vec<http::Method>,
}

impl ActionMatch {
    /// Whether the request is this action, on what is known of it so far
    /// (form fields count once the body is read).
    pub fn matches(&self, t: &Target) -> bool {
        if !t.runs_as(&self.methods) {
            return false;
        }
        if self.paths.is_empty() && self.forms.is_empty() {
            return true;
        }
        self.paths.iter().any(|p| p.matches_target(t))
            || self
                .forms
                .iter()
                .any(|form| !form.is_empty() && form.iter().all(|f| t.has_field(f)))
    }

    /// Neither paths nor forms: every request (for a limit), none (for the
    /// challenge's risky actions).
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.forms.is_empty()
    }

    /// Whether the body may still decide (the rule has forms).
    pub fn needs_body(&self) -> bool {
        !self.forms.is_empty()
    }
}

/// A cookie or parameter name pattern: exact, or with `*` wildcards.
#[derive(Debug, Clone)]
pub struct NamePattern(Regex);

impl NamePattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.contains(['=', ';', ' ']) {
            return Err(format!(
                "`{text}` is not a cookie or parameter name (use `*` as a wildcard)"
            ));
        }
        let escaped: Vec<String> = text.split('*').map(regex::escape).collect();
        Regex::new(&format!("^{}$", escaped.join(".*")))
            .map(NamePattern)
            .map_err(|e| e.to_string())
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.is_match(name)
    }
}
