//! Read-only sessions on a worker that serves both kinds from one database file: the DuckLake
//! catalog.
//!
//! Read-only gateway workers open the lake READ_ONLY, but the lake's metadata lives in the
//! catalog, which they reach over Quack with a catalog token. Client SQL on such a worker can
//! reach the catalog too (`quack_query`, or `.query()` on the attached metadata catalog), so
//! the catalog itself must refuse their writes. The catalog's one worker cannot open its file a
//! second time READ_ONLY, so it tells sessions apart by the internal token they connected
//! with, through Quack's own hooks:
//!
//! - `quackgate_authenticate(sid, client_token, server_token)`, the authentication hook,
//!   accepts the server's token, recording `sid` as read-write, and the read-only token;
//! - `quackgate_authorize(sid, sql)`, the authorization hook run on every PREPARE (and APPEND,
//!   as `INSERT INTO ...`), lets every session not recorded as read-write run only single
//!   read statements ([`is_read_only_sql`]). Unknown means read-only, so a forgotten session
//!   loses rights rather than gaining them. This is a check on SQL text, so it is the inner
//!   wall of two: the worker that holds the read-only token has its lake READ_ONLY, and the
//!   hook only has to stop what client SQL could send past it. It is strict on purpose
//!   (see [`is_read_only_sql`]); DuckLake's own reads pass it.
//! - read-write sessions (the workers' own metadata connections) may run what DuckLake needs,
//!   but nothing of Quack's and no SQL built at run time ([`is_worker_sql`]): client SQL on a
//!   read-write worker reaches the catalog through the lake's metadata database
//!   (`__ducklake_metadata_<lake>.query(...)`), and must not list or stop the catalog's
//!   listener, or open connections from it. Their DuckLake commit batches run as one
//!   transaction each ([`crate::commit_batches`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use duckdb::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use duckdb::arrow::datatypes::DataType;
use duckdb::vscalar::{ArrowFunctionSignature, VArrowScalar};
use duckdb::Connection;
use subtle::ConstantTimeEq;

use crate::commit_batches::CommitBatches;

/// Read-write sessions remembered at most. Quack has no hook for a session's end, so the
/// least recently used are forgotten beyond this (and become read-only): the workers' own
/// catalog sessions are in use all the time and stay.
const MAX_READ_WRITE_SESSIONS: usize = 10_000;

/// The read-only token and the sessions that connected with the read-write one.
#[derive(Clone, Default)]
pub struct SessionRoles {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    read_only_token: String,
    /// Read-write session ids and when they were last used (a counter).
    read_write: Mutex<(HashMap<String, u64>, u64)>,
}

impl SessionRoles {
    fn new(read_only_token: String) -> Self {
        SessionRoles {
            inner: Arc::new(Inner {
                read_only_token,
                read_write: Mutex::default(),
            }),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, (HashMap<String, u64>, u64)> {
        self.inner
            .read_write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn authenticate(&self, sid: &str, client: &str, server: &str) -> bool {
        let read_write = bool::from(client.as_bytes().ct_eq(server.as_bytes()));
        let read_only = !self.inner.read_only_token.is_empty()
            && bool::from(
                client
                    .as_bytes()
                    .ct_eq(self.inner.read_only_token.as_bytes()),
            );
        let mut guard = self.sessions();
        let (sessions, clock) = &mut *guard;
        if read_write {
            if sessions.len() >= MAX_READ_WRITE_SESSIONS && !sessions.contains_key(sid) {
                let oldest = sessions
                    .iter()
                    .min_by_key(|(_, used)| **used)
                    .map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    sessions.remove(&oldest);
                }
            }
            *clock += 1;
            sessions.insert(sid.to_string(), *clock);
        } else {
            // A reused id must not keep rights it had under the other token.
            sessions.remove(sid);
        }
        read_write || read_only
    }

    /// The SQL to run for `sql`, or `None` when session `sid` may not run it.
    fn authorize(&self, sid: &str, sql: &str) -> Option<String> {
        let mut guard = self.sessions();
        let (sessions, clock) = &mut *guard;
        *clock += 1;
        let now = *clock;
        match sessions.get_mut(sid) {
            Some(used) => {
                *used = now;
                drop(guard);
                is_worker_sql(sql).then(|| CommitBatches::rewrite(sql))
            }
            None => {
                drop(guard);
                is_read_only_sql(sql).then(|| sql.to_string())
            }
        }
    }
}

fn strings(batch: &RecordBatch, column: usize) -> Result<&StringArray, Box<dyn std::error::Error>> {
    batch
        .column(column)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| "quackgate hook: expected VARCHAR arguments".into())
}

struct Authenticate;

impl VArrowScalar for Authenticate {
    type State = SessionRoles;

