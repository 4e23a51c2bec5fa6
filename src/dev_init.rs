//! `quackgate dev-init`: everything a local stack needs that is secret or machine-specific,
//! made once: a throw-away CA and a server certificate for localhost, a client token, a JWT
//! signing key with its JWKS, an id secret, a catalog token, and the configs of the gateway
//! and of its DuckLake catalog. The test suite uses the same code for its test CA and keys.
//!
//! Nothing here is for production: the CA key stays next to the certificate it signed.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::auth::hash_token;

/// Why the local files could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevInitError {
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Cert(#[from] rcgen::Error),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The system random source failed.
    #[error("reading the system random source: {0}")]
    Random(String),
}

/// PEM files of a CA and a server certificate it signed.
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// The CA certificate: what clients trust (`SET ca_cert_file`).
    pub ca_cert: PathBuf,
    /// The server certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// What `dev-init` made.
#[derive(Debug, Clone)]
pub struct DevStack {
    /// The gateway config to run with.
    pub config: PathBuf,
    /// The catalog config to run `quackgate catalog` with.
    pub catalog_config: PathBuf,
    /// The client token, in clear (the config holds only its hash).
    pub token: String,
    /// The ES256 key that signs the local stack's JWTs (kid [`DEV_JWT_KID`]).
    pub jwt_key: PathBuf,
    /// TLS files.
    pub tls: DevCerts,
}

/// The kid of the local stack's JWT signing key.
pub const DEV_JWT_KID: &str = "dev-1";
/// The issuer and audience the local stack's gateway requires of JWTs.
pub const DEV_JWT_ISSUER: &str = "quackgate-dev";
/// See [`DEV_JWT_ISSUER`].
pub const DEV_JWT_AUDIENCE: &str = "quackgate";

/// The public JWK of an EC P-256 (ES256) or Ed25519 (EdDSA) key pair; `None` for other kinds.
pub fn public_jwk(pair: &KeyPair, kid: &str) -> Option<serde_json::Value> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let raw = pair.public_key_raw();
    if pair.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 && raw.len() == 65 {
        Some(serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
        }))
    } else if pair.algorithm() == &rcgen::PKCS_ED25519 {
        Some(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(raw),
        }))
    } else {
        None
    }
}

/// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`: a new CA and a certificate for
/// `localhost`, `127.0.0.1`, `::1` and `extra_names`.
///
/// # Errors
/// [`DevInitError`] if generation or writing fails.
pub fn write_tls(dir: &Path, extra_names: &[String]) -> Result<DevCerts, DevInitError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "quackgate local CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;

    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    names.extend(extra_names.iter().cloned());
    let mut leaf_params = CertificateParams::new(names)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "quackgate");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;

    let files = DevCerts {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    write(&files.ca_cert, ca.pem().as_bytes())?;
    write(&files.cert, leaf.pem().as_bytes())?;
    write(&files.key, leaf_key.serialize_pem().as_bytes())?;
    Ok(files)
}

