//! SecLang (ModSecurity configuration language) reader: turns a `.conf` file
//! into directives with their file and line, and splits the three parts of a
//! `SecRule` (variables, operator, actions) into their pieces. No meaning is
//! given here; `compile` decides what each piece does.

use std::path::Path;

/// One directive as written, with the line it starts on.
#[derive(Debug, Clone)]
pub struct Directive {
    pub line: usize,
    pub name: String,
    pub args: Vec<String>,
}

/// A syntax problem in a SecLang file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Reads the directives of a SecLang text. Comment lines (`#` first) and blank
/// lines are skipped; a trailing `\` continues a directive on the next line.
pub fn directives(text: &str) -> Result<Vec<Directive>, SyntaxError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim_end_matches('\r');
        if current.is_empty() {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            start = line_no;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            continue;
        }
        current.push_str(line);
        out.push(split_directive(&current, start)?);
        current.clear();
    }
    if !current.trim().is_empty() {
        out.push(split_directive(&current, start)?);
    }
    Ok(out)
}

/// Splits `Name arg "quoted arg" ...` (Apache-style words: inside double quotes
/// only `\"` is an escape; other backslashes belong to the value).
fn split_directive(text: &str, line: usize) -> Result<Directive, SyntaxError> {
    let mut words = Vec::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' || c == '\'' {
            let quote = c;
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&quote) {
                    word.push(quote);
                    chars.next();
                } else if c == quote {
                    closed = true;
                    break;
                } else {
                    word.push(c);
                }
            }
            if !closed {
                return Err(SyntaxError {
                    line,
                    message: format!("unterminated {quote} quote"),
                });
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    let mut words = words.into_iter();
    let name = words.next().unwrap_or_default();
    Ok(Directive {
        line,
        name,
        args: words.collect(),
    })
}

/// One entry of a variable list: `ARGS`, `!ARGS:foo`, `&TX:bar`, `REQUEST_COOKIES:/^sbjs_/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawVariable {
    pub exclude: bool,
    pub count: bool,
    pub collection: String,
    pub selector: Option<RawSelector>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSelector {
    Name(String),
    Regex(String),
}

/// Splits a `|`-separated variable list; a `/regex/` selector may itself hold `|`.
pub fn variables(text: &str) -> Result<Vec<RawVariable>, String> {
    let mut out = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let mut exclude = false;
        let mut count = false;
        while i < bytes.len() && (bytes[i] == '!' || bytes[i] == '&') {
            if bytes[i] == '!' {
                exclude = true;
            } else {
                count = true;
            }
            i += 1;
        }
        let mut collection = String::new();
        while i < bytes.len() && bytes[i] != ':' && bytes[i] != '|' {
            collection.push(bytes[i]);
            i += 1;
        }
        let mut selector = None;
        if i < bytes.len() && bytes[i] == ':' {
            i += 1;
            let quoted = i < bytes.len() && bytes[i] == '\'';
            if quoted {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == '/' && !collection.eq_ignore_ascii_case("XML") {
                i += 1;
                let mut pattern = String::new();
                let mut closed = false;
                while i < bytes.len() {
                    let c = bytes[i];
                    if c == '\\' && i + 1 < bytes.len() && bytes[i + 1] == '/' {
                        pattern.push('/');
                        i += 2;
                        continue;
                    }
                    if c == '/' {
                        let next = bytes.get(i + 1).copied();
                        let after_quote = if quoted {
                            bytes.get(i + 2).copied()
                        } else {
                            next
                        };
                        let ends = if quoted {
                            next == Some('\'') && matches!(after_quote, None | Some('|'))
                        } else {
                            matches!(next, None | Some('|'))
                        };
                        if ends {
                            closed = true;
                            i += 1;
                            break;
                        }
                    }
                    pattern.push(c);
                    i += 1;
                }
                if !closed {
                    return Err(format!("unterminated /regex/ selector in `{text}`"));
                }
                selector = Some(RawSelector::Regex(pattern));
            } else {
                let mut name = String::new();
                while i < bytes.len() && bytes[i] != '|' && !(quoted && bytes[i] == '\'') {
                    name.push(bytes[i]);
                    i += 1;
                }
                selector = Some(RawSelector::Name(name));
            }
            if quoted && i < bytes.len() && bytes[i] == '\'' {
                i += 1;
            }
        }
        if collection.is_empty() {
            return Err(format!("empty variable name in `{text}`"));
        }
        out.push(RawVariable {
            exclude,
            count,
            collection,
            selector,
        });
        if i < bytes.len() && bytes[i] == '|' {
            i += 1;
        }
    }
    Ok(out)
}

