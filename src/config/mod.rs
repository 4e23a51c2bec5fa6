//! Configuration: a TOML file, overridden by `QUACKGATE__SECTION__KEY` environment variables,
//! validated as a whole before anything binds.
//!
//! `file` is the serde shape of the file (unknown keys are errors, so a typo never goes
//! unnoticed); [`Config`] is what the program uses: each section validated by its own file and
//! converted to the type of the module that owns it (`limits::LimitsConfig`,
//! `workers::config::WorkersConfig`, ...), defaults filled in, files read. Every problem is
//! collected and reported at once, each message naming its key. Only the wiring (`app`,
//! `state`) and the binary read a [`Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditConfig;
use crate::auth::jwt::JwtConfig;
use crate::auth::keys::KeySet;
use crate::auth::{Access, StaticToken};
use crate::cluster::ClusterConfig;
use crate::forwarded::TrustedProxies;
use crate::id_rotation::IdSecretFiles;
use crate::limits::LimitsConfig;
use crate::role::Role;
use crate::routable_id::IdSecret;
use crate::telemetry::{LogFormat, DEFAULT_LOG_FILTER};
use crate::tls::TlsFiles;
use crate::workers::config::WorkersConfig;
use quackgate_duckdb::MaintenanceSpec;

mod auth;
mod cluster;
mod file;
mod gateway;
mod problems;
mod secret_reach;
mod workers;

pub use auth::{
    DEFAULT_JWKS_REFRESH_SECS, DEFAULT_JWKS_STALE_SECS, DEFAULT_JWT_LEEWAY_SECS,
    MAX_JWT_LEEWAY_SECS,
};
use file::FileConfig;
pub use gateway::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_NODE_ID, DEFAULT_SESSION_IDLE_SECS,
    DEFAULT_SHUTDOWN_GRACE_SECS, DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS,
};
use problems::Problems;
pub use workers::{
    DEFAULT_FETCH_BATCH_CHUNKS, DEFAULT_HEALTH_INTERVAL_MS, DEFAULT_WORKER_COUNT,
    DEFAULT_WORKER_STARTUP_TIMEOUT_SECS, MAX_FETCH_BATCH_CHUNKS, MAX_WORKER_COUNT,
};

