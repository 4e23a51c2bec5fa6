//! The one crate that links DuckDB.
//!
//! DuckDB's C++ takes a quarter of an hour to compile, so it lives behind this crate boundary:
//! the gateway crate never touches the `duckdb` API and editing it never recompiles DuckDB.
//! The gateway only shares [`WorkerSpec`] with this crate, the message it writes to a worker's
//! stdin, and the binary calls [`run_worker`] for its hidden `worker` subcommand.
//!
//! # Layout
//! - `spec`: what a worker is told to do (its lake included), and the lines it answers on
//!   stdout.
//! - `worker`: the code that runs inside a worker process.
//! - `error`: why a worker fails.
//! - `sql`: quoting values into SQL text.
//! - `ducklake`: DuckLake as a worker's default database, and the watch on its catalog.
//! - `sandbox`: the seccomp filter that stops client SQL from opening servers, and the Landlock
//!   rules that keep a read-only worker from writing files.
//! - `private_dir`: the worker's private folder.
//! - `session_roles`: read-only sessions on the catalog, told apart by their token.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod commit_batches;
mod ducklake;
mod error;
mod maintenance;
mod private_dir;
mod sandbox;
mod session_roles;
mod spec;
mod sql;
mod worker;

pub use commit_batches::is_commit_batch;
pub use ducklake::EXIT_CATALOG_LOST;
pub use error::WorkerError;
pub use session_roles::{is_read_only_sql, is_worker_sql};
pub use spec::{
    extension_path, AzureCredentials, CommitRetry, DuckLakeSpec, MaintenanceSpec, WorkerSpec,
    WorkerStatus, DUCKDB_VERSION, EXTENSIONS_REQUIRED, EXTENSION_PLATFORM, FAILED_PREFIX,
    LAKE_COMMIT_EXTENSIONS, LAKE_PREFIX, MAINTAIN_LINE, READY_PREFIX,
};
pub use worker::{run_worker, EXIT_SERVER_STOPPED};
