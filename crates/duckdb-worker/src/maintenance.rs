//! The lake's maintenance, run by the catalog: flush inlined rows into Parquet, merge adjacent
//! small files, expire old snapshots, and delete files nothing references any more.
//!
//! A DuckDB 1.5 client's `INSERT INTO r.t SELECT ...` arrives as one APPEND per 2,048 rows,
//! each its own commit, so a lake fills with small files and snapshots unless something merges
//! them. It runs in the catalog process, on a DuckDB instance of its own that attaches the lake
//! through the catalog's own Quack listener like any worker, for two reasons: one owner, so two
//! compactions never race each other (duckdb/ducklake#1452), and no client session shares its
//! process, because DuckLake drops every cached schema of its process after a flush, which a
//! client's open schema-changing transaction still points into. Its commits are ordinary
//! DuckLake commits, with conflict checks and retries, so a writer that commits meanwhile loses
//! nothing; a merged file's sources stay on disk until the retention has passed, for readers
//! of older snapshots.
//!
//! Each run ends with a report line on stdout (`QUACKGATE-WORKER LAKE ...`), which the
//! supervisor turns into metrics; a `MAINTAIN` line on stdin asks for a run now.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use duckdb::{Config, Connection};

use crate::error::WorkerError;
use crate::spec::{MaintenanceSpec, LAKE_PREFIX};
use crate::sql::sql_literal;

/// What a run found, for the report line.
#[derive(Debug, Default, Clone, Copy)]
struct LakeCounts {
    data_files: i64,
    snapshots: i64,
    inlined_rows: i64,
}

/// Runs maintenance for ever: every `interval_secs`, and whenever `requests` delivers.
///
/// `local` is a connection to the catalog's own database, for the counts; `config` makes the
/// maintenance instance; `port` and `token` reach the catalog's listener.
pub fn run(
    spec: MaintenanceSpec,
    local: Connection,
    config: impl Fn() -> Result<Config, WorkerError>,
    port: u16,
    token: &str,
    requests: mpsc::Receiver<()>,
) {
    let (mut runs, mut failures) = (0u64, 0u64);
    let open = || attach(&config, port, token);
    let mut lake = LakeInstance {
        conn: None,
        open: &open,
        tables_left: HashSet::new(),
    };
    let mut last_ms = 0u128;
    let mut told_remote = false;
    report(&local, runs, failures, last_ms);
    loop {
        let wait = match spec.interval_secs {
            0 => Duration::MAX,
            secs => Duration::from_secs(secs),
        };
        match requests.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        // Requests that arrived during the wait are served by this run.
        while requests.try_recv().is_ok() {}
        if !lake_exists(&local) {
            report(&local, runs, failures, last_ms);
            continue;
        }
        if let Some(path) = remote_data_path(&local) {
            // The catalog holds no credentials for object storage.
            if !told_remote {
                eprintln!("quackgate catalog: lake maintenance skipped: the data path {path} is not a local folder");
                told_remote = true;
            }
            report(&local, runs, failures, last_ms);
            continue;
        }
        let started = Instant::now();
        let failed = maintain(&mut lake, spec.retention_secs);
        last_ms = started.elapsed().as_millis();
        runs += 1;
        for e in &failed {
            eprintln!(
                "quackgate catalog: lake maintenance failed: {}",
                e.to_string().replace('\n', " ")
            );
        }
        if !failed.is_empty() {
            failures += 1;
            // A fresh attach next time, in case the session is what broke.
            lake.conn = None;
        }
        report(&local, runs, failures, last_ms);
    }
}

fn attach(
    config: &impl Fn() -> Result<Config, WorkerError>,
    port: u16,
    token: &str,
) -> Result<Connection, WorkerError> {
    let step = |step| move |source| WorkerError::DuckDb { step, source };
    let conn = Connection::open_in_memory_with_flags(config()?)
        .map_err(step("opening the maintenance database"))?;
    let scope = format!("quack:127.0.0.1:{port}");
    // No DATA_PATH: the lake exists, and its metadata holds the data path.
    conn.execute_batch(&format!(
        "LOAD httpfs; LOAD quack; LOAD parquet; LOAD ducklake;
         CREATE SECRET quackgate_catalog (TYPE quack, TOKEN {token}, SCOPE {scope_lit});
         ATTACH {uri} AS lake;",
        token = sql_literal(token),
        scope_lit = sql_literal(&scope),
        uri = sql_literal(&format!("ducklake:{scope}")),
    ))
    .map_err(step("attaching the lake for maintenance"))?;
    Ok(conn)
}

/// The maintenance's own DuckDB with the lake attached, opened when a step needs it. DuckDB
/// ends an instance at an internal error (its Parquet writer meeting a type it has no form for
/// does), so a step that leaves it unusable takes it away, and the next step opens a new one.
struct LakeInstance<'a> {
    conn: Option<Connection>,
    open: &'a dyn Fn() -> Result<Connection, WorkerError>,
    /// The [`TableStep`]s whose last run left tables behind.
    tables_left: HashSet<&'static str>,
}

impl LakeInstance<'_> {
    fn execute(&mut self, step: &'static str, sql: &str) -> Result<(), WorkerError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => (self.open)()?,
        };
        let result = conn
            .execute_batch(sql)
            .map_err(|source| WorkerError::DuckDb { step, source });
        if result.is_ok() || conn.execute_batch("SELECT 1").is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    /// Every table of the lake, as (schema, table).
    fn tables(&mut self) -> Result<Vec<(String, String)>, WorkerError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => (self.open)()?,
        };
        let tables = conn
            .prepare(
                "SELECT schema_name, table_name FROM duckdb_tables()
                 WHERE database_name = 'lake' ORDER BY ALL",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|source| WorkerError::DuckDb {
                step: "listing the lake's tables",
                source,
            });
        self.conn = Some(conn);
        tables
    }
}

