//! XML bodies read as PHP's parser hands them to WordPress XML-RPC (IXR on
//! libxml2): the text of an element is every piece of character data up to
//! the next tag, joined: text around a comment or a processing instruction,
//! CDATA sections, the five predefined entities and character references
//! are all text. `system<!---->.multicall` is `system.multicall`.
//!
//! Not a validating parser; it reads what the rules inspect: text segments
//! and attribute values. What libxml2 would refuse (unclosed markup, an
//! entity that is not predefined, invalid UTF-8, a NUL byte, no element) is
//! an error, and so is a DOCTYPE's own entity, which Rempart does not
//! expand: the caller refuses such a body rather than guess.

/// Text segments and attribute values, in document order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct XmlValues {
    /// Each segment of character data between two tags, joined across
    /// comments, CDATA and references, trimmed as PHP's `trim` does; empty
    /// segments are left out.
    pub texts: Vec<Vec<u8>>,
    pub attributes: Vec<Vec<u8>>,
}

/// Parses an XML document; `max_values` bounds how many texts and
/// attributes are kept (past it, an error).
pub fn parse(body: &[u8], max_values: usize) -> Result<XmlValues, String> {
    if body.contains(&0) {
        return Err("XML parsing error: NUL byte".into());
    }
    if std::str::from_utf8(body).is_err() {
        return Err("XML parsing error: not UTF-8".into());
    }
    let mut out = XmlValues::default();
    let mut text: Vec<u8> = Vec::new();
    let mut saw_element = false;
    let mut i = 0;
    let push = |values: &mut Vec<Vec<u8>>, v: Vec<u8>| -> Result<(), String> {
        if values.len() >= max_values {
            return Err("XML parsing error: more values than the inspection limit".into());
        }
        values.push(v);
        Ok(())
    };
    while i < body.len() {
        let rest = &body[i..];
        if rest.starts_with(b"<!--") {
            let end = find(body, b"-->", i + 4).ok_or("XML parsing error: unclosed comment")?;
            i = end + 3;
        } else if rest.starts_with(b"<![CDATA[") {
            let end = find(body, b"]]>", i + 9).ok_or("XML parsing error: unclosed CDATA")?;
            text.extend_from_slice(&body[i + 9..end]);
            i = end + 3;
        } else if rest.starts_with(b"<?") {
            let end = find(body, b"?>", i + 2)
                .ok_or("XML parsing error: unclosed processing instruction")?;
            i = end + 2;
        } else if rest.starts_with(b"<!DOCTYPE") || rest.starts_with(b"<!doctype") {
            i = doctype_end(body, i)?;
        } else if rest.starts_with(b"<") {
            let end = tag_end(body, i)?;
            let tag = &body[i + 1..end];
            let name_start = tag.first().copied().unwrap_or(b' ');
            if name_start == b'/'
                || name_start.is_ascii_alphabetic()
                || name_start == b'_'
                || name_start == b':'
                || name_start >= 0x80
            {
                flush(&mut text, &mut out.texts, max_values)?;
                if name_start != b'/' {
                    saw_element = true;
                    for value in attribute_values(tag)? {
                        push(&mut out.attributes, value)?;
                    }
                }
            } else {
                return Err("XML parsing error: markup that is not a tag".into());
            }
            i = end + 1;
        } else if rest.starts_with(b"&") {
            let end = find(body, b";", i + 1).ok_or("XML parsing error: unterminated reference")?;
            text.extend_from_slice(&reference(&body[i + 1..end])?);
            i = end + 1;
        } else {
            let end = body[i..]
                .iter()
                .position(|b| *b == b'<' || *b == b'&')
                .map_or(body.len(), |p| p + i);
            text.extend_from_slice(&body[i..end]);
            i = end;
        }
    }
    flush(&mut text, &mut out.texts, max_values)?;
    if !saw_element {
        return Err("XML parsing error: no element".into());
    }
    Ok(out)
}

fn flush(text: &mut Vec<u8>, texts: &mut Vec<Vec<u8>>, max: usize) -> Result<(), String> {
    let t = php_trim(text);
    if !t.is_empty() {
        if texts.len() >= max {
            return Err("XML parsing error: more values than the inspection limit".into());
        }
        texts.push(t.to_vec());
    }
    text.clear();
    Ok(())
}

/// PHP's `trim`: space, tab, LF, CR, NUL, vertical tab.
fn php_trim(b: &[u8]) -> &[u8] {
    let keep = |c: &u8| !matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0 | 0x0b);
    let start = b.iter().position(keep).unwrap_or(b.len());
    let end = b.iter().rposition(keep).map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// The end (`>`) of a tag, outside quoted attribute values.
fn tag_end(body: &[u8], from: usize) -> Result<usize, String> {
    let mut quote = None;
    for (k, &b) in body[from..].iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return Ok(from + k),
            None => {}
        }
    }
    Err("XML parsing error: unclosed markup".into())
}

