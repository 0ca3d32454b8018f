//! The contract between the policy framework and the slices: each slice
//! owns its block of the policy file (a [`Section`]: the block as written,
//! and `compile`, which checks what the values mean). The framework reads
//! every file, cuts it into blocks, hands each block to its section and
//! collects every problem; it knows no section by name.

use super::diag::{Diagnostic, Diagnostics, Pos};
use super::{Overrides, Services};
use serde::de::DeserializeOwned;
use serde_saphyr::Spanned;
use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One block of the policy file, owned by one slice.
pub trait Section: 'static {
    /// The block's top-level key (`rate_limits`).
    const KEY: &'static str;
    /// Blocks written in several files add up (`ip_filter`); any other
    /// block may be written once across the policy's files.
    const ADDS_UP: bool = false;
    /// The block as written: serde, unknown keys refused, positions kept
    /// (`Spanned`) where a problem may need pointing at.
    type Raw: DeserializeOwned + Send + 'static;
    /// What the running proxy uses.
    type Compiled: Send + Sync + 'static;

    /// Checks the block (`None`: not written) and builds what the proxy
    /// runs. Every problem goes to `cx`, with its position; `None` means
    /// the feature is off.
    fn compile(raw: Option<Self::Raw>, cx: &mut Compiler<'_>) -> Option<Self::Compiled>;

    /// For sections whose blocks add up: every file's block, in include
    /// order. The default (blocks written once) compiles the only one.
    fn compile_blocks(
        blocks: Vec<Block<Self::Raw>>,
        cx: &mut Compiler<'_>,
    ) -> Option<Self::Compiled> {
        let block = blocks.into_iter().next();
        if let Some(b) = &block {
            cx.file.clone_from(&b.file);
        }
        Self::compile(block.map(|b| b.value), cx)
    }
}

/// A block and the file it was written in (for diagnostics).
#[derive(Debug)]
pub struct Block<T> {
    pub file: PathBuf,
    pub value: T,
}

/// What the framework knows of a section, without its types.
pub(crate) trait AnySection: Send + Sync {
    fn key(&self) -> &'static str;
    fn adds_up(&self) -> bool;
    fn id(&self) -> TypeId;
    /// Deserializes one block's text (`key: ...`, padded to keep positions).
    fn parse(&self, src: &str) -> Result<Option<Box<dyn Any + Send>>, serde_saphyr::Error>;
    fn compile(
        &self,
        blocks: Vec<Block<Box<dyn Any + Send>>>,
        cx: &mut Compiler<'_>,
    ) -> Option<Arc<dyn Any + Send + Sync>>;
}

struct Entry<S>(PhantomData<fn() -> S>);

impl<S: Section> AnySection for Entry<S> {
    fn key(&self) -> &'static str {
        S::KEY
    }

    fn adds_up(&self) -> bool {
        S::ADDS_UP
    }

    fn id(&self) -> TypeId {
        TypeId::of::<S>()
    }

    fn parse(&self, src: &str) -> Result<Option<Box<dyn Any + Send>>, serde_saphyr::Error> {
        let map: std::collections::BTreeMap<String, Option<S::Raw>> = serde_saphyr::from_str(src)?;
        Ok(map
            .into_values()
            .next()
            .flatten()
            .map(|raw| Box::new(raw) as Box<dyn Any + Send>))
    }

    fn compile(
        &self,
        blocks: Vec<Block<Box<dyn Any + Send>>>,
        cx: &mut Compiler<'_>,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let blocks = blocks
            .into_iter()
            .filter_map(|b| {
                let value = *b.value.downcast::<S::Raw>().ok()?;
                Some(Block {
                    file: b.file,
                    value,
                })
            })
            .collect();
        S::compile_blocks(blocks, cx).map(|c| Arc::new(c) as Arc<dyn Any + Send + Sync>)
    }
}

/// The policy's sections, in the order they are documented and compiled
/// (a section may read the ones before it: [`Compiler::get`]).
#[derive(Clone, Default)]
pub struct Sections(pub(crate) Vec<Arc<dyn AnySection>>);

