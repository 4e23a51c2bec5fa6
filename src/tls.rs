//! TLS: the client-facing server configuration, and the one client configuration for
//! quackgate's own outgoing connections (a JWKS URL, peer nodes). The server side: certificate
//! and key from PEM files, HTTP/1.1 by ALPN (DuckDB clients offer nothing else), tuned for
//! clients that handshake on every request.
//!
//! The handshake itself runs inside each connection's task, under a timeout (see `server`), so a
//! slow or silent client never holds up the accept loop.
//!
//! The certificate and key are re-read when their files change (checked every
//! [`RELOAD_INTERVAL`]; a mounted Key Vault secret or cert-manager Secret is swapped in place),
//! with no restart: new handshakes get the new certificate, open connections keep theirs. A
//! pair that does not load (half-written, or a key that does not match) keeps the old one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ServerConfig};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Session-cache entries kept for TLS 1.2 session-id resumption.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// Where the TLS material is.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no certificate.
    #[error("tls.cert {path}: {why}")]
    Cert { path: PathBuf, why: String },
    /// The key file is unreadable or holds no private key.
    #[error("tls.key {path}: {why}")]
    Key { path: PathBuf, why: String },
    /// rustls refused the pair (for example, the key does not match the certificate).
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How often the certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Builds the server configuration and the store of its certificate; called before anything
/// binds.
///
/// # Errors
/// [`TlsError`] naming the file at fault.
pub fn server_config(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Arc<CertStore>), TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM with SHA-256 first: the cheapest suite in software, where a profile of a
    // handshake per request found SHA-384 (AES-256's hash) costing 4.5% of the gateway's time.
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
            CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
            _ => 3,
        });
    let provider = Arc::new(provider);
    let store = Arc::new(CertStore::load(files.clone(), provider.clone())?);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    // DuckDB 1.5 clients make a new connection per request and never resume, so TLS 1.3
    // tickets (two per handshake by default, each sealed and sent) would be pure cost; clients
    // that keep connections alive do not need them. TLS 1.2 clients can still resume by id.
    config.send_tls13_tickets = 0;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok((Arc::new(config), store))
}

/// The certificate in force, and the files it came from.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// When the files were last changed, as of the last load or attempt.
    stamp: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl CertStore {
    fn load(files: TlsFiles, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let stamp = stamp(&files);
        let key = certified_key(&files, &provider)?;
        Ok(CertStore {
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
            stamp: Mutex::new(stamp),
        })
    }

    /// Loads the files again if they changed. Returns whether a new certificate is in force.
    pub fn reload(&self) -> bool {
        let now = stamp(&self.files);
        let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if now.is_none() || *last == now {
            return false;
        }
        match certified_key(&self.files, &self.provider) {
            Ok(key) => {
                // Recorded only once loaded: a pair caught half-written is tried again.
                *last = now;
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                warn!(error = %e, "the changed TLS files do not load; keeping the certificate in force");
                false
            }
        }
    }

    /// Reloads on change every [`RELOAD_INTERVAL`] until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        // Two small local files, read only when their times change.
        crate::shutdown::every(RELOAD_INTERVAL, stop, || {
            self.reload();
        })
        .await;
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The modification times of the certificate and key (through symlinks, as secret volumes
/// swap them).
fn stamp(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((modified(&files.cert)?, modified(&files.key)?))
}

fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        why: e.to_string(),
    })?;
    Ok(CertifiedKey::from_der(certs, key, provider)?)
}

/// A TLS client configuration for quackgate's own outgoing connections (a JWKS URL, peer
/// nodes): certificates must chain to the PEM CA certificates in `ca_file`, or to the public
/// web roots without one.
///
/// # Errors
/// When `ca_file` cannot be read or holds no usable certificate, naming it.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{} holds no PEM certificate", path.display()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |why: String| TlsError::Cert {
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served_cert(store: &CertStore) -> Vec<u8> {
        store.current.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn a_changed_certificate_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let first = crate::dev_init::write_tls(dir.path(), &[]).unwrap();
        let files = TlsFiles {
            cert: first.cert.clone(),
            key: first.key.clone(),
        };
        let (_, store) = server_config(&files).unwrap();
        let before = served_cert(&store);
        assert!(!store.reload(), "nothing changed");

        // Rotation: a new pair written in place.
        crate::dev_init::write_tls(dir.path(), &[]).unwrap();
        assert!(store.reload());
        let rotated = served_cert(&store);
        assert_ne!(rotated, before);

        // A key that does not match the certificate: the rotated pair stays in force.
        let other = tempfile::tempdir().unwrap();
        let stranger = crate::dev_init::write_tls(other.path(), &[]).unwrap();
        std::fs::copy(&stranger.key, &first.key).unwrap();
        assert!(!store.reload());
        assert_eq!(served_cert(&store), rotated);
    }
}
