//! The audit trail: one record per CONNECTION_REQUEST and per PREPARE, on the tracing target
//! [`TARGET`], so an operator can ship it apart from the diagnostic log (`log.audit_file`).
//!
//! A record says who (principal, its role, the client's address), where (node, worker), what
//! (a session's fingerprint, a statement's SHA-256) and how it ended (`ok`: forwarded and
//! answered, a SQL error inside the answer included; or the kind of the gateway's error, as
//! `error` names it), with the duration. It holds no token and no id: a session appears as
//! the first 8 bytes of the SHA-256 of its id, which names it without granting it. SQL text
//! appears only with `log.audit_sql = true`.
//!
//! A CONNECTION_REQUEST is recorded where it is authenticated (an edge or a gateway) and again
//! where it reaches a worker (a node, `origin = "peer"`); a PREPARE and a FETCH where they reach
//! a worker, or where they are refused (a revoked token's, an ended session's). A request whose
//! client went away before its answer is recorded then, `abandoned`: its statement may still
//! run to its end (a thirty-third review committed a table that way with no record). Their records wait for the answer to stream to its end ([`CountedAnswer`]), so they
//! carry the rows it held (counted by `quack_codec::RowCounter`, absent when the answer was a
//! SQL error or a type the counter does not know) and the result's fingerprint, which joins a
//! statement to the FETCHes of its result.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use quack_codec::{Header, RowCounter};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::auth::Access;
use crate::body::ResponseBody;

/// The tracing target of audit records.
pub const TARGET: &str = "audit";

/// Whether records are made (`log.audit_file` is set, or the log filter names [`TARGET`]),
/// and whether statement records carry the SQL text (`log.audit_sql`). Decided from the config,
/// not by asking the subscriber: `tracing::enabled!` under per-layer filters leaves the next
/// event of the thread filtered out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditConfig {
    pub enabled: bool,
    pub sql: bool,
}

/// What one request's phases learn for its record.
#[derive(Debug, Default)]
pub struct AuditFacts {
    pub principal: Option<Arc<str>>,
    pub access: Option<Access>,
    pub node: Option<String>,
    /// Set where the request reaches a worker of this node.
    pub worker: Option<u16>,
    /// First 8 bytes of SHA-256 of the session's id.
    pub session: Option<[u8; 8]>,
    pub statement: Option<[u8; 32]>,
    /// Only with `log.audit_sql`.
    pub sql: Option<String>,
    /// First 8 bytes of SHA-256 of the result uuid a FETCH names, as encoded.
    pub result: Option<[u8; 8]>,
}

fn fingerprint(bytes: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(bytes);
    let mut short = [0u8; 8];
    short.copy_from_slice(&digest[..8]);
    short
}

impl AuditFacts {
    pub fn session_id(&mut self, id: &[u8]) {
        self.session = Some(fingerprint(id));
    }

    /// What a request read whole tells its record: a PREPARE's statement, a FETCH's result.
    pub fn request(&mut self, message: &[u8], header: &Header, config: AuditConfig) {
        if !config.enabled {
            return;
        }
        if let Some(sql) = quack_codec::prepare_sql(message, header) {
            self.statement(sql, config);
        }
        if let Some(uuid) = quack_codec::fetch_result(message, header) {
            self.result = Some(fingerprint(uuid));
        }
    }

    pub fn statement(&mut self, sql: &[u8], config: AuditConfig) {
        self.statement = Some(Sha256::digest(sql).into());
        if config.sql {
            self.sql = Some(String::from_utf8_lossy(sql).into_owned());
        }
    }
}

/// Where the record's request came from and how it went.
pub struct Outcome<'a> {
    pub msg_type: &'static str,
    pub origin: &'static str,
    pub client: Option<std::net::IpAddr>,
    /// `ok`, or the error's kind.
    pub result: &'a str,
    pub duration_ms: u64,
    /// The rows of the answer, when it was a whole result.
    pub rows: Option<u64>,
}

/// Whether the record of this request waits for its answer's end ([`CountedAnswer`]): a
/// PREPARE or a FETCH served by a worker here.
pub fn counts_rows(config: AuditConfig, facts: &AuditFacts, msg_type: &str) -> bool {
    config.enabled && facts.worker.is_some() && matches!(msg_type, "prepare" | "fetch")
}