impl Sections {
    /// Adds a section at the end.
    pub fn with<S: Section>(mut self) -> Self {
        self.0.push(Arc::new(Entry::<S>(PhantomData)));
        self
    }

    /// The top-level keys a policy may have, `include` first.
    pub fn keys(&self) -> Vec<&'static str> {
        std::iter::once("include")
            .chain(self.0.iter().map(|s| s.key()))
            .collect()
    }

    pub(crate) fn find(&self, key: &str) -> Option<&Arc<dyn AnySection>> {
        self.0.iter().find(|s| s.key() == key)
    }
}

/// Compiled sections, by section type.
#[derive(Default, Clone)]
pub(crate) struct Compiled(Vec<(TypeId, Arc<dyn Any + Send + Sync>)>);

impl Compiled {
    pub(crate) fn get<S: Section>(&self) -> Option<&S::Compiled> {
        let id = TypeId::of::<S>();
        self.0
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| v.downcast_ref())
    }

    pub(crate) fn push(&mut self, id: TypeId, value: Arc<dyn Any + Send + Sync>) {
        self.0.push((id, value));
    }
}

/// What a section's `compile` reports into, and what it may read: the
/// sections compiled before it, the command-line overrides, the services
/// created at start-up.
pub struct Compiler<'a> {
    /// The file of the block being compiled (set by the framework).
    pub file: PathBuf,
    pub(crate) diags: &'a mut Diagnostics,
    /// Problems that do not make the policy invalid, such as certificates
    /// not installed yet on the machine where `check` runs.
    pub(crate) warnings: Vec<Diagnostic>,
    pub(crate) done: Compiled,
    overrides: &'a Overrides,
    services: &'a Services,
    /// Blocks written in any file, even those that failed to parse.
    seen: &'a [String],
    /// A file could not be read or parsed at all.
    unreadable: bool,
}

impl<'a> Compiler<'a> {
    pub(crate) fn new(
        file: &Path,
        diags: &'a mut Diagnostics,
        overrides: &'a Overrides,
        services: &'a Services,
        seen: &'a [String],
        unreadable: bool,
    ) -> Self {
        Compiler {
            file: file.to_path_buf(),
            diags,
            warnings: Vec::new(),
            done: Compiled::default(),
            overrides,
            services,
            seen,
            unreadable,
        }
    }

    /// A section compiled before this one (see the sections list).
    pub fn get<S: Section>(&self) -> Option<&S::Compiled> {
        self.done.get::<S>()
    }

