//! Request paths as the shop's web server resolves them before PHP runs:
//! `%XX` decoded once (`%2e` is a dot, `%2F` a slash), `//` merged, `.` and
//! `..` segments resolved (nginx `merge_slashes`, Apache `MergeSlashes`,
//! both resolving dot segments). `//wp-login.php`, `/wp-login%2ephp` and
//! `/x/../wp-login.php` all run `/wp-login.php`.

use std::borrow::Cow;

/// The path (without query or fragment) as the web server resolves it.
pub fn normalise(raw_path: &[u8]) -> Cow<'_, [u8]> {
    let raw_path = raw_path
        .split(|b| *b == b'?' || *b == b'#')
        .next()
        .unwrap_or_default();
    let simple = raw_path.first() == Some(&b'/')
        && !raw_path.contains(&b'%')
        && !raw_path.windows(2).any(|w| w == b"//" || w == b"/.");
    if simple {
        return Cow::Borrowed(raw_path);
    }
    let decoded = decode_once(raw_path);
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for segment in decoded.split(|b| *b == b'/') {
        trailing = false;
        match segment {
            b"" => trailing = true,
            b"." => trailing = true,
            b".." => {
                segments.pop();
                trailing = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if trailing || segments.is_empty() {
        out.push(b'/');
    }
    Cow::Owned(out)
}

/// `%XX` decoded once; a `%` without two hex digits stays (`+` is not a
/// space in a path).
fn decode_once(input: &[u8]) -> Cow<'_, [u8]> {
    super::php::raw_url_decode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        String::from_utf8(normalise(s.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn paths_as_the_web_server_resolves_them() {
        for (given, expected) in [
            ("/wp-login.php", "/wp-login.php"),
            ("//wp-login.php", "/wp-login.php"),
            ("/wp-login%2ephp", "/wp-login.php"),
            ("/x/../wp-login.php", "/wp-login.php"),
            ("/x/%2e%2e/wp-login.php", "/wp-login.php"),
            ("/a%2F..%2Fwp-login.php", "/wp-login.php"),
            ("/./cart/./", "/cart/"),
            ("/cart/..", "/"),
            ("/../../etc", "/etc"),
            ("", "/"),
            ("/shop/?q=1", "/shop/"),
            ("/a+b", "/a+b"),
            ("/100%", "/100%"),
        ] {
            assert_eq!(n(given), expected, "{given}");
        }
    }
}
