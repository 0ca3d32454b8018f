//! `rempart demo`: a sample shop origin on loopback, served by pingora, that
//! the demo policy puts Rempart in front of.

pub mod shop;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use shop::{Shop, ShopRequest};

/// Largest request body the sample shop reads (its forms are small).
const MAX_BODY: usize = 1 << 20;

/// The sample shop as a pingora HTTP application.
#[derive(Default)]
pub struct ShopApp {
    shop: Shop,
}

#[async_trait]
impl ServeHttp for ShopApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = session.read_request_body().await {
            if body.len() + chunk.len() > MAX_BODY {
                return plain(413, "request body too large");
            }
            body.extend_from_slice(&chunk);
        }
        let req = session.req_header();
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let path = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let head_only = req.method == http::Method::HEAD;
        let answer = self.shop.handle(&ShopRequest {
            method: req.method.as_str(),
            path_and_query: &path,
            headers: &headers,
            body: &body,
        });
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        let length = answer.body.len();
        let mut response = Response::new(if head_only { Vec::new() } else { answer.body });
        *response.status_mut() = http::StatusCode::from_u16(answer.status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in &answer.headers {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::try_from(name.as_str()),
                http::HeaderValue::from_str(value),
            ) {
                response.headers_mut().append(n, v);
            }
        }
        response.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(length),
        );
        response
    }
}

fn plain(status: u16, text: &str) -> Response<Vec<u8>> {
    let mut r = Response::new(text.as_bytes().to_vec());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(text.len()),
    );
    r
}