    /// A long-lived service created at start-up (see [`Services`]).
    pub fn service<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.services.get::<T>()
    }

    /// Values given on the command line.
    pub fn overrides(&self) -> &Overrides {
        self.overrides
    }

    /// Whether a block is missing from the policy, rather than written but
    /// unreadable (a broken block is not also reported as missing).
    pub fn is_missing(&self, key: &str) -> bool {
        !self.unreadable && !self.seen.iter().any(|k| k == key)
    }

    /// Problems reported so far (to tell whether a part compiled cleanly).
    pub fn problems(&self) -> usize {
        self.diags.len()
    }

    /// The folder of the block's file, against which its paths are read.
    pub fn base(&self) -> PathBuf {
        self.file.parent().unwrap_or(Path::new(".")).to_path_buf()
    }

    /// A problem at a value's position.
    pub fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>, hint: Option<&str>) {
        let mut d = Diagnostic::new(&self.file, super::parse::pos(&at.referenced), message);
        if let Some(h) = hint {
            d = d.with_hint(h);
        }
        self.diags.push(d);
    }

    /// A problem at a value's position if it has one, else at the file's start.
    pub fn at<T>(
        &mut self,
        at: Option<&Spanned<T>>,
        message: impl Into<String>,
        hint: Option<&str>,
    ) {
        match at {
            Some(s) => self.error(s, message, hint),
            None => {
                let mut d = Diagnostic::new(&self.file, Pos::default(), message);
                if let Some(h) = hint {
                    d = d.with_hint(h);
                }
                self.diags.push(d);
            }
        }
    }

    /// A problem in a command-line value.
    pub fn cli_error(&mut self, flag: &str, message: String) {
        self.diags.push(Diagnostic {
            file: PathBuf::from(format!("command line ({flag})")),
            line: 0,
            col: 0,
            message,
            hint: None,
        });
    }

    /// A problem made elsewhere (a rules file the section loads).
    pub fn report(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// A problem that does not stop `check` but may stop `run`.
    pub fn warning(&mut self, d: Diagnostic) {
        self.warnings.push(d);
    }

    /// The position of a value in its file.
    pub fn pos<T>(&self, at: &Spanned<T>) -> Pos {
        super::parse::pos(&at.referenced)
    }

    /// Addresses and networks (`192.0.2.7`, `192.0.2.0/24`).
    pub fn nets(&mut self, list: &[Spanned<String>]) -> Vec<ipnet::IpNet> {
        list.iter()
            .filter_map(|s| match crate::util::net::parse_net(&s.value) {
                Ok(net) => Some(net),
                Err(e) => {
                    self.error(s, e, Some("write an address (`192.0.2.7`) or a network (`192.0.2.0/24`, `2001:db8::/32`)"));
                    None
                }
            })
            .collect()
    }

    /// A listen address (`0.0.0.0:80`).
    pub fn listen_addr(&mut self, s: &Spanned<String>) -> Option<SocketAddr> {
        match s.value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    s,
                    format!("`{}` is not a listen address", s.value),
                    Some("write IP:PORT, e.g. `0.0.0.0:80`, `127.0.0.1:9090` or `[::]:443`"),
                );
                None
            }
        }
    }

    /// `forms:`: lists of field names (or `name=value`), each list a form
    /// whose fields must all be present.
    pub fn forms(&mut self, forms: &[Spanned<Vec<Spanned<String>>>]) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for form in forms {
            if form.value.is_empty() {
                self.error(
                    form,
                    "a form needs at least one field",
                    Some("e.g. `[login, username, password]` (all present) or `[\"action=woocommerce_checkout\"]`"),
                );
                continue;
            }
            let mut fields = Vec::new();
            for f in &form.value {
                let name = f.value.split('=').next().unwrap_or("");
                if name.is_empty() || name.contains(|ch: char| ch.is_whitespace() || ch == '&') {
                    self.error(
                        f,
                        format!("`{}` is not a form field name", f.value),
                        Some("write the field's name as PHP reads it, or `name=value`"),
                    );
                } else {
                    fields.push(f.value.clone());
                }
            }
            out.push(fields);
        }
        out
    }

    /// Path matchers (`/cart`, `~^/checkout`), each problem at its line.
    pub fn paths(
        &mut self,
        list: &[Spanned<String>],
        hint: &str,
    ) -> Vec<crate::util::pattern::PathMatch> {
        list.iter()
            .filter_map(|s| match crate::util::pattern::PathMatch::parse(&s.value) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.error(s, e, Some(hint));
                    None
                }
            })
            .collect()
    }

    /// HTTP methods (`POST`), each problem at its line.
    pub fn methods(&mut self, list: &[Spanned<String>]) -> Vec<http::Method> {
        list.iter()
            .filter_map(|m| {
                match http::Method::from_bytes(m.value.to_ascii_uppercase().as_bytes()) {
                    Ok(method) => Some(method),
                    Err(_) => {
                        self.error(m, format!("`{}` is not an HTTP method", m.value), None);
                        None
                    }
                }
            })
            .collect()
    }

    /// A header name (`x-forwarded-for`).
    pub fn header_name(&mut self, s: &Spanned<String>) -> Option<http::HeaderName> {
        match http::HeaderName::try_from(s.value.to_ascii_lowercase()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.error(s, format!("`{}` is not a header name", s.value), None);
                None
            }
        }
    }
}