/// The end of a DOCTYPE, internal subset (`[...]`) included.
fn doctype_end(body: &[u8], from: usize) -> Result<usize, String> {
    let mut depth = 0usize;
    let mut quote = None;
    for (k, &b) in body[from..].iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'[' => depth += 1,
                b']' => depth = depth.saturating_sub(1),
                b'>' if depth == 0 => return Ok(from + k + 1),
                _ => {}
            },
        }
    }
    Err("XML parsing error: unclosed DOCTYPE".into())
}

/// A reference's text: the predefined entities and character references.
fn reference(name: &[u8]) -> Result<Vec<u8>, String> {
    let c = match name {
        b"amp" => '&',
        b"lt" => '<',
        b"gt" => '>',
        b"quot" => '"',
        b"apos" => '\'',
        _ => {
            let code = if let Some(hex) = name.strip_prefix(b"#x") {
                std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
            } else if let Some(dec) = name.strip_prefix(b"#") {
                std::str::from_utf8(dec)
                    .ok()
                    .and_then(|d| d.parse::<u32>().ok())
            } else {
                return Err(format!(
                    "XML parsing error: entity `&{};` is not predefined",
                    String::from_utf8_lossy(name)
                ));
            };
            code.and_then(char::from_u32)
                .filter(|c| *c != '\0')
                .ok_or("XML parsing error: bad character reference")?
        }
    };
    let mut buf = [0u8; 4];
    Ok(c.encode_utf8(&mut buf).as_bytes().to_vec())
}

/// Attribute values of a tag, references decoded.
fn attribute_values(tag: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tag.len() {
        if tag[i] == b'"' || tag[i] == b'\'' {
            let quote = tag[i];
            let start = i + 1;
            let end = tag[start..]
                .iter()
                .position(|b| *b == quote)
                .map_or(tag.len(), |p| p + start);
            let raw = &tag[start..end];
            let mut value = Vec::with_capacity(raw.len());
            let mut k = 0;
            while k < raw.len() {
                if raw[k] == b'&' {
                    let semi = raw[k..]
                        .iter()
                        .position(|b| *b == b';')
                        .ok_or("XML parsing error: unterminated reference")?;
                    value.extend_from_slice(&reference(&raw[k + 1..k + semi])?);
                    k += semi + 1;
                } else {
                    value.push(raw[k]);
                    k += 1;
                }
            }
            out.push(value);
            i = end + 1;
        } else {
            i += 1;
        }
    }
    Ok(out)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(haystack.get(from..)?, needle).map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(body: &str) -> Vec<String> {
        parse(body.as_bytes(), 1000)
            .unwrap()
            .texts
            .into_iter()
            .map(|t| String::from_utf8(t).unwrap())
            .collect()
    }

    #[test]
    fn text_is_joined_as_php_joins_it() {
        for body in [
            "<methodCall><methodName>system<!---->.multicall</methodName></methodCall>",
            "<methodCall><methodName>sys<![CDATA[tem.multi]]>call</methodName></methodCall>",
            "<methodCall><methodName>&#115;ystem.multicall</methodName></methodCall>",
            "<methodCall><methodName>&#x73;ystem.multicall</methodName></methodCall>",
            "<methodCall><methodName> \n system.multicall\t</methodName></methodCall>",
            "<methodCall><methodName>system<?pi x?>.multicall</methodName></methodCall>",
        ] {
            assert_eq!(texts(body), ["system.multicall"], "{body}");
        }
        assert_eq!(
            texts("<m><n>system<x/>.multicall</n></m>"),
            ["system", ".multicall"],
            "a tag splits the text, as IXR resets it"
        );
        assert_eq!(texts("<a>a&amp;b&lt;</a>"), ["a&b<"]);
    }

    #[test]
    fn attributes_and_declarations() {
        let v = parse(br#"<?xml version="1.0"?><!DOCTYPE a SYSTEM "x.dtd"><a x="1&amp;2" y='3'><b>hi</b></a>"#, 100).unwrap();
        assert_eq!(v.texts, vec![b"hi".to_vec()]);
        assert_eq!(v.attributes, vec![b"1&2".to_vec(), b"3".to_vec()]);
    }

    #[test]
    fn what_libxml_refuses_or_rempart_cannot_read_is_an_error() {
        for bad in [
            "<a",
            "just text",
            "<a>&e;</a>",
            "<a><!-- open</a>",
            "<a><![CDATA[x</a>",
            "<!DOCTYPE m [<!ENTITY e \"system.multicall\">]><m>&e;</m>",
            "<a>\0</a>",
            "<a>&#0;</a>",
            "<a><1/></a>",
        ] {
            assert!(parse(bad.as_bytes(), 100).is_err(), "{bad:?}");
        }
        assert!(parse(b"<a>\xff</a>", 100).is_err());
    }
}