    fn invoke(
        state: &SessionRoles,
        input: RecordBatch,
    ) -> Result<ArrayRef, Box<dyn std::error::Error>> {
        let (sid, client, server) = (
            strings(&input, 0)?,
            strings(&input, 1)?,
            strings(&input, 2)?,
        );
        let out: BooleanArray = (0..input.num_rows())
            .map(|i| {
                let ok = !sid.is_null(i)
                    && !client.is_null(i)
                    && !server.is_null(i)
                    && state.authenticate(sid.value(i), client.value(i), server.value(i));
                Some(ok)
            })
            .collect();
        Ok(Arc::new(out))
    }

    fn signatures() -> Vec<ArrowFunctionSignature> {
        vec![ArrowFunctionSignature::exact(
            vec![DataType::Utf8, DataType::Utf8, DataType::Utf8],
            DataType::Boolean,
        )]
    }

    fn volatile() -> bool {
        true
    }
}

struct Authorize;

impl VArrowScalar for Authorize {
    type State = SessionRoles;

    fn invoke(
        state: &SessionRoles,
        input: RecordBatch,
    ) -> Result<ArrayRef, Box<dyn std::error::Error>> {
        let (sid, sql) = (strings(&input, 0)?, strings(&input, 1)?);
        // Quack runs a VARCHAR answer instead of the client's SQL, and refuses NULL.
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

/// Registers the hooks and makes Quack use them. Runs before the server starts and before
/// the configuration is locked.
pub fn install(conn: &Connection, read_only_token: &str) -> duckdb::Result<()> {
    let roles = SessionRoles::new(read_only_token.to_string());
    conn.register_scalar_function_with_state::<Authenticate>("quackgate_authenticate", &roles)?;
    conn.register_scalar_function_with_state::<Authorize>("quackgate_authorize", &roles)?;
    CommitBatches::install(conn)?;
    conn.execute_batch(
        "SET quack_authentication_function = 'quackgate_authenticate';
         SET quack_authorization_function = 'quackgate_authorize';",
    )
}

/// Whether `sql` is one statement that only reads.
///
/// Strict, because this scanner and DuckDB's lexer must never disagree on what is code: it
/// refuses comments (`--`, `/*`; DuckDB nests block comments and ends line comments at `\r`),
/// dollar quotes, backslashes (escape strings), `U&` (Unicode escapes in names), NUL, and any
/// `;` before the end. Outside quotes, the first word must be SELECT, FROM, WITH, VALUES,
/// TABLE, DESCRIBE, SHOW or SUMMARIZE, and no word may name a command that writes or a
/// function with a side effect (`query()` and `query_table()` run SQL built at run time;
/// checkpoints, sequences, and anything of Quack's, which could stop the catalog).
pub fn is_read_only_sql(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    if ["--", "/*", "*/", "$", "\\", "u&", "\0", "quack"]
        .iter()
        .any(|bad| lower.contains(bad))
    {
        return false;
    }
    let Some(words) = words(sql) else {
        return false;
    };
    let Some(first) = words.first() else {
        return false;
    };
    const READS: &[&str] = &[
        "SELECT",
        "FROM",
        "WITH",
        "VALUES",
        "TABLE",
        "DESCRIBE",
        "SHOW",
        "SUMMARIZE",
    ];
    const REFUSED: &[&str] = &[
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "COPY",
        "CREATE",
        "DROP",
        "ALTER",
        "TRUNCATE",
        "ATTACH",
        "DETACH",
        "INSTALL",
        "LOAD",
        "SET",
        "RESET",
        "CALL",
        "PRAGMA",
        "EXPORT",
        "IMPORT",
        "VACUUM",
        "CHECKPOINT",
        "FORCE_CHECKPOINT",
        "USE",
        "INTO",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "ABORT",
        "END",
        "QUERY",
        "QUERY_TABLE",
        "NEXTVAL",
        "SETVAL",
        "PREPARE",
        "EXECUTE",
        "DEALLOCATE",
    ];
    READS.contains(&first.as_str()) && !words.iter().any(|w| REFUSED.contains(&w.as_str()))
}

/// Whether `sql`, from a read-write session (a worker's metadata connection), calls nothing it
/// must not: no function whose name (bare or quoted) starts with `quack` (every Quack function:
/// `quack_stop`, `quack_serve`, `quack_query`, `quack_server_list`, ...), none that runs SQL
/// from a string (`query`, `query_table`, `json_execute_serialized_sql`), no PREPARE or
/// EXECUTE, and no view, macro or function made in the catalog (DuckLake keeps its own as
/// rows; a stored object could call what is refused here). Names are judged in call position
/// only, since DuckLake writes users' column names bare (a column may be called `query`).
/// String literals are skipped, since DuckLake writes users' values in them; what could make
/// this scanner and DuckDB's lexer disagree on where a literal ends (an unterminated quote,
/// escape strings, comments, dollar quotes, `U&` names) refuses the statement.
pub fn is_worker_sql(sql: &str) -> bool {
    let Some(names) = names_outside_literals(sql) else {
        return false;
    };
    let word = |i: usize| names.get(i).map(|(n, _)| n.to_ascii_uppercase());
    if matches!(word(0).as_deref(), Some("PREPARE" | "EXECUTE")) {
        return false;
    }
    if word(0).as_deref() == Some("CREATE")
        && (1..6).any(|i| matches!(word(i).as_deref(), Some("VIEW" | "MACRO" | "FUNCTION")))
    {
        return false;
    }
    names.iter().filter(|(_, called)| *called).all(|(name, _)| {
        let name = name.to_ascii_lowercase();
        !(name.starts_with("quack")
            || ["query", "query_table"].contains(&name.as_str())
            || name.contains("execute_serialized"))
    })
}

/// Every identifier of `sql`, bare or double-quoted, outside string literals, with whether a
/// `(` follows it (a call). Literals are `'...'` with `''`. Bytes outside ASCII count as
/// separators (DuckDB reads Unicode spaces as spaces). `None` when a quote does not end, and
/// for comments, dollar quotes, escape strings (`E'...'`, whose backslashes and continuations
/// two lexers may read apart) and `U&` (Unicode-escaped names).
fn names_outside_literals(sql: &str) -> Option<Vec<(String, bool)>> {
    let bytes = sql.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    // Whether a `(` comes next, past spaces of any kind.
    let called = |mut j: usize| {
        while j < bytes.len() && (bytes[j].is_ascii_whitespace() || bytes[j] >= 0x80) {
            j += 1;
        }
        bytes.get(j) == Some(&b'(')
    };
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' => i = end_of_quote(bytes, i)?,
            b'e' | b'E' if bytes.get(i + 1) == Some(&b'\'') => return None,
            b'u' | b'U' if bytes.get(i + 1) == Some(&b'&') => return None,
            b'"' => {
                let start = i + 1;
                let end = end_of_quote(bytes, i)?;
                names.push((sql.get(start..end - 1)?.replace("\"\"", "\""), called(end)));
                i = end;
            }
            // `$1` is a parameter; a dollar-quoted string is refused, as are comments: DuckLake
            // writes neither, and each is a place where two lexers can disagree.
            b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => i += 1,
            b'$' => return None,
            b'-' if bytes.get(i + 1) == Some(&b'-') => return None,
            b'/' if bytes.get(i + 1) == Some(&b'*') => return None,
            c if ident(c) => {
                let start = i;
                while i < bytes.len() && ident(bytes[i]) {
                    i += 1;
                }
                // `1e'...'`: DuckDB reads a number and an escape string.
                if matches!(bytes[i - 1], b'e' | b'E') && bytes.get(i) == Some(&b'\'') {
                    return None;
                }
                names.push((sql.get(start..i)?.to_string(), called(i)));
            }
            _ => i += 1,
        }
    }
    Some(names)
}

/// The index just past the quote that closes the one opening at `open`; a doubled quote is
/// one quote.
fn end_of_quote(bytes: &[u8], open: usize) -> Option<usize> {
    let q = bytes[open];
    let mut i = open + 1;
    loop {
        match bytes.get(i) {
            None => return None,
            Some(&c) if c == q && bytes.get(i + 1) == Some(&q) => i += 2,
            Some(&c) if c == q => return Some(i + 1),
            Some(_) => i += 1,
        }
    }
}

/// The words (runs of letters, digits and `_`, upper-cased) of `sql` outside quotes, or
/// `None` when it holds more than one statement or an unterminated quote. Quotes are `'` and
/// `"`, each escaped by doubling; comments were refused before.
fn words(sql: &str) -> Option<Vec<String>> {
    let bytes = sql.as_bytes();
    let mut words = Vec::new();
    let mut ended = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if ended && !b.is_ascii_whitespace() && b != b';' {
            return None;
        }
        match b {
            b'\'' | b'"' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return None,
                        Some(&c) if c == b && bytes.get(i + 1) == Some(&b) => i += 2,
                        Some(&c) if c == b => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
            }
            b';' => {
                ended = true;
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                words.push(sql[start..i].to_ascii_uppercase());
            }
            _ => i += 1,
        }
    }
    Some(words)
}
