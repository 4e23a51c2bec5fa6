//! DuckLake as a worker's default database, with its metadata in a DuckDB file served over
//! Quack by `quackgate catalog`.
//!
//! Quack serves only the server's default database to clients, and `USE` changes the default
//! of one connection, not of the sessions Quack opens later. So the lake is opened as the
//! worker's main database: `ducklake:quack:<catalog>`. The quack client that reaches the
//! catalog finds its token among DuckDB's secrets, and a main database is opened before any
//! SQL can run, so the token goes into a persistent secret in a private folder first, which is
//! dropped, file and all, as soon as the database is open. The first attach, which also creates the lake's
//! metadata, runs on a throw-away connection because it needs `DATA_PATH`.
//!
//! A worker cannot do its work without the catalog, and a restarted catalog no longer knows
//! the worker's catalog session. [`watch_catalog`] therefore checks the catalog every few
//! seconds, and when it is gone the worker exits with the reason: its supervisor restarts it
//! with backoff, and it attaches again once the catalog is back.

use std::sync::mpsc;
use std::time::Duration;

use duckdb::{Config, Connection};

use crate::error::WorkerError;
use crate::private_dir::PrivateDir;
use crate::spec::DuckLakeSpec;
use crate::spec::EXIT_CATALOG_LOST;
use crate::sql::sql_literal;

/// How often the catalog is checked.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How long one check may take before it counts as failed.
const WATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Consecutive failed checks after which the worker gives up on its catalog session.
const WATCH_FAILURES: u32 = 2;
/// Further tries of the first attach, which can lose a creation race.
const SETUP_RETRIES: u32 = 4;
/// Probe timeouts in a row after which the catalog counts as gone: a busy catalog answers
/// slowly, a gone one refuses or no longer knows the session, which counts at once.
const WATCH_TIMEOUTS: u32 = 6;

/// Opens the lake as the main database of a new DuckDB instance configured by `config`;
/// READ_ONLY for `read_only`, in which case the lake must already exist (the read-write
/// workers create it).
pub fn open(
    private: &PrivateDir,
    lake: &DuckLakeSpec,
    read_only: bool,
    config: impl Fn() -> Result<Config, WorkerError>,
) -> Result<Connection, WorkerError> {
    let step = |step| move |source| WorkerError::DuckDb { step, source };
    let secrets = private.subdir("secrets").map_err(|e| WorkerError::Io {
        what: "creating the catalog secret folder",
        source: e,
    })?;
    // The catalog's CA goes in as an open-time option: DuckDB 1.5.5's quack client in an
    // embedded DuckDB ignores a later `SET ca_cert_file`, so a set-up connection given the CA
    // that way fails its first ATTACH with "SSL peer certificate ... was not OK".
    let with_secrets = || -> Result<Config, WorkerError> {
        let mut config = config()?
            .with("secret_directory", secrets.to_string_lossy())
            .map_err(step("configuring the secret folder"))?;
        if let Some(ca) = &lake.catalog_ca_file {
            config = config
                .with("ca_cert_file", ca.to_string_lossy())
                .map_err(step("setting ca_cert_file"))?;
        }
        Ok(config)
    };
    let setup = format!(
        "LOAD httpfs; LOAD quack; LOAD parquet; LOAD ducklake;
         CREATE OR REPLACE PERSISTENT SECRET quackgate_catalog (TYPE quack, TOKEN {token}, SCOPE {scope});",
        token = sql_literal(&lake.catalog_token),
        scope = sql_literal(&format!("quack:{}", lake.catalog)),
    );
    let first = Connection::open_in_memory_with_flags(with_secrets()?)
        .map_err(step("opening the set-up connection"))?;
    first
        .execute_batch(&setup)
        .map_err(step("storing the catalog secret"))?;
    let attach = format!(
        "ATTACH {uri} AS quackgate_lake_setup (DATA_PATH {data}, AUTOMATIC_MIGRATION true);
         DETACH quackgate_lake_setup;",
        uri = sql_literal(&lake.uri()),
        data = sql_literal(&lake.data_path),
    );
    // Workers of several nodes may create a new lake at the same moment; the losers of that
    // race succeed on a later try. Read-only workers never create it.
    let mut tries = 0;
    if !read_only {
        loop {
            match first.execute_batch(&attach) {
                Ok(()) => break,
                Err(e) if tries < SETUP_RETRIES => {
                    tries += 1;
                    eprintln!(
                        "quackgate worker: attaching the DuckLake catalog (try {tries}): {e}"
                    );
                    std::thread::sleep(Duration::from_millis(250 << tries));
                }
                Err(e) => return Err(step("attaching the DuckLake catalog")(e)),
            }
        }
    }
    drop(first);
    let mut config = with_secrets()?;
    if read_only {
        // DuckDB itself then refuses every write to the lake, whatever the SQL.
        config = config
            .access_mode(duckdb::AccessMode::ReadOnly)
            .map_err(step("setting access_mode READ_ONLY"))?;
    }
    let conn = Connection::open_with_flags(lake.uri(), config)
        .map_err(step("opening DuckLake as the main database"))?;
    // The lake holds its catalog connection now, and never looks the token up again (a lost
    // catalog restarts the worker, which attaches anew). Left in the secret manager, the token
    // would let client SQL run anything on the catalog with `quack_query('quack:<catalog>',
    // ...)`; dropped, that finds no token.
    conn.execute_batch("DROP PERSISTENT SECRET quackgate_catalog")
        .map_err(step("dropping the catalog secret"))?;
    let retry = lake.commit_retry;
    conn.execute_batch(&format!(
        "SET GLOBAL ducklake_max_retry_count = {}; SET GLOBAL ducklake_retry_wait_ms = {}; SET GLOBAL ducklake_retry_backoff = {};",
        retry.max_retries, retry.wait_ms, retry.backoff
    ))
    .map_err(step("setting the DuckLake commit retries"))?;
    std::fs::remove_dir_all(&secrets).map_err(|e| WorkerError::Io {
        what: "removing the catalog secret folder",
        source: e,
    })?;
    if let Some(azure) = &lake.azure {
        // A temporary secret lives in this DuckDB instance, so every Quack session's writes
        // to the data path use it.
        conn.execute_batch(&format!("LOAD azure; {}", azure.create_secret_sql()))
            .map_err(step("creating the Azure storage secret"))?;
    }
    Ok(conn)
}

