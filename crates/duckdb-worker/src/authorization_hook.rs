//! Quack's authorization hook as a DuckDB scalar function, `(sid VARCHAR, sql VARCHAR) ->
//! VARCHAR`, around a policy: the catalog's ([`crate::session_roles`]) and the client-facing
//! workers' ([`crate::client_hook`]) differ only in what they decide.
//!
//! Quack runs a VARCHAR answer instead of the statement (since Quack 1.5.3) and refuses NULL
//! with `Authorization failed`.

use std::marker::PhantomData;
use std::sync::Arc;

use duckdb::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use duckdb::arrow::datatypes::DataType;
use duckdb::vscalar::{ArrowFunctionSignature, VArrowScalar};
use duckdb::Connection;

/// What a hook decides for one statement.
pub trait Authorizer: Clone + Default + Send + Sync + 'static {
    /// The SQL to run for `sql` from session `sid`, or `None` to refuse it.
    fn authorize(&self, sid: &str, sql: &str) -> Option<String>;
}

/// Registers `authorizer` as the scalar function `name` in the system catalog.
pub fn register<A: Authorizer>(
    conn: &Connection,
    name: &str,
    authorizer: &A,
) -> duckdb::Result<()> {
    conn.register_scalar_function_with_state::<Hook<A>>(name, authorizer)
}

/// A VARCHAR argument column.
pub fn strings(
    batch: &RecordBatch,
    column: usize,
) -> Result<&StringArray, Box<dyn std::error::Error>> {
    batch
        .column(column)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| "quackgate hook: expected VARCHAR arguments".into())
}

struct Hook<A>(PhantomData<A>);

impl<A: Authorizer> VArrowScalar for Hook<A> {
    type State = A;

    fn invoke(state: &A, input: RecordBatch) -> Result<ArrayRef, Box<dyn std::error::Error>> {
        let (sid, sql) = (strings(&input, 0)?, strings(&input, 1)?);
        let out: StringArray = (0..input.num_rows())
            .map(|i| {
                if sid.is_null(i) || sql.is_null(i) {
                    return None;
                }
                state.authorize(sid.value(i), sql.value(i))
            })
            .collect();
        Ok(Arc::new(out))
    }

    fn signatures() -> Vec<ArrowFunctionSignature> {
        vec![ArrowFunctionSignature::exact(
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Utf8,
        )]
    }

    fn volatile() -> bool {
        true
    }
}
