//! One implementation each of the readings every slice shares: the host a
//! request names, its path and query as the shop's stack reads them, its
//! cookies as PHP reads them, client networks.
//!
//! **Agree with the origin.** Each reader here reaches the same reading as
//! nginx/Apache + PHP + WordPress/WooCommerce/PrestaShop, or says it cannot,
//! so that the caller refuses the request rather than letting it through
//! uninspected (see docs/architecture.md).

pub mod content_type;
pub mod cookies;
pub mod form;
pub mod host;
pub mod json;
pub mod limiter;
pub mod multipart;
pub mod net;
pub mod path;
pub mod pattern;
pub mod php;
pub mod query;
pub mod target;
pub mod time;
pub mod xml;
