//! The contract between the supervisor and a worker process.
//!
//! The spec travels as one JSON line on the worker's stdin rather than on its command line,
//! because a command line is readable by every user of the machine and the spec carries the
//! internal worker token. The worker keeps reading stdin afterwards: end of file means the
//! supervisor is gone, so an orphaned worker exits instead of serving on.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[cfg(feature = "engine")]
use crate::sql::sql_literal;

/// When the catalog runs the lake's maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceSpec {
    /// Seconds between runs; 0 runs only on request.
    pub interval_secs: u64,
    /// Snapshots younger than this stay (time travel), as do files they still reference.
    pub retention_secs: u64,
}

/// The DuckDB version this crate links; extensions must have been built for exactly it.
pub const DUCKDB_VERSION: &str = "v1.5.5";
/// The platform directory DuckDB looks in below `<extension_dir>/<version>/`.
pub const EXTENSION_PLATFORM: &str = "linux_amd64";
/// Extensions a worker loads: quack serves, and quack sends its HTTP through httpfs.
pub const EXTENSIONS_REQUIRED: &[&str] = &["httpfs", "quack"];
/// Loaded when present: ICU gives DuckDB time zones and calendars (`SET TimeZone`), which the
/// DuckDB CLI has built in and a worker's DuckDB does not.
pub const EXTENSIONS_OPTIONAL: &[&str] = &["icu"];
/// Extensions the catalog loads so that the lake's commits run on it (`ducklake_commit`).
pub const LAKE_COMMIT_EXTENSIONS: &[&str] = &["parquet", "ducklake"];
/// Prefix of the line a worker prints on stdout once it serves.
pub const READY_PREFIX: &str = "QUACKGATE-WORKER READY";
/// Prefix of the catalog's report line after each maintenance run of the lake.
pub const LAKE_PREFIX: &str = "QUACKGATE-WORKER LAKE";
/// The stdin line that asks the catalog for a maintenance run now.
pub const MAINTAIN_LINE: &str = "MAINTAIN";
/// Prefix of the line a worker prints on stdout when it cannot start.
pub const FAILED_PREFIX: &str = "QUACKGATE-WORKER FAILED";
/// Exit code of a worker whose catalog went away (EX_TEMPFAIL).
pub const EXIT_CATALOG_LOST: i32 = 75;
/// Exit code of a worker whose Quack server was stopped under it (a client's `quack_stop`).
pub const EXIT_SERVER_STOPPED: i32 = 76;

/// Everything one worker process needs to start serving Quack on loopback.
#[derive(Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Identity reported by `quackgate.worker_id()` inside the worker, e.g. `n0.w1`.
    pub worker_id: String,
    /// Loopback port to serve on; the supervisor picks a free one for each start.
    pub port: u16,
    /// The internal token the gateway swaps in for the client's token. Never logged.
    pub token: String,
    /// Folder laid out as `<dir>/v1.5.5/linux_amd64/<name>.duckdb_extension`.
    pub extension_dir: PathBuf,
    /// Database file to open; `None` opens an in-memory database.
    pub database: Option<PathBuf>,
    /// DuckDB `threads` setting; `None` keeps DuckDB's default (one per core).
    pub threads: Option<u32>,
    /// DuckDB `memory_limit` setting, e.g. `4GB`; `None` keeps DuckDB's default.
    pub memory_limit: Option<String>,
    /// Statements run after the extensions load and before serving (ATTACH, USE, SET ...).
    pub init_sql: Vec<String>,
    /// Quack's `quack_fetch_batch_chunks`: DuckDB chunks (2,048 rows each) per PREPARE or
    /// FETCH answer; `None` keeps Quack's default (12).
    #[serde(default)]
    pub fetch_batch_chunks: Option<u64>,
    /// Whether client SQL may touch files and URLs and change settings. When false, the worker
    /// disables external access and locks its configuration once it serves.
    pub external_access: bool,
    /// Open this DuckLake as the default database instead of `database`.
    pub ducklake: Option<DuckLakeSpec>,
    /// Open the database (the lake) READ_ONLY: this worker serves read-only principals.
    #[serde(default)]
    pub read_only: bool,
    /// A second internal token, whose sessions may only read (the catalog serves read-only
    /// workers with it). Never logged.
    #[serde(default)]
    pub read_only_token: Option<String>,
    /// Load DuckLake beside the database, so that the workers of a lake whose metadata this
    /// worker serves commit here (`ducklake_commit`, with DuckLake's retries run next to the
    /// metadata in one local transaction) instead of over Quack: the catalog.
    #[serde(default)]
    pub lake_commits: bool,
    /// Run the lake's maintenance from here (the catalog), on this schedule.
    #[serde(default)]
    pub maintenance: Option<MaintenanceSpec>,
    /// Serve even where the kernel enforces the Landlock confinement only in part or not at
    /// all (`workers.accept_unconfined_risk`; never for a read-only worker).
    #[serde(default)]
    pub accept_unconfined: bool,
    /// Folders client SQL may read beyond what the worker needs (`workers.readable_dirs`).
    #[serde(default)]
    pub readable_dirs: Vec<PathBuf>,
    /// Folders client SQL may read and write beyond what the worker needs
    /// (`workers.writable_dirs`).
    #[serde(default)]
    pub writable_dirs: Vec<PathBuf>,
}

