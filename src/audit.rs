//! The audit trail: one record per CONNECTION_REQUEST and per PREPARE, on the tracing target
//! [`TARGET`], so an operator can ship it apart from the diagnostic log (`log.audit_file`).
//!
//! A record says who (principal, its role, the client's address), where (node, worker), what
//! (a session's fingerprint, a statement's SHA-256) and how it ended (`ok`: forwarded and
//! answered, a SQL error inside the answer included; or the kind of the gateway's error, as
//! `error` names it), with the duration. It holds no token and no id: a session appears as
//! the first 8 bytes of the SHA-256 of its id, which names it without granting it. SQL text
//! appears only with `log.audit_sql = true`. Rows are not counted: answers stream through
//! undecoded.
//!
//! A CONNECTION_REQUEST is recorded where it is authenticated (an edge or a gateway) and again
//! where it reaches a worker (a node, `origin = "peer"`); a PREPARE where it reaches a worker.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tracing::info;

use crate::auth::Access;

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
}

impl AuditFacts {
    pub fn session_id(&mut self, id: &[u8]) {
        let digest = Sha256::digest(id);
        let mut short = [0u8; 8];
        short.copy_from_slice(&digest[..8]);
        self.session = Some(short);
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
}

/// Emits the record of a CONNECTION_REQUEST, or of a PREPARE served here; nothing for others.
pub fn record(config: AuditConfig, facts: &AuditFacts, outcome: &Outcome<'_>) {
    if !config.enabled {
        return;
    }
    let statement = facts.statement.map(hex::encode);
    let session = facts.session.map(hex::encode);
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
        "prepare" if facts.worker.is_some() => info!(
            target: TARGET,
            event = "statement",
            origin = outcome.origin,
            principal = facts.principal.as_deref(),
            client = client.as_deref(),
            node = facts.node.as_deref(),
            worker = facts.worker,
            session = session.as_deref(),
            statement_sha256 = statement.as_deref(),
            sql = facts.sql.as_deref(),
            outcome = outcome.result,
            duration_ms = outcome.duration_ms,
            "audit: statement"
        ),
        _ => {}
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
