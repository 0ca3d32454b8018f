//! Names and values as PHP reads them into `$_GET`, `$_POST` and `$_COOKIE`
//! (`main/php_variables.c`): percent-decoding and the variable-name rules.

use std::borrow::Cow;

/// `php_url_decode`: `+` is a space and `%XX` a byte; a `%` not followed by
/// two hex digits stays as it is.
pub fn url_decode(input: &[u8]) -> Cow<'_, [u8]> {
    decode(input, true)
}

/// `php_raw_url_decode` (cookie values): like [`url_decode`], but `+` stays `+`.
pub fn raw_url_decode(input: &[u8]) -> Cow<'_, [u8]> {
    decode(input, false)
}

fn decode(input: &[u8], plus_is_space: bool) -> Cow<'_, [u8]> {
    if !input
        .iter()
        .any(|b| *b == b'%' || (plus_is_space && *b == b'+'))
    {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => match (
                input.get(i + 1).and_then(|b| hex(*b)),
                input.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The key PHP files a variable under (`php_register_variable_ex`), from its
/// decoded name: the name stops at a NUL byte, leading spaces are dropped,
/// `.` and ` ` become `_`, and `a[b]` is the array `a` (only the part before
/// the first `[` names it). A `[` that is never closed becomes `_`, and so
/// do the `.`, ` ` and `[` after it. `None`: PHP ignores the variable (an
/// empty name).
pub fn variable_name(decoded: &[u8]) -> Option<Cow<'_, [u8]>> {
    let name = decoded.split(|b| *b == 0).next().unwrap_or_default();
    let start = name.iter().position(|b| *b != b' ').unwrap_or(name.len());
    let name = &name[start..];
    let mut out: Option<Vec<u8>> = None;
    let mut unclosed = false;
    for (i, &b) in name.iter().enumerate() {
        let replace = match b {
            b' ' | b'.' => true,
            b'[' if unclosed => true,
            // PHP drops a variable whose name is empty before its first `[`.
            b'[' if i == 0 => return None,
            b'[' => {
                if name[i + 1..].contains(&b']') {
                    // An array: the name is what comes before.
                    let base = match out {
                        Some(mut o) => {
                            o.truncate(i);
                            Cow::Owned(o)
                        }
                        None => Cow::Borrowed(&name[..i]),
                    };
                    return (!base.is_empty()).then_some(base);
                }
                unclosed = true;
                true
            }
            _ => false,
        };
        if replace {
            out.get_or_insert_with(|| name.to_vec())[i] = b'_';
        }
    }
    let name = match out {
        Some(o) => Cow::Owned(o),
        None => Cow::Borrowed(name),
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Option<String> {
        variable_name(s.as_bytes()).map(|n| String::from_utf8_lossy(&n).into_owned())
    }

    #[test]
    fn names_as_php_files_them() {
        for (given, expected) in [
            ("log", Some("log")),
            ("wp.woocommerce.session.x", Some("wp_woocommerce_session_x")),
            ("  a b", Some("a_b")),
            ("a[b]", Some("a")),
            ("a.b[c.d]", Some("a_b")),
            ("a[]", Some("a")),
            ("a[b", Some("a_b")),
            ("a[b.c[d", Some("a_b_c_d")),
            ("a\0b", Some("a")),
            ("[x]", None),
            ("[", None),
            ("[x", None),
            ("", None),
            ("   ", None),
        ] {
            assert_eq!(name(given).as_deref(), expected, "{given:?}");
        }
    }

    #[test]
    fn decoding() {
        assert_eq!(&*url_decode(b"a+b%2Bc%zz%4"), b"a b+c%zz%4");
        assert_eq!(&*raw_url_decode(b"a+b%7C"), b"a+b|");
        assert!(matches!(url_decode(b"plain"), Cow::Borrowed(_)));
    }
}
