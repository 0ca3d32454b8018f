//! Stage one: read a policy file (and the files it includes) into `RawPolicy`.
//!
//! serde stops at the first error of a document, so each top-level block is
//! deserialized on its own: a typo in `upstream` does not hide a bad CIDR in
//! `ip_filter`. Each block is cut out of the file whole and padded with the
//! blank lines that preceded it, so reported lines and columns stay exact.

use super::diag::{unknown_key_hint, Diagnostic, Diagnostics, Pos};
use super::section::{Block, Sections};
use serde::de::IgnoredAny;
use serde_saphyr::{Location, MessageFormatter, Spanned};
use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The policy's files as read: each section's blocks, by key, in include
/// order. Each block is deserialized on its own, so a mistake in one does
/// not hide those in others.
#[derive(Default)]
pub(crate) struct RawPolicy {
    include: Vec<Spanned<String>>,
    pub(crate) blocks: BTreeMap<&'static str, Vec<Block<Box<dyn Any + Send>>>>,
    /// Blocks written in any file, even those that failed to parse, so that
    /// a broken block is not also reported as missing.
    pub(crate) seen: Vec<String>,
    /// A file could not be read or parsed at all.
    pub(crate) unreadable: bool,
}

/// How deep `include:` may nest before it is called a loop.
const MAX_INCLUDE_DEPTH: usize = 8;

/// Reads `path` and everything it includes. Problems go to `diags`; the
/// returned policy holds whatever could be read.
pub(crate) fn parse_policy(path: &Path, sections: &Sections, diags: &mut Diagnostics) -> RawPolicy {
    let mut chain = Vec::new();
    parse_with_includes(path, sections, diags, &mut chain)
}

fn parse_with_includes(
    path: &Path,
    sections: &Sections,
    diags: &mut Diagnostics,
    chain: &mut Vec<PathBuf>,
) -> RawPolicy {
    let mut policy = parse_file(path, sections, diags);
    chain.push(path.canonicalize().unwrap_or_else(|_| path.to_path_buf()));
    let base = path.parent().unwrap_or(Path::new("."));
    for inc in std::mem::take(&mut policy.include) {
        let at = pos(&inc.referenced);
        let target = base.join(&inc.value);
        let canonical = target.canonicalize().unwrap_or_else(|_| target.clone());
        if chain.contains(&canonical) || chain.len() >= MAX_INCLUDE_DEPTH {
            diags.push(
                Diagnostic::new(path, at, format!("`{}` is included in a loop", inc.value))
                    .with_hint("a file must not include itself, directly or through others"),
            );
            continue;
        }
        if !target.is_file() {
            diags.push(
                Diagnostic::new(
                    path,
                    at,
                    format!("included file `{}` not found", target.display()),
                )
                .with_hint("include paths are relative to the file that includes them"),
            );
            continue;
        }
        let included = parse_with_includes(&target, sections, diags, chain);
        merge(&mut policy, included, sections, path, at, diags);
    }
    chain.pop();
    policy
}

/// Adds an included file's blocks. Blocks of sections that add up (IP
/// lists) are kept from every file; any other block may be defined in one
/// file only.
fn merge(
    into: &mut RawPolicy,
    from: RawPolicy,
    sections: &Sections,
    file: &Path,
    at: Pos,
    diags: &mut Diagnostics,
) {
    for (key, blocks) in from.blocks {
        let adds_up = sections.find(key).is_some_and(|s| s.adds_up());
        let mine = into.blocks.entry(key).or_default();
        if !mine.is_empty() && !adds_up {
            diags.push(
                Diagnostic::new(
                    file,
                    at,
                    format!("block `{key}` is defined both here and in an included file"),
                )
                .with_hint(
                    "define each block once; only `ip_filter` lists are merged across files",
                ),
            );
            continue;
        }
        mine.extend(blocks);
    }
    into.seen.extend(from.seen);
    into.unreadable |= from.unreadable;
}

