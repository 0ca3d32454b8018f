//! SecLang transformations (the `t:` actions of ModSecurity rules).
//!
//! The WAF engine runs each rule target through its chain of transformations
//! before the operator sees it. The CRS regression tests expect the output
//! ModSecurity v3 produces, so the functions here follow its byte-level
//! behaviour, quirks included (low-byte truncation of wide code points,
//! optional `;` after HTML entities, `--`/`#` cutting the rest of the value in
//! `removeComments`...); the few places that differ say so in their doc.
//! Where ModSecurity reads past the end of its buffer, the reads here return a
//! NUL byte instead, so malformed input never panics.

use std::borrow::Cow;

/// One SecLang transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    /// `%XX` and `+` decoding.
    UrlDecode,
    /// `urlDecode` plus IIS `%uXXXX`.
    UrlDecodeUni,
    /// `&#NN;`, `&#xHH;` and a few named entities.
    HtmlEntityDecode,
    /// JavaScript escapes (`\uHHHH`, `\xHH`, octal, `\n`...).
    JsDecode,
    /// CSS 2 escapes (`\` + 1 to 6 hex digits).
    CssDecode,
    /// ASCII lowercase.
    Lowercase,
    /// ASCII uppercase.
    Uppercase,
    /// Whitespace runs become one space.
    CompressWhitespace,
    /// Whitespace removed.
    RemoveWhitespace,
    /// NUL bytes removed.
    RemoveNulls,
    /// NUL bytes become spaces.
    ReplaceNulls,
    /// C, HTML and SQL comments removed.
    RemoveComments,
    /// Comment markers removed, their content kept.
    RemoveCommentsChar,
    /// C comments become one space.
    ReplaceComments,
    /// Shell command normalisation.
    CmdLine,
    /// `.`/`..` segments resolved, repeated slashes collapsed.
    NormalizePath,
    /// `normalisePath` after turning `\` into `/`.
    NormalizePathWin,
    /// Strict base64 decoding (stops at the first invalid byte).
    Base64Decode,
    /// Forgiving base64 decoding (skips invalid bytes).
    Base64DecodeExt,
    /// Base64 encoding.
    Base64Encode,
    /// Hex pairs to bytes.
    HexDecode,
    /// Bytes to lowercase hex.
    HexEncode,
    /// Multibyte UTF-8 characters become `%uXXXX`.
    Utf8ToUnicode,
    /// Whitespace trimmed on both sides.
    Trim,
    /// Whitespace trimmed on the left.
    TrimLeft,
    /// Whitespace trimmed on the right.
    TrimRight,
    /// Decimal length of the value.
    Length,
    /// Raw SHA-1 digest (20 bytes).
    Sha1,
    /// Raw MD5 digest (16 bytes).
    Md5,
    /// ANSI C escapes.
    EscapeSeqDecode,
    /// SQL `0xHEX` literals decoded.
    SqlHexDecode,
}

impl Transform {
    /// Parses a name as written after `t:` (case-insensitive: `urlDecodeUni`,
    /// `base64decode`...). `none` is handled by the caller, so it returns
    /// `None` like any unknown name.
    pub fn parse(name: &str) -> Option<Transform> {
        use Transform::*;
        let t = match name.to_ascii_lowercase().as_str() {
            "urldecode" => UrlDecode,
            "urldecodeuni" => UrlDecodeUni,
            "htmlentitydecode" => HtmlEntityDecode,
            "jsdecode" => JsDecode,
            "cssdecode" => CssDecode,
            "lowercase" => Lowercase,
            "uppercase" => Uppercase,
            "compresswhitespace" => CompressWhitespace,
            "removewhitespace" => RemoveWhitespace,
            "removenulls" => RemoveNulls,
            "replacenulls" => ReplaceNulls,
            "removecomments" => RemoveComments,
            "removecommentschar" => RemoveCommentsChar,
            "replacecomments" => ReplaceComments,
            "cmdline" => CmdLine,
            // SecLang spells it the British way; accept both.
            "normalisepath" | "normalizepath" => NormalizePath,
            "normalisepathwin" | "normalizepathwin" => NormalizePathWin,
            "base64decode" => Base64Decode,
            "base64decodeext" => Base64DecodeExt,
            "base64encode" => Base64Encode,
            "hexdecode" => HexDecode,
            "hexencode" => HexEncode,
            "utf8tounicode" => Utf8ToUnicode,
            "trim" => Trim,
            "trimleft" => TrimLeft,
            "trimright" => TrimRight,
            "length" => Length,
            "sha1" => Sha1,
            "md5" => Md5,
            "escapeseqdecode" => EscapeSeqDecode,
            "sqlhexdecode" => SqlHexDecode,
            _ => return None,
        };
        Some(t)
    }

    /// The canonical SecLang name (for logs).
    pub fn name(self) -> &'static str {
        use Transform::*;
        match self {
            UrlDecode => "urlDecode",
            UrlDecodeUni => "urlDecodeUni",
            HtmlEntityDecode => "htmlEntityDecode",
            JsDecode => "jsDecode",
            CssDecode => "cssDecode",
            Lowercase => "lowercase",
            Uppercase => "uppercase",
            CompressWhitespace => "compressWhitespace",
            RemoveWhitespace => "removeWhitespace",
            RemoveNulls => "removeNulls",
            ReplaceNulls => "replaceNulls",
            RemoveComments => "removeComments",
            RemoveCommentsChar => "removeCommentsChar",
            ReplaceComments => "replaceComments",
            CmdLine => "cmdLine",
            NormalizePath => "normalisePath",
            NormalizePathWin => "normalisePathWin",
            Base64Decode => "base64Decode",
            Base64DecodeExt => "base64DecodeExt",
            Base64Encode => "base64Encode",
            HexDecode => "hexDecode",
            HexEncode => "hexEncode",
            Utf8ToUnicode => "utf8toUnicode",
            Trim => "trim",
            TrimLeft => "trimLeft",
            TrimRight => "trimRight",
            Length => "length",
            Sha1 => "sha1",
            Md5 => "md5",
            EscapeSeqDecode => "escapeSeqDecode",
            SqlHexDecode => "sqlHexDecode",
        }
    }

    /// Applies the transformation to raw bytes.
    pub fn apply(self, input: &[u8]) -> Vec<u8> {
        use Transform::*;
        match self {
            UrlDecode => url_decode(input, false),
            UrlDecodeUni => url_decode(input, true),
            HtmlEntityDecode => html_entity_decode(input),
            JsDecode => js_decode(input),
            CssDecode => css_decode(input),
            Lowercase => input.to_ascii_lowercase(),
            Uppercase => input.to_ascii_uppercase(),
            CompressWhitespace => compress_whitespace(input),
            RemoveWhitespace => input
                .iter()
                .copied()
                // 0xC2 goes too (as in ModSecurity) so a UTF-8 NBSP vanishes whole.
                .filter(|&c| !(is_space(c) || c == NBSP || c == 0xC2))
                .collect(),
            RemoveNulls => input.iter().copied().filter(|&c| c != 0).collect(),
            ReplaceNulls => input
                .iter()
                .map(|&c| if c == 0 { b' ' } else { c })
                .collect(),
            RemoveComments => remove_comments(input),
            RemoveCommentsChar => remove_comments_char(input),
            ReplaceComments => replace_comments(input),
            CmdLine => cmd_line(input),
            NormalizePath => normalize_path(input.to_vec()),
            NormalizePathWin => normalize_path(
                input
                    .iter()
                    .map(|&c| if c == b'\\' { b'/' } else { c })
                    .collect(),
            ),
            Base64Decode => base64_decode(input),
            Base64DecodeExt => base64_decode_ext(input),
            Base64Encode => base64_encode(input),
            HexDecode => hex_decode(input),
            HexEncode => hex_encode(input),
            Utf8ToUnicode => utf8_to_unicode(input),
            Trim => trim_right(trim_left(input)).to_vec(),
            TrimLeft => trim_left(input).to_vec(),
            TrimRight => trim_right(input).to_vec(),
            Length => input.len().to_string().into_bytes(),
            Sha1 => sha1(input).to_vec(),
            Md5 => md5(input).to_vec(),
            EscapeSeqDecode => escape_seq_decode(input),
            SqlHexDecode => sql_hex_decode(input),
        }
    }
}

