//! Which body parser the shop runs, read from `Content-Type` as PHP and
//! WordPress read it.
//!
//! - PHP fills `$_POST` for method `POST` only, when the type cut at the
//!   first `;`, `,` or space and lower-cased is exactly
//!   `application/x-www-form-urlencoded` or `multipart/form-data`
//!   (`sapi_read_post_data`): `multipart/form-data,boundary=x` is multipart.
//! - WordPress REST decodes the body as JSON when `wp_is_json_media_type`
//!   matches, which also accepts `text/plain, application/json`.

use std::sync::LazyLock;

/// The body parser PHP runs for `$_POST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostKind {
    Urlencoded,
    Multipart,
}

/// The `$_POST` parser for a request (PHP parses only `POST`, spelled so).
pub fn php_post_kind(method: &http::Method, content_type: Option<&[u8]>) -> Option<PostKind> {
    if method != http::Method::POST {
        return None;
    }
    form_kind(content_type?)
}

/// The form parser a content type calls for, whatever the method.
pub fn form_kind(content_type: &[u8]) -> Option<PostKind> {
    let cut = content_type
        .iter()
        .position(|b| matches!(b, b';' | b',' | b' '))
        .unwrap_or(content_type.len());
    let mime = content_type[..cut].to_ascii_lowercase();
    match &mime[..] {
        b"application/x-www-form-urlencoded" => Some(PostKind::Urlencoded),
        b"multipart/form-data" => Some(PostKind::Multipart),
        _ => None,
    }
}

/// Whether WordPress REST decodes this body as JSON
/// (`WP_REST_Request::get_content_type` then `wp_is_json_media_type`).
pub fn wp_is_json(content_type: &[u8]) -> bool {
    static JSON: LazyLock<Option<regex::bytes::Regex>> = LazyLock::new(|| {
        regex::bytes::Regex::new(
            r"(?i-u)(^|\s|,)application/([\w!#$&-^.+]+\+)?json(\+oembed)?($|\s|;|,)",
        )
        .ok()
    });
    // `strpos($v, ';')` is falsy at 0: a leading `;` is not cut.
    let value = match content_type.iter().position(|b| *b == b';') {
        Some(at) if at > 0 => &content_type[..at],
        _ => content_type,
    };
    let lower = value.to_ascii_lowercase();
    if !lower.contains(&b'/') {
        return false;
    }
    let trimmed = {
        let keep = |c: &u8| !matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0 | 0x0b);
        let start = lower.iter().position(keep).unwrap_or(lower.len());
        let end = lower.iter().rposition(keep).map_or(start, |e| e + 1);
        &lower[start..end.max(start)]
    };
    JSON.as_ref().is_some_and(|re| re.is_match(trimmed))
}

/// Whether the type names XML (`text/xml`, `application/xml`, `...+xml`).
pub fn is_xml(content_type: &[u8]) -> bool {
    let cut = content_type
        .iter()
        .position(|b| matches!(b, b';' | b','))
        .unwrap_or(content_type.len());
    let mime = String::from_utf8_lossy(&content_type[..cut])
        .trim()
        .to_ascii_lowercase();
    mime == "text/xml" || mime == "application/xml" || mime.ends_with("+xml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_as_php_recognises_them() {
        for (ct, kind) in [
            (
                "application/x-www-form-urlencoded;charset=utf-8",
                Some(PostKind::Urlencoded),
            ),
            (
                "APPLICATION/X-WWW-FORM-URLENCODED",
                Some(PostKind::Urlencoded),
            ),
            (
                "application/x-www-form-urlencoded,text/plain",
                Some(PostKind::Urlencoded),
            ),
            ("multipart/form-data,boundary=x", Some(PostKind::Multipart)),
            ("Multipart/Form-Data; boundary=x", Some(PostKind::Multipart)),
            ("application/x-www-form-urlencoded\t", None),
            (" application/x-www-form-urlencoded", None),
            ("application/x-www-form-urlencodedx", None),
            ("text/plain", None),
        ] {
            assert_eq!(form_kind(ct.as_bytes()), kind, "{ct:?}");
        }
        let ct = Some(&b"application/x-www-form-urlencoded"[..]);
        assert_eq!(php_post_kind(&http::Method::PUT, ct), None);
    }

    #[test]
    fn json_as_wordpress_recognises_it() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
            "application/json+oembed",
            "application/a=b+json",
            " application/json",
            "application/json\t",
            "text/plain, application/json",
            "application/x-www-form-urlencoded, application/json",
        ] {
            assert!(wp_is_json(ct.as_bytes()), "{ct:?}");
        }
        for ct in [
            "application/x-json",
            "application/json5",
            "application/jsonp",
            ";application/json",
            "application/ json",
            "text/plain;application/json",
        ] {
            assert!(!wp_is_json(ct.as_bytes()), "{ct:?}");
        }
    }
}
