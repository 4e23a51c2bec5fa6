//! Quack's hooks on a worker that serves clients: the token check, and the authorization hook
//! that runs [`check_client_sql`] on every statement and APPEND.
//!
//! Quack checks every CONNECTION_REQUEST with `SELECT <quack_authentication_function>(...)`
//! and every PREPARE and APPEND with `SELECT <quack_authorization_function>(sid, sql)`, each on
//! a new connection of the worker. On a lake worker a new connection's default database is the
//! lake, so a bare function name would be looked up in the lake first, which asks the catalog:
//! while the catalog is away, the hook's own query would fail and clients would read a bare
//! `Authentication failed` or `Authorization failed` for what was the lake's error. Both hooks
//! are therefore named in the system catalog, where functions registered here live.
//!
//! A refused statement is rewritten to `SELECT error('quackgate: ...')`, which Quack runs
//! instead (the hook may answer VARCHAR since Quack 1.5.3), so the client reads why. An APPEND
//! (which Quack shows the hook as `INSERT INTO <schema>.<table> VALUES (NULL)`) has no SQL to
//! rewrite: a refused one gets NULL, Quack's `Authorization failed`.

use duckdb::Connection;

use crate::authorization_hook::{self, Authorizer};
use crate::client_sql::{check_client_sql, FunctionRow, RefusedCalls};
use crate::sql::sql_literal;

/// The SQL Quack runs for a client's `sql`: the same text, or one that fails with the reason.
fn authorize(sql: &str, refused: &RefusedCalls) -> Option<String> {
    match check_client_sql(sql, refused) {
        Ok(()) => Some(sql.to_string()),
        Err(_) if is_append(sql) => None,
        Err(why) => Some(format!(
            "SELECT error({})",
            sql_literal(&format!("quackgate: this statement was refused: {why}"))
        )),
    }
}

/// Whether `sql` is what Quack shows the hook for an APPEND.
fn is_append(sql: &str) -> bool {
    let upper = sql.trim().to_ascii_uppercase();
    upper.starts_with("INSERT INTO ") && upper.ends_with(" VALUES (NULL)")
}

impl Authorizer for RefusedCalls {
    fn authorize(&self, _sid: &str, sql: &str) -> Option<String> {
        authorize(sql, self)
    }
}

/// Registers the authorization hook and names both hooks by their system catalog; with
/// `external_access`, clients may write files where the confinement lets them. Runs before
/// the server starts and before the configuration is locked, once every extension is loaded,
/// so that the refused calls are found among all the functions clients can reach.
pub fn install(conn: &Connection, external_access: bool) -> duckdb::Result<()> {
    let mut stmt = conn.prepare(
        // Qualified and filtered: a lake macro named duckdb_functions, or any function a client
        // made, must not shape the list.
        "SELECT DISTINCT function_name, function_type, macro_definition
         FROM system.main.duckdb_functions() WHERE database_name = 'system'",
    )?;
    let rows: Vec<(String, String, Option<String>)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<duckdb::Result<_>>()?;
    let refused =
        RefusedCalls::from_functions(rows.iter().map(|(name, kind, definition)| FunctionRow {
            name,
            kind,
            definition: definition.as_deref(),
        }));
    let names = |sql: &str| -> duckdb::Result<Vec<String>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        rows.collect()
    };
    let refused = refused
        .hiding(
            names(
                "SELECT view_name FROM system.main.duckdb_views() WHERE database_name = 'system'",
            )?,
            names(
                "SELECT type_name FROM system.main.duckdb_types() WHERE database_name = 'system'",
            )?,
            names("SELECT database_name FROM system.main.duckdb_databases()")?,
        )
        .writing_files(external_access);
    authorization_hook::register(conn, "quackgate_client_authorize", &refused)?;
    conn.execute_batch(
        "SET quack_authentication_function = 'system.main.quack_check_token';
         SET quack_authorization_function = 'system.main.quackgate_client_authorize';",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowed_statement_runs_as_sent_and_a_refused_one_fails_with_its_reason() {
        let calls = RefusedCalls::from_functions([FunctionRow {
            name: "quack_stop",
            kind: "table",
            definition: None,
        }]);
        let authorize = |sql| authorize(sql, &calls);
        assert_eq!(authorize("SELECT 42").as_deref(), Some("SELECT 42"));
        let refused = authorize("CALL quack_stop('quack:127.0.0.1:1')").unwrap();
        assert!(
            refused.starts_with(
                "SELECT error('quackgate: this statement was refused: it calls one of Quack"
            ),
            "{refused}"
        );
        assert_eq!(
            authorize("INSERT INTO main.t VALUES (NULL)").as_deref(),
            Some("INSERT INTO main.t VALUES (NULL)")
        );
        assert_eq!(
            authorize("INSERT INTO main.__ducklake_metadata_x VALUES (NULL)"),
            None
        );
    }
}
