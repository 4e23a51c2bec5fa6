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

use duckdb::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use duckdb::arrow::datatypes::DataType;
use duckdb::vscalar::{ArrowFunctionSignature, VArrowScalar};
use duckdb::Connection;
use subtle::ConstantTimeEq;

use crate::authorization_hook::{self, strings, Authorizer};
use crate::commit_batches::CommitBatches;
use crate::sql_checks::{is_read_only_sql, is_worker_sql};

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
}

impl Authorizer for SessionRoles {
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

/// Registers the hooks and makes Quack use them. Runs before the server starts and before
/// the configuration is locked.
pub fn install(conn: &Connection, read_only_token: &str) -> duckdb::Result<()> {
    let roles = SessionRoles::new(read_only_token.to_string());
    conn.register_scalar_function_with_state::<Authenticate>("quackgate_authenticate", &roles)?;
    authorization_hook::register(conn, "quackgate_authorize", &roles)?;
    CommitBatches::install(conn)?;
    conn.execute_batch(
        "SET quack_authentication_function = 'quackgate_authenticate';
         SET quack_authorization_function = 'quackgate_authorize';",
    )
}
