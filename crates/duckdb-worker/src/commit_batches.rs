//! DuckLake commits that reach the catalog as one transaction.
//!
//! A DuckLake worker commits a schema change (and, when the catalog cannot, any change) by
//! sending the catalog one batch of statements, the first of which inserts the new snapshot:
//! `INSERT INTO ….ducklake_snapshot VALUES (…); INSERT INTO ….ducklake_table …; …`. Over
//! Quack that batch runs in autocommit, statement by statement, and DuckLake's rollback does
//! not reach the catalog (duckdb/ducklake#1267). So a batch that loses a race halfway leaves its
//! first statements committed (a snapshot with no changes, a table with no columns), other
//! writers read those halves (`Table entry "t" does not have any columns`), and the loser's
//! retry trips over its own leftovers (`Table with name "t" already exists`).
//!
//! The catalog's authorization hook therefore runs such a batch as
//! `SELECT quackgate_commit_batch('<batch>')`: a function that runs the batch on a connection
//! of its own inside `BEGIN TRANSACTION … COMMIT`, rolls it back whole when a statement fails,
//! and fails with that statement's message, which DuckLake reads as before (a conflict or a
//! duplicate key, which it retries). Batches run one at a time. A session's own transaction
//! would not do: the hook runs before Quack takes the session's lock, so a later statement of
//! the same session cannot know at that point whether the batch before it has failed and left
//! the transaction to roll back.

use std::sync::{Arc, Mutex, PoisonError};

use duckdb::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use duckdb::arrow::datatypes::DataType;
use duckdb::vscalar::{ArrowFunctionSignature, VArrowScalar};
use duckdb::Connection;

use crate::sql::sql_literal;

/// The connection commit batches run on (`None` only in DuckDB's default state, never used).
#[derive(Clone, Default)]
pub struct CommitBatches {
    conn: Option<Arc<Mutex<Connection>>>,
}

impl CommitBatches {
    /// Registers `quackgate_commit_batch`, which runs batches on a clone of `conn`.
    pub fn install(conn: &Connection) -> duckdb::Result<()> {
        let batches = CommitBatches {
            conn: Some(Arc::new(Mutex::new(conn.try_clone()?))),
        };
        conn.register_scalar_function_with_state::<CommitBatch>("quackgate_commit_batch", &batches)
    }

    /// The SQL to run for `sql`, which a read-write session may run.
    pub fn rewrite(sql: &str) -> String {
        if is_commit_batch(sql) {
            format!("SELECT quackgate_commit_batch({})", sql_literal(sql))
        } else {
            sql.to_string()
        }
    }

    fn run(&self, batch: &str) -> Result<(), String> {
        let conn = self
            .conn
            .as_ref()
            .ok_or("quackgate_commit_batch: not installed")?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        conn.execute_batch("BEGIN TRANSACTION")
            .map_err(|e| e.to_string())?;
        match conn.execute_batch(batch) {
            Ok(()) => conn.execute_batch("COMMIT").map_err(|e| {
                // A failed COMMIT has ended the transaction already; this only makes sure.
                let _ = conn.execute_batch("ROLLBACK");
                e.to_string()
            }),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e.to_string())
            }
        }
    }
}

/// Whether `sql` is a DuckLake commit batch: statements that begin with the insert of the new
/// snapshot.
pub fn is_commit_batch(sql: &str) -> bool {
    let mut words = sql.split_ascii_whitespace();
    let (Some(insert), Some(into), Some(target)) = (words.next(), words.next(), words.next())
    else {
        return false;
    };
    insert.eq_ignore_ascii_case("INSERT")
        && into.eq_ignore_ascii_case("INTO")
        && target
            .trim_matches('"')
            .to_ascii_lowercase()
            .rsplit('.')
            .next()
            .is_some_and(|table| table.trim_matches('"') == "ducklake_snapshot")
        && sql.trim_end().trim_end_matches(';').contains(';')
}

struct CommitBatch;

impl VArrowScalar for CommitBatch {
    type State = CommitBatches;

    fn invoke(
        state: &CommitBatches,
        input: RecordBatch,
    ) -> Result<ArrayRef, Box<dyn std::error::Error>> {
        let batch = input
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or("quackgate_commit_batch: expected VARCHAR")?;
        let mut out = Vec::with_capacity(input.num_rows());
        for i in 0..input.num_rows() {
            if batch.is_null(i) {
                out.push(None);
                continue;
            }
            state.run(batch.value(i))?;
            out.push(Some(true));
        }
        Ok(Arc::new(BooleanArray::from(out)))
    }

    fn signatures() -> Vec<ArrowFunctionSignature> {
        vec![ArrowFunctionSignature::exact(
            vec![DataType::Utf8],
            DataType::Boolean,
        )]
    }

    fn volatile() -> bool {
        true
    }
}
