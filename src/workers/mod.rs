//! The embedded DuckDB workers as the rest of the gateway sees them: a fixed set of slots, each
//! with the port its current process serves on and the counters placement reads.
//!
//! The supervisor writes `port` and the health prober writes `healthy`; request handling only
//! reads them, lock-free. A slot outlives its processes: a restarted worker comes back in the
//! same slot, so ids naming the slot still route there (and get `Invalid connection id` from
//! the new process, which never knew them).

pub mod config;
pub mod env;
pub mod exits;
pub mod health;
pub mod lake;
mod memory;
mod owner;
pub mod supervisor;

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::auth::Access;

/// One worker slot.
#[derive(Debug)]
pub struct Worker {
    /// Position in the set; part of every connection id the slot's sessions get.
    pub index: u16,
    /// Identity reported by `quackgate.worker_id()` inside the worker: `<node>.w<index>`.
    pub id: String,
    /// Which sessions it serves; a read-only worker opens the lake READ_ONLY.
    pub access: Access,
    /// Loopback port of the serving process; 0 while none serves. Written by the supervisor.
    port: AtomicU16,
    /// Last health verdict. Written by the prober, reset by the supervisor on each start.
    healthy: AtomicBool,
    /// Bumped by the supervisor on every start, so the prober can tell processes apart.
    generation: AtomicU64,
    /// Open sessions counted towards load. Written by the session table.
    pub(crate) sessions: AtomicUsize,
    /// CONNECTION_REQUESTs placed here and not yet answered.
    connecting: AtomicUsize,
    /// Restarts since the gateway started.
    restarts: AtomicU64,
    /// The principal its process serves, under `workers.isolation = "principal"`.
    owner: owner::Owner,
}

impl Worker {
    fn new(index: u16, node_id: &str, access: Access) -> Self {
        Worker {
            index,
            id: format!("{node_id}.w{index}"),
            access,
            port: AtomicU16::new(0),
            healthy: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            sessions: AtomicUsize::new(0),
            connecting: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            owner: owner::Owner::default(),
        }
    }

    /// The port of the serving process, if one serves. Pinned requests route on this alone:
    /// a slow health probe must not cut off sessions that live in a running process.
    pub fn serving_port(&self) -> Option<u16> {
        match self.port.load(Ordering::Acquire) {
            0 => None,
            port => Some(port),
        }
    }

    /// Whether new sessions may be placed here.
    pub fn is_ready(&self) -> bool {
        self.serving_port().is_some()
            && self.healthy.load(Ordering::Acquire)
            && !self.owner.is_freeing()
    }

    /// The principal its process serves, once one has been placed on it (isolated workers).
    pub fn owner(&self) -> Option<Arc<str>> {
        self.owner.lock().clone()
    }

