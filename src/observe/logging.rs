//! Log output via tracing: human-readable lines by default, JSON on request,
//! to standard output (journald, docker) or to a file. One access-log line
//! per request has the target `rempart::access`; security decisions (refusals,
//! bans) have the target `rempart::audit` and can also go, as JSON lines, to
//! an audit file of their own; alerts have the target `rempart::alert`.
//! `RUST_LOG` refines levels (default `info`).

use crate::policy::server::LogFormat;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// `info`, without pingora-cache's one-off note about header-compression
/// dictionaries (Rempart stores headers uncompressed on purpose).
const DEFAULT_FILTER: &str = "info,pingora_cache::meta=error";

/// Where logs go.
pub struct LogTargets<'a> {
    pub format: LogFormat,
    /// Instead of standard output.
    pub file: Option<&'a Path>,
    /// Security decisions, as JSON lines, in addition to the main log.
    pub audit: Option<&'a Path>,
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Installs the global subscriber; pingora's own `log` records are included.
pub fn init(targets: LogTargets<'_>) -> std::io::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let writer = match targets.file {
        Some(path) => BoxMakeWriter::new(Mutex::new(open(path)?)),
        None => BoxMakeWriter::new(std::io::stdout),
    };
    let main = match targets.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .boxed(),
    }
    .with_filter(filter);
    let audit = match targets.audit {
        Some(path) => Some(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(Mutex::new(open(path)?))
                .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                    m.target() == "rempart::audit"
                })),
        ),
        None => None,
    };
    if let Err(e) = tracing_subscriber::registry()
        .with(main)
        .with(audit)
        .try_init()
    {
        eprintln!("logging already initialised: {e}");
    }
    Ok(())
}
