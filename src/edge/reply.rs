//! Rempart's own answers (blocks, limits, origin errors), rendered in one
//! place: a small HTML page for browsers, JSON for API and XHR clients, always
//! with the request id and never with internal details.

use crate::filter::Reply;
use bytes::Bytes;
use http::HeaderMap;
use pingora::http::ResponseHeader;

/// Whether the client prefers JSON (Store API, XHR, `Accept: application/json`).
pub fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let xhr = headers
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest"));
    xhr || (accept.contains("application/json") && !accept.contains("text/html"))
}

/// The response head and body for a reply.
pub fn render(
    reply: &Reply,
    request_id: &str,
    json: bool,
) -> pingora::Result<(ResponseHeader, Bytes)> {
    let json = json && reply.page.is_none();
    let body = if let Some(page) = &reply.page {
        page.clone()
    } else if json {
        serde_json::json!({
            "error": reply.reason.as_str(),
            "message": reply.message,
            "status": reply.status,
            "request_id": request_id,
        })
        .to_string()
    } else {
        html_page(reply, request_id)
    };
    let mut head = ResponseHeader::build(reply.status, Some(6))?;
    let content_type = if json {
        "application/json"
    } else {
        "text/html; charset=utf-8"
    };
    head.insert_header(http::header::CONTENT_TYPE, content_type)?;
    head.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    head.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    head.insert_header("x-request-id", request_id)?;
    head.insert_header("x-rempart-reason", reply.reason.as_str())?;
    for (name, value) in &reply.headers {
        head.insert_header(name.clone(), value.as_str())?;
    }
    Ok((head, Bytes::from(body)))
}

fn title(status: u16) -> &'static str {
    match status {
        301 | 302 | 303 | 307 | 308 => "Moved",
        400 => "Bad request",
        403 => "Access denied",
        404 => "Not found",
        413 => "Request too large",
        429 => "Too many requests",
        431 => "Request headers too large",
        502 => "Shop temporarily unreachable",
        503 => "Shop temporarily unavailable",
        504 => "Shop took too long to answer",
        s if s >= 500 => "Something went wrong",
        _ => "Request refused",
    }
}

fn html_page(reply: &Reply, request_id: &str) -> String {
    let title = title(reply.status);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{status} {title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}\
h1{{font-size:1.4rem}}code{{background:#f3f3f3;padding:.1rem .3rem}}</style></head>\
<body><h1>{title}</h1><p>{message}</p>{footer}</body></html>\n",
        status = reply.status,
        message = escape(&reply.message),
        footer = if reply.status >= 400 {
            format!(
                "<p>If you think this is a mistake, contact the shop and quote this reference: <code>{}</code></p>",
                escape(request_id)
            )
        } else {
            String::new()
        },
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Reason;

    #[test]
    fn html_page_has_the_request_id_and_no_markup_injection() {
        let reply = Reply::new(403, Reason::IpDenied, "No <b>way</b>");
        let (head, body) = render(&reply, "rid-1", false).unwrap();
        assert_eq!(head.status.as_u16(), 403);
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("rid-1"));
        assert!(body.contains("No &lt;b&gt;way"));
        assert_eq!(head.headers.get("x-rempart-reason").unwrap(), "ip_denied");
    }

    #[test]
    fn json_for_api_clients() {
        let mut h = HeaderMap::new();
        h.insert("accept", "application/json".parse().unwrap());
        assert!(wants_json(&h));
        h.insert("accept", "text/html,application/json".parse().unwrap());
        assert!(!wants_json(&h));
        let (_, body) = render(
            &Reply::new(429, Reason::RateLimited, "slow down"),
            "r",
            true,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["request_id"], "r");
    }
}
