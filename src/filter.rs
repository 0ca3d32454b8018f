//! The contract between the proxy pipeline and the filters that guard it.
//!
//! A filter looks at a request and answers a [`Verdict`]: let it go on, or
//! answer it now with a [`Reply`]. Filters of one phase run in order and the
//! first that answers stops the chain. Filters see a narrow view of the request
//! ([`RequestInfo`]), never the pingora session, so they are tested without a
//! network. This module is a leaf: filters import it, it imports no filter.

use http::{HeaderMap, Method, Uri};
use std::net::IpAddr;

/// What a filter sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The real client address (after trusted-proxy resolution).
    pub client_ip: IpAddr,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub request_id: &'a str,
    /// The request as the shop reads it (resolved path, REST routes, PHP's
    /// query names; form fields once the body is read).
    pub target: &'a crate::util::target::Target,
}

/// A filter's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request go on to the next filter, then to the origin.
    Continue,
    /// Answer the client now; the request never reaches the origin.
    Respond(Reply),
}

/// An answer made by Rempart itself. The pipeline renders it (HTML or JSON,
/// with the request id) in one place, so filters never build bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// Stable snake_case code, seen in logs, metrics and the `x-rempart-reason` header.
    pub reason: &'static str,
    /// One sentence for the person who sees the page. Never internal details.
    pub message: String,
    /// Extra response headers, such as `retry-after`.
    pub headers: Vec<(http::HeaderName, String)>,
    /// The policy rule that matched (a limit's name...), for logs and metrics.
    pub rule: Option<String>,
    /// Ask the pipeline to ban the client, with this reason.
    pub ban: Option<&'static str>,
    /// A page of its own (the challenge's), sent as HTML instead of the
    /// standard page.
    pub page: Option<String>,
}

impl Reply {
    pub fn new(status: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Reply {
            status,
            reason,
            message: message.into(),
            headers: Vec::new(),
            rule: None,
            ban: None,
            page: None,
        }
    }
}

/// A check run in the request phase, before anything is sent to the origin.
pub trait RequestFilter: Send + Sync {
    /// Stable name, recorded as "who decided" in logs and metrics.
    fn name(&self) -> &'static str;
    /// Looks at the request; `Continue` lets the next filter run.
    fn check(&self, req: &RequestInfo<'_>) -> Verdict;
}

/// The request-phase filters of one policy snapshot, in order.
#[derive(Default)]
pub struct FilterChain {
    filters: Vec<Box<dyn RequestFilter>>,
}

impl FilterChain {
    pub fn push(&mut self, filter: Box<dyn RequestFilter>) {
        self.filters.push(filter);
    }

    pub fn len(&self) -> usize {
        self.filters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Runs the filters in order; the first `Respond` wins and names its filter.
    pub fn run(&self, req: &RequestInfo<'_>) -> Option<(&'static str, Reply)> {
        self.filters.iter().find_map(|f| match f.check(req) {
            Verdict::Continue => None,
            Verdict::Respond(reply) => Some((f.name(), reply)),
        })
    }
}

impl std::fmt::Debug for FilterChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.filters.iter().map(|x| x.name()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Always(&'static str, Option<u16>);
    impl RequestFilter for Always {
        fn name(&self) -> &'static str {
            self.0
        }
        fn check(&self, _: &RequestInfo<'_>) -> Verdict {
            match self.1 {
                Some(status) => Verdict::Respond(Reply::new(status, "test", "no")),
                None => Verdict::Continue,
            }
        }
    }

    #[test]
    fn first_filter_that_answers_wins() {
        let mut chain = FilterChain::default();
        chain.push(Box::new(Always("pass", None)));
        chain.push(Box::new(Always("first", Some(403))));
        chain.push(Box::new(Always("second", Some(429))));
        let (method, uri, headers) = (Method::GET, Uri::from_static("/"), HeaderMap::new());
        let target = crate::util::target::Target::new(&method, b"/", &headers);
        let req = RequestInfo {
            client_ip: [127, 0, 0, 1].into(),
            method: &method,
            uri: &uri,
            headers: &headers,
            request_id: "r1",
            target: &target,
        };
        let (name, reply) = chain.run(&req).unwrap();
        assert_eq!((name, reply.status), ("first", 403));
    }
}
