//! Rempart: an edge reverse proxy that keeps online shops up, fast and safe.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules; integration
//! tests and benchmarks use them too.

pub mod admin;
pub mod alerts;
pub mod bans;
pub mod bot;
pub mod bruteforce;
pub mod cache;
pub mod challenge;
pub mod client_ip;
pub mod config;
pub mod crawler;
pub mod demo;
pub mod filter;
pub mod ipfilter;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod ratelimit;
pub mod server;
pub mod stats;
pub mod tls;
pub mod upstream;
pub mod util;
pub mod waf;
pub mod webhook;