impl fmt::Debug for WorkerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerSpec")
            .field("worker_id", &self.worker_id)
            .field("port", &self.port)
            .field("token", &"<redacted>")
            .field("extension_dir", &self.extension_dir)
            .field("database", &self.database)
            .field("threads", &self.threads)
            .field("memory_limit", &self.memory_limit)
            .field("init_sql_statements", &self.init_sql.len())
            .field("fetch_batch_chunks", &self.fetch_batch_chunks)
            .field("external_access", &self.external_access)
            .field("ducklake", &self.ducklake)
            .field("read_only", &self.read_only)
            .field("accept_unconfined", &self.accept_unconfined)
            .field(
                "read_only_token",
                &self.read_only_token.as_ref().map(|_| "<redacted>"),
            )
            .field("lake_commits", &self.lake_commits)
            .field("maintenance", &self.maintenance)
            .field("readable_dirs", &self.readable_dirs)
            .field("writable_dirs", &self.writable_dirs)
            .finish()
    }
}

impl WorkerSpec {
    /// Path of one extension file in the layout DuckDB expects.
    pub fn extension_path(&self, name: &str) -> PathBuf {
        extension_path(&self.extension_dir, name)
    }
}

/// Path of extension `name` below `dir`, in the layout DuckDB expects.
pub fn extension_path(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join(DUCKDB_VERSION)
        .join(EXTENSION_PLATFORM)
        .join(format!("{name}.duckdb_extension"))
}

/// What a worker reported on stdout about its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerStatus {
    /// It serves Quack on this loopback port.
    Ready {
        /// The port `quack_serve` bound.
        port: u16,
    },
    /// It could not start, for this reason.
    Failed(String),
}

impl WorkerStatus {
    /// The stdout line for this status.
    pub fn to_line(&self) -> String {
        match self {
            WorkerStatus::Ready { port } => format!("{READY_PREFIX} port={port}"),
            WorkerStatus::Failed(why) => format!("{FAILED_PREFIX} {}", why.replace('\n', " ")),
        }
    }

    /// Reads a stdout line; `None` for lines that are not status lines.
    pub fn parse_line(line: &str) -> Option<WorkerStatus> {
        if let Some(rest) = line.strip_prefix(READY_PREFIX) {
            let port = rest.trim().strip_prefix("port=")?.parse().ok()?;
            return Some(WorkerStatus::Ready { port });
        }
        line.strip_prefix(FAILED_PREFIX)
            .map(|why| WorkerStatus::Failed(why.trim().to_string()))
    }
}

