//! The running policy and its hot reload.
//!
//! The compiled snapshot sits in an `ArcSwap`: a request takes an `Arc` of the
//! current snapshot at its start and keeps it to its end, so a reload never
//! changes the rules under a request in flight. A reload that fails to compile
//! leaves the running snapshot in place and says why.

use super::{load, Diagnostic, Diagnostics, Overrides, Sections, Services, Snapshot};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// Where the policy comes from, and the snapshot running now.
pub struct PolicyStore {
    path: PathBuf,
    overrides: Overrides,
    sections: Sections,
    services: Services,
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
    pub fn open(
        path: PathBuf,
        sections: Sections,
        overrides: Overrides,
        services: Services,
    ) -> Result<Self, Diagnostics> {
        let snapshot = load(&path, &sections, &overrides, &services)?;
        Ok(PolicyStore {
            path,
            overrides,
            sections,
            services,
            current: ArcSwap::from_pointee(snapshot),
            reloading: Mutex::new(ReloadState {
                generation: 1,
                loaded_at: SystemTime::now(),
            }),
        })
    }

    /// The long-lived services sections compile with.
    pub fn services(&self) -> &Services {
        &self.services
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
        self.reloading.lock().generation
    }

    /// When the running snapshot was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        self.reloading.lock().loaded_at
    }

    /// Reads the file again; applies it only if it compiles cleanly.
    pub fn reload(&self) -> ReloadOutcome {
        self.reload_checked(|_, _| Ok(()), |_| {})
    }

    /// Like [`Self::reload`], with a last check of the compiled snapshot
    /// against what is running (e.g. HTTPS listeners need certificates).
    /// `applied` runs with the new snapshot once it is in place, still
    /// under the reload lock (long-lived state takes its new settings).
    pub fn reload_checked(
        &self,
        fits: impl FnOnce(&Snapshot, &Snapshot) -> Result<(), Vec<Diagnostic>>,
        applied: impl FnOnce(&Snapshot),
    ) -> ReloadOutcome {
        let mut state = self.reloading.lock();
        let current = self.current();
        let loaded = load(&self.path, &self.sections, &self.overrides, &self.services).and_then(
            |snapshot| {
                fits(&current, &snapshot)
                    .map(|()| snapshot)
                    .map_err(Diagnostics)
            },
        );
        match loaded {
            Ok(snapshot) => {
                let snapshot = Arc::new(snapshot);
                self.current.store(snapshot.clone());
                state.generation += 1;
                state.loaded_at = SystemTime::now();
                applied(&snapshot);
                tracing::info!(generation = state.generation, path = %self.path.display(), "policy reloaded");
                ReloadOutcome::Applied {
                    generation: state.generation,
                }
            }
            Err(diags) => {
                tracing::error!(path = %self.path.display(), problems = diags.len(),
                    "policy reload refused, the running policy stays:\n{diags}");
                ReloadOutcome::Refused(diags)
            }
        }
    }
}
