//! `[workers]` as the supervisor runs it: how many processes, what each opens, and the lake
//! they share. The config module fills it from the file.

use std::path::PathBuf;
use std::time::Duration;

use quackgate_duckdb::{AzureCredentials, CommitRetry, MaintenanceSpec};

use crate::auth::WorkerToken;

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
    /// DuckLake's retries of a commit that lost a race to another writer.
    pub commit_retry: CommitRetry,
}

/// Which sessions may share a worker process (`workers.isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// A process serves one principal at a time (`principal`): client SQL that ends or lists
    /// its worker reaches only its own principal's sessions.
    #[default]
    Principal,
    /// Any session goes to any worker (`shared`).
    Shared,
}

impl Isolation {
    /// `principal` or `shared`.
    pub fn parse(name: &str) -> Option<Isolation> {
        match name {
            "principal" => Some(Isolation::Principal),
            "shared" => Some(Isolation::Shared),
            _ => None,
        }
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
    /// Whether client SQL may read and write files and URLs and change DuckDB settings.
    /// Default false: workers lock this down once they serve. Files stay confined to what the
    /// worker needs and the folders below either way.
    pub external_access: bool,
    /// Whether a read-write worker may serve where the kernel enforces its Landlock
    /// confinement only in part or not at all. Default false: it refuses to start, with the
    /// reason. Read-only workers never serve unconfined.
    pub accept_unconfined_risk: bool,
    /// Folders client SQL may also read (Landlock): files `init_sql` attaches, or that
    /// clients read with `workers.external_access`.
    pub readable_dirs: Vec<PathBuf>,
    /// Folders client SQL may also read and write (Landlock).
    pub writable_dirs: Vec<PathBuf>,
    /// A fixed internal worker token, for benchmarks and debugging that talk to a worker
    /// directly. Default `None`: a random token made at every start.
    pub token: Option<WorkerToken>,
    /// The lake every worker opens as its default database. Default `None`: plain DuckDB.
    pub ducklake: Option<DuckLakeConfig>,
    /// The one database file of the catalog role's worker.
    pub database_file: Option<PathBuf>,
    /// Whether the worker loads DuckLake so that the lake's commits run on it: the catalog's.
    pub lake_commits: bool,
    /// The lake's maintenance, which the catalog's worker runs.
    pub maintenance: Option<MaintenanceSpec>,
    /// Time a worker gets from spawn to serving. Default 60 s.
    pub startup_timeout: Duration,
    /// Period of health probes. Default 1 s.
    pub health_interval: Duration,
    /// Which sessions share a process. The catalog's worker serves every node's workers and
    /// is shared whatever this says.
    pub isolation: Isolation,
    /// Isolated workers one principal may hold at once; `None` is all of them.
    pub max_per_principal: Option<usize>,
}