impl Transform {
    /// Whether `apply` would surely return `input` as it is. A cheap byte
    /// check, so that the common case (a value with nothing to decode) is
    /// neither copied nor scanned twice; `false` only means "maybe changed".
    pub fn unchanged(self, input: &[u8]) -> bool {
        use Transform::*;
        let has = |b: u8| input.contains(&b);
        let has_pair = |pair: &[u8; 2]| input.windows(2).any(|w| w == pair);
        match self {
            UrlDecode | UrlDecodeUni => !has(b'%') && !has(b'+'),
            HtmlEntityDecode => !has(b'&'),
            JsDecode | CssDecode | EscapeSeqDecode => !has(b'\\'),
            Lowercase => !input.iter().any(u8::is_ascii_uppercase),
            Uppercase => !input.iter().any(u8::is_ascii_lowercase),
            CompressWhitespace => {
                !input
                    .iter()
                    .any(|&c| c != b' ' && (is_space(c) || c == NBSP))
                    && !has_pair(b"  ")
            }
            RemoveWhitespace => !input.iter().any(|&c| is_space(c) || c == NBSP || c == 0xC2),
            RemoveNulls | ReplaceNulls => !has(0),
            RemoveComments => !has(b'#') && !has_pair(b"--") && !has_pair(b"/*"),
            RemoveCommentsChar => {
                !has(b'#') && !has_pair(b"--") && !has_pair(b"/*") && !has_pair(b"*/")
            }
            ReplaceComments => !has_pair(b"/*"),
            CmdLine => !input.iter().any(|&c| {
                c.is_ascii_uppercase()
                    || matches!(
                        c,
                        b'"' | b'\'' | b'\\' | b'^' | b' ' | b',' | b';' | b'\t' | b'\r' | b'\n'
                    )
            }),
            NormalizePath => !has(b'.') && !has_pair(b"//"),
            NormalizePathWin => !has(b'.') && !has(b'\\') && !has_pair(b"//"),
            Utf8ToUnicode => input.is_ascii(),
            Trim | TrimLeft | TrimRight => {
                !input.first().is_some_and(|&c| is_space(c))
                    && !input.last().is_some_and(|&c| is_space(c))
            }
            Base64Decode | Base64DecodeExt | Base64Encode | HexDecode | HexEncode | Length
            | Sha1 | Md5 | SqlHexDecode => false,
        }
    }
}

/// Applies a chain in order; returns the input borrowed when no
/// transformation changes it (the chain is empty, or nothing to decode).
pub fn apply_all<'a>(chain: &[Transform], input: &'a [u8]) -> Cow<'a, [u8]> {
    let mut value = Cow::Borrowed(input);
    for t in chain {
        if !t.unchanged(&value) {
            value = Cow::Owned(t.apply(&value));
        }
    }
    value
}

// ---------------------------------------------------------------------------
// Byte helpers shared by the decoders.

const NBSP: u8 = 0xA0;

/// The byte at `i`, or NUL past the end: ModSecurity works on NUL-terminated
/// copies and its look-aheads rely on reading that terminator.
fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

fn starts_at(s: &[u8], i: usize, pat: &[u8]) -> bool {
    s.get(i..).is_some_and(|rest| rest.starts_with(pat))
}

/// C `isspace` in the "C" locale.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

fn is_octal(c: u8) -> bool {
    matches!(c, b'0'..=b'7')
}

/// ModSecurity's `xsingle2c`: hex digit value, with its wrapping arithmetic
/// for non-hex bytes (hexDecode does not validate its input).
fn xsingle(c: u8) -> u8 {
    if c >= b'A' {
        (c & 0xdf).wrapping_sub(b'A').wrapping_add(10)
    } else {
        c.wrapping_sub(b'0')
    }
}

/// ModSecurity's `x2c`: two hex digits to a byte.
fn x2c(hi: u8, lo: u8) -> u8 {
    xsingle(hi).wrapping_mul(16).wrapping_add(xsingle(lo))
}

/// Wide code points keep only their low byte, except full-width ASCII
/// (U+FF01..U+FF5E) which maps back to ASCII `!`..`~`. `hi1`/`hi2` are the
/// two high hex digits as written.
fn fold_wide(hi1: u8, hi2: u8, low: u8) -> u8 {
    let full_width = matches!(hi1, b'f' | b'F') && matches!(hi2, b'f' | b'F');
    if full_width && low > 0x00 && low < 0x5f {
        low + 0x20
    } else {
        low
    }
}

// ---------------------------------------------------------------------------
// Decoders.

