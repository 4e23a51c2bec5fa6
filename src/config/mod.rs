//! Configuration: a TOML file, overridden by `QUACKGATE__SECTION__KEY` environment variables,
//! validated as a whole before anything binds.
//!
//! `FileConfig` is the serde shape of the file (unknown keys are errors, so a typo never goes
//! unnoticed); [`Config`] is what the program uses: typed, defaults filled in, files read.
//! Every problem is collected and reported at once, each message naming its key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use quackgate_duckdb::AzureCredentials;

use crate::auth::jwt::{JwtConfig, KeySet};
use crate::auth::{Access, WorkerToken};
use crate::forwarded::{self, TrustedProxies};
use crate::routable_id::{MAX_NODE_ID_LEN, SECRET_BYTES};

mod auth;

use auth::{FileAuth, FileLimits};
pub use auth::{
    LimitsConfig, StaticToken, DEFAULT_JWKS_REFRESH_SECS, DEFAULT_JWKS_STALE_SECS,
    DEFAULT_JWT_LEEWAY_SECS, MAX_JWT_LEEWAY_SECS,
};

/// Prefix of environment variables that override config keys: `QUACKGATE__WORKERS__COUNT=4`.
pub const ENV_PREFIX: &str = "QUACKGATE__";
/// Default node id.
pub const DEFAULT_NODE_ID: &str = "n0";
/// Default number of embedded DuckDB workers.
pub const DEFAULT_WORKER_COUNT: usize = 2;
/// Most workers one node may run.
pub const MAX_WORKER_COUNT: usize = 256;
/// DuckDB chunks per Quack answer when `workers.fetch_batch_chunks` is unset. Quack's own
/// default is 12; a 10M-row result through the gateway took 0.35 s instead of 0.70 over TLS
/// with 48 (bench/RESULTS.md), at up to 4x the memory per answer.
pub const DEFAULT_FETCH_BATCH_CHUNKS: u64 = 48;
/// Upper bound on `workers.fetch_batch_chunks`: 1,024 chunks is 2M rows in one answer.
pub const MAX_FETCH_BATCH_CHUNKS: u64 = 1024;
/// Default cap on concurrently open client TCP connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on a request body: the Quack docs' proxy recipes allow 256 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;
/// Default time a client gets to finish its TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Default time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// Default time a worker gets from spawn to serving.
pub const DEFAULT_WORKER_STARTUP_TIMEOUT_SECS: u64 = 60;
/// Default period of worker health probes.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 1_000;
/// Default time after which an unused session stops counting towards its worker's load.
pub const DEFAULT_SESSION_IDLE_SECS: u64 = 6 * 60 * 60;
/// Default tracing filter.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key has the wrong type or is unknown.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the key path.
        message: String,
    },
    /// Values parsed but cannot work; one line per problem.
    #[error("invalid config:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    gateway: FileGateway,
    tls: Option<FileTls>,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    workers: FileWorkers,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    log: FileLog,
    catalog: Option<FileCatalog>,
    cluster: Option<FileCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    peer_listen: String,
    #[serde(default)]
    peers: BTreeMap<String, String>,
    peers_file: Option<PathBuf>,
    peers_dns: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCatalog {
    file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDuckLake {
    catalog: String,
    catalog_token_file: PathBuf,
    read_only_catalog_token_file: Option<PathBuf>,
    data_path: String,
    catalog_ca_file: Option<PathBuf>,
    azure: Option<FileAzure>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAzure {
    connection_string_file: Option<PathBuf>,
    read_only_connection_string_file: Option<PathBuf>,
    account_name: Option<String>,
    credential_chain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGateway {
    node_id: Option<String>,
    listen: Option<String>,
    plain_listen: Option<String>,
    admin_listen: Option<String>,
    id_secret_file: Option<PathBuf>,
    max_connections: Option<usize>,
    max_body_bytes: Option<u64>,
    tls_handshake_timeout_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    session_idle_secs: Option<u64>,
    threads: Option<usize>,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWorkers {
    count: Option<usize>,
    read_only_count: Option<usize>,
    extension_dir: Option<PathBuf>,
    database_dir: Option<PathBuf>,
    threads: Option<u32>,
    memory_limit: Option<String>,
    init_sql: Option<Vec<String>>,
    fetch_batch_chunks: Option<u64>,
    external_access: Option<bool>,
    token_file: Option<PathBuf>,
    ducklake: Option<FileDuckLake>,
    startup_timeout_secs: Option<u64>,
    health_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    filter: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id; it is part of every connection id the node mints. Default `n0`.
    pub node_id: String,
    /// HTTPS listener for clients, with [`Config::tls`]. Default none.
    pub listen: Option<SocketAddr>,
    /// Plain-HTTP listener for clients; loopback addresses only. Default none.
    pub plain_listen: Option<SocketAddr>,
    /// Listener for `/healthz` and `/readyz`. Default `127.0.0.1:9464`.
    pub admin_listen: SocketAddr,
    /// Certificate chain and key for [`Config::listen`].
    pub tls: Option<TlsFiles>,
    /// Secret that signs connection ids. Shared by replicas of one cluster; a random one is
    /// made at start when `gateway.id_secret_file` is unset.
    pub id_secret: Option<IdSecret>,
    /// Cap on concurrently open client TCP connections; more wait in the accept queue.
    pub max_connections: usize,
    /// Cap on one request body. Default 256 MiB.
    pub max_body_bytes: u64,
    /// Time a client gets to finish its TLS handshake. Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// Time in-flight requests get to finish after SIGTERM. Default 30 s.
    pub shutdown_grace: Duration,
    /// Time after which an unused session stops counting towards its worker's load. Default 6 h.
    pub session_idle: Duration,
    /// Threads of the gateway's async runtime. Default `None`: half the cores, at least one.
    pub threads: Option<usize>,
    /// Proxies whose `X-Forwarded-For` names the client address. Default none.
    pub trusted_proxies: TrustedProxies,
    /// SHA-256 digests of the accepted static tokens.
    pub static_tokens: Vec<StaticToken>,
    /// `[auth.jwt]`: JWTs accepted as tokens, with the keys already loaded once.
    pub jwt: Option<(JwtConfig, Arc<KeySet>)>,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// The embedded workers.
    pub workers: WorkersConfig,
    /// Tracing filter (`RUST_LOG` syntax); `RUST_LOG` itself wins when set.
    pub log_filter: String,
    /// `[catalog] file`: the DuckDB file `quackgate catalog` serves.
    pub catalog_file: Option<PathBuf>,
    /// Which role this process plays.
    pub role: Role,
    /// Other gateway nodes this one forwards to. Default `None`: a single node.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: the peer listener and where the other nodes are.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where other nodes send requests for this node's sessions. Private network only.
    pub peer_listen: SocketAddr,
    /// Node id to `host:port` of its peer listener; names are re-resolved on every reload.
    pub peers: BTreeMap<String, String>,
    /// A TOML file of `node = "host:port"` lines, re-read every 2 s.
    pub peers_file: Option<PathBuf>,
    /// `host:port` whose addresses are the peers (a headless Service), resolved every 2 s.
    pub peers_dns: Option<String>,
}

/// What a quackgate process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `quackgate serve`: the gateway for clients.
    Gateway,
    /// `quackgate catalog`: the DuckLake catalog for workers. Its clients are workers whose
    /// catalog sessions last as long as they run, so a drain does not wait for them.
    Catalog,
}

/// Where the TLS material is.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Where the workers' DuckLake lives (`[workers.ducklake]`).
#[derive(Debug, Clone)]
pub struct DuckLakeConfig {
    /// `host:port` of `quackgate catalog`; a loopback host is reached over plain HTTP, any
    /// other over HTTPS.
    pub catalog: String,
    /// The catalog's internal token.
    pub catalog_token: WorkerToken,
    /// The catalog token of read-only workers: a read-only token of the catalog, whose
    /// sessions the catalog lets only read.
    pub read_only_catalog_token: Option<WorkerToken>,
    /// Where Parquet files go: a local folder (made if missing) or `az://container/prefix/`.
    pub data_path: String,
    /// CA certificate to trust for an HTTPS catalog.
    pub catalog_ca_file: Option<PathBuf>,
    /// Credentials for an `az://` data path.
    pub azure: Option<AzureCredentials>,
    /// Read-only workers' credentials for an `az://` data path (a SAS that can only read and
    /// list): with the others, client SQL on them could write the lake's files.
    pub read_only_azure: Option<AzureCredentials>,
}

/// The connection-id signing secret. `Debug` never shows it.
#[derive(Clone)]
pub struct IdSecret(pub [u8; SECRET_BYTES]);

impl fmt::Debug for IdSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdSecret(<redacted>)")
    }
}

/// How the embedded DuckDB workers run.
#[derive(Debug, Clone)]
pub struct WorkersConfig {
    /// Number of read-write worker processes. Default 2.
    pub count: usize,
    /// Number of read-only worker processes, which serve read-only principals and open the
    /// lake READ_ONLY. Default 0. Needs `[workers.ducklake]`.
    pub read_only_count: usize,
    /// Folder laid out as `<dir>/v1.5.5/linux_amd64/<name>.duckdb_extension`.
    pub extension_dir: PathBuf,
    /// Folder for one database file per worker (`w<N>.duckdb`); `None` runs them in memory.
    pub database_dir: Option<PathBuf>,
    /// DuckDB `threads` per worker; `None` is DuckDB's default.
    pub threads: Option<u32>,
    /// DuckDB `memory_limit` per worker, e.g. `2GB`; `None` is DuckDB's default.
    pub memory_limit: Option<String>,
    /// Statements each worker runs before serving (ATTACH, USE, SET ...).
    pub init_sql: Vec<String>,
    /// DuckDB chunks (2,048 rows each) per PREPARE or FETCH answer. Default 48, against
    /// Quack's 12: DuckDB 1.5 clients open a connection per FETCH.
    pub fetch_batch_chunks: u64,
    /// Whether client SQL may read and write files and URLs as the gateway's OS user and
    /// change DuckDB settings. Default false: workers lock this down once they serve.
    pub external_access: bool,
    /// A fixed internal worker token, for benchmarks and debugging that talk to a worker
    /// directly. Default `None`: a random token made at every start.
    pub token: Option<WorkerToken>,
    /// The lake every worker opens as its default database. Default `None`: plain DuckDB.
    pub ducklake: Option<DuckLakeConfig>,
    /// The one database file of the catalog role's worker.
    pub database_file: Option<PathBuf>,
    /// Time a worker gets from spawn to serving. Default 60 s.
    pub startup_timeout: Duration,
    /// Period of health probes. Default 1 s.
    pub health_interval: Duration,
}

impl Config {
    /// Reads `path`, applies `QUACKGATE__*` overrides from `env`, and validates the result.
    /// Reads the files the config names (TLS material is parsed later, by `tls`); binds nothing.
    ///
    /// # Errors
    /// Every problem found, each naming its key.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path, env)
    }

    /// Like [`Config::load`] with the file's text given. Relative paths in the config are
    /// relative to `path`'s folder.
    ///
    /// # Errors
    /// Every problem found, each naming its key.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut value: toml::Table =
            toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        apply_env_overrides(&mut value, env).map_err(parse_error)?;
        let file: FileConfig = serde_path_to_error::deserialize(toml::Value::Table(value))
            .map_err(|e| parse_error(format!("{}: {}", e.path(), e.inner())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        validate(file, base)
    }
}

impl Config {
    /// The config of the catalog role: one worker that serves `[catalog] file`.
    ///
    /// # Errors
    /// When `[catalog] file` is missing or the config also asks for a lake.
    pub fn into_catalog_role(mut self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        match self.catalog_file.clone() {
            Some(file) => self.workers.database_file = Some(file),
            None => problems.push("catalog.file: required by `quackgate catalog`".to_string()),
        }
        if self.workers.ducklake.is_some() {
            problems.push(
                "workers.ducklake: the catalog serves the lake's metadata and cannot attach a lake itself"
                    .to_string(),
            );
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        // One process owns the file; DuckDB's file lock refuses a second opener.
        self.workers.count = 1;
        self.workers.read_only_count = 0;
        self.role = Role::Catalog;
        Ok(self)
    }
}

/// Sets `QUACKGATE__A__B=value` as key `a.b`. A value that parses as TOML (a number, a boolean,
/// an array) takes that type; anything else is a string.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), String> {
    let mut overrides: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in env {
        if let Some(path) = key.strip_prefix(ENV_PREFIX) {
            overrides.insert(path.to_ascii_lowercase(), value);
        }
    }
    for (path, raw) in overrides {
        let keys: Vec<&str> = path.split("__").collect();
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        let (last, parents) = keys.split_last().ok_or("empty override")?;
        let mut node = &mut *table;
        for key in parents {
            node = node
                .entry(key.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| {
                    format!("{ENV_PREFIX}{}: {key} is not a table", path.to_uppercase())
                })?;
        }
        node.insert(last.to_string(), value);
    }
    Ok(())
}

/// An Azure storage connection string from a file.
fn read_connection_string(
    problems: &mut Vec<String>,
    key: &str,
    path: &Path,
) -> Option<AzureCredentials> {
    match std::fs::read_to_string(path) {
        Ok(cs) if !cs.trim().is_empty() => {
            Some(AzureCredentials::ConnectionString(cs.trim().to_string()))
        }
        Ok(_) => {
            problems.push(format!("{key}: {} is empty", path.display()));
            None
        }
        Err(e) => {
            problems.push(format!("{key}: reading {}: {e}", path.display()));
            None
        }
    }
}

/// Records a problem when a value that must be positive is 0.
fn positive(problems: &mut Vec<String>, key: &str, v: u64) {
    if v == 0 {
        problems.push(format!("{key}: must be > 0, got 0"));
    }
}

/// A token of at least 4 characters (DuckDB's minimum) from a file.
fn read_token(problems: &mut Vec<String>, key: &str, path: &Path) -> Option<WorkerToken> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().len() >= 4 => Some(WorkerToken::fixed(text.trim().to_string())),
        Ok(_) => {
            problems.push(format!(
                "{key}: {} must hold a token of at least 4 characters (DuckDB's minimum)",
                path.display()
            ));
            None
        }
        Err(e) => {
            problems.push(format!("{key}: reading {}: {e}", path.display()));
            None
        }
    }
}