/// Parses one file, without following its includes.
fn parse_file(path: &Path, sections: &Sections, diags: &mut Diagnostics) -> RawPolicy {
    let mut policy = RawPolicy::default();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            diags.push(
                Diagnostic::new(path, Pos::default(), format!("cannot read policy: {e}"))
                    .with_hint("check the path given to --config"),
            );
            policy.unreadable = true;
            return policy;
        }
    };
    // The whole document must be valid YAML and a mapping before blocks are cut out.
    if let Err(e) = serde_saphyr::from_str::<Option<BTreeMap<String, IgnoredAny>>>(&text) {
        diags.push(to_diagnostic(path, &e).with_hint(
            "a policy is a YAML mapping of blocks such as `server:`, `upstream:`, `ip_filter:`",
        ));
        policy.unreadable = true;
        return policy;
    }
    let mut seen: Vec<String> = Vec::new();
    for block in split_blocks(&text) {
        let at = Pos {
            line: block.line,
            col: 1,
        };
        if seen.contains(&block.key) {
            diags.push(Diagnostic::new(
                path,
                at,
                format!("block `{}` appears twice", block.key),
            ));
            continue;
        }
        seen.push(block.key.clone());
        policy.seen.push(block.key.clone());
        let src = block.padded_source;
        if block.key == "include" {
            match serde_saphyr::from_str::<BTreeMap<String, Option<Vec<Spanned<String>>>>>(&src) {
                Ok(map) => policy.include = map.into_values().next().flatten().unwrap_or_default(),
                Err(e) => diags.push(to_diagnostic(path, &e)),
            }
            continue;
        }
        let Some(section) = sections.find(&block.key) else {
            diags.push(
                Diagnostic::new(path, at, format!("unknown block `{}`", block.key))
                    .with_hint(unknown_key_hint(&block.key, &sections.keys())),
            );
            continue;
        };
        match section.parse(&src) {
            Ok(Some(value)) => policy.blocks.entry(section.key()).or_default().push(Block {
                file: path.to_path_buf(),
                value,
            }),
            Ok(None) => {}
            Err(e) => diags.push(to_diagnostic(path, &e)),
        }
    }
    policy
}

struct TextBlock {
    key: String,
    line: u32,
    padded_source: String,
}

/// Cuts a block-style YAML mapping into its top-level entries. Each entry keeps
/// its original lines, preceded by as many blank lines as came before it.
fn split_blocks(text: &str) -> Vec<TextBlock> {
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<(usize, String)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| top_level_key(line).map(|k| (i, k)))
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, (start, key))| {
            let end = starts.get(n + 1).map_or(lines.len(), |(next, _)| *next);
            let mut padded_source = "\n".repeat(*start);
            for line in &lines[*start..end] {
                padded_source.push_str(line);
                padded_source.push('\n');
            }
            TextBlock {
                key: key.clone(),
                line: u32::try_from(*start + 1).unwrap_or(u32::MAX),
                padded_source,
            }
        })
        .collect()
}

/// `Some(key)` when the line starts a top-level entry (`key:` at column 1).
fn top_level_key(line: &str) -> Option<String> {
    let first = line.chars().next()?;
    if !(first.is_ascii_alphanumeric() || first == '_' || first == '"' || first == '\'') {
        return None;
    }
    let colon = line.find(':')?;
    let key = line[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
    let rest = &line[colon + 1..];
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then(|| key.to_string())
}

/// Turns a YAML/serde error into a diagnostic, with a hint for unknown keys
/// and values.
fn to_diagnostic(file: &Path, e: &serde_saphyr::Error) -> Diagnostic {
    let at = e.location().map(|l| pos(&l)).unwrap_or_default();
    let e = e.without_snippet();
    match e {
        serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } => Diagnostic::new(file, at, format!("unknown key `{field}`"))
            .with_hint(unknown_key_hint(field, expected)),
        serde_saphyr::Error::SerdeUnknownVariant {
            variant, expected, ..
        } => Diagnostic::new(file, at, format!("unknown value `{variant}`"))
            .with_hint(unknown_key_hint(variant, expected).replace("valid keys", "valid values")),
        other => Diagnostic::new(
            file,
            at,
            serde_saphyr::DefaultMessageFormatter
                .format_message(other)
                .into_owned(),
        ),
    }
}

/// The 1-based position of a YAML location.
pub(crate) fn pos(l: &Location) -> Pos {
    Pos {
        line: u32::try_from(l.line()).unwrap_or(u32::MAX),
        col: u32::try_from(l.column()).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_their_line_numbers() {
        let text = "# comment\nserver:\n  listen: [a]\n\nupstream:\n  servers: [b]\n";
        let blocks = split_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].key, "server");
        assert_eq!(blocks[0].line, 2);
        assert_eq!(blocks[1].key, "upstream");
        assert_eq!(blocks[1].line, 5);
        assert!(blocks[1].padded_source.starts_with("\n\n\n\nupstream:"));
    }
}