/// Emits the record of a CONNECTION_REQUEST, or of a PREPARE or FETCH served here; nothing for
/// others.
pub fn record(config: AuditConfig, facts: &AuditFacts, outcome: &Outcome<'_>) {
    if !config.enabled {
        return;
    }
    let statement = facts.statement.map(hex::encode);
    let session = facts.session.map(hex::encode);
    let result = facts.result.map(hex::encode);
    let access = facts.access.map(|a| a.as_str());
    let client = outcome.client.map(|c| c.to_string());
    match outcome.msg_type {
        "connection_request" => info!(
            target: TARGET,
            event = "connect",
            origin = outcome.origin,
            principal = facts.principal.as_deref(),
            role = access,
            client = client.as_deref(),
            node = facts.node.as_deref(),
            worker = facts.worker,
            outcome = outcome.result,
            duration_ms = outcome.duration_ms,
            "audit: connect"
        ),
        // A FETCH has no statement of its own: those fields are left out of its record. One
        // passed on to another node is recorded there, unless it was refused or abandoned
        // here (a revoked token's, an ended session's): only once its id verified, so that
        // made-up ids, which anyone can send, fill no records (a thirty-fourth review).
        "prepare" | "fetch"
            if facts.worker.is_some() || (outcome.result != "ok" && facts.session.is_some()) =>
        {
            let event = match outcome.msg_type {
                "prepare" => "statement",
                _ => "fetch",
            };
            info!(
                target: TARGET,
                event,
                origin = outcome.origin,
                principal = facts.principal.as_deref(),
                client = client.as_deref(),
                node = facts.node.as_deref(),
                worker = facts.worker,
                session = session.as_deref(),
                statement_sha256 = statement.as_deref(),
                sql = facts.sql.as_deref(),
                result = result.as_deref(),
                rows = outcome.rows,
                outcome = outcome.result,
                duration_ms = outcome.duration_ms,
                "audit: {event}"
            )
        }
        _ => {}
    }
}

/// An answer whose record waits for it: its rows are counted as it streams to the client, and
/// the record is made at its end, or when it breaks off (`outcome = "answer_cut"`: the worker
/// or the client went away mid-answer).
pub struct CountedAnswer {
    inner: ResponseBody,
    counter: RowCounter,
    pending: Option<Pending>,
}

/// What the record needs that the request's phases learned.
pub struct Pending {
    pub config: AuditConfig,
    pub facts: AuditFacts,
    pub msg_type: &'static str,
    pub origin: &'static str,
    pub client: Option<IpAddr>,
    pub started: Instant,
}

impl CountedAnswer {
    pub fn new(inner: ResponseBody, pending: Pending) -> Self {
        CountedAnswer {
            inner,
            counter: RowCounter::new(),
            pending: Some(pending),
        }
    }

    fn record(&mut self, result: &str) {
        let Some(mut p) = self.pending.take() else {
            return;
        };
        let counted = std::mem::take(&mut self.counter).finish();
        let rows = match result {
            "ok" => counted.as_ref().map(|c| c.rows),
            _ => None,
        };
        if let Some(uuid) = counted.and_then(|c| c.uuid) {
            p.facts.result = Some(fingerprint(&uuid));
        }
        record(
            p.config,
            &p.facts,
            &Outcome {
                msg_type: p.msg_type,
                origin: p.origin,
                client: p.client,
                result,
                duration_ms: p.started.elapsed().as_millis() as u64,
                rows,
            },
        );
    }
}

impl Body for CountedAnswer {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.counter.feed_bytes(data.clone());
                }
                // hyper stops polling a body whose length it has sent, so the end is seen here.
                if self.inner.is_end_stream() {
                    self.record("ok");
                }
            }
            Poll::Ready(Some(Err(_))) => self.record("answer_cut"),
            Poll::Ready(None) => self.record("ok"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedAnswer {
    fn drop(&mut self) {
        self.record("answer_cut");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_a_digest_unless_sql_is_asked_for() {
        let mut facts = AuditFacts::default();
        facts.statement(
            b"SELECT 1",
            AuditConfig {
                enabled: true,
                sql: false,
            },
        );
        assert_eq!(
            hex::encode(facts.statement.unwrap()),
            "e004ebd5b5532a4b85984a62f8ad48a81aa3460c1ca07701f386135d72cdecf5"
        );
        assert!(facts.sql.is_none());
        facts.statement(
            b"SELECT 1",
            AuditConfig {
                enabled: true,
                sql: true,
            },
        );
        assert_eq!(facts.sql.as_deref(), Some("SELECT 1"));
    }

    #[test]
    fn a_session_is_named_by_a_fingerprint_not_its_id() {
        let mut facts = AuditFacts::default();
        facts.session_id(b"q2.n0.0.rw.0.00000000.abc.worker-id");
        let short = hex::encode(facts.session.unwrap());
        assert_eq!(short.len(), 16);
        assert!(!short.contains("worker"));
    }
}