/// urlDecode / urlDecodeUni. Invalid escapes are copied as they are.
fn url_decode(input: &[u8], uni: bool) -> Vec<u8> {
    let len = input.len();
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        match c {
            b'%' if uni && matches!(at(input, i + 1), b'u' | b'U') => {
                if i + 5 < len && (2..=5).all(|k| is_hex(at(input, i + k))) {
                    let low = x2c(at(input, i + 4), at(input, i + 5));
                    out.push(fold_wide(at(input, i + 2), at(input, i + 3), low));
                    i += 6;
                } else {
                    // Keep "%u" and go on after it.
                    out.extend_from_slice(&[b'%', at(input, i + 1)]);
                    i += 2;
                }
            }
            b'%' => {
                if i + 2 < len && is_hex(at(input, i + 1)) && is_hex(at(input, i + 2)) {
                    out.push(x2c(at(input, i + 1), at(input, i + 2)));
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// `strtol` on a run of digits, then the cast to `unsigned char`: overflow
/// saturates at `LONG_MAX`, whose low byte is 0xFF.
fn entity_value(digits: &[u8], radix: u64) -> u8 {
    let mut value: u64 = 0;
    for &d in digits {
        value = value
            .saturating_mul(radix)
            .saturating_add(u64::from(xsingle(d)))
            .min(i64::MAX as u64);
    }
    (value & 0xff) as u8
}

/// htmlEntityDecode: numeric entities (the `;` is optional) and the named
/// entities ModSecurity knows, plus `&apos;`. Values above 255 keep their low
/// byte. Anything else is copied.
fn html_entity_decode(input: &[u8]) -> Vec<u8> {
    let len = input.len();
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        // How many input bytes to copy verbatim when no entity is decoded.
        let mut copy = 1;
        if c == b'&' && i + 1 < len {
            let mut j = i + 1;
            let decoded = if at(input, j) == b'#' {
                copy = 2;
                j += 1;
                if j >= len {
                    None
                } else if matches!(at(input, j), b'x' | b'X') {
                    copy = 3;
                    j += 1;
                    let k = j;
                    while j < len && is_hex(at(input, j)) {
                        j += 1;
                    }
                    input
                        .get(k..j)
                        .filter(|d| !d.is_empty())
                        .map(|d| entity_value(d, 16))
                } else {
                    let k = j;
                    while j < len && at(input, j).is_ascii_digit() {
                        j += 1;
                    }
                    input
                        .get(k..j)
                        .filter(|d| !d.is_empty())
                        .map(|d| entity_value(d, 10))
                }
            } else {
                let k = j;
                while j < len && at(input, j).is_ascii_alphanumeric() {
                    j += 1;
                }
                let name = input.get(k..j).unwrap_or_default().to_ascii_lowercase();
                let value = match name.as_slice() {
                    b"quot" => Some(b'"'),
                    b"amp" => Some(b'&'),
                    b"lt" => Some(b'<'),
                    b"gt" => Some(b'>'),
                    b"nbsp" => Some(NBSP),
                    b"apos" => Some(b'\''),
                    _ => None,
                };
                if value.is_none() && !name.is_empty() {
                    // Unknown name: copy the `&` and the name, go on after it.
                    copy = name.len() + 1;
                }
                value
            };
            if let Some(b) = decoded {
                out.push(b);
                i = if j < len && at(input, j) == b';' {
                    j + 1
                } else {
                    j
                };
                continue;
            }
        }
        let stop = (i + copy).min(len);
        out.extend_from_slice(input.get(i..stop).unwrap_or_default());
        i = stop;
    }
    out
}

/// jsDecode.
fn js_decode(input: &[u8]) -> Vec<u8> {
    let len = input.len();
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let next = at(input, i + 1);
        if i + 5 < len && next == b'u' && (2..=5).all(|k| is_hex(at(input, i + k))) {
            // \uHHHH: only the low byte survives (full-width ASCII folded).
            let low = x2c(at(input, i + 4), at(input, i + 5));
            out.push(fold_wide(at(input, i + 2), at(input, i + 3), low));
            i += 6;
        } else if i + 3 < len
            && next == b'x'
            && is_hex(at(input, i + 2))
            && is_hex(at(input, i + 3))
        {
            out.push(x2c(at(input, i + 2), at(input, i + 3)));
            i += 4;
        } else if i + 1 < len && is_octal(next) {
            // \OOO: up to three digits, but only two when three would
            // overflow a byte (first digit above 3).
            let mut digits = 1;
            while digits < 3 && i + 1 + digits < len && is_octal(at(input, i + 1 + digits)) {
                digits += 1;
            }
            if digits == 3 && next > b'3' {
                digits = 2;
            }
            let value = (0..digits).fold(0u32, |v, k| {
                v * 8 + u32::from(at(input, i + 1 + k).wrapping_sub(b'0'))
            });
            out.push((value & 0xff) as u8);
            i += 1 + digits;
        } else if i + 1 < len {
            // \C: the usual C escapes, or the character itself.
            out.push(match next {
                b'a' => 0x07,
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 0x0b,
                other => other,
            });
            i += 2;
        } else {
            // A lone trailing backslash stays.
            out.push(c);
            i += 1;
        }
    }
    out
}

/// cssDecode (CSS 2.1 escapes as ModSecurity reads them).
fn css_decode(input: &[u8]) -> Vec<u8> {
    let len = input.len();
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        if i + 1 >= len {
            // Backslash at the very end: continuation to nothing, dropped.
            i += 1;
            continue;
        }
        i += 1;
        let mut j = 0;
        while j < 6 && i + j < len && is_hex(at(input, i + j)) {
            j += 1;
        }
        if j > 0 {
            // Only the last two digits make the byte; four digits (or five or
            // six with leading zeros) may be full-width ASCII.
            let low = if j == 1 {
                xsingle(at(input, i))
            } else {
                x2c(at(input, i + j - 2), at(input, i + j - 1))
            };
            let leading_zeros = match j {
                4 => true,
                5 => at(input, i) == b'0',
                6 => at(input, i) == b'0' && at(input, i + 1) == b'0',
                _ => false,
            };
            out.push(if leading_zeros {
                fold_wide(at(input, i + j - 4), at(input, i + j - 3), low)
            } else {
                low
            });
            // One whitespace after a hex escape belongs to the escape.
            if i + j < len && is_space(at(input, i + j)) {
                j += 1;
            }
            i += j;
        } else if at(input, i) == b'\n' {
            // Escaped newline: line continuation, both dropped.
            i += 1;
        } else {
            out.push(at(input, i));
            i += 1;
        }
    }
    out
}

/// escapeSeqDecode: ANSI C escapes. Unknown escapes lose the backslash.
fn escape_seq_decode(input: &[u8]) -> Vec<u8> {
    let len = input.len();
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        if c != b'\\' || i + 1 >= len {
            out.push(c);
            i += 1;
            continue;
        }
        let next = at(input, i + 1);
        let simple = match next {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' | b'?' | b'\'' | b'"' => Some(next),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            i += 2;
        } else if matches!(next, b'x' | b'X')
            && i + 3 < len
            && is_hex(at(input, i + 2))
            && is_hex(at(input, i + 3))
        {
            out.push(x2c(at(input, i + 2), at(input, i + 3)));
            i += 4;
        } else if is_octal(next) {
            // Up to three octal digits; the value is cut to a byte.
            let mut digits = 1;
            while digits < 3 && i + 1 + digits < len && is_octal(at(input, i + 1 + digits)) {
                digits += 1;
            }
            let value = (0..digits).fold(0u32, |v, k| {
                v * 8 + u32::from(at(input, i + 1 + k).wrapping_sub(b'0'))
            });
            out.push((value & 0xff) as u8);
            i += 1 + digits;
        } else {
            out.push(next);
            i += 2;
        }
    }
    out
}

/// sqlHexDecode: `0x` followed by at least one hex pair; every following
/// complete pair is decoded, an odd last digit stays.
fn sql_hex_decode(input: &[u8]) -> Vec<u8> {
    let len = input.len();
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        let literal = c == b'0'
            && i + 3 < len
            && matches!(at(input, i + 1), b'x' | b'X')
            && is_hex(at(input, i + 2))
            && is_hex(at(input, i + 3));
        if !literal {
            out.push(c);
            i += 1;
            continue;
        }
        i += 2;
        while i + 1 < len && is_hex(at(input, i)) && is_hex(at(input, i + 1)) {
            out.push(x2c(at(input, i), at(input, i + 1)));
            i += 2;
        }
    }
    out
}

/// hexDecode: every pair becomes a byte (no validation, as ModSecurity); an
/// odd last byte is dropped.
fn hex_decode(input: &[u8]) -> Vec<u8> {
    input
        .chunks_exact(2)
        .filter_map(|pair| match *pair {
            [hi, lo] => Some(x2c(hi, lo)),
            _ => None,
        })
        .collect()
}