/// An operator as written: `@rx pattern`, `!@eq 0`, or a bare pattern (`@rx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOperator {
    pub negated: bool,
    pub name: String,
    pub param: String,
}

pub fn operator(text: &str) -> RawOperator {
    let (negated, rest) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    match rest.strip_prefix('@') {
        Some(op) => {
            let (name, param) = op.split_once(' ').unwrap_or((op, ""));
            RawOperator {
                negated,
                name: name.to_string(),
                param: param.to_string(),
            }
        }
        None => RawOperator {
            negated,
            name: "rx".to_string(),
            param: rest.to_string(),
        },
    }
}

/// Splits an action list `id:1,phase:2,msg:'a, b',t:none` into (name, value).
pub fn actions(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ':' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let name = name.trim().to_string();
        if chars.peek() != Some(&':') {
            out.push((name, None));
            continue;
        }
        chars.next();
        while matches!(chars.peek(), Some(c) if *c == ' ') {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&'\'') {
                    value.push('\'');
                    chars.next();
                } else if c == '\'' {
                    closed = true;
                    break;
                } else {
                    value.push(c);
                }
            }
            if !closed {
                return Err(format!("unterminated quote in action `{name}`"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim_end().to_string();
        }
        out.push((name, Some(value)));
    }
    Ok(out)
}

/// A file's text, or a readable error.
pub fn read(path: &Path) -> Result<String, String> {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn directives_join_continuations_and_skip_comments() {
        let text = "# comment\n\nSecRule ARGS \"@rx a\\\"b\" \\\n    \"id:1,\\\n    phase:2\"\nSecMarker \"END\"\n";
        let d = directives(text).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].line, 3);
        assert_eq!(d[0].name, "SecRule");
        assert_eq!(d[0].args, vec!["ARGS", "@rx a\"b", "id:1,    phase:2"]);
        assert_eq!(d[1].args, vec!["END"]);
        assert_eq!(d[1].line, 6);
    }

    #[test]
    fn unterminated_quote_is_an_error_with_its_line() {
        let err = directives("\nSecRule ARGS \"@rx a").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn variables_keep_regex_selectors_whole() {
        let v =
            variables("REQUEST_COOKIES|!REQUEST_COOKIES:/^(?:_ga|_gid)$/|&TX:x|XML:/*|ARGS:'foo'")
                .unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(
            v[1].selector,
            Some(RawSelector::Regex("^(?:_ga|_gid)$".into()))
        );
        assert!(v[1].exclude);
        assert!(v[2].count);
        assert_eq!(v[3].selector, Some(RawSelector::Name("/*".into())));
        assert_eq!(v[4].selector, Some(RawSelector::Name("foo".into())));
        assert!(variables("ARGS:/abc").is_err());
    }

    #[test]
    fn operators_and_actions_split() {
        assert_eq!(
            operator("!@rx ^a b"),
            RawOperator {
                negated: true,
                name: "rx".into(),
                param: "^a b".into()
            }
        );
        assert_eq!(operator("^x").name, "rx");
        assert_eq!(operator("@unconditionalMatch").param, "");
        let a =
            actions("id:1,phase:2, msg:'a, b\\'c',t:none,ctl:ruleRemoveTargetById=1;ARGS:x,chain")
                .unwrap();
        assert_eq!(a[2], ("msg".into(), Some("a, b'c".into())));
        assert_eq!(a[4].1.as_deref(), Some("ruleRemoveTargetById=1;ARGS:x"));
        assert_eq!(a[5], ("chain".into(), None));
    }
}