/// Prefix of environment variables that override config keys: `QUACKGATE__WORKERS__COUNT=4`.
pub const ENV_PREFIX: &str = "QUACKGATE__";
/// Default `[catalog] maintenance_interval_secs`: a lake fed by DuckDB 1.5 clients gains a
/// file and a snapshot per 2,048 rows, about 500 per million; merging every 5 minutes keeps
/// that bounded while a run stays short.
pub const DEFAULT_MAINTENANCE_INTERVAL_SECS: u64 = 300;
/// Default `[catalog] snapshot_retention_secs`: an hour of time travel, and an hour for the
/// longest query still reading the files a merge replaced.
pub const DEFAULT_SNAPSHOT_RETENTION_SECS: u64 = 3_600;

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key has the wrong type or is unknown.
    #[error("config {path}: {message}")]
    Parse {
        path: PathBuf,
        /// The parser's message, with the key path.
        message: String,
    },
    /// Values parsed but cannot work; one line per problem.
    #[error("invalid config:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
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
    /// Listener for `/healthz` and `/readyz` only, for platform probes that cannot reach a
    /// loopback admin listener. Default none.
    pub health_listen: Option<SocketAddr>,
    /// Certificate chain and key for [`Config::listen`].
    pub tls: Option<TlsFiles>,
    /// Secret that signs connection ids. Shared by replicas of one cluster; a random one is
    /// made at start when `gateway.id_secret_file` is unset.
    pub id_secret: Option<IdSecret>,
    /// Secrets that still verify ids and peer requests but sign nothing: a rotation's old
    /// (or coming) secret. Default none.
    pub previous_id_secrets: Vec<IdSecret>,
    /// The files of the two above, re-read so that a rotation needs no restart.
    pub id_secret_files: Option<IdSecretFiles>,
    /// Cap on concurrently open client TCP connections; more wait in the accept queue.
    pub max_connections: usize,
    /// Connections each listener's kernel accept queue holds before new SYNs are dropped
    /// (and retried by the client only a second later). Default 4096.
    pub listen_backlog: u32,
    /// Cap on one request body. Default 256 MiB.
    pub max_body_bytes: u64,
    /// Cap on a PREPARE, which is read whole before forwarding. Default 1 MiB.
    pub max_prepare_bytes: u64,
    /// Time a client gets to finish its TLS handshake. Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// Time in-flight requests get to finish after SIGTERM. Default 30 s.
    pub shutdown_grace: Duration,
    /// Time after which an unused session is ended, here and at its worker. Default 6 h.
    pub session_idle: Duration,
    /// Threads of the gateway's async runtime. Default `None`: half the cores, at least one.
    pub threads: Option<usize>,
    /// Proxies whose `X-Forwarded-For` names the client address. Default none.
    pub trusted_proxies: TrustedProxies,
    /// SHA-256 digests of the accepted static tokens.
    pub static_tokens: Vec<StaticToken>,
    /// `auth.static_tokens_file`, re-read while running, with the tokens it held at load.
    pub static_tokens_file: Option<(PathBuf, Vec<StaticToken>)>,
    /// `[auth.jwt]`: JWTs accepted as tokens, with the keys already loaded once.
    pub jwt: Option<(JwtConfig, Arc<KeySet>)>,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// The embedded workers.
    pub workers: WorkersConfig,
    /// Tracing filter (`RUST_LOG` syntax); `RUST_LOG` itself wins when set.
    pub log_filter: String,
    /// `log.format`: text (default) or json lines.
    pub log_format: LogFormat,
    /// `log.audit_file`: where audit records go, apart from the log. Default: the log.
    pub audit_file: Option<PathBuf>,
    /// `log.audit_sql`.
    pub audit: AuditConfig,
    /// `[catalog] file`: the DuckDB file `quackgate catalog` serves.
    pub catalog_file: Option<PathBuf>,
    /// `[catalog]`: when the catalog runs the lake's maintenance.
    pub catalog_maintenance: MaintenanceSpec,
    /// `[catalog] bind_sessions_to_address`: serve each catalog session only to the address
    /// that opened it. Default true.
    pub catalog_binds_sessions: bool,
    /// Which role this process plays.
    pub role: Role,
    /// Other gateway nodes this one forwards to. Default `None`: a single node.
    pub cluster: Option<ClusterConfig>,
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
        Self::load_as(Role::Gateway, path, env)
    }

    /// [`Config::load`] for a process of `role`: an edge needs no `[workers]`, a node no
    /// client listener, and both a `[cluster]`.
    ///
    /// # Errors
    /// Every problem found, each naming its key.
    pub fn load_as(
        role: Role,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_as(role, &text, path, env)
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
        Self::from_toml_as(Role::Gateway, text, path, env)
    }

    /// [`Config::from_toml`] for a process of `role`.
    ///
    /// # Errors
    /// Every problem found, each naming its key.
    pub fn from_toml_as(
        role: Role,
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
        validate(file, base, role)
    }
}

