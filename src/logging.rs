//! Log output via tracing: human-readable lines by default, JSON on request.
//! One access-log line per request has the target `rempart::access`.
//! `RUST_LOG` refines levels (default `info`).

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// `info`, without pingora-cache's one-off note about header-compression
/// dictionaries (Rempart stores headers uncompressed on purpose).
const DEFAULT_FILTER: &str = "info,pingora_cache::meta=error";

/// Installs the global subscriber; pingora's own `log` records are included.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let result = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
