//! Why a worker fails, in a leaf file: the worker's main loop and the DuckLake setup both
//! return it, so neither has to import the other for it.

use std::path::PathBuf;

/// Why a worker could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The supervisor's spec line was missing or not valid JSON.
    #[error("reading the worker spec from stdin: {0}")]
    Spec(String),
    /// An extension file is not where DuckDB will look for it.
    #[error(
        "missing DuckDB extension file {path}: install the duckdb-extension-{name}==1.5.5 wheel \
         there (scripts/fetch-duckdb does it: it downloads the wheel from PyPI and copies \
         extensions/v1.5.5/{name}.duckdb_extension to that path)"
    )]
    MissingExtension {
        /// The extension's name.
        name: String,
        /// Where the file was expected.
        path: PathBuf,
    },
    /// A DuckDB call failed; `step` says which one.
    #[error("{step}: {source}")]
    DuckDb {
        /// What the worker was doing.
        step: &'static str,
        /// DuckDB's error.
        #[source]
        source: duckdb::Error,
    },
    /// A maintenance step failed for these tables, each on its own.
    #[error("{first}; run table by table, all but {}", .left.join(", "))]
    TablesLeft {
        /// The first failure: of the whole lake's step, or of a table's.
        first: Box<WorkerError>,
        /// `schema.table` of each table the step failed for.
        left: Vec<String>,
    },
    /// Starting failed; the message has the token scrubbed from it.
    #[error("{0}")]
    Start(String),
    /// A local file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Writing the status line failed (the supervisor is gone).
    #[error("writing to stdout: {0}")]
    Stdout(#[from] std::io::Error),
}