impl Config {
    /// The config of the catalog role: one worker that serves `[catalog] file`, taking
    /// statements up to [`CATALOG_MAX_PREPARE_BYTES`] unless `gateway.max_prepare_bytes` says
    /// otherwise.
    ///
    /// # Errors
    /// When `[catalog] file` is missing or the config also asks for a lake.
    pub fn into_catalog_role(mut self) -> Result<Config, ConfigError> {
        let mut problems = Problems::default();
        match self.catalog_file.clone() {
            Some(file) => self.workers.database_file = Some(file),
            None => problems.push("catalog.file: required by `quackgate catalog`".into()),
        }
        if self.workers.ducklake.is_some() {
            problems.push(
                "workers.ducklake: the catalog serves the lake's metadata and cannot attach a lake itself".into(),
            );
        }
        // The lake's workers send their data commits to `ducklake_commit` where it is loaded,
        // and the commit then retries next to the metadata, in one local transaction; without
        // it each commit is a series of Quack round trips whose rollback does not reach the
        // catalog (README, "DuckLake").
        for name in quackgate_duckdb::LAKE_COMMIT_EXTENSIONS {
            let file = quackgate_duckdb::extension_path(&self.workers.extension_dir, name);
            if !file.is_file() {
                problems.push(format!(
                    "workers.extension_dir: the catalog runs the lake's commits with DuckLake and needs {}; run scripts/fetch-duckdb, or unzip the duckdb-extension-{name}==1.5.5 wheel from PyPI and copy its {name}.duckdb_extension there",
                    file.display()
                ));
            }
        }
        self.workers.lake_commits = true;
        self.workers.maintenance = Some(self.catalog_maintenance);
        // The catalog's clients are the lake's workers, and a commit carries a row for each data
        // file it adds: one server transaction of a 10M-row client INSERT is a ~3 MB commit.
        if self.max_prepare_bytes == gateway::DEFAULT_MAX_PREPARE_BYTES {
            self.max_prepare_bytes = CATALOG_MAX_PREPARE_BYTES.min(self.max_body_bytes);
        }
        problems.finish().map_err(ConfigError::Invalid)?;
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

fn validate(file: FileConfig, base: &Path, role: Role) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

    let gateway = gateway::validate(file.gateway, role, file.tls, &resolve, &mut problems);
    let auth::AuthSection {
        static_tokens,
        static_tokens_file,
        jwt,
        limits,
    } = auth::validate(
        file.auth,
        role != Role::Node,
        file.limits,
        &resolve,
        &mut problems,
    );
    let workers = if role == Role::Edge {
        workers::none(file.workers, &mut problems)
    } else {
        workers::validate(file.workers, &resolve, &mut problems)
    };
    let catalog_maintenance = MaintenanceSpec {
        interval_secs: file
            .catalog
            .as_ref()
            .and_then(|c| c.maintenance_interval_secs)
            .unwrap_or(DEFAULT_MAINTENANCE_INTERVAL_SECS),
        retention_secs: file
            .catalog
            .as_ref()
            .and_then(|c| c.snapshot_retention_secs)
            .unwrap_or(DEFAULT_SNAPSHOT_RETENTION_SECS),
    };
    let catalog_binds_sessions = file
        .catalog
        .as_ref()
        .and_then(|c| c.bind_sessions_to_address)
        .unwrap_or(true);
    let catalog_file = file.catalog.map(|c| resolve(c.file));
    let cluster = cluster::validate(
        file.cluster,
        role,
        gateway.id_secret.is_some(),
        &resolve,
        &mut problems,
    );
    // The catalog serves read-only tokens itself (session_roles in its worker); an edge
    // leaves it to the nodes.
    if workers.read_only_count == 0 && catalog_file.is_none() && role == Role::Gateway {
        let from_file = static_tokens_file.iter().flat_map(|(_, tokens)| tokens);
        if let Some(t) = static_tokens
            .iter()
            .chain(from_file)
            .find(|t| t.access == Access::ReadOnly)
        {
            problems.push(format!(
                "workers.read_only_count: token {:?} is read_only, and read-only sessions are only served by read-only workers; set workers.read_only_count >= 1",
                t.name
            ));
        }
    }
    let mut secrets: Vec<(&str, &Path)> = Vec::new();
    if let Some(tls) = &gateway.tls {
        secrets.push(("tls.key", &tls.key));
    }
    if let Some(files) = &gateway.id_secret_files {
        secrets.push(("gateway.id_secret_file", &files.current));
        for file in &files.previous {
            secrets.push(("gateway.previous_id_secret_files", file));
        }
    }
    if let Some((file, _)) = &static_tokens_file {
        secrets.push(("auth.static_tokens_file", file));
    }
    secret_reach::check(&secrets, &workers, catalog_file.as_deref(), &mut problems);
    let log_filter = file.log.filter.unwrap_or_else(|| DEFAULT_LOG_FILTER.into());
    let audit_file = file.log.audit_file.map(&resolve);
    let audit_on_file = audit_file.is_some();
    let audit_in_log = std::env::var("RUST_LOG")
        .unwrap_or_else(|_| log_filter.clone())
        .contains(crate::audit::TARGET);
    let log_format = match file.log.format.as_deref() {
        None => LogFormat::Text,
        Some(name) => LogFormat::parse(name).unwrap_or_else(|| {
            problems.push(format!("log.format: must be text or json, got {name:?}"));
            LogFormat::Text
        }),
    };
    if let Err(e) = crate::telemetry::parse_filter(&log_filter) {
        problems.push(format!("log.filter: {e}, got {log_filter:?}"));
    }

    problems.finish().map_err(ConfigError::Invalid)?;
    Ok(Config {
        node_id: gateway.node_id,
        listen: gateway.listen,
        plain_listen: gateway.plain_listen,
        admin_listen: gateway.admin_listen.expect("validated above"),
        health_listen: gateway.health_listen,
        tls: gateway.tls,
        id_secret: gateway.id_secret,
        previous_id_secrets: gateway.previous_id_secrets,
        id_secret_files: gateway.id_secret_files,
        max_connections: gateway.max_connections,
        listen_backlog: gateway.listen_backlog,
        max_body_bytes: gateway.max_body_bytes,
        max_prepare_bytes: gateway.max_prepare_bytes,
        tls_handshake_timeout: gateway.tls_handshake_timeout,
        shutdown_grace: gateway.shutdown_grace,
        session_idle: gateway.session_idle,
        threads: gateway.threads,
        trusted_proxies: gateway.trusted_proxies,
        static_tokens,
        static_tokens_file,
        jwt,
        limits,
        workers,
        log_filter,
        log_format,
        audit_file,
        audit: AuditConfig {
            enabled: audit_on_file || audit_in_log,
            sql: file.log.audit_sql.unwrap_or(false),
        },
        catalog_file,
        catalog_maintenance,
        catalog_binds_sessions,
        role,
        cluster,
    })
}

/// `gateway.max_prepare_bytes` of the catalog role, unless set: the lake's commits.
pub const CATALOG_MAX_PREPARE_BYTES: u64 = 64 * 1024 * 1024;

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
    fn external_access_needs_the_risk_accepted_in_so_many_words() {
        let dir = tempfile::tempdir().unwrap();
        let open = base(dir.path()) + "external_access = true\n";
        let err = load(&open, dir.path(), &[]).unwrap_err().to_string();
        assert!(
            err.contains("workers.accept_external_access_risk = true"),
            "{err}"
        );
        let accepted = open + "accept_external_access_risk = true\n";
        assert!(
            load(&accepted, dir.path(), &[])
                .unwrap()
                .workers
                .external_access
        );
    }

