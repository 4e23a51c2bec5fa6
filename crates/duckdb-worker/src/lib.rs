//! The one crate that links DuckDB.
//!
//! DuckDB's C++ takes a quarter of an hour to compile, so it lives behind this crate boundary:
//! the gateway crate never touches the `duckdb` API and editing it never recompiles DuckDB.
//! The gateway only shares [`WorkerSpec`] with this crate, the message it writes to a worker's
//! stdin, and the binary calls `run_worker` for its hidden `worker` subcommand.
//!
//! # Features
//! `engine` (default) is DuckDB itself and the worker process around it. Without it only the
//! pure parts build: the spec the gateway writes, the extension layout, the exit codes and the
//! checks on SQL text. The fuzz crate builds the gateway that way, so that a fuzz build (its
//! own target dir and RUSTFLAGS) never compiles DuckDB's C++ again.
//!
//! # Layout
//! - `spec`: what a worker is told to do (its lake included), and the lines it answers on
//!   stdout.
//! - `worker`: the code that runs inside a worker process.
//! - `error`: why a worker fails.
//! - `sql`: quoting values into SQL text.
//! - `sql_checks`: the catalog's checks on the SQL text of its sessions.
//! - `client_sql`: the check on clients' SQL text: nothing may reach the lake's metadata
//!   database or Quack's functions.
//! - `client_hook`: Quack's hooks on a worker that serves clients, which run that check.
//! - `authorization_hook`: Quack's authorization hook as a DuckDB function, around a policy.
//! - `ducklake`: DuckLake as a worker's default database, and the watch on its catalog.
//! - `sandbox`: the seccomp filter that stops client SQL from opening servers, and the Landlock
//!   ruleset that confines a worker's file access.
//! - `file_access`: which files a worker needs, and so may touch.
//! - `exit`: leaving the process at once, without the exit handlers that race its serving threads.
//! - `private_dir`: the worker's private folder.
//! - `session_roles`: read-only sessions on the catalog, told apart by their token.
//! - `session_settings`: the settings client SQL may change once a worker is locked.

// One exception, `exit::exit_now`: the C library's `_exit`, which Rust does not wrap.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "engine")]
mod authorization_hook;
#[cfg(feature = "engine")]
mod client_hook;
mod client_sql;
#[cfg(feature = "engine")]
mod commit_batches;
#[cfg(feature = "engine")]
mod ducklake;
#[cfg(feature = "engine")]
mod error;
#[cfg(feature = "engine")]
mod exit;
#[cfg(feature = "engine")]
mod file_access;
#[cfg(feature = "engine")]
mod maintenance;
#[cfg(feature = "engine")]
mod private_dir;
#[cfg(feature = "engine")]
mod sandbox;
#[cfg(feature = "engine")]
mod session_roles;
mod session_settings;
mod spec;
#[cfg(feature = "engine")]
mod sql;
mod sql_checks;
#[cfg(feature = "engine")]
mod worker;

pub use client_sql::{check_client_sql, ClientSqlRefusal, FunctionRow, RefusedCalls};
#[cfg(feature = "engine")]
pub use commit_batches::is_commit_batch;
#[cfg(feature = "engine")]
pub use error::WorkerError;
pub use session_settings::SESSION_SETTINGS;
pub use spec::{
    extension_path, AzureCredentials, CommitRetry, DuckLakeSpec, MaintenanceSpec, WorkerSpec,
    WorkerStatus, DUCKDB_VERSION, EXIT_CATALOG_LOST, EXIT_SERVER_STOPPED, EXTENSIONS_OPTIONAL,
    EXTENSIONS_REQUIRED, EXTENSION_PLATFORM, FAILED_PREFIX, LAKE_COMMIT_EXTENSIONS, LAKE_PREFIX,
    MAINTAIN_LINE, READY_PREFIX,
};
pub use sql_checks::{is_read_only_sql, is_worker_sql};
#[cfg(feature = "engine")]
pub use worker::run_worker;
