//! HTTPS: certificates picked by SNI from a folder, and development
//! certificates for `rempart cert --dev`.
//!
//! The folder holds `NAME.crt` + `NAME.key` pairs (PEM), or certbot-style
//! sub-folders with `fullchain.pem` + `privkey.pem`. Each certificate serves
//! the DNS names in its subject-alternative-name extension (wildcards
//! included); the first certificate, by file name, serves clients that send
//! no or an unknown server name. The table is swapped on reload.

use crate::policy::server::{overlaps, ServerSection};
use crate::policy::units::Dur;
use crate::policy::{Compiler, Diagnostic, Section};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `tls` block.
pub struct TlsSection;

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub listen: Vec<SocketAddr>,
    pub certs_dir: PathBuf,
    /// The certificates of `certs_dir`, loaded with the policy so that `check`
    /// and reloads refuse a folder that would not serve.
    pub certs: Option<Arc<CertTable>>,
    pub redirect_http: bool,
    pub http2: bool,
    /// The ready-made `strict-transport-security` value, when HSTS is on.
    pub hsts: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsBlock {
    pub listen: Vec<Spanned<String>>,
    pub certs_dir: Option<Spanned<String>>,
    pub redirect_http: bool,
    pub http2: Option<bool>,
    pub hsts: Option<HstsBlock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HstsBlock {
    pub max_age: Dur,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

impl Section for TlsSection {
    const KEY: &'static str = "tls";
    type Raw = TlsBlock;
    type Compiled = TlsSettings;

    fn compile(raw: Option<TlsBlock>, c: &mut Compiler<'_>) -> Option<TlsSettings> {
        let t = raw?;
        let base = c.base();
        let listen: Vec<SocketAddr> = t.listen.iter().filter_map(|s| c.listen_addr(s)).collect();
        let certs_dir = t
            .certs_dir
            .as_ref()
            .map_or_else(|| base.join("../certs"), |s| base.join(&s.value));
        let certs = if listen.is_empty() {
            None
        } else {
            match CertTable::load(&certs_dir) {
                Ok(table) => Some(Arc::new(table)),
                Err(e) => {
                    let at = t.certs_dir.as_ref().map(|s| c.pos(s)).unwrap_or_default();
                    let d = Diagnostic::new(&c.file, at, format!("warning: the HTTPS listeners cannot start: {e}"))
                        .with_hint("`certs_dir` is relative to the policy file; `rempart cert --dev DOMAIN --dir FOLDER` creates a development certificate");
                    c.warning(d);
                    None
                }
            }
        };
        let hsts = t.hsts.map(|h| {
            let mut v = format!("max-age={}", h.max_age.0.as_secs());
            if h.include_subdomains {
                v.push_str("; includeSubDomains");
            }
            if h.preload {
                v.push_str("; preload");
            }
            v
        });
        if t.redirect_http && listen.is_empty() {
            c.at(
                t.certs_dir.as_ref(),
                "`tls.redirect_http` is on but `tls.listen` is empty",
                Some("add an HTTPS listener, or the redirect would send clients nowhere"),
            );
        }
        if let Some(server) = c.get::<ServerSection>().cloned() {
            for a in &listen {
                if server.listen.iter().any(|l| overlaps(l, a)) || overlaps(a, &server.admin_listen)
                {
                    c.at::<()>(
                        None,
                        format!("address {a} is used by two listeners"),
                        Some("give HTTP, HTTPS and admin listeners a port each"),
                    );
                }
            }
        }
        Some(TlsSettings {
            listen,
            certs_dir,
            certs,
            redirect_http: t.redirect_http,
            http2: t.http2.unwrap_or(true),
            hsts,
        })
    }
}

/// Problems loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate folder {0}: {1}")]
    Folder(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    File(PathBuf, String),
    #[error(
        "no certificate found in {0}; `rempart cert --dev DOMAIN` creates one for development"
    )]
    Empty(PathBuf),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("cannot create a certificate: {0}")]
    Generate(String),
}

/// Certificates by the names they serve.
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    names: Vec<String>,
}

