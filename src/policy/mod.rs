//! The policy framework: YAML on disk, an immutable [`Snapshot`] in memory.
//!
//! Two stages. `parse` reads the file and the files it includes, cuts them
//! into top-level blocks and deserializes each with its section's raw model;
//! then each [`Section`] compiles its block, checking what the values mean.
//! Every problem of both stages is collected and reported together as
//! `file:line:col: message` with a hint; a policy with any problem is never
//! applied. The framework names no feature: the sections list lives with
//! the assembly (`app::sections`).

pub mod diag;
pub(crate) mod parse;
pub mod section;
pub mod server;
pub mod store;
pub mod units;

pub use diag::{Diagnostic, Diagnostics, Pos};
pub use section::{Block, Compiler, Section, Sections};

use std::any::{Any, TypeId};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Values given on the command line; they win over the file, so a shipped
/// policy can be pointed at any origin and port.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Vec<String>,
    pub admin_listen: Option<String>,
    pub upstreams: Vec<String>,
}

/// Long-lived objects created once at start-up that sections may use while
/// compiling (the rate limiters, kept across reloads). `check` compiles
/// without them: a section then makes throwaway ones.
#[derive(Clone, Default)]
pub struct Services(Vec<(TypeId, Arc<dyn Any + Send + Sync>)>);

impl Services {
    pub fn with<T: Send + Sync + 'static>(mut self, service: Arc<T>) -> Self {
        self.0.push((TypeId::of::<T>(), service));
        self
    }

    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let id = TypeId::of::<T>();
        self.0
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, s)| s.clone().downcast::<T>().ok())
    }
}

/// A compiled, immutable policy. Requests pin one snapshot for their whole
/// life, so a reload never changes the rules under a request in flight.
pub struct Snapshot {
    pub source: PathBuf,
    sections: section::Compiled,
    /// Problems that do not stop `check` but may stop `run` (missing certificates).
    pub warnings: Vec<Diagnostic>,
}

impl Snapshot {
    /// A section's compiled block; `None` when the feature is off.
    pub fn get<S: Section>(&self) -> Option<&S::Compiled> {
        self.sections.get::<S>()
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Reads and compiles a policy file, reporting every problem.
pub fn load(
    path: &Path,
    sections: &Sections,
    overrides: &Overrides,
    services: &Services,
) -> Result<Snapshot, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut raw = parse::parse_policy(path, sections, &mut diags);
    let seen = std::mem::take(&mut raw.seen);
    let mut cx = Compiler::new(path, &mut diags, overrides, services, &seen, raw.unreadable);
    for s in &sections.0 {
        cx.file = path.to_path_buf();
        let blocks = raw.blocks.remove(s.key()).unwrap_or_default();
        if let Some(compiled) = s.compile(blocks, &mut cx) {
            cx.done.push(s.id(), compiled);
        }
    }
    let (compiled, warnings) = (
        std::mem::take(&mut cx.done),
        std::mem::take(&mut cx.warnings),
    );
    drop(cx);
    if diags.is_empty() {
        Ok(Snapshot {
            source: path.to_path_buf(),
            sections: compiled,
            warnings,
        })
    } else {
        diags.sort();
        Err(diags)
    }
}
