//! The running policy and its hot reload.
//!
//! The compiled snapshot sits in an `ArcSwap`: a request takes an `Arc` of the
//! current snapshot at its start and keeps it to its end, so a reload never
//! changes the rules under a request in flight. A reload that fails to compile
//! leaves the running snapshot in place and says why.

use super::{load, Diagnostics, Overrides, Snapshot};
use crate::observe::metrics;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Where the policy comes from, and the snapshot running now.
pub struct PolicyStore {
    path: PathBuf,
    overrides: Overrides,
    current: ArcSwap<Snapshot>,
    /// Serialises reloads (SIGHUP and the admin API may race).
    reloading: Mutex<ReloadState>,
}

#[derive(Debug, Clone)]
struct ReloadState {
    generation: u64,
    loaded_at: SystemTime,
}

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The new policy runs now.
    Applied { generation: u64 },
    /// The file has problems; the running policy stays.
    Refused(Diagnostics),
}

impl PolicyStore {
    /// Loads the policy for start-up.
    pub fn open(path: PathBuf, overrides: Overrides) -> Result<Self, Diagnostics> {
        let snapshot = load(&path, &overrides)?;
        Ok(PolicyStore {
            path,
            overrides,
            current: ArcSwap::from_pointee(snapshot),
            reloading: Mutex::new(ReloadState {
                generation: 1,
                loaded_at: SystemTime::now(),
            }),
        })
    }

    /// The snapshot to use for a new request.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The generation number of the running snapshot (1 at start-up).
    pub fn generation(&self) -> u64 {
        self.reloading
            .lock()
            .map(|s| s.generation)
            .unwrap_or_default()
    }

    /// When the running snapshot was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        self.reloading
            .lock()
            .map(|s| s.loaded_at)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Reads the file again; applies it only if it compiles cleanly.
    pub fn reload(&self) -> ReloadOutcome {
        self.reload_checked(|_| Ok(()))
    }

    /// Like [`Self::reload`], with a last check of the compiled snapshot
    /// against what is running (e.g. HTTPS listeners need certificates).
    pub fn reload_checked(
        &self,
        fits: impl FnOnce(&Snapshot) -> Result<(), Vec<super::Diagnostic>>,
    ) -> ReloadOutcome {
        let mut state = match self.reloading.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let loaded = load(&self.path, &self.overrides)
            .and_then(|snapshot| fits(&snapshot).map(|()| snapshot).map_err(Diagnostics));
        match loaded {
            Ok(snapshot) => {
                warn_about_restart_only_changes(&self.current(), &snapshot);
                self.current.store(Arc::new(snapshot));
                state.generation += 1;
                state.loaded_at = SystemTime::now();
                metrics::RELOADS.with_label_values(&["ok"]).inc();
                tracing::info!(generation = state.generation, path = %self.path.display(), "policy reloaded");
                ReloadOutcome::Applied {
                    generation: state.generation,
                }
            }
            Err(diags) => {
                metrics::RELOADS.with_label_values(&["failed"]).inc();
                tracing::error!(path = %self.path.display(), problems = diags.len(),
                    "policy reload refused, the running policy stays:\n{diags}");
                ReloadOutcome::Refused(diags)
            }
        }
    }
}

/// Listeners, threads, shutdown timings, log format and HTTP/2 are fixed at
/// start-up; say so when a reload changes them.
fn warn_about_restart_only_changes(old: &Snapshot, new: &Snapshot) {
    let tls = |s: &Snapshot| s.tls.as_ref().map(|t| (t.listen.clone(), t.http2));
    let (o, n) = (&old.server, &new.server);
    if o.listen != n.listen
        || o.admin_listen != n.admin_listen
        || o.threads != n.threads
        || o.grace_period != n.grace_period
        || o.shutdown_timeout != n.shutdown_timeout
        || o.log_format != n.log_format
        || tls(old) != tls(new)
    {
        tracing::warn!("listeners, threads, grace period, shutdown timeout, log format and TLS listeners change only on restart; the new values wait until then");
    }
}