    /// Places a session of `principal` here if the process is ready and serves no other
    /// principal, making it the owner.
    pub fn claim(&self, principal: &Arc<str>) -> Option<ConnectingGuard<'_>> {
        let mut owner = self.owner.lock();
        if !self.is_ready() || owner.as_ref().is_some_and(|o| o != principal) {
            return None;
        }
        *owner = Some(principal.clone());
        self.owner.claimed();
        Some(self.connecting())
    }

    /// Asks for a new process for `principal` if this one serves another principal that has
    /// no session or connect left on it. Sessions are counted before their connect's guard
    /// drops, and claims take the same lock, so none can slip in.
    pub fn free_for(&self, principal: &Arc<str>) -> bool {
        let mut owner = self.owner.lock();
        let idle = self.is_ready()
            && self.sessions.load(Ordering::Acquire) == 0
            && self.connecting.load(Ordering::Acquire) == 0
            && !self.owner.is_reserved(std::time::Instant::now());
        if !idle || owner.as_ref().is_none_or(|o| o == principal) {
            return false;
        }
        self.owner.free_for(&mut owner, principal);
        true
    }

    /// Replaces the process of an isolated worker with a new one for the same owner: the one
    /// way to stop a statement DuckDB 1.5.5 has (it cannot interrupt a served statement). A
    /// shared worker, which has no owner, is left alone: `false`.
    pub fn stop_statements(&self, principal: &Arc<str>) -> bool {
        let mut owner = self.owner.lock();
        if owner.as_ref() != Some(principal) {
            return false;
        }
        // A slot between processes has nothing to stop, and a request kept for later would
        // end the next process as soon as it serves.
        if !self.owner.is_freeing() && self.serving_port().is_some() {
            self.owner.free_for(&mut owner, principal);
        }
        true
    }

    /// Whether a new process is being started here for `principal`.
    pub fn is_freed_for(&self, principal: &Arc<str>) -> bool {
        self.owner.is_freeing() && self.owner.lock().as_ref() == Some(principal)
    }

    /// Resolves once the slot's process is ready for new sessions.
    pub async fn ready(&self) {
        self.owner.serving_again(|| self.is_ready()).await;
    }

    /// Resolves when a new process is asked for ([`Worker::free_for`]).
    pub(crate) async fn restart_requested(&self) {
        self.owner.restart_requested().await;
    }

    /// Sessions plus connects in flight: what placement minimises.
    pub fn load(&self) -> usize {
        self.sessions
            .load(Ordering::Relaxed)
            .saturating_add(self.connecting.load(Ordering::Relaxed))
    }

    /// Open sessions counted here.
    pub fn session_count(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Restarts since the gateway started.
    pub fn restart_count(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// The process generation: bumped when a process starts serving and when it ends, so a
    /// session opened by a process that has since gone is recognised as stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Counts a CONNECTION_REQUEST in flight until the guard drops.
    pub fn connecting(&self) -> ConnectingGuard<'_> {
        self.connecting.fetch_add(1, Ordering::Relaxed);
        ConnectingGuard(self)
    }

    pub(crate) fn set_serving(&self, port: u16) {
        self.owner.new_process(|| {
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.healthy.store(true, Ordering::Release);
            self.port.store(port, Ordering::Release);
        });
    }

    pub(crate) fn set_down(&self) {
        self.port.store(0, Ordering::Release);
        self.healthy.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Lowers the session count without wrapping below zero.
    pub(crate) fn session_ended(&self) {
        // Never fails: the closure always returns Some.
        let _ = self
            .sessions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    pub(crate) fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }
}

/// Keeps a placed CONNECTION_REQUEST counted in its worker's load.
#[derive(Debug)]
pub struct ConnectingGuard<'a>(&'a Worker);

impl<'a> ConnectingGuard<'a> {
    /// The worker the connect was placed on.
    pub fn worker(&self) -> &'a Worker {
        self.0
    }
}