/// Places a locked-down worker must still reach: the lake's data path (a folder or a blob
/// prefix).
pub fn allowed_directories(lake: &DuckLakeSpec) -> Vec<String> {
    vec![lake.data_path.clone()]
}

/// A probe of constant cost: one row of the lake's small metadata table, asked of the catalog
/// through the lake's own Quack connection (`quack_query_by_name`, as DuckLake asks it), and
/// named as DuckLake names it (`"main".ducklake_...`: the catalog refuses its tables in other
/// forms).
/// Reading the attached metadata database instead goes through the quack client's catalog
/// cache, which DuckLake clears after every server-side commit: a probe landing in that gap
/// saw no tables, and enough such probes in a row stopped a busy, healthy worker.
pub fn catalog_probe(conn: &Connection) -> Result<String, WorkerError> {
    let database: String = conn
        .query_row("SELECT system.main.current_database()", [], |row| {
            row.get(0)
        })
        .map_err(|source| WorkerError::DuckDb {
            step: "naming the lake",
            source,
        })?;
    Ok(format!(
        "SELECT count(*) FROM system.main.quack_query_by_name({}, 'SELECT 1 FROM \"main\".ducklake_metadata LIMIT 1')",
        sql_literal(&format!("__ducklake_metadata_{database}"))
    ))
}

/// Checks the catalog until it is gone, then exits the process with the reason.
///
/// The catalog counts as gone after [`WATCH_FAILURES`] probes in a row fail with an error (it
/// refuses connections, or answers `Invalid connection id` after a restart), or after
/// [`WATCH_TIMEOUTS`] in a row get no answer at all.
pub fn watch_catalog(conn: Connection, probe: String, catalog: String) -> ! {
    let (tx, rx) = mpsc::channel();
    // One probing thread: a probe stuck behind the worker's own catalog traffic delays the
    // next one instead of piling up threads.
    std::thread::spawn(move || loop {
        std::thread::sleep(WATCH_INTERVAL);
        let result = conn
            .query_row(&probe, [], |row| row.get::<_, i64>(0))
            .map(|_| ())
            .map_err(|e| e.to_string());
        if tx.send(result).is_err() {
            return;
        }
    });
    let (mut failures, mut timeouts) = (0, 0);
    loop {
        let why = match rx.recv_timeout(WATCH_INTERVAL + WATCH_TIMEOUT) {
            Ok(Ok(())) => {
                (failures, timeouts) = (0, 0);
                continue;
            }
            Ok(Err(e)) => {
                failures += 1;
                if failures < WATCH_FAILURES {
                    continue;
                }
                e
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timeouts += 1;
                if timeouts < WATCH_TIMEOUTS {
                    continue;
                }
                format!(
                    "no answer for {} s",
                    (WATCH_TIMEOUT.as_secs() + 2) * u64::from(WATCH_TIMEOUTS)
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => "the probe thread ended".to_string(),
        };
        eprintln!(
            "quackgate worker: DuckLake catalog {catalog} lost ({}); exiting so the supervisor restarts this worker once the catalog is back",
            why.replace('\n', " ")
        );
        crate::exit::exit_now(EXIT_CATALOG_LOST);
    }
}

/// Extensions a DuckLake worker loads besides the base ones.
pub fn extensions(lake: &DuckLakeSpec) -> &'static [&'static str] {
    if lake.azure.is_some() {
        &["parquet", "ducklake", "azure"]
    } else {
        &["parquet", "ducklake"]
    }
}
