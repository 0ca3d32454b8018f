//! Rempart: an edge reverse proxy that keeps online shops up, fast and safe.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules; integration
//! tests and benchmarks use them too. The layout and the direction imports
//! may take are in `docs/architecture.md`.

pub mod admin;
pub mod app;
pub mod cache;
pub mod demo;
pub mod edge;
pub mod filter;
pub mod observe;
pub mod policy;
pub mod shield;
pub mod util;
pub mod waf;