impl Drop for ConnectingGuard<'_> {
    fn drop(&mut self) {
        self.0.connecting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All worker slots of this node. Fixed in size for the life of the gateway.
#[derive(Debug)]
pub struct WorkerSet {
    workers: Vec<Worker>,
    /// The lake as the catalog last reported it (the catalog role only).
    pub lake: std::sync::Arc<lake::LakeStatus>,
    /// Worker processes each principal's sessions ended.
    pub exits: exits::WorkerExits,
}

impl WorkerSet {
    /// `read_write` slots, then `read_only` ones, named after `node_id`.
    pub fn new(read_write: usize, read_only: usize, node_id: &str) -> Self {
        let count =
            u16::try_from(read_write + read_only).expect("config limits the workers to 256");
        WorkerSet {
            workers: (0..count)
                .map(|i| {
                    let access = if usize::from(i) < read_write {
                        Access::ReadWrite
                    } else {
                        Access::ReadOnly
                    };
                    Worker::new(i, node_id, access)
                })
                .collect(),
            lake: std::sync::Arc::default(),
            exits: exits::WorkerExits::default(),
        }
    }

    /// The slot named in a connection id, if it exists.
    pub fn get(&self, index: u16) -> Option<&Worker> {
        self.workers.get(usize::from(index))
    }

    /// Every slot, in index order.
    pub fn iter(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter()
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are no slots (never, after config validation).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// How many slots have a process ready for new sessions.
    pub fn ready_count(&self) -> usize {
        self.workers.iter().filter(|w| w.is_ready()).count()
    }
}

/// The catalog's check on the SQL of read-only sessions lives in the worker crate, which has
/// no test target of its own (each would link DuckDB again); it is tested here.
#[cfg(test)]
mod read_only_sql_tests {
    use quackgate_duckdb::is_read_only_sql;

    #[test]
    fn single_reads_pass() {
        for sql in [
            "SELECT 1",
            "  select * from \"main\".ducklake_snapshot WHERE snapshot_id = 3;",
            "FROM t",
            "(SELECT 1)",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SELECT 'it''s; fine' AS s",
            "SELECT \"odd;name\" FROM t",
            "DESCRIBE t",
            "SELECT begin_snapshot, end_snapshot FROM \"main\".ducklake_data_file",
            "SELECT ducklake_tag.key FROM \"main\".ducklake_tag",
            "SELECT 1;  ",
            // DuckLake writes a user's column bare when its name is not a DuckDB keyword; an
            // eighteenth review's read-only principal could not read a table with a column
            // called `query`.
            "SELECT id, \"load\", query, quack_count, nextval, \"quack\" FROM \"main\".ducklake_inlined_data_5_1",
            "SELECT t.query FROM t",
        ] {
            assert!(is_read_only_sql(sql), "{sql}");
        }
    }

    #[test]
    fn writes_and_tricks_are_refused() {
        for sql in [
            "INSERT INTO t VALUES (NULL)",
            "CREATE TABLE planted AS SELECT 1",
            "DELETE FROM ducklake_snapshot",
            "UPDATE t SET x = 1",
            "DROP TABLE t",
            "COPY t TO 'x.csv'",
            "ATTACH 'x.db'",
            "CALL quack_stop('quack:127.0.0.1:1')",
            "SELECT * FROM quack_stop('quack:127.0.0.1:1')",
            "SELECT * FROM \"QUACK_STOP\"('x')",
            "SELECT 1; DROP TABLE t",
            "SELECT 1;DROP TABLE t;",
            "SELECT 1; /* */ DROP TABLE t",
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
            "WITH x AS (SELECT 1) DELETE FROM t",
            "SELECT $$'$$; DROP TABLE t; SELECT '$$'",
            "SELECT E'\\''; DROP TABLE t; SELECT ''",
            "SELECT 'unterminated",
            "SELECT 1 /* unterminated",
            "PRAGMA enable_checkpoint_on_shutdown",
            "SET threads = 1",
            "EXPLAIN ANALYZE DELETE FROM t",
            "",
            "   ",
            // Found in review: comments DuckDB reads differently from a simple scanner.
            "SELECT 1 --\r; DELETE FROM ducklake_snapshot",
            "/* /* */ SELECT ' */ DELETE FROM ducklake_snapshot -- '",
            "SELECT 1 -- comment",
            // DuckLake's tables as the Quack client names them, not as DuckLake does.
            "SELECT #2, #6 FROM ducklake_data_file",
            "SELECT * FROM main.ducklake_snapshot",
            "SELECT * FROM \"ducklake_snapshot\"",
            "SELECT * FROM \"main\".ducklake_staged_commit",
            "SELECT * FROM ducklake_staged_commit",
            // Names and SQL built at run time, and side effects inside a SELECT.
            "SELECT * FROM query('SELECT * FROM quack' || chr(95) || 'stop(1)')",
            "SELECT * FROM query_table('t')",
            "SELECT * FROM U&\"quack!005fstop\" UESCAPE '!'",
            "SELECT * FROM force_checkpoint()",
            "SELECT nextval('seq')",
            "SELECT 'seq'.nextval()",
            "SELECT setval ('seq', 1)",
            "SELECT * FROM \"query\"('SELECT 1')",
            "SELECT 'x'.quack_stop()",
            "SELECT * FROM query_table('quack_server_list')",
            "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT * FROM quack' || '_server_list()'))",
            "SELECT 'quack_server_list' AS s",
            "FROM enable_logging(level := 'trace')",
            "SELECT message FROM duckdb_logs()",
            "FROM duckdb_logs_parsed('QueryLog')",
            // A nineteenth review: the log view, and DuckLake's functions after "main".
            "SELECT count(*) FROM duckdb_logs",
            "SELECT * FROM \"main\".ducklake_commit('main', 2)",
            "FROM \"main\".ducklake_snapshots('lake')",
            "BEGIN TRANSACTION",
            "SELECT 1\0; DROP TABLE t",
        ] {
            assert!(!is_read_only_sql(sql), "{sql}");
        }
    }
}

/// The catalog's check on the SQL of read-write sessions (the workers' metadata connections).
#[cfg(test)]
mod worker_sql_tests {
    use quackgate_duckdb::is_worker_sql;

    #[test]
    fn what_ducklake_sends_passes_with_any_name_or_value_in_its_literals() {
        for sql in [
            "SELECT * FROM \"main\".ducklake_snapshot WHERE snapshot_id = 3",
            "INSERT INTO \"main\".ducklake_table VALUES (7, 'quack_orders', 'it''s -- /* $$')",
            "INSERT INTO \"main\".ducklake_inlined_data_1_1 VALUES ('quack_stop(''x'')', 2)",
            // Users' column names, bare, in DuckLake's inlined-data tables (found in review).
            "CREATE TABLE IF NOT EXISTS \"main\".ducklake_inlined_data_1_1(row_id BIGINT, begin_snapshot BIGINT, end_snapshot BIGINT, query VARCHAR, execute INT, quack_count INT)",
            "SELECT query AS col1, execute, quack_count FROM \"main\".ducklake_inlined_data_1_1",
            // A user's column may be called ducklake_... (a seventeenth review: refused before).
            "CREATE TABLE IF NOT EXISTS \"main\".ducklake_inlined_data_2_1(row_id BIGINT, begin_snapshot BIGINT, end_snapshot BIGINT, ducklake_x INTEGER, b VARCHAR)",
            "SELECT ducklake_x AS col1, b AS col2 FROM \"main\".ducklake_inlined_data_2_1 ORDER BY ducklake_x",
            "INSERT INTO t VALUES ('prénom', 'naïve')",
            "INSERT INTO t VALUES ('SELECT quack_stop(''x'')', $1)",
            "CREATE TABLE IF NOT EXISTS \"main\".ducklake_metadata(key VARCHAR NOT NULL, value VARCHAR NOT NULL)",
            "BEGIN TRANSACTION",
            "COMMIT",
            "UPDATE \"main\".ducklake_table SET end_snapshot = 4 WHERE table_id = 1",
            "DELETE FROM \"main\".ducklake_data_file WHERE data_file_id IN (1, 2)",
            // DuckLake drops inlined-data tables once flushed.
            "DROP TABLE IF EXISTS \"main\".ducklake_inlined_data_2_4",
            "CREATE TEMPORARY TABLE IF NOT EXISTS ducklake_staged_commit(commit_author VARCHAR);TRUNCATE ducklake_staged_commit;INSERT INTO ducklake_staged_commit VALUES (NULL, NULL, NULL, 2, '', '', 3, 0);SELECT * FROM ducklake_commit('', 2, max_retry_count => 10)",
        ] {
            assert!(is_worker_sql(sql), "{sql}");
        }
    }

    #[test]
    fn quack_functions_and_sql_from_strings_are_refused() {
        for sql in [
            "SELECT listen_uri FROM quack_server_list()",
            "CALL quack_stop('quack:127.0.0.1:1')",
            "SELECT * FROM \"QUACK_STOP\"('x')",
            "SELECT * FROM main.\"quack_stop\"('x')",
            "SELECT * FROM quack_query('quack:h:1', 'SELECT 1')",
            "SELECT * FROM QUACK_ACTIVE_CONNECTIONS()",
            "SELECT * FROM query('SELECT * FROM quack' || chr(95) || 'stop(1)')",
            "SELECT * FROM query_table('t')",
            "SELECT json_execute_serialized_sql('{}')",
            "PREPARE p AS SELECT 1",
            "EXECUTE p",
            "SET GLOBAL max_expression_depth = 3",
            "set TimeZone = 'UTC'",
            "RESET search_path",
            "PRAGMA threads=1",
            "USE other",
            "SELECT * FROM U&\"quack!005fstop\" UESCAPE '!'",
            // Where a naive scanner would see a literal that DuckDB does not.
            "SELECT 1 --\r quack_stop('x')",
            "SELECT 'a' /* /* */ quack_stop('x') */ ",
            "SELECT 1 -- harmless",
            "SELECT $$ quack_stop('x') $$",
            "SELECT E'\\'' , quack_stop('x') -- '",
            "SELECT 'unterminated",
            "SELECT 1 /* unterminated",
            "SELECT $a$ unterminated",
            "CREATE MACRO m() AS TABLE SELECT * FROM quack_server_list()",
            "CREATE OR REPLACE MACRO harmless() AS 1",
            "CREATE VIEW v AS SELECT 1",
            "CREATE TEMP FUNCTION f() AS 1",
            "SELECT * FROM main.quack_server_list ()",
            // Found in review: Unicode spaces DuckDB reads as spaces, and escape-string
            // continuations that a scanner reads apart from DuckDB.
            "SELECT count(*) FROM\u{a0}query('SELECT * FROM quack_server_list()')",
            "SELECT 1 FROM\u{3000}quack_server_list()",
            "SELECT * FROM quack_server_list\u{a0}()",
            "SELECT E'a'\n'\\' , ' , (SELECT count(*) FROM quack_stop('qu'||'ack:1')) AS s -- '",
            "SELECT 1e'x'",
            // Found by a tenth review, past the workers' check: DuckLake's own tables dropped
            // (every commit on the lake failed after) or altered; DuckLake does that only when
            // it migrates a lake, which the catalog's own DuckLake does.
            "DROP TABLE ducklake_snapshot_changes",
            "DROP TABLE IF EXISTS \"__ducklake_metadata_quack:127\".ducklake_snapshot",
            "INSERT INTO ducklake_metadata VALUES ('a', 'b'); DROP TABLE ducklake_table",
            "ALTER TABLE ducklake_data_file ADD COLUMN x INT",
            "ALTER TABLE \"__ducklake_metadata_quack:127\".ducklake_snapshot RENAME TO s2",
            "DROP TABLE review_table_in_catalog",
            "CREATE TABLE review_table_in_catalog AS SELECT 42 AS v",
            "CREATE TABLE IF NOT EXISTS \"__ducklake_metadata_quack:127\".planted(x INT)",
            "drop view ducklake_inlined_data_1_1",
            // DuckLake's tables as the Quack client names them when SQL on a worker names the
            // metadata database: never as DuckLake does.
            "SELECT * FROM main.ducklake_snapshot",
            "SELECT * FROM \"__ducklake_metadata_quack:127\".ducklake_snapshot",
            "SELECT * FROM \"main\" . ducklake_snapshot",
            "INSERT INTO \"ducklake_tag\" VALUES (1, 1, NULL, 'k', 'v')",
            "CREATE TABLE ducklake_staged_commit AS SELECT 1",
            "INSERT INTO \"main\".ducklake_staged_commit VALUES (1)",
            "SELECT * FROM ducklake_commit",
            "CALL ducklake_cleanup_old_files('lake', cleanup_all => true)",
            "SELECT * FROM ducklake_expire_snapshots('lake', older_than => now())",
            "SELECT ducklake_expire_snapshots('lake')",
            "INSERT INTO ducklake_tag VALUES (1)",
            "UPDATE ducklake_tag SET key = 'x'",
            "TRUNCATE ducklake_snapshot",
            "SELECT * FROM \"main\".ducklake_table JOIN ducklake_tag USING (table_id)",
            // The process's logs: switched on in the catalog, they hold every worker's
            // metadata SQL, other principals' inlined rows among it.
            "CALL enable_logging(level := 'trace')",
            "FROM enable_logging()",
            "SELECT message FROM duckdb_logs()",
            "FROM duckdb_logs_parsed('QueryLog')",
            "CALL enable_profiling()",
            "SELECT nextval('seq')",
            "SELECT count(*) FROM duckdb_logs",
            "FROM \"main\".ducklake_set_option('lake', 'x', 1)",
            "SELECT * FROM \"main\".ducklake_commit('main', 2)",
        ] {
            assert!(!is_worker_sql(sql), "{sql}");
        }
    }

    /// Every statement DuckLake 1.5.5 sent a catalog that serves `ducklake_commit`, recorded
    /// by the catalog's authorization hook over a workload of DDL, inserts large and small,
    /// updates, deletes, partitions, sorting, views, macros, comments, time travel,
    /// flushing, compaction, expiry and cleanup, and a READ_ONLY attach (`session`).
    #[test]
    fn every_statement_ducklake_sent_in_a_recorded_workload_passes() {
        let recorded = include_str!("../../tests/data/ducklake/catalog_statements.jsonl");
        let mut seen = 0;
        for line in recorded.lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let sql = record["sql"].as_str().expect("sql");
            match record["session"].as_str() {
                Some("read_write") => assert!(is_worker_sql(sql), "{sql}"),
                Some("read_only") => assert!(quackgate_duckdb::is_read_only_sql(sql), "{sql}"),
                other => panic!("session {other:?}"),
            }
            seen += 1;
        }
        assert!(seen > 300, "{seen} statements");
    }

    /// What the Quack client sent the same catalog for SQL that names the attached metadata
    /// database (`FROM __ducklake_metadata_lake.ducklake_data_file`, `INSERT INTO` one of
    /// its tables (an APPEND), `DROP TABLE`, `CREATE TABLE`), recorded the same way.
    #[test]
    fn what_the_quack_client_sends_for_the_metadata_database_is_refused() {
        let recorded = include_str!("../../tests/data/ducklake/quack_client_statements.jsonl");
        let mut seen = 0;
        for line in recorded.lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let sql = record["sql"].as_str().expect("sql");
            assert!(!is_worker_sql(sql), "{sql}");
            assert!(!quackgate_duckdb::is_read_only_sql(sql), "{sql}");
            seen += 1;
        }
        assert_eq!(seen, 8);
    }
}

