//! The request path: the pingora glue and what it owns. Slices take part
//! only as `dyn Filter` in the chain (see `filter` and `app::sections`).
//!
//! | pingora phase | work, in order |
//! |---|---|
//! | `early_request_filter` | pin the policy snapshot, the host as the shop reads it, request id, real client; filters' `early` (compression level) |
//! | `request_filter` | the chain: hygiene (host, sizes), HTTPS redirect, bans, challenge answer, IP lists, rate limits, bots, challenge, WAF head, login watch |
//! | `request_body_filter` | form fields for the rules that need them; the chain: body size, newly matched limits and challenge, WAF body (held back until judged), login attempt |
//! | cache phases | the page cache's eligibility, key, lookup, storage and variance |
//! | `proxy_upstream_filter` | the chain after the cache: origin-scoped limits |
//! | `upstream_peer` / `fail_to_connect` | pick a healthy origin; retry idempotent requests elsewhere |
//! | `upstream_request_filter` | the chain (accept-encoding, dropped parameters), then forwarding headers |
//! | `upstream_response_filter` / body | passive health, latency; the chain (login and payment outcomes) |
//! | `response_filter` | request id; the chain (`x-cache`, WAF debug header); HSTS |
//! | `fail_to_proxy` | Rempart's own error page, or a refusal decided while the body streamed |
//! | `logging` | the chain's records (404 floods, WAF audit, cache counters), then metrics, stats and the access log |

pub mod chain;
pub mod client_ip;
pub mod connections;
pub mod ctx;
pub mod forward;
pub mod headers;
pub mod hygiene;
pub mod proxy;
pub mod reply;
pub mod tls;
pub mod upstream;

pub use proxy::Proxy;
