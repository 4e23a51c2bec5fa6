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
//!   accepts the server's token, and also the read-only token, in which case it records `sid`
//!   as read-only;
//! - `quackgate_authorize(sid, sql)`, the authorization hook run on every PREPARE (and APPEND,
//!   as `INSERT INTO ...`), lets a read-only session run only single read statements
//!   ([`is_read_only_sql`]). This is a check on SQL text, so it is the inner wall of two: the
//!   worker that holds the read-only token has its lake READ_ONLY, and the hook only has to
//!   stop what client SQL could send past it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use duckdb::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use duckdb::arrow::datatypes::DataType;
use duckdb::vscalar::{ArrowFunctionSignature, VArrowScalar};
use duckdb::Connection;
use subtle::ConstantTimeEq;

/// Read-only sessions remembered at most; a catalog serves a few per worker, so this only
/// bounds memory against a runaway.
const MAX_READ_ONLY_SESSIONS: usize = 100_000;

/// The read-only token and the sessions that connected with it.
#[derive(Clone, Default)]
pub struct SessionRoles {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    read_only_token: String,
    read_only_sessions: Mutex<HashSet<String>>,
}

impl SessionRoles {
    fn new(read_only_token: String) -> Self {
        SessionRoles {
            inner: Arc::new(Inner {
                read_only_token,
                read_only_sessions: Mutex::default(),
            }),
        }
    }

    fn authenticate(&self, sid: &str, client: &str, server: &str) -> bool {
        let read_write = bool::from(client.as_bytes().ct_eq(server.as_bytes()));
        let read_only = !self.inner.read_only_token.is_empty()
            && bool::from(
                client
                    .as_bytes()
                    .ct_eq(self.inner.read_only_token.as_bytes()),
            );
        if read_only && !read_write {
            let mut sessions = self
                .inner
                .read_only_sessions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if sessions.len() >= MAX_READ_ONLY_SESSIONS {
                return false;
            }
            sessions.insert(sid.to_string());
        }
        read_write || read_only
    }

    fn authorize(&self, sid: &str, sql: &str) -> bool {
        let read_only = self
            .inner
            .read_only_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(sid);
        !read_only || is_read_only_sql(sql)
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
        let out: BooleanArray = (0..input.num_rows())
            .map(|i| {
                Some(
                    !sid.is_null(i)
                        && !sql.is_null(i)
                        && state.authorize(sid.value(i), sql.value(i)),
                )
            })
            .collect();
        Ok(Arc::new(out))
    }

    fn signatures() -> Vec<ArrowFunctionSignature> {
        vec![ArrowFunctionSignature::exact(
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Boolean,
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
    conn.execute_batch(
        "SET quack_authentication_function = 'quackgate_authenticate';
         SET quack_authorization_function = 'quackgate_authorize';",
    )
}

/// Whether `sql` is one statement that only reads.
///
/// It must hold a single statement (no `;` before its end outside quotes and comments), no
/// `$` or `\` anywhere (dollar quotes and escape strings would let this scanner and DuckDB's
/// parser disagree on where a string ends), and no Quack function (`quack_stop` would take the
/// catalog down). Its first word must be SELECT, FROM, VALUES, TABLE, DESCRIBE, SHOW,
/// SUMMARIZE or transaction control; WITH is allowed only when no word of the statement names
/// a writing command, since a CTE can lead into INSERT, UPDATE or DELETE. DuckDB's `query()`
/// function refuses anything but a query, so such a statement cannot write.
pub fn is_read_only_sql(sql: &str) -> bool {
    if sql.contains(['$', '\\']) || sql.to_ascii_lowercase().contains("quack_") {
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
        "VALUES",
        "TABLE",
        "DESCRIBE",
        "SHOW",
        "SUMMARIZE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "ABORT",
        "END",
    ];
    const WRITES: &[&str] = &[
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
        "USE",
    ];
    match first.as_str() {
        "WITH" => !words.iter().any(|w| WRITES.contains(&w.as_str())),
        first => READS.contains(&first),
    }
}

/// The words (runs of letters, digits and `_`, upper-cased) of `sql` outside quotes and
/// comments, or `None` when it holds more than one statement or an unterminated quote or
/// comment.
fn words(sql: &str) -> Option<Vec<String>> {
    let bytes = sql.as_bytes();
    let mut words = Vec::new();
    let mut ended = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if ended && !b.is_ascii_whitespace() && b != b';' && b != b'-' && b != b'/' {
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
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2 + sql[i + 2..].find("*/")? + 2;
            }
            b'-' | b'/' if ended => return None,
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
