//! The client-facing TLS configuration: certificate and key from PEM files, HTTP/1.1 by ALPN
//! (DuckDB clients offer nothing else), tuned for clients that handshake on every request.
//!
//! The handshake itself runs inside each connection's task, under a timeout (see `server`), so a
//! slow or silent client never holds up the accept loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerSessionMemoryCache;
use rustls::{CipherSuite, ServerConfig};

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

/// Builds the server configuration; called before anything binds.
///
/// # Errors
/// [`TlsError`] naming the file at fault.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        why: e.to_string(),
    })?;
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
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    // DuckDB 1.5 clients make a new connection per request and never resume, so TLS 1.3
    // tickets (two per handshake by default, each sealed and sent) would be pure cost; clients
    // that keep connections alive do not need them. TLS 1.2 clients can still resume by id.
    config.send_tls13_tickets = 0;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(Arc::new(config))
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