impl CertTable {
    /// Loads every certificate pair in `dir`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let mut pairs = find_pairs(dir)?;
        pairs.sort();
        let mut table = CertTable::default();
        for (cert_path, key_path) in pairs {
            let (key, names) = load_pair(&cert_path, &key_path)?;
            let key = Arc::new(key);
            for name in names {
                let name = name.to_ascii_lowercase();
                table.names.push(name.clone());
                match name.strip_prefix("*.") {
                    Some(suffix) => table.wildcard.entry(suffix.to_string()),
                    None => table.exact.entry(name),
                }
                .or_insert_with(|| key.clone());
            }
            table.default.get_or_insert(key);
        }
        if table.default.is_none() {
            return Err(TlsError::Empty(dir.to_path_buf()));
        }
        Ok(table)
    }

    /// The DNS names served, for the start-up log.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        let parent = name.split_once('.').map(|(_, rest)| rest);
        parent
            .and_then(|p| self.wildcard.get(p).cloned())
            .or_else(|| self.default.clone())
    }
}

/// The rustls hook that picks a certificate for each handshake.
#[derive(Debug)]
pub struct SniResolver {
    table: ArcSwap<CertTable>,
}

impl SniResolver {
    pub fn new(table: Arc<CertTable>) -> Self {
        SniResolver {
            table: ArcSwap::new(table),
        }
    }

    /// Replaces the certificates; handshakes in progress keep the old ones.
    pub fn replace(&self, table: Arc<CertTable>) {
        self.table.store(table);
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table.load().pick(hello.server_name())
    }
}

/// `(certificate, key)` paths in a certificate folder.
fn find_pairs(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, TlsError> {
    let entries = std::fs::read_dir(dir).map_err(|e| TlsError::Folder(dir.to_path_buf(), e))?;
    let mut pairs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            let (chain, key) = (path.join("fullchain.pem"), path.join("privkey.pem"));
            if chain.is_file() && key.is_file() {
                pairs.push((chain, key));
            }
        } else if path.extension().is_some_and(|e| e == "crt") {
            let key = path.with_extension("key");
            if key.is_file() {
                pairs.push((path, key));
            }
        }
    }
    Ok(pairs)
}

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<(CertifiedKey, Vec<String>), TlsError> {
    let bad = |p: &Path, why: String| TlsError::File(p.to_path_buf(), why);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| bad(cert_path, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert_path, e.to_string()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| bad(cert_path, "no certificate in file".into()))?;
    let names: Vec<String> = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| bad(cert_path, format!("unreadable certificate: {e}")))?
        .valid_dns_names()
        .map(str::to_string)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| bad(key_path, e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| bad(key_path, format!("unsupported key: {e}")))?;
    Ok((CertifiedKey::new(chain, signing), names))
}

/// Writes a self-signed certificate for `domains` into `dir` as
/// `<first domain>.crt` and `.key`. For development only: browsers warn.
pub fn write_dev_cert(dir: &Path, domains: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let first = domains
        .first()
        .ok_or_else(|| TlsError::Generate("name at least one domain".into()))?;
    let generated = rcgen::generate_simple_self_signed(domains.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| TlsError::Write(dir.to_path_buf(), e))?;
    let stem = first.replace('*', "_wildcard");
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, generated.cert.pem())
        .map_err(|e| TlsError::Write(cert_path.clone(), e))?;
    std::fs::write(&key_path, generated.key_pair.serialize_pem())
        .map_err(|e| TlsError::Write(key_path.clone(), e))?;
    restrict_permissions(&key_path);
    Ok((cert_path, key_path))
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_by_exact_name_then_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_cert(dir.path(), &["a.test".into()]).unwrap();
        write_dev_cert(dir.path(), &["*.b.test".into(), "b.test".into()]).unwrap();
        let table = CertTable::load(dir.path()).unwrap();
        let a = table.pick(Some("a.test")).unwrap();
        let b = table.pick(Some("shop.b.test")).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&b, &table.pick(Some("B.TEST")).unwrap()));
        assert!(table.pick(Some("unknown.test")).is_some());
        assert!(table.pick(None).is_some());
    }

    #[test]
    fn empty_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            CertTable::load(dir.path()),
            Err(TlsError::Empty(_))
        ));
    }
}
