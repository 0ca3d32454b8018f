//! The shop page cache: rules (what, which key, how long) and the in-memory
//! store behind pingora-cache. The pipeline wires them into pingora's cache
//! phases; the admin API purges.

pub mod rules;
pub mod store;

pub use rules::{BypassReason, CacheRules, KeyParts};
pub use store::{PageStore, Purge};