    #[test]
    fn a_secret_inside_a_folder_workers_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        let secret = shared.join("id-secret");
        std::fs::write(&secret, "ab".repeat(32)).unwrap();
        let env = format!("\"{}\"", secret.display());
        let env = [("QUACKGATE__GATEWAY__ID_SECRET_FILE", env.as_str())];
        let text = base(dir.path()) + &format!("readable_dirs = [\"{}\"]\n", shared.display());
        let err = load(&text, dir.path(), &env).unwrap_err().to_string();
        assert!(
            err.contains("gateway.id_secret_file") && err.contains("workers.readable_dirs"),
            "{err}"
        );
        let elsewhere = base(dir.path())
            + &format!(
                "readable_dirs = [\"{}\"]\n",
                dir.path().join("ext").display()
            );
        assert!(load(&elsewhere, dir.path(), &env).is_ok());
    }

    #[test]
    fn the_catalog_takes_commits_larger_than_a_clients_statement() {
        let dir = tempfile::tempdir().unwrap();
        let text = base(dir.path());
        for name in quackgate_duckdb::LAKE_COMMIT_EXTENSIONS {
            let ext = dir.path().join("ext");
            std::fs::write(quackgate_duckdb::extension_path(&ext, name), b"").unwrap();
        }
        let catalog = format!("{text}[catalog]\nfile = \"c.duckdb\"\n");
        let c = load(&catalog, dir.path(), &[]).unwrap();
        assert_eq!(c.max_prepare_bytes, gateway::DEFAULT_MAX_PREPARE_BYTES);
        let c = c.into_catalog_role().unwrap();
        assert_eq!(c.max_prepare_bytes, CATALOG_MAX_PREPARE_BYTES);
        let set = catalog.replace("[gateway]\n", "[gateway]\nmax_prepare_bytes = 5000\n");
        let c = load(&set, dir.path(), &[])
            .unwrap()
            .into_catalog_role()
            .unwrap();
        assert_eq!(c.max_prepare_bytes, 5000);
    }

    #[test]
    fn a_database_file_per_slot_is_refused_with_isolated_workers() {
        let dir = tempfile::tempdir().unwrap();
        let text = base(dir.path()) + "database_dir = \"db\"\n";
        let err = load(&text, dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("workers.database_dir"), "{err}");
        let shared = text + "isolation = \"shared\"\n";
        assert!(load(&shared, dir.path(), &[]).is_ok());
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
    fn an_edge_needs_nodes_and_no_workers_and_a_node_no_client_listener() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("id-secret");
        std::fs::write(&secret, "ab".repeat(32)).unwrap();
        let edge = format!(
            "[gateway]\nnode_id = \"edge-a\"\nplain_listen = \"10.1.0.5:8080\"\ntrusted_proxies = [\"10.1.0.1/32\"]\nid_secret_file = \"{}\"\n[[auth.static_tokens]]\nname = \"t\"\nsha256 = \"{HASH}\"\n[cluster]\npeers = {{ n1 = \"n1.internal:443\" }}\npeer_tls = true\n",
            secret.display()
        );
        let path = dir.path().join("edge.toml");
        let config = Config::from_toml_as(Role::Edge, &edge, &path, Vec::new()).unwrap();
        assert_eq!((config.role, config.workers.count), (Role::Edge, 0));
        let cluster = config.cluster.unwrap();
        assert!(cluster.peer_tls && cluster.peer_listen.is_none());

        let err = Config::from_toml_as(
            Role::Edge,
            &(edge
                .replace(
                    "peers = { n1 = \"n1.internal:443\" }\n",
                    "peer_listen = \"0.0.0.0:7000\"\n",
                )
                .replace("trusted_proxies = [\"10.1.0.1/32\"]\n", "")
                + "[workers]\ncount = 2\n"),
            &path,
            Vec::new(),
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "cluster: an edge needs its nodes",
            "cluster.peer_listen: an edge holds no sessions",
            "workers: an edge runs no workers",
            "gateway.plain_listen: plain HTTP carries tokens in clear",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }

        let node = base(dir.path()).replace(
            "[gateway]\n",
            &format!(
                "[gateway]\nnode_id = \"n1\"\nid_secret_file = \"{}\"\n",
                secret.display()
            ),
        ) + "[cluster]\npeer_listen = \"0.0.0.0:7000\"\n";
        let err = Config::from_toml_as(Role::Node, &node, &path, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("a node has no client listener"), "{err}");
        assert!(
            err.contains("cluster.peer_listen: 0.0.0.0:7000 may be reachable from outside"),
            "{err}"
        );
    }

    /// Found by `fuzz/` (config target): a `log.filter` with white space before a multi-byte
    /// character panicked in tracing-subscriber's parser during validation.
    #[test]
    fn a_log_filter_that_panicked_the_parser_is_an_answer() {
        let dir = tempfile::tempdir().unwrap();
        let crash = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/fuzz/config-log-filter-panic.toml"),
        )
        .unwrap();
        // The fuzzer's input, as it was: refused with reasons, its filter's among them (a `[`
        // that opens a span and never closes).
        let err = load(&crash, dir.path(), &[]).unwrap_err().to_string();
        assert!(
            err.contains("log.filter: invalid filter directive"),
            "{err}"
        );
        // The same filter on a valid config, from the file and from the environment.
        let filter = "info, é=debug,  ö[span]=trace";
        let text = format!("{}[log]\nfilter = {filter:?}\n", base(dir.path()));
        assert_eq!(load(&text, dir.path(), &[]).unwrap().log_filter, filter);
        let c = load(
            &base(dir.path()),
            dir.path(),
            &[("QUACKGATE__LOG__FILTER", filter)],
        )
        .unwrap();
        assert_eq!(c.log_filter, filter);
        // A filter that is wrong is still refused, naming the key.
        let bad = format!("{}[log]\nfilter = \"info, =debug\"\n", base(dir.path()));
        let err = load(&bad, dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("log.filter"), "{err}");
    }

    #[test]
    fn a_log_filter_whose_field_value_would_compile_for_minutes_is_answered_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let input = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/fuzz/config-log-filter-regex-timeout.toml"),
        )
        .unwrap();
        // Took more than two minutes (and growing memory) before; an answer either way now.
        let _answer = load(&input, dir.path(), &[]);
        // Field values match as text: a value with regex syntax is accepted and literal.
        let filter = "info,quackgate[conn{peer=10.0.0.1|.*}]=debug";
        let text = format!("{}[log]\nfilter = {filter:?}\n", base(dir.path()));
        assert_eq!(load(&text, dir.path(), &[]).unwrap().log_filter, filter);
    }

    #[test]
    fn the_edge_and_node_examples_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("id-secret");
        std::fs::write(&secret, "ab".repeat(32)).unwrap();
        let ext = base(dir.path())
            .lines()
            .find_map(|l| l.strip_prefix("extension_dir = "))
            .unwrap()
            .to_string();
        for (role, file) in [(Role::Edge, "edge.toml"), (Role::Node, "node.toml")] {
            let text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("config")
                    .join(file),
            )
            .unwrap()
            .replace(
                "/run/secrets/quackgate-id-secret",
                &secret.display().to_string(),
            )
            .replace("\"/opt/quackgate/extensions\"", &ext);
            let config = Config::from_toml_as(role, &text, &dir.path().join(file), Vec::new())
                .unwrap_or_else(|e| panic!("config/{file}: {e}"));
            assert_eq!(config.role, role);
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_key_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[gateway]\nnode_id = \"Bad.Id\"\nlisten = \"nope\"\nplain_listen = \"0.0.0.0:80\"\ntrusted_proxies = [\"lb.internal\"]\n[[auth.static_tokens]]\nname = \"t\"\nsha256 = \"abc\"\n[workers]\ncount = 0\nextension_dir = \"{}\"\n",
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
            "{}[auth.jwt]\njwks_file = \"jwks.json\"\nissuer = \"i\"\naudience = \"a\"\nleeway_secs = 100000\nrole_claim = \"sub\"\nsession_expiry = \"never\"\n[limits]\nfailed_auth_backoff_max_secs = 99999999\nmin_append_rate = 0\nmax_held_append_bytes = 0\nappend_memory_bytes = 1099511627776\nappend_spill_dir = \"missing\"\n",
            base(dir.path()).replace("sha256 = ", "role = \"read_only\"\nsha256 = ")
        );
        let err = load(&text, dir.path(), &[]).unwrap_err().to_string();
        for key in [
            "auth.jwt.leeway_secs",
            "auth.jwt.role_claim",
            "auth.jwt.session_expiry",
            "limits.failed_auth_backoff_max_secs",
            "limits.min_append_rate",
            "limits.max_held_append_bytes",
            "limits.append_memory_bytes",
            "limits.append_spill_dir",
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
        // The disk's share is what its file system had free when each was made.
        let spilled = config.limits.max_spilled_append_bytes;
        assert!(spilled > 0);
        assert_eq!(
            config.limits,
            LimitsConfig {
                max_spilled_append_bytes: spilled,
                max_spilled_append_bytes_per_principal: spilled / 4,
                ..LimitsConfig::default()
            }
        );
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