/// The catalog's recognition of DuckLake commit batches, which it runs as one transaction.
#[cfg(test)]
mod commit_batch_tests {
    use quackgate_duckdb::is_commit_batch;

    #[test]
    fn ducklake_commit_batches_are_recognised() {
        for sql in [
            "INSERT INTO main.ducklake_snapshot VALUES (7, NOW(), 3, 9, 4);INSERT INTO main.ducklake_table VALUES (1);",
            "INSERT INTO \"main\".ducklake_snapshot VALUES (7, NOW(), 3, 9, 4); DELETE FROM \"main\".ducklake_table WHERE table_id = 1;",
            "  insert into ducklake_snapshot values (1, now(), 1, 1, 1);\nINSERT INTO ducklake_snapshot_changes VALUES (1, 'x', NULL, NULL, NULL);",
        ] {
            assert!(is_commit_batch(sql), "{sql}");
        }
    }

    #[test]
    fn other_statements_are_left_alone() {
        for sql in [
            "INSERT INTO main.ducklake_snapshot VALUES (7, NOW(), 3, 9, 4);",
            "SELECT * FROM main.ducklake_snapshot",
            "INSERT INTO main.ducklake_snapshot_changes VALUES (1); INSERT INTO x VALUES (2);",
            "CREATE TEMPORARY TABLE IF NOT EXISTS ducklake_staged_data_file(a BIGINT); SELECT * FROM ducklake_commit('main', 3);",
            "BEGIN TRANSACTION",
            "",
        ] {
            assert!(!is_commit_batch(sql), "{sql}");
        }
    }
}