fn validate(file: FileConfig, base: &Path) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

    let gateway = file.gateway;
    let node_id = gateway.node_id.unwrap_or_else(|| DEFAULT_NODE_ID.into());
    if node_id.is_empty()
        || node_id.len() > MAX_NODE_ID_LEN
        || !node_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        problems.push(format!(
            "gateway.node_id: must be 1-{MAX_NODE_ID_LEN} characters of a-z, 0-9 and '-', got {node_id:?}"
        ));
    }
    let mut addr = |key: &str, value: Option<String>| -> Option<SocketAddr> {
        let value = value?;
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!(
                    "{key}: must be an IP address and port such as 127.0.0.1:8443, got {value:?}"
                ));
                None
            }
        }
    };
    let listen = addr("gateway.listen", gateway.listen);
    let plain_listen = addr("gateway.plain_listen", gateway.plain_listen);
    let admin_listen = addr(
        "gateway.admin_listen",
        Some(
            gateway
                .admin_listen
                .unwrap_or_else(|| "127.0.0.1:9464".into()),
        ),
    );
    if let Some(plain) = plain_listen {
        if !plain.ip().is_loopback() {
            problems.push(format!(
                "gateway.plain_listen: plain HTTP carries tokens in clear and is for loopback only, got {plain}"
            ));
        }
    }
    let trusted_proxies = TrustedProxies::new(
        gateway
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .filter_map(|entry| {
                forwarded::parse_net(entry)
                    .map_err(|why| problems.push(format!("gateway.trusted_proxies: {why}")))
                    .ok()
            })
            .collect(),
    );
    if listen.is_none() && plain_listen.is_none() {
        problems
            .push("gateway.listen: set it (HTTPS) or gateway.plain_listen (loopback HTTP)".into());
    }
    let tls = file.tls.map(|t| TlsFiles {
        cert: resolve(t.cert),
        key: resolve(t.key),
    });
    match (&listen, &tls) {
        (Some(_), None) => {
            problems.push("tls: gateway.listen serves HTTPS and needs [tls] cert and key".into())
        }
        (_, Some(t)) => {
            for (key, path) in [("tls.cert", &t.cert), ("tls.key", &t.key)] {
                if !path.is_file() {
                    problems.push(format!("{key}: no such file {}", path.display()));
                }
            }
        }
        _ => {}
    }
    let id_secret = gateway.id_secret_file.map(resolve).and_then(|path| {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let hex_text = String::from_utf8_lossy(&bytes);
                let mut secret = [0u8; SECRET_BYTES];
                match hex::decode_to_slice(hex_text.trim(), &mut secret) {
                    Ok(()) => Some(IdSecret(secret)),
                    Err(_) => {
                        problems.push(format!(
                            "gateway.id_secret_file: {} must hold {} hex characters (e.g. `openssl rand -hex {SECRET_BYTES}`)",
                            path.display(),
                            SECRET_BYTES * 2
                        ));
                        None
                    }
                }
            }
            Err(e) => {
                problems.push(format!("gateway.id_secret_file: reading {}: {e}", path.display()));
                None
            }
        }
    });
    let max_connections = gateway.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    positive(
        &mut problems,
        "gateway.max_connections",
        max_connections as u64,
    );
    let max_body_bytes = gateway.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    positive(&mut problems, "gateway.max_body_bytes", max_body_bytes);
    let tls_handshake_timeout_secs = gateway
        .tls_handshake_timeout_secs
        .unwrap_or(DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS);
    positive(
        &mut problems,
        "gateway.tls_handshake_timeout_secs",
        tls_handshake_timeout_secs,
    );
    let session_idle_secs = gateway
        .session_idle_secs
        .unwrap_or(DEFAULT_SESSION_IDLE_SECS);
    positive(
        &mut problems,
        "gateway.session_idle_secs",
        session_idle_secs,
    );
    if let Some(threads) = gateway.threads {
        positive(&mut problems, "gateway.threads", threads as u64);
    }

    let auth::AuthSection {
        static_tokens,
        jwt,
        limits,
    } = auth::validate(file.auth, file.limits, &resolve, &mut problems);
    let w = file.workers;
    let count = w.count.unwrap_or(DEFAULT_WORKER_COUNT);
    if count == 0 || count > MAX_WORKER_COUNT {
        problems.push(format!(
            "workers.count: must be 1-{MAX_WORKER_COUNT}, got {count}"
        ));
    }
    let extension_dir = match w.extension_dir.map(resolve) {
        Some(dir) => {
            for name in quackgate_duckdb::EXTENSIONS_REQUIRED {
                let file = quackgate_duckdb::extension_path(&dir, name);
                if !file.is_file() {
                    problems.push(format!(
                        "workers.extension_dir: missing {}; run scripts/fetch-duckdb, or unzip the duckdb-extension-{name}==1.5.5 wheel from PyPI and copy its {name}.duckdb_extension there",
                        file.display()
                    ));
                }
            }
            dir
        }
        None => {
            problems.push(
                "workers.extension_dir: required (the folder scripts/fetch-duckdb prints as ext/)"
                    .into(),
            );
            PathBuf::new()
        }
    };
    if let Some(threads) = w.threads {
        positive(&mut problems, "workers.threads", u64::from(threads));
    }
    let fetch_batch_chunks = w.fetch_batch_chunks.unwrap_or(DEFAULT_FETCH_BATCH_CHUNKS);
    if !(1..=MAX_FETCH_BATCH_CHUNKS).contains(&fetch_batch_chunks) {
        problems.push(format!(
            "workers.fetch_batch_chunks: must be 1-{MAX_FETCH_BATCH_CHUNKS}, got {fetch_batch_chunks}"
        ));
    }
    let token = w
        .token_file
        .and_then(|path| read_token(&mut problems, "workers.token_file", &resolve(path)));
    let ducklake = w.ducklake.and_then(|lake| {
        let token = read_token(
            &mut problems,
            "workers.ducklake.catalog_token_file",
            &resolve(lake.catalog_token_file),
        )?;
        let read_only_catalog_token = lake.read_only_catalog_token_file.and_then(|path| {
            read_token(
                &mut problems,
                "workers.ducklake.read_only_catalog_token_file",
                &resolve(path),
            )
        });
        if lake.catalog.parse::<SocketAddr>().is_err() && !lake.catalog.contains(':') {
            problems.push(format!(
                "workers.ducklake.catalog: must be host:port of `quackgate catalog`, got {:?}",
                lake.catalog
            ));
        }
        let data_path = if lake.data_path.contains("://") {
            lake.data_path
        } else {
            let mut local = resolve(PathBuf::from(&lake.data_path)).display().to_string();
            if !local.ends_with('/') {
                local.push('/');
            }
            local
        };
        let on_azure = data_path.starts_with("az://") || data_path.starts_with("azure://");
        let mut read_only_azure = None;
        let azure = match lake.azure {
            None => {
                if on_azure {
                    problems.push(format!(
                        "workers.ducklake.azure: data_path {data_path:?} is on Azure Blob storage and needs [workers.ducklake.azure] credentials"
                    ));
                }
                None
            }
            Some(mut azure) => {
                read_only_azure = azure.read_only_connection_string_file.take().and_then(|file| {
                    read_connection_string(
                        &mut problems,
                        "workers.ducklake.azure.read_only_connection_string_file",
                        &resolve(file),
                    )
                });
                if !on_azure {
                    problems.push(format!(
                        "workers.ducklake.azure: set, but data_path {data_path:?} is not an az:// path"
                    ));
                }
                match (azure.connection_string_file, azure.account_name, azure.credential_chain) {
                    (Some(file), None, None) => read_connection_string(
                        &mut problems,
                        "workers.ducklake.azure.connection_string_file",
                        &resolve(file),
                    ),
                    (None, Some(account_name), chain) => Some(AzureCredentials::CredentialChain {
                        account_name,
                        chain: chain.unwrap_or_else(|| "managed_identity".into()),
                    }),
                    _ => {
                        problems.push(
                            "workers.ducklake.azure: set either connection_string_file, or account_name (with an optional credential_chain)".into(),
                        );
                        None
                    }
                }
            }
        };
        Some(DuckLakeConfig {
            catalog: lake.catalog,
            catalog_token: token,
            read_only_catalog_token,
            data_path,
            catalog_ca_file: lake.catalog_ca_file.map(resolve),
            azure,
            read_only_azure,
        })
    });
    if ducklake.is_some() && w.database_dir.is_some() {
        problems.push(
            "workers.database_dir: not used with [workers.ducklake], whose lake is every worker's database; remove one".into(),
        );
    }
    if let Some(lake) = &ducklake {
        let needed: &[&str] = if lake.azure.is_some() {
            &["parquet", "ducklake", "azure"]
        } else {
            &["parquet", "ducklake"]
        };
        for name in needed {
            let file = quackgate_duckdb::extension_path(&extension_dir, name);
            if !extension_dir.as_os_str().is_empty() && !file.is_file() {
                problems.push(format!(
                    "workers.extension_dir: DuckLake needs {}; run scripts/fetch-duckdb, or unzip the duckdb-extension-{name}==1.5.5 wheel from PyPI and copy its {name}.duckdb_extension there",
                    file.display()
                ));
            }
        }
    }
    let catalog_file = file.catalog.map(|c| resolve(c.file));
    let cluster = file.cluster.and_then(|c| {
        if id_secret.is_none() {
            problems.push(
                "cluster: every node must share gateway.id_secret_file, so that each can verify the others' ids".into(),
            );
        }
        for (node, addr) in &c.peers {
            if !addr.contains(':') {
                problems.push(format!("cluster.peers.{node}: must be host:port, got {addr:?}"));
            }
        }
        if let Some(name) = &c.peers_dns {
            if !name.contains(':') {
                problems.push(format!("cluster.peers_dns: must be host:port, got {name:?}"));
            }
        }
        match c.peer_listen.parse() {
            Ok(peer_listen) => Some(ClusterConfig {
                peer_listen,
                peers: c.peers,
                peers_file: c.peers_file.map(resolve),
                peers_dns: c.peers_dns,
            }),
            Err(_) => {
                problems.push(format!(
                    "cluster.peer_listen: must be an IP address and port, got {:?}",
                    c.peer_listen
                ));
                None
            }
        }
    });
    let read_only_count = w.read_only_count.unwrap_or(0);
    if count + read_only_count > MAX_WORKER_COUNT {
        problems.push(format!(
            "workers.read_only_count: workers.count + workers.read_only_count must be at most {MAX_WORKER_COUNT}, got {}",
            count + read_only_count
        ));
    }
    if read_only_count > 0
        && ducklake
            .as_ref()
            .is_some_and(|l| l.read_only_catalog_token.is_none())
    {
        problems.push(
            "workers.ducklake.read_only_catalog_token_file: read-only workers need a read-only token of the catalog (a static token with role = \"read_only\" in the catalog's config), so that the catalog refuses writes that client SQL sends it through them".into(),
        );
    }
    if read_only_count > 0
        && ducklake
            .as_ref()
            .is_some_and(|l| l.azure.is_some() && l.read_only_azure.is_none())
    {
        problems.push(
            "workers.ducklake.azure.read_only_connection_string_file: read-only workers on Azure Blob storage need credentials that can only read (a SAS with read and list permissions): with the read-write ones, client SQL on them could write over the lake's files".into(),
        );
    }
    if read_only_count > 0 && ducklake.is_none() {
        problems.push(
            "workers.read_only_count: read-only workers open [workers.ducklake] READ_ONLY and need it; DuckDB cannot open one database file read-write and read-only in two processes, nor an in-memory database read-only".into(),
        );
    }
    // The catalog serves read-only tokens itself (session_roles in its worker).
    if read_only_count == 0 && catalog_file.is_none() {
        if let Some(t) = static_tokens.iter().find(|t| t.access == Access::ReadOnly) {
            problems.push(format!(
                "workers.read_only_count: token {:?} is read_only, and read-only sessions are only served by read-only workers; set workers.read_only_count >= 1",
                t.name
            ));
        }
    }
    let startup_timeout_secs = w
        .startup_timeout_secs
        .unwrap_or(DEFAULT_WORKER_STARTUP_TIMEOUT_SECS);
    positive(
        &mut problems,
        "workers.startup_timeout_secs",
        startup_timeout_secs,
    );
    let health_interval_ms = w.health_interval_ms.unwrap_or(DEFAULT_HEALTH_INTERVAL_MS);
    positive(
        &mut problems,
        "workers.health_interval_ms",
        health_interval_ms,
    );

    let log_filter = file.log.filter.unwrap_or_else(|| DEFAULT_LOG_FILTER.into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
        problems.push(format!("log.filter: {e}, got {log_filter:?}"));
    }

    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    Ok(Config {
        node_id,
        listen,
        plain_listen,
        admin_listen: admin_listen.expect("validated above"),
        tls,
        id_secret,
        max_connections,
        max_body_bytes,
        tls_handshake_timeout: Duration::from_secs(tls_handshake_timeout_secs),
        shutdown_grace: Duration::from_secs(
            gateway
                .shutdown_grace_secs
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS),
        ),
        session_idle: Duration::from_secs(session_idle_secs),
        threads: gateway.threads,
        trusted_proxies,
        static_tokens,
        jwt,
        limits,
        workers: WorkersConfig {
            count,
            read_only_count,
            extension_dir,
            database_dir: w.database_dir.map(resolve),
            threads: w.threads,
            memory_limit: w.memory_limit,
            init_sql: w.init_sql.unwrap_or_default(),
            fetch_batch_chunks,
            external_access: w.external_access.unwrap_or(false),
            token,
            ducklake,
            database_file: None,
            startup_timeout: Duration::from_secs(startup_timeout_secs),
            health_interval: Duration::from_millis(health_interval_ms),
        },
        log_filter,
        catalog_file,
        role: Role::Gateway,
        cluster,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    /// A valid config text whose extension dir holds empty stand-in files.
    fn base(dir: &Path) -> String {
        let ext = dir.join("ext");
        for name in quackgate_duckdb::EXTENSIONS_REQUIRED {
            let f = quackgate_duckdb::extension_path(&ext, name);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, b"").unwrap();
        }
        format!(
            "[gateway]\nplain_listen = \"127.0.0.1:0\"\n[[auth.static_tokens]]\nname = \"t\"\nsha256 = \"{HASH}\"\n[workers]\nextension_dir = \"{}\"\n",
            ext.display()
        )
    }

    fn load(text: &str, dir: &Path, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml(text, &dir.join("c.toml"), env)
    }

    #[test]
    fn defaults_fill_every_unset_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(&base(dir.path()), dir.path(), &[]).unwrap();
        assert_eq!(c.node_id, "n0");
        assert_eq!(c.workers.count, DEFAULT_WORKER_COUNT);
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9464");
    }

    #[test]
    fn environment_overrides_win_and_take_toml_types() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(
            &base(dir.path()),
            dir.path(),
            &[
                ("QUACKGATE__WORKERS__COUNT", "5"),
                ("QUACKGATE__GATEWAY__ADMIN_LISTEN", "127.0.0.1:7000"),
                ("QUACKGATE_UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.workers.count, 5);
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:7000");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = base(dir.path()) + "count_of_things = 3\n";
        let err = load(&text, dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("workers.count_of_things"), "{err}");
        let err = load(
            &base(dir.path()),
            dir.path(),
            &[("QUACKGATE__WORKERS__COUNT", "\"two\"")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("workers.count"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[gateway]\nnode_id = \"Bad.Id\"\nlisten = \"nope\"\nplain_listen = \"0.0.0.0:80\"\ntrusted_proxies = [\"10.0.0.0/8\", \"lb.internal\"]\n[[auth.static_tokens]]\nname = \"t\"\nsha256 = \"abc\"\n[workers]\ncount = 0\nextension_dir = \"{}\"\n",
            dir.path().join("missing").display()
        );
        let err = load(&text, dir.path(), &[]).unwrap_err().to_string();
        for needle in [
            "gateway.node_id",
            "\"Bad.Id\"",
            "gateway.listen",
            "\"nope\"",
            "gateway.plain_listen",
            "0.0.0.0:80",
            "gateway.trusted_proxies: \"lb.internal\"",
            "auth.static_tokens[0].sha256",
            "workers.count: must be 1-256, got 0",
            "quack.duckdb_extension",
            "scripts/fetch-duckdb",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn https_without_tls_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = base(dir.path()).replace("[gateway]\n", "[gateway]\nlisten = \"127.0.0.1:0\"\n");
        let err = load(&text, dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("tls:"), "{err}");
    }

    #[test]
    fn auth_and_limit_values_that_cannot_work_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("jwks.json"),
            r#"{"keys":[{"kty":"oct","kid":"k","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}"#,
        )
        .unwrap();
        let text = format!(
            "{}[auth.jwt]\njwks_file = \"jwks.json\"\nissuer = \"i\"\naudience = \"a\"\nleeway_secs = 100000\nrole_claim = \"sub\"\nsession_expiry = \"never\"\n[limits]\nfailed_auth_backoff_max_secs = 99999999\n",
            base(dir.path()).replace("sha256 = ", "role = \"read_only\"\nsha256 = ")
        );
        let err = load(&text, dir.path(), &[]).unwrap_err().to_string();
        for key in [
            "auth.jwt.leeway_secs",
            "auth.jwt.role_claim",
            "auth.jwt.session_expiry",
            "limits.failed_auth_backoff_max_secs",
            "workers.read_only_count",
        ] {
            assert!(err.contains(key), "{key} not in: {err}");
        }
        let ok = format!(
            "{}[auth.jwt]\njwks_file = \"jwks.json\"\nissuer = \"i\"\naudience = \"a\"\n",
            base(dir.path())
        );
        let config = load(&ok, dir.path(), &[]).unwrap();
        let (jwt, keys) = config.jwt.unwrap();
        assert_eq!(jwt.leeway, Duration::from_secs(DEFAULT_JWT_LEEWAY_SECS));
        assert_eq!(keys.kids(), vec!["k"]);
        assert_eq!(config.limits, LimitsConfig::default());
    }

    #[test]
    fn read_only_workers_need_read_only_credentials_for_the_catalog_and_azure() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cat"), "catalog-token").unwrap();
        std::fs::write(
            dir.path().join("cs"),
            "DefaultEndpointsProtocol=https;AccountName=a",
        )
        .unwrap();
        let lake = "read_only_count = 1\n[workers.ducklake]\ncatalog = \"127.0.0.1:9500\"\ncatalog_token_file = \"cat\"\ndata_path = \"az://c/p/\"\n[workers.ducklake.azure]\nconnection_string_file = \"cs\"\n";
        let err = load(&format!("{}{lake}", base(dir.path())), dir.path(), &[])
            .unwrap_err()
            .to_string();
        for key in [
            "workers.ducklake.read_only_catalog_token_file",
            "workers.ducklake.azure.read_only_connection_string_file",
        ] {
            assert!(err.contains(key), "{key} not in: {err}");
        }
        let with_both = lake
            .replace(
                "catalog_token_file = \"cat\"\n",
                "catalog_token_file = \"cat\"\nread_only_catalog_token_file = \"cat\"\n",
            )
            .replace(
                "connection_string_file = \"cs\"\n",
                "connection_string_file = \"cs\"\nread_only_connection_string_file = \"cs\"\n",
            );
        let err = load(&format!("{}{with_both}", base(dir.path())), dir.path(), &[])
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string());
        assert!(!err.contains("read_only_"), "{err}");
    }

    #[test]
    fn shipped_example_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                // Parsing must succeed; file checks (certs, extensions) depend on the machine.
                let mut table: toml::Table = toml::from_str(&text).unwrap();
                apply_env_overrides(&mut table, Vec::new()).unwrap();
                let parsed: Result<FileConfig, _> =
                    serde_path_to_error::deserialize(toml::Value::Table(table));
                assert!(
                    parsed.is_ok(),
                    "{}: {:?}",
                    path.display(),
                    parsed.err().map(|e| e.to_string())
                );
                seen += 1;
            }
        }
        assert!(seen >= 1, "no example config in {}", root.display());
    }
}