/// A step DuckLake runs over the whole lake in one transaction, and over one table too.
struct TableStep {
    name: &'static str,
    whole: &'static str,
    /// The call for one table, from its schema's and its own name as SQL literals.
    one: fn(&str, &str) -> String,
}

const FLUSH: TableStep = TableStep {
    name: "flushing inlined data",
    whole: "CALL ducklake_flush_inlined_data('lake');",
    one: |schema, table| {
        format!("CALL ducklake_flush_inlined_data('lake', schema_name => {schema}, table_name => {table});")
    },
};

const MERGE: TableStep = TableStep {
    name: "merging adjacent files",
    whole: "CALL ducklake_merge_adjacent_files('lake');",
    one: |schema, table| {
        format!("CALL ducklake_merge_adjacent_files('lake', {table}, schema => {schema});")
    },
};

/// Runs `step` over the whole lake; when that fails, table by table, so that one table it
/// cannot process (a sort key that no longer binds, a value Parquet cannot hold: a negative
/// interval, a partition value longer than a file name may be, a HUGEINT near its limit,
/// which Parquet keeps as a DOUBLE) holds back only itself. The error names the tables left;
/// when every table passes on its own, the run has lost nothing. A step that left tables goes
/// table by table from the start next time, rather than redo, and roll back, the whole lake's
/// work on every run.
fn table_by_table(lake: &mut LakeInstance<'_>, step: &TableStep) -> Result<(), WorkerError> {
    let mut first = if lake.tables_left.contains(step.name) {
        None
    } else {
        match lake.execute(step.name, step.whole) {
            Ok(()) => return Ok(()),
            Err(e) => Some(e),
        }
    };
    let mut left = Vec::new();
    for (schema, table) in lake.tables()? {
        let sql = (step.one)(&sql_literal(&schema), &sql_literal(&table));
        if let Err(e) = lake.execute(step.name, &sql) {
            left.push(format!("{schema}.{table}"));
            first.get_or_insert(e);
        }
    }
    match first {
        Some(first) if !left.is_empty() => {
            lake.tables_left.insert(step.name);
            Err(WorkerError::TablesLeft {
                first: Box::new(first),
                left,
            })
        }
        _ => {
            lake.tables_left.remove(step.name);
            Ok(())
        }
    }
}

/// Every step of a run; what failed, each step at most once.
fn maintain(lake: &mut LakeInstance<'_>, retention_secs: u64) -> Vec<WorkerError> {
    // An absolute time: `now() - INTERVAL` needs ICU for TIMESTAMPTZ, which is not loaded.
    // To the microsecond: whole seconds made a run within a second of the one that scheduled
    // files for deletion keep them, whatever the retention.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let cutoff = (now - retention_secs as f64).max(0.0);
    let older = format!("to_timestamp({cutoff:.6})");
    // Every step runs even when one before it failed: one table that cannot be flushed
    // must not stop the merging, expiry and cleanup of every other table.
    let mut failed: Vec<WorkerError> = [FLUSH, MERGE]
        .iter()
        .filter_map(|step| table_by_table(lake, step).err())
        .collect();
    let steps = [
        (
            "expiring snapshots",
            format!("CALL ducklake_expire_snapshots('lake', older_than => {older});"),
        ),
        (
            "deleting files of expired snapshots",
            format!("CALL ducklake_cleanup_old_files('lake', older_than => {older});"),
        ),
        // Files no snapshot has ever referenced, such as those of failed writes; the retention
        // keeps the files of commits still under way.
        (
            "deleting orphaned files",
            format!("CALL ducklake_delete_orphaned_files('lake', older_than => {older});"),
        ),
    ];
    for (name, sql) in steps {
        if let Err(e) = lake.execute(name, &sql) {
            failed.push(e);
        }
    }
    failed
}

fn lake_exists(local: &Connection) -> bool {
    local
        .query_row(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'ducklake_metadata'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .is_ok_and(|n| n > 0)
}

/// The lake's data path when it is not a local folder (`az://...`).
fn remote_data_path(local: &Connection) -> Option<String> {
    local
        .query_row(
            "SELECT value FROM ducklake_metadata WHERE key = 'data_path'",
            [],
            |row| row.get::<_, String>(0),
        )
        .ok()
        .filter(|path| path.contains("://"))
}

/// Counts from the metadata tables, read locally (0 before the lake exists).
fn counts(local: &Connection) -> LakeCounts {
    if !lake_exists(local) {
        return LakeCounts::default();
    }
    let count = |sql: &str| {
        local
            .query_row(sql, [], |row| row.get::<_, i64>(0))
            .unwrap_or(0)
    };
    let mut inlined_rows = 0;
    let tables: Vec<String> = local
        .prepare("SELECT table_name FROM ducklake_inlined_data_tables")
        .and_then(|mut s| {
            s.query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .unwrap_or_default();
    for table in tables {
        inlined_rows += count(&format!(
            "SELECT count(*) FROM \"{}\" WHERE end_snapshot IS NULL",
            table.replace('"', "\"\"")
        ));
    }
    LakeCounts {
        data_files: count("SELECT count(*) FROM ducklake_data_file WHERE end_snapshot IS NULL"),
        snapshots: count("SELECT count(*) FROM ducklake_snapshot"),
        inlined_rows,
    }
}

fn report(local: &Connection, runs: u64, failures: u64, last_ms: u128) {
    let c = counts(local);
    println!(
        "{LAKE_PREFIX} data_files={} snapshots={} inlined_rows={} runs={runs} failures={failures} last_run_ms={last_ms}",
        c.data_files, c.snapshots, c.inlined_rows
    );
}