fn hex_encode(input: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(input.len() * 2);
    for &b in input {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    out
}

/// utf8toUnicode: each valid multibyte UTF-8 character becomes `%u` and its
/// code point in lowercase hex (at least four digits). ASCII and bytes that do
/// not start a valid sequence (overlong forms, surrogates, truncated
/// sequences) are copied as they are, where ModSecurity drops or duplicates
/// some of them.
fn utf8_to_unicode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        let width = match c {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1,
        };
        let ch = if width > 1 {
            input
                .get(i..i + width)
                .and_then(|seq| std::str::from_utf8(seq).ok())
                .and_then(|s| s.chars().next())
        } else {
            None
        };
        match ch {
            Some(ch) => {
                out.extend_from_slice(format!("%u{:04x}", u32::from(ch)).as_bytes());
                i += width;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Whitespace, comments and paths.

/// compressWhitespace: C whitespace and NBSP runs become one space.
fn compress_whitespace(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut in_space = false;
    for &c in input {
        if is_space(c) || c == NBSP {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

fn trim_left(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| !is_space(c)).unwrap_or(s.len());
    s.get(start..).unwrap_or_default()
}

fn trim_right(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&c| !is_space(c)).map_or(0, |p| p + 1);
    s.get(..end).unwrap_or_default()
}

/// removeComments: `/* */` and `<!-- -->` blocks go (either closer ends
/// either opener; an unterminated block becomes one space); `--` or `#`
/// outside a block cuts the rest of the value, as ModSecurity does.
fn remove_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut in_comment = false;
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        if in_comment {
            if starts_at(input, i, b"*/") {
                in_comment = false;
                i += 2;
            } else if starts_at(input, i, b"-->") {
                in_comment = false;
                i += 3;
            } else {
                i += 1;
            }
        } else if starts_at(input, i, b"/*") {
            in_comment = true;
            i += 2;
        } else if starts_at(input, i, b"<!--") {
            in_comment = true;
            i += 4;
        } else if starts_at(input, i, b"--") || c == b'#' {
            break;
        } else {
            out.push(c);
            i += 1;
        }
    }
    if in_comment {
        out.push(b' ');
    }
    out
}

/// removeCommentsChar: drops the markers `/*`, `*/`, `<!--`, `-->`, `--`
/// and `#`, keeping what they enclose.
fn remove_comments_char(input: &[u8]) -> Vec<u8> {
    const MARKERS: [&[u8]; 6] = [b"/*", b"*/", b"<!--", b"-->", b"--", b"#"];
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    'scan: while let Some(&c) = input.get(i) {
        for marker in MARKERS {
            if starts_at(input, i, marker) {
                i += marker.len();
                continue 'scan;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// replaceComments: each `/* */` block (terminated or not) becomes a space.
fn replace_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut in_comment = false;
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        if in_comment {
            if starts_at(input, i, b"*/") {
                in_comment = false;
                out.push(b' ');
                i += 2;
            } else {
                i += 1;
            }
        } else if starts_at(input, i, b"/*") {
            in_comment = true;
            i += 2;
        } else {
            out.push(c);
            i += 1;
        }
    }
    if in_comment {
        out.push(b' ');
    }
    out
}

/// cmdLine: the normalisation ModSecurity applies against shell evasion.
fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut space = false;
    for &c in input {
        match c {
            // Quoting and escaping characters the shell would drop.
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            // `cmd /c` and `cmd(`: no space before these.
            b'/' | b'(' => {
                if space {
                    out.pop();
                }
                space = false;
                out.push(c);
            }
            _ => {
                out.push(c.to_ascii_lowercase());
                space = false;
            }
        }
    }
    out
}

/// normalisePath, ported from ModSecurity's `normalize_path_inplace`: works in
/// place with a read index (`src`) ahead of a write index (`dst`). Relative
/// paths keep the `..` they cannot resolve; absolute ones stop at the root.
/// A trailing slash is kept only if the input had one.
fn normalize_path(mut buf: Vec<u8>) -> Vec<u8> {
    let Some(end) = buf.len().checked_sub(1) else {
        return buf;
    };
    let relative = buf.first() != Some(&b'/');
    let trailing = buf.last() == Some(&b'/');
    let mut src = 0usize;
    let mut dst = 0usize;
    // Set once `..` can remove nothing more (relative paths keep it then).
    let mut hit_root = false;
    let mut done = false;

    while !done && src <= end {
        // Segments are normalised at their last byte (or the input's).
        let at_segment_end = if src == end {
            done = true;
            true
        } else {
            at(&buf, src + 1) == b'/'
        };
        let mut copy = true;
        if at_segment_end {
            let cur = at(&buf, src);
            if src != end && cur == b'/' {
                // Empty segment: the copy below collapses the slashes.
            } else if cur == b'.' {
                if dst > 0 && at(&buf, dst - 1) == b'.' {
                    // `..`
                    if relative && (hit_root || dst <= 2) {
                        // Nothing to go back to: keep the `..`.
                        hit_root = true;
                    } else {
                        // Drop the `..` and the segment before it.
                        let mut d = dst.saturating_sub(3);
                        while d > 0 && at(&buf, d) != b'/' {
                            d -= 1;
                        }
                        if d == 0 {
                            hit_root = true;
                            // Keep the root slash when the path ends on `..`.
                            if !relative && src == end {
                                d = 1;
                            }
                        }
                        dst = d;
                        if done {
                            copy = false;
                        } else {
                            src += 1;
                        }
                    }
                } else if dst == 0 {
                    // Leading `.`: dropped.
                    if done {
                        copy = false;
                    } else {
                        src += 1;
                    }
                } else if at(&buf, dst - 1) == b'/' {
                    // `/.`: dropped with its slash.
                    if done {
                        copy = false;
                    } else {
                        dst -= 1;
                        src += 1;
                    }
                }
            } else if dst > 0 {
                hit_root = false;
            }
        }
        if !copy {
            continue;
        }
        if at(&buf, src) == b'/' {
            while src < end && at(&buf, src + 1) == b'/' {
                src += 1;
            }
            // A relative path never starts with a slash.
            if relative && dst == 0 {
                src += 1;
                continue;
            }
        }
        let b = at(&buf, src);
        if let Some(slot) = buf.get_mut(dst) {
            *slot = b;
        }
        dst += 1;
        src += 1;
    }

    if !trailing && dst > 0 && at(&buf, dst - 1) == b'/' {
        dst -= 1;
    }
    buf.truncate(dst);
    buf
}

// ---------------------------------------------------------------------------
// Base64.

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Accumulates sextets into bytes.
#[derive(Default)]
struct Base64Sink {
    out: Vec<u8>,
    acc: u32,
    /// Sextets in the current, incomplete group (0 to 3).
    pending: usize,
}

impl Base64Sink {
    fn push(&mut self, sextet: u8) {
        self.acc = (self.acc << 6) | u32::from(sextet);
        self.pending += 1;
        if self.pending == 4 {
            self.out.extend_from_slice(&[
                (self.acc >> 16) as u8,
                (self.acc >> 8) as u8,
                self.acc as u8,
            ]);
            self.acc = 0;
            self.pending = 0;
        }
    }

    /// The complete bytes of a last partial group (2 or 3 sextets).
    fn finish(mut self) -> Vec<u8> {
        match self.pending {
            2 => self.out.push((self.acc >> 4) as u8),
            3 => self
                .out
                .extend_from_slice(&[(self.acc >> 10) as u8, (self.acc >> 2) as u8]),
            _ => {}
        }
        self.out
    }
}

/// base64Decode: padding optional, CR/LF ignored, decoding stops at `=` or
/// at the first byte outside the alphabet (what was decoded so far is kept).
/// This is Coraza's and ModSecurity v2's reading; ModSecurity v3 (mbedTLS)
/// would return nothing at all for such input.
fn base64_decode(input: &[u8]) -> Vec<u8> {
    let mut sink = Base64Sink::default();
    for &c in input {
        if c == b'\r' || c == b'\n' {
            continue;
        }
        match base64_value(c) {
            Some(v) => sink.push(v),
            None => break,
        }
    }
    sink.finish()
}

/// base64DecodeExt, ModSecurity's forgiving decoder: bytes outside the
/// alphabet are skipped, the URL-safe `-`/`_` are accepted, and a stray `=`
/// after a lone sextet voids the whole value.
fn base64_decode_ext(input: &[u8]) -> Vec<u8> {
    let mut sink = Base64Sink::default();
    let mut last_was_pad = false;
    for (i, &c) in input.iter().enumerate() {
        if c == b'=' {
            if at(input, i + 1) != b'=' && sink.pending == 1 {
                return Vec::new();
            }
            last_was_pad = true;
            continue;
        }
        last_was_pad = false;
        let value = match c {
            b'-' => Some(62),
            b'_' => Some(63),
            _ => base64_value(c),
        };
        if let Some(v) = value {
            sink.push(v);
        }
    }
    if last_was_pad && sink.pending == 1 {
        return Vec::new();
    }
    sink.finish()
}

fn base64_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let byte = |k: usize| u32::from(chunk.get(k).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        let sextet = |shift: u32| BASE64[((n >> shift) & 63) as usize];
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { b'=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { b'=' });
    }
    out
}

// ---------------------------------------------------------------------------
// Digests (kept local so this module needs nothing but std).

/// Pads a message the way MD5 and SHA-1 both do; `big_endian` picks the
/// byte order of the trailing bit length.
fn md_pad(input: &[u8], big_endian: bool) -> Vec<u8> {
    let bits = (input.len() as u64).wrapping_mul(8);
    let mut msg = Vec::with_capacity(input.len() + 72);
    msg.extend_from_slice(input);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&if big_endian {
        bits.to_be_bytes()
    } else {
        bits.to_le_bytes()
    });
    msg
}

fn sha1(input: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    for block in md_pad(input, true).chunks_exact(64) {
        let mut w = [0u32; 80];
        for (slot, word) in w.iter_mut().zip(block.chunks_exact(4)) {
            if let [a, b, c, d] = *word {
                *slot = u32::from_be_bytes([a, b, c, d]);
            }
        }
        for t in 16..80 {
            w[t] = (w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (t, &wt) in w.iter().enumerate() {
            let (f, k) = match t {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let temp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wt);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (dst, hv) in out.chunks_exact_mut(4).zip(h) {
        dst.copy_from_slice(&hv.to_be_bytes());
    }
    out
}

fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
    const K: [u32; 64] = [
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
        0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
        0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
        0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
        0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
        0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
        0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
        0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
        0xeb86d391,
    ];
    let mut h: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    for block in md_pad(input, false).chunks_exact(64) {
        let mut m = [0u32; 16];
        for (slot, word) in m.iter_mut().zip(block.chunks_exact(4)) {
            if let [a, b, c, d] = *word {
                *slot = u32::from_le_bytes([a, b, c, d]);
            }
        }
        let [mut a, mut b, mut c, mut d] = h;
        for (i, &k) in K.iter().enumerate() {
            let (f, g) = match i {
                0..=15 => ((b & c) | (!b & d), i),
                16..=31 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                32..=47 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let shift = S[(i / 16) * 4 + i % 4];
            let sum = f.wrapping_add(a).wrapping_add(k).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(sum.rotate_left(shift));
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 16];
    for (dst, hv) in out.chunks_exact_mut(4).zip(h) {
        dst.copy_from_slice(&hv.to_le_bytes());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Transform::{self, *};
    use super::*;

    const ALL: [Transform; 31] = [
        UrlDecode,
        UrlDecodeUni,
        HtmlEntityDecode,
        JsDecode,
        CssDecode,
        Lowercase,
        Uppercase,
        CompressWhitespace,
        RemoveWhitespace,
        RemoveNulls,
        ReplaceNulls,
        RemoveComments,
        RemoveCommentsChar,
        ReplaceComments,
        CmdLine,
        NormalizePath,
        NormalizePathWin,
        Base64Decode,
        Base64DecodeExt,
        Base64Encode,
        HexDecode,
        HexEncode,
        Utf8ToUnicode,
        Trim,
        TrimLeft,
        TrimRight,
        Length,
        Sha1,
        Md5,
        EscapeSeqDecode,
        SqlHexDecode,
    ];

    fn show(b: &[u8]) -> String {
        b.escape_ascii().to_string()
    }

    fn check(cases: &[(Transform, &[u8], &[u8])]) {
        let mut failures = Vec::new();
        for &(t, input, expected) in cases {
            let got = t.apply(input);
            if t.unchanged(input) && expected != input {
                failures.push(format!("{} wrongly unchanged on {}", t.name(), show(input)));
            }
            if got != expected {
                failures.push(format!(
                    "{}({}) = {}, expected {}",
                    t.name(),
                    show(input),
                    show(&got),
                    show(expected)
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn url_decode_cases() {
        check(&[
            (UrlDecode, b"", b""),
            (UrlDecode, b"TestCase", b"TestCase"),
            (UrlDecode, b"Test+Case", b"Test Case"),
            (UrlDecode, b"%3Cscript%3e", b"<script>"),
            (UrlDecode, b"%00%ff", b"\x00\xff"),
            (UrlDecode, b"%", b"%"),
            (UrlDecode, b"%0", b"%0"),
            (UrlDecode, b"a%", b"a%"),
            (UrlDecode, b"%zz", b"%zz"),
            (UrlDecode, b"%%20", b"% "),
            (UrlDecode, b"%0g%20", b"%0g "),
            (UrlDecode, b"%+", b"% "),
            (UrlDecode, b"%u003c", b"%u003c"),
            (UrlDecode, b"%2541", b"%41"),
        ]);
    }

    #[test]
    fn url_decode_uni_cases() {
        check(&[
            (UrlDecodeUni, b"", b""),
            (UrlDecodeUni, b"Test+Case", b"Test Case"),
            (UrlDecodeUni, b"%3c%3E", b"<>"),
            (UrlDecodeUni, b"%u003c", b"<"),
            (UrlDecodeUni, b"%U003C", b"<"),
            (UrlDecodeUni, b"%uff1c", b"<"),
            (UrlDecodeUni, b"%uFF01%uff5e", b"!~"),
            (UrlDecodeUni, b"%uff00%uff5f%uff7f", b"\x00\x5f\x7f"),
            (UrlDecodeUni, b"%u1141", b"A"),
            (UrlDecodeUni, b"%u", b"%u"),
            (UrlDecodeUni, b"%u%u0020", b"%u "),
            (UrlDecodeUni, b"%u0%u0020", b"%u0 "),
            (UrlDecodeUni, b"%u000%u0020", b"%u000 "),
            (UrlDecodeUni, b"%u000g%u0020", b"%u000g "),
            (UrlDecodeUni, b"%u00", b"%u00"),
            (UrlDecodeUni, b"%%u0020", b"% "),
            (UrlDecodeUni, b"%", b"%"),
            (UrlDecodeUni, b"%zz", b"%zz"),
            (UrlDecodeUni, b"%gg%0", b"%gg%0"),
        ]);
    }

    #[test]
    fn html_entity_decode_cases() {
        check(&[
            (HtmlEntityDecode, b"", b""),
            (HtmlEntityDecode, b"Test\x00Case", b"Test\x00Case"),
            (HtmlEntityDecode, b"&lt;script&gt;", b"<script>"),
            (HtmlEntityDecode, b"&LT;&Quot;&apos;", b"<\"'"),
            (HtmlEntityDecode, b"&#x3c;&#X3C;&#60;", b"<<<"),
            (HtmlEntityDecode, b"&#60", b"<"),
            (HtmlEntityDecode, b"&#x3cscript", b"<script"),
            (
                HtmlEntityDecode,
                b"&#x0;&#X0;&#x20;&#X20;&#0;&#32;\x00&#100;&quot;&amp;&lt;&gt;&nbsp;",
                b"\x00\x00  \x00 \x00d\"&<>\xa0",
            ),
            (
                HtmlEntityDecode,
                b"&#x0&#X0&#x20&#X20&#0&#32\x00&#100&quot&amp&lt&gt&nbsp",
                b"\x00\x00  \x00 \x00d\"&<>\xa0",
            ),
            (
                HtmlEntityDecode,
                b"&#xg;&#Xg;&#xg0;&#X2g;&#a;\x00&#a2;&#3a&#a00;&#1a0;&#10a;&foo;",
                b"&#xg;&#Xg;&#xg0;\x02g;&#a;\x00&#a2;\x03a&#a00;\x01a0;\na;&foo;",
            ),
            (HtmlEntityDecode, b"&#x13c;&#316;", b"<<"),
            (HtmlEntityDecode, b"&#99999999999999999999999;", b"\xff"),
            (HtmlEntityDecode, b"&", b"&"),
            (HtmlEntityDecode, b"&#", b"&#"),
            (HtmlEntityDecode, b"&#x", b"&#x"),
            (HtmlEntityDecode, b"& &;", b"& &;"),
        ]);
    }

    #[test]
    fn js_decode_cases() {
        check(&[
            (JsDecode, b"", b""),
            (JsDecode, b"\\u003cscript\\u003e", b"<script>"),
            (JsDecode, b"\\uff1c", b"<"),
            (
                JsDecode,
                b"\\a\\b\\f\\n\\r\\t\\v\\?\\'\\\"\\0\\12\\123\\x00\\xff\\u0021\\uff01",
                b"\x07\x08\x0c\n\r\t\x0b?'\"\x00\nS\x00\xff!!",
            ),
            (
                JsDecode,
                b"\\8\\9\\666\\u00ag\\u00ga\\u0zaa\\uz0aa\\xag\\xga\\0123\\u00a",
                b"8966u00agu00gau0zaauz0aaxagxga\n3u00a",
            ),
            (JsDecode, b"\\x", b"x"),
            (JsDecode, b"\\x\\x0\x00", b"xx0\x00"),
            (JsDecode, b"\\u\\u0\\u01\\u012", b"uu0u01u012"),
            (JsDecode, b"\\", b"\\"),
            (JsDecode, b"\\\\0", b"\\0"),
            (JsDecode, b"\\377\\400", b"\xff\x200"),
        ]);
    }

    #[test]
    fn css_decode_cases() {
        check(&[
            (CssDecode, b"", b""),
            (CssDecode, b"Test\x00Case", b"Test\x00Case"),
            (
                CssDecode,
                b"test\\a\\b\\f\\n\\r\\t\\v\\?\\'\\\"\\0\\12\\123\\1234\\12345\\123456\\ff01\\ff5e\\\n\\0  string",
                b"test\n\x0b\x0fnrtv?'\"\x00\x12#4EV!~\x00 string",
            ),
            (CssDecode, b"test\\", b"test"),
            (
                CssDecode,
                b"\\1A\\1 A\\1234567\\123456 7\\1x\\1 x",
                b"\x1a\x01AV7V7\x01x\x01x",
            ),
            (CssDecode, b"\\3c script", b"<script"),
            (CssDecode, b"\\00ff1c\\0ff1c\\ff1c", b"<<<"),
            (CssDecode, b"\\10ff1c", b"\x1c"),
            // `\a` is the hex escape 0x0a, the `v` that follows is no hex digit.
            (CssDecode, b"j\\avascript", b"j\nvascript"),
            (CssDecode, b"\\s\\c\\r\\i\\pt", b"s\x0cript"),
        ]);
    }

    #[test]
    fn case_and_whitespace_cases() {
        check(&[
            (Lowercase, b"SeLeCT \xc3\x89", b"select \xc3\x89"),
            (Uppercase, b"select \xe9", b"SELECT \xe9"),
            (Lowercase, b"", b""),
            (CompressWhitespace, b"", b""),
            (CompressWhitespace, b"  Test  \t   Case  ", b" Test Case "),
            (CompressWhitespace, b"a\x0b\x0c\r\n\xa0b", b"a b"),
            (CompressWhitespace, b"a\x00b", b"a\x00b"),
            (RemoveWhitespace, b" a\tb\nc\x0bd\x0ce\rf\xa0g ", b"abcdefg"),
            (RemoveWhitespace, b"un\xc2\xa0ion", b"union"),
            (RemoveNulls, b"\x00a\x00b\x00", b"ab"),
            (ReplaceNulls, b"\x00a\x00b\x00", b" a b "),
            (Trim, b" \t\r\n abc \x0b\x0c", b"abc"),
            (Trim, b"   ", b""),
            (Trim, b"", b""),
            (Trim, b"\xa0a\xa0", b"\xa0a\xa0"),
            (TrimLeft, b"  a b  ", b"a b  "),
            (TrimRight, b"  a b  ", b"  a b"),
            (TrimRight, b"\n", b""),
        ]);
    }

    #[test]
    fn comment_cases() {
        check(&[
            (RemoveComments, b"", b""),
            (RemoveComments, b"/* TestCase */", b""),
            (RemoveComments, b"Before/* TestCase */After", b"BeforeAfter"),
            (
                RemoveComments,
                b"Before TestCase */ After",
                b"Before TestCase */ After",
            ),
            (RemoveComments, b"/*Before/* Test\r\nCase ", b" "),
            (RemoveComments, b"Before /* Test\nCase ", b"Before  "),
            (
                RemoveComments,
                b"Before/* T*/ /* e */ /* s */ /* t */\r\nCase ",
                b"Before   \r\nCase ",
            ),
            (
                RemoveComments,
                b"Before /* */ ops */ Test\nCase ",
                b"Before  ops */ Test\nCase ",
            ),
            (RemoveComments, b"Test/*\nCase */ After", b"Test After"),
            (RemoveComments, b"SELECT/**//**/UNION", b"SELECTUNION"),
            (
                RemoveComments,
                b"foo<!-- comment 1 --><!-- comment 2 -->bar",
                b"foobar",
            ),
            (RemoveComments, b"1 OR 1=1-- x\nAND 2", b"1 OR 1=1"),
            (RemoveComments, b"1 OR 1=1 # x", b"1 OR 1=1 "),
            (RemoveComments, b"a-b", b"a-b"),
            (RemoveCommentsChar, b"UNI/**/ON", b"UNION"),
            (RemoveCommentsChar, b"<!--x-->", b"x"),
            (RemoveCommentsChar, b"a--b#c", b"abc"),
            (RemoveCommentsChar, b"/*/", b"/"),
            (RemoveCommentsChar, b"a-b*c/", b"a-b*c/"),
            (ReplaceComments, b"/* TestCase */", b" "),
            (
                ReplaceComments,
                b"Before /* TestCase */ After",
                b"Before   After",
            ),
            (ReplaceComments, b"Before/* Test\r\nCase ", b"Before "),
            (
                ReplaceComments,
                b"Test\nCase */ After",
                b"Test\nCase */ After",
            ),
            (ReplaceComments, b"UNI/**/ON", b"UNI ON"),
            (ReplaceComments, b"a -- b # c", b"a -- b # c"),
        ]);
    }

    #[test]
    fn cmd_line_cases() {
        check(&[
            (CmdLine, b"", b""),
            (CmdLine, b"C^OMMAND /C DIR", b"command/c dir"),
            (CmdLine, b"\"c\"a't\" /etc/passwd", b"cat/etc/passwd"),
            (CmdLine, b"w\\h\\o\\a\\m\\i", b"whoami"),
            (CmdLine, b"a,b;c \t\r\nd", b"a b c d"),
            (CmdLine, b"echo  (x)", b"echo(x)"),
            (CmdLine, b" ; ls", b" ls"),
        ]);
    }

    #[test]
    fn normalize_path_cases() {
        check(&[
            (NormalizePath, b"", b""),
            (NormalizePath, b"/foo/bar/baz", b"/foo/bar/baz"),
            (NormalizePath, b"/foo/bar\x00/baz", b"/foo/bar\x00/baz"),
            (NormalizePath, b"x", b"x"),
            (NormalizePath, b".", b""),
            (NormalizePath, b"./", b""),
            (NormalizePath, b"./..", b".."),
            (NormalizePath, b"./../", b"../"),
            (NormalizePath, b"..", b".."),
            (NormalizePath, b"../", b"../"),
            (NormalizePath, b"../.", b".."),
            (NormalizePath, b".././", b"../"),
            (NormalizePath, b"../..", b"../.."),
            (NormalizePath, b"../../", b"../../"),
            (NormalizePath, b"/dir/foo//bar", b"/dir/foo/bar"),
            (NormalizePath, b"dir/foo//bar/", b"dir/foo/bar/"),
            (NormalizePath, b"dir/../foo", b"foo"),
            (NormalizePath, b"dir/../../foo", b"../foo"),
            (NormalizePath, b"dir/./.././../../foo/bar", b"../../foo/bar"),
            (
                NormalizePath,
                b"dir/./.././../../foo/bar/.",
                b"../../foo/bar",
            ),
            (
                NormalizePath,
                b"dir/./.././../../foo/bar/./",
                b"../../foo/bar/",
            ),
            (NormalizePath, b"dir/./.././../../foo/bar/..", b"../../foo"),
            (
                NormalizePath,
                b"dir/./.././../../foo/bar/../",
                b"../../foo/",
            ),
            (
                NormalizePath,
                b"dir//.//..//.//..//..//foo//bar",
                b"../../foo/bar",
            ),
            (
                NormalizePath,
                b"dir//.//..//.//..//..//foo//bar//",
                b"../../foo/bar/",
            ),
            (
                NormalizePath,
                b"dir/subdir/subsubdir/subsubsubdir/../../..",
                b"dir",
            ),
            (
                NormalizePath,
                b"dir/./subdir/../subsubdir/../subsubsubdir/..",
                b"dir",
            ),
            (
                NormalizePath,
                b"/dir/./subdir/../subsubdir/../subsubsubdir/../",
                b"/dir/",
            ),
            (
                NormalizePath,
                b"/./.././../../../../../../../\x00/../etc/./passwd",
                b"/etc/passwd",
            ),
            (NormalizePath, b"/a/b/../../../etc/passwd", b"/etc/passwd"),
            // The root slash goes too when the input had no trailing slash.
            (NormalizePath, b"/..", b""),
            (NormalizePath, b"/a/..", b""),
            (NormalizePath, b"/a/../", b"/"),
            (NormalizePath, b"//", b"/"),
            (NormalizePathWin, b"", b""),
            (NormalizePathWin, b"\\foo\\bar\\baz", b"/foo/bar/baz"),
            (NormalizePathWin, b".\\..\\", b"../"),
            (NormalizePathWin, b"dir\\..\\..\\foo", b"../foo"),
            (NormalizePathWin, b"\\dir\\foo\\\\bar", b"/dir/foo/bar"),
            (
                NormalizePathWin,
                b"\\.\\..\\.\\..\\..\\..\\..\\..\\..\\..\\\\0\\..\\etc\\.\\passwd",
                b"/etc/passwd",
            ),
            (
                NormalizePathWin,
                b"c:\\windows\\..\\boot.ini",
                b"c:/boot.ini",
            ),
        ]);
    }

    #[test]
    fn base64_cases() {
        check(&[
            (Base64Decode, b"", b""),
            (Base64Decode, b"VGVzdENhc2U=", b"TestCase"),
            (Base64Decode, b"VGVzdENhc2Ux", b"TestCase1"),
            (Base64Decode, b"VGVzdENhc2UxMg==", b"TestCase12"),
            (Base64Decode, b"VGVzdENhc2UxMg", b"TestCase12"),
            (Base64Decode, b"VGVzdABDYXNl", b"Test\x00Case"),
            (Base64Decode, b"VGVzdENhc2U=\x00VGVzdENhc2U=", b"TestCase"),
            (Base64Decode, b"VGVz\r\ndA==", b"Test"),
            (Base64Decode, b"VGVz.dA==", b"Tes"),
            (Base64Decode, b"V", b""),
            (Base64DecodeExt, b"", b""),
            (Base64DecodeExt, b"VGVzdENhc2U=", b"TestCase"),
            (Base64DecodeExt, b"VGVzdENhc2UxMg==", b"TestCase12"),
            (
                Base64DecodeExt,
                b"P.HNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
                b"<script>alert(1)</script>",
            ),
            (Base64DecodeExt, b"dzBzV==YWxlcnQoMSk=", b""),
            (
                Base64DecodeExt,
                b"eyJwIjoieHh-IiwiYWxnIjoibm9uZSIsInR5cCI6IkpXVCJ9",
                b"{\"p\":\"xx~\",\"alg\":\"none\",\"typ\":\"JWT\"}",
            ),
            (Base64DecodeExt, b"VG Vz\x00dA", b"Test"),
            (Base64Encode, b"", b""),
            (Base64Encode, b"T", b"VA=="),
            (Base64Encode, b"Te", b"VGU="),
            (Base64Encode, b"TestCase", b"VGVzdENhc2U="),
            (Base64Encode, b"\x00\xff\xfe", b"AP/+"),
        ]);
    }

    #[test]
    fn hex_cases() {
        check(&[
            (HexDecode, b"", b""),
            (HexDecode, b"5465737443617365", b"TestCase"),
            (HexDecode, b"546573740043617365", b"Test\x00Case"),
            (HexDecode, b"01234567890a0", b"\x01\x23\x45\x67\x89\x0a"),
            (HexDecode, b"0z", b"#"),
            (HexDecode, b"FFff", b"\xff\xff"),
            (HexEncode, b"", b""),
            (SqlHexDecode, b"", b""),
            (SqlHexDecode, b"0x414243", b"ABC"),
            (SqlHexDecode, b"ABC", b"ABC"),
            (SqlHexDecode, b"00x414243", b"0ABC"),
            (SqlHexDecode, b"0xz0x414243", b"0xzABC"),
            (SqlHexDecode, b"0x4142430x434241", b"ABCCBA"),
            (SqlHexDecode, b"0x4142430x0x434241", b"ABC0xCBA"),
            (SqlHexDecode, b"0X41424", b"AB4"),
            (SqlHexDecode, b"0x4", b"0x4"),
            (SqlHexDecode, b"0x", b"0x"),
        ]);
        assert_eq!(HexEncode.apply(b"Test\x00\xff"), b"5465737400ff");
    }

    #[test]
    fn utf8_to_unicode_cases() {
        check(&[
            (Utf8ToUnicode, b"", b""),
            (Utf8ToUnicode, b"abc", b"abc"),
            (Utf8ToUnicode, "é".as_bytes(), b"%u00e9"),
            (Utf8ToUnicode, "\u{a0}".as_bytes(), b"%u00a0"),
            (Utf8ToUnicode, "＜script".as_bytes(), b"%uff1cscript"),
            (Utf8ToUnicode, "€".as_bytes(), b"%u20ac"),
            (Utf8ToUnicode, "😀".as_bytes(), b"%u1f600"),
            (Utf8ToUnicode, "Д д".as_bytes(), b"%u0414 %u0434"),
            (Utf8ToUnicode, b"\xc0\xaf", b"\xc0\xaf"),
            (Utf8ToUnicode, b"\xed\xa0\x80", b"\xed\xa0\x80"),
            (Utf8ToUnicode, b"\xe2\x82", b"\xe2\x82"),
            (Utf8ToUnicode, b"\xe2\x82a", b"\xe2\x82a"),
            (Utf8ToUnicode, b"\xff\x80", b"\xff\x80"),
            (Utf8ToUnicode, b"a\x00b", b"a\x00b"),
        ]);
    }

    #[test]
    fn escape_seq_decode_cases() {
        check(&[
            (EscapeSeqDecode, b"", b""),
            (EscapeSeqDecode, b"TestCase", b"TestCase"),
            (
                EscapeSeqDecode,
                b"\\a\\b\\f\\n\\r\\t\\v\\?\\'\\\"\\0\\12\\123\\x00\\xff",
                b"\x07\x08\x0c\n\r\t\x0b?'\"\x00\nS\x00\xff",
            ),
            (
                EscapeSeqDecode,
                b"\\8\\9\\666\\xag\\xga\\0123",
                b"89\xb6xagxga\n3",
            ),
            (EscapeSeqDecode, b"\\x", b"x"),
            (EscapeSeqDecode, b"\\x\\x0", b"xx0"),
            (EscapeSeqDecode, b"\\X41", b"A"),
            (EscapeSeqDecode, b"\\0", b"\x00"),
            (EscapeSeqDecode, b"\\01", b"\x01"),
            (EscapeSeqDecode, b"\\012", b"\n"),
            (EscapeSeqDecode, b"\\", b"\\"),
            (EscapeSeqDecode, b"\\\\u0000", b"\\u0000"),
        ]);
    }

    #[test]
    fn length_and_digests() {
        check(&[
            (Length, b"", b"0"),
            (Length, b"abc", b"3"),
            (Length, &[0u8; 1234], b"1234"),
        ]);
        let hex = |t: Transform, input: &[u8]| -> String {
            String::from_utf8(apply_all(&[t, HexEncode], input).into_owned()).unwrap()
        };
        assert_eq!(Sha1.apply(b"abc").len(), 20);
        assert_eq!(hex(Sha1, b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(Sha1, b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(Sha1, b"The quick brown fox jumps over the lazy dog"),
            "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"
        );
        assert_eq!(
            hex(Sha1, &[b'a'; 1000]),
            "291e9a6c66994949b57ba5e650361e98fc36b1ba"
        );
        assert_eq!(Md5.apply(b"abc").len(), 16);
        assert_eq!(hex(Md5, b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(Md5, b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex(Md5, b"The quick brown fox jumps over the lazy dog"),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
        assert_eq!(hex(Md5, &[b'a'; 1000]), "cabe45dcc9ae5b66ba86600cca6b8ba8");
        // Padding edge: 55, 56 and 64 byte messages.
        for n in [55usize, 56, 63, 64, 65] {
            assert_eq!(Sha1.apply(&vec![b'x'; n]).len(), 20);
            assert_eq!(Md5.apply(&vec![b'x'; n]).len(), 16);
        }
    }

    #[test]
    fn chains() {
        let input = b"%2527%2520UNION%2f**%2fSELECT";
        assert!(matches!(apply_all(&[], input), Cow::Borrowed(_)));
        assert_eq!(apply_all(&[], input).as_ref(), input);
        assert_eq!(
            apply_all(
                &[UrlDecodeUni, UrlDecodeUni, RemoveComments, Lowercase],
                input
            )
            .as_ref(),
            b"' unionselect"
        );
        assert_eq!(
            apply_all(&[Utf8ToUnicode, UrlDecodeUni], "＜script＞".as_bytes()).as_ref(),
            b"<script>"
        );
    }

    #[test]
    fn names_round_trip() {
        for t in ALL {
            assert_eq!(Transform::parse(t.name()), Some(t), "{}", t.name());
            assert_eq!(Transform::parse(&t.name().to_ascii_uppercase()), Some(t));
        }
        let mut names: Vec<_> = ALL.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(Transform::parse("urlDecodeUni"), Some(UrlDecodeUni));
        assert_eq!(Transform::parse("base64decode"), Some(Base64Decode));
        assert_eq!(Transform::parse("utf8ToUnicode"), Some(Utf8ToUnicode));
        assert_eq!(Transform::parse("normalizePathWin"), Some(NormalizePathWin));
        assert_eq!(Transform::parse("none"), None);
        assert_eq!(Transform::parse("parityEven7bit"), None);
        assert_eq!(Transform::parse(""), None);
    }

    #[test]
    fn never_panics() {
        const BYTES: &[u8] = b"%u\\&#x;\x00\xff\xc3/.*-0a<!>=Ff\n +A'\"^,(\t\xa0\xc2";
        let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
        for &a in BYTES {
            inputs.push(vec![a]);
            for &b in BYTES {
                inputs.push(vec![a, b]);
                for &c in BYTES {
                    inputs.push(vec![a, b, c]);
                }
            }
        }
        // Longer pseudo-random strings over the same alphabet (xorshift).
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..2000usize {
            let s: Vec<u8> = (0..len % 40)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    BYTES[(seed % BYTES.len() as u64) as usize]
                })
                .collect();
            inputs.push(s);
        }
        for input in &inputs {
            for t in ALL {
                let out = t.apply(input);
                // The copy-free shortcut never skips a real change.
                assert!(
                    !t.unchanged(input) || out == *input,
                    "{} said unchanged but changes {}",
                    t.name(),
                    show(input)
                );
                // Only the encoders and utf8toUnicode may grow the value.
                if !matches!(
                    t,
                    Base64Encode | HexEncode | Utf8ToUnicode | Sha1 | Md5 | Length
                ) {
                    assert!(
                        out.len() <= input.len(),
                        "{} grew {}",
                        t.name(),
                        show(input)
                    );
                }
            }
        }
    }
}
