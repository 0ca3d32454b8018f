//! What the operator sees: metrics, live statistics, alerts and their
//! webhook, and the logs.

pub mod access;
pub mod alerts;
pub mod logging;
pub mod metrics;
pub mod stats;
pub mod webhook;