/// Makes (or reuses) the local stack's files in `dir` and writes `dir/quackgate.toml`.
///
/// # Errors
/// [`DevInitError`] if generation or writing fails.
pub fn init(
    dir: &Path,
    extension_dir: &Path,
    listen: &str,
    workers: usize,
) -> Result<DevStack, DevInitError> {
    std::fs::create_dir_all(dir).map_err(|source| DevInitError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let tls = DevCerts {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let tls = if [&tls.ca_cert, &tls.cert, &tls.key]
        .iter()
        .all(|p| p.is_file())
    {
        tls
    } else {
        write_tls(dir, &[])?
    };
    let token = read_or_make(&dir.join("token"))?;
    // A JWT signing key and the JWKS the gateway verifies with; `quackgate token` signs.
    let jwt_key = dir.join("jwt-signing-key.pem");
    let jwks = dir.join("jwks.json");
    if !jwt_key.is_file() || !jwks.is_file() {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let jwk = public_jwk(&pair, DEV_JWT_KID).expect("a P-256 key has a JWK");
        write(&jwt_key, pair.serialize_pem().as_bytes())?;
        write(
            &jwks,
            serde_json::json!({ "keys": [jwk] }).to_string().as_bytes(),
        )?;
    }
    let id_secret = dir.join("id-secret");
    read_or_make(&id_secret)?;
    // The catalog: the lake's metadata in one DuckDB file, served on a loopback port chosen
    // now and written into both configs, behind its own token.
    let catalog_token = read_or_make(&dir.join("catalog-token"))?;
    // The read-only worker's catalog token: the catalog lets its sessions only read.
    let catalog_reader_token = read_or_make(&dir.join("catalog-ro-token"))?;
    let catalog_port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(|source| DevInitError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .port();
    let catalog_config = dir.join("catalog.toml");
    // A folder of its own: the catalog's worker may read its database's folder, and `dir`
    // holds the stack's secrets. A stack made before keeps its lake (the file moves in).
    let catalog_dir = dir.join("catalog");
    let io = |source| DevInitError::Io {
        path: catalog_dir.clone(),
        source,
    };
    if !catalog_dir.is_dir() {
        std::fs::create_dir_all(&catalog_dir).map_err(io)?;
        for name in ["catalog.duckdb", "catalog.duckdb.wal"] {
            if dir.join(name).is_file() {
                std::fs::rename(dir.join(name), catalog_dir.join(name)).map_err(io)?;
            }
        }
    }
    let catalog_text = format!(
        r#"# Written by `quackgate dev-init` for the local stack; safe to delete.
[gateway]
node_id = "catalog"
plain_listen = "127.0.0.1:{catalog_port}"
admin_listen = "127.0.0.1:0"
shutdown_grace_secs = 10

[[auth.static_tokens]]
name = "workers"
sha256 = "{catalog_hash}"

[[auth.static_tokens]]
name = "read-only-workers"
sha256 = "{catalog_reader_hash}"
role = "read_only"

[workers]
extension_dir = "{ext}"

[catalog]
file = "{catalog_file}"
"#,
        catalog_hash = hash_token(&catalog_token),
        catalog_reader_hash = hash_token(&catalog_reader_token),
        ext = extension_dir.display(),
        catalog_file = catalog_dir.join("catalog.duckdb").display(),
    );
    write(&catalog_config, catalog_text.as_bytes())?;

    let config = dir.join("quackgate.toml");
    let text = format!(
        r#"# Written by `quackgate dev-init` for the local stack; safe to delete.
[gateway]
listen = "{listen}"
admin_listen = "127.0.0.1:0"
id_secret_file = "{id_secret}"

[tls]
cert = "{cert}"
key = "{key}"

[[auth.static_tokens]]
name = "local"
sha256 = "{hash}"

# JWTs signed with jwt-signing-key.pem: `quackgate token --config <this file> --key ...`.
[auth.jwt]
jwks_file = "{jwks}"
issuer = "{DEV_JWT_ISSUER}"
audience = "{DEV_JWT_AUDIENCE}"

[workers]
count = {workers}
# Serves read-only tokens, with the lake opened READ_ONLY.
read_only_count = 1
extension_dir = "{ext}"

[workers.ducklake]
catalog = "127.0.0.1:{catalog_port}"
catalog_token_file = "{catalog_token_file}"
read_only_catalog_token_file = "{catalog_reader_token_file}"
data_path = "{data}"
"#,
        id_secret = id_secret.display(),
        cert = tls.cert.display(),
        key = tls.key.display(),
        hash = hash_token(&token),
        jwks = jwks.display(),
        ext = extension_dir.display(),
        catalog_token_file = dir.join("catalog-token").display(),
        catalog_reader_token_file = dir.join("catalog-ro-token").display(),
        data = dir.join("lake").display(),
    );
    write(&config, text.as_bytes())?;
    Ok(DevStack {
        config,
        catalog_config,
        token,
        jwt_key,
        tls,
    })
}

/// A random 32-byte secret as hex, stored in `path` on first use.
fn read_or_make(path: &Path) -> Result<String, DevInitError> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            return Ok(existing.to_string());
        }
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| DevInitError::Random(e.to_string()))?;
    let value = hex::encode(bytes);
    write(path, value.as_bytes())?;
    Ok(value)
}

/// Writes a file readable by its owner only: most of these are keys and tokens.
fn write(path: &Path, bytes: &[u8]) -> Result<(), DevInitError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| DevInitError::Io {
            path: path.to_path_buf(),
            source,
        })
}