/// Where a worker's lake lives.
#[derive(Clone, Serialize, Deserialize)]
pub struct DuckLakeSpec {
    /// `host:port` of the `quackgate catalog` listener.
    pub catalog: String,
    /// The catalog's token. Never logged.
    pub catalog_token: String,
    /// Where the lake's Parquet files go: a local folder or `az://container/prefix/`.
    pub data_path: String,
    /// PEM CA file to trust when the catalog is reached over HTTPS.
    pub catalog_ca_file: Option<PathBuf>,
    /// Credentials for an `az://` data path.
    pub azure: Option<AzureCredentials>,
    /// How often a commit that lost a race to another writer is tried again.
    #[serde(default)]
    pub commit_retry: CommitRetry,
}

/// DuckLake's commit retries (`ducklake_max_retry_count`, `ducklake_retry_wait_ms`,
/// `ducklake_retry_backoff`), set for every session of a worker. A commit that loses a race
/// waits `wait_ms` × backoff^n × a random 0.5-1 before try n + 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CommitRetry {
    /// Tries after the first.
    pub max_retries: u64,
    /// The first wait, in milliseconds.
    pub wait_ms: u64,
    /// Growth of the wait per try.
    pub backoff: f64,
}

impl Default for CommitRetry {
    /// DuckLake's own defaults (10 tries, 100 ms, 1.5) give up within about 10 s and fail one
    /// in a dozen commits of 12 concurrent writers; 100 tries that start at 50 ms and grow by
    /// 1.2 keep trying for minutes under contention while the early tries stay quick.
    fn default() -> Self {
        CommitRetry {
            max_retries: 100,
            wait_ms: 50,
            backoff: 1.2,
        }
    }
}

/// How a worker authenticates to Azure Blob storage.
#[derive(Clone, Serialize, Deserialize)]
pub enum AzureCredentials {
    /// A storage connection string (account key or SAS). Never logged.
    ConnectionString(String),
    /// Azure's credential chain, e.g. `managed_identity` or `workload_identity;managed_identity`.
    CredentialChain {
        /// The storage account.
        account_name: String,
        /// `;`-separated sources: cli, managed_identity, workload_identity, env, default.
        chain: String,
    },
}

impl fmt::Debug for AzureCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzureCredentials::ConnectionString(_) => f.write_str("ConnectionString(<redacted>)"),
            AzureCredentials::CredentialChain {
                account_name,
                chain,
            } => f
                .debug_struct("CredentialChain")
                .field("account_name", account_name)
                .field("chain", chain)
                .finish(),
        }
    }
}

#[cfg(feature = "engine")]
impl AzureCredentials {
    /// The statement that makes the (temporary, in-memory) Azure secret.
    pub(crate) fn create_secret_sql(&self) -> String {
        match self {
            AzureCredentials::ConnectionString(cs) => format!(
                "CREATE SECRET quackgate_azure (TYPE azure, CONNECTION_STRING {});",
                sql_literal(cs)
            ),
            AzureCredentials::CredentialChain {
                account_name,
                chain,
            } => format!(
                "CREATE SECRET quackgate_azure (TYPE azure, PROVIDER credential_chain, CHAIN {}, ACCOUNT_NAME {});",
                sql_literal(chain),
                sql_literal(account_name)
            ),
        }
    }
}

impl fmt::Debug for DuckLakeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DuckLakeSpec")
            .field("catalog", &self.catalog)
            .field("catalog_token", &"<redacted>")
            .field("data_path", &self.data_path)
            .field("catalog_ca_file", &self.catalog_ca_file)
            .field("azure", &self.azure)
            .field("commit_retry", &self.commit_retry)
            .finish()
    }
}

#[cfg(feature = "engine")]
impl DuckLakeSpec {
    pub(crate) fn uri(&self) -> String {
        format!("ducklake:quack:{}", self.catalog)
    }
}
