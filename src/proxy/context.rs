//! What one request carries through its phases: where it came from, the headers the later
//! phases need, and what the log and metrics learn about it on the way.

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use http::header::USER_AGENT;
use http::{HeaderValue, Request};
use http_body_util::Limited;
use hyper::body::Incoming;
use quack_codec::FlatAppend;

use crate::audit::{AuditConfig, AuditFacts};
use crate::auth::Principal;
use crate::cluster::credential::Nonce;
use crate::cluster::credential::{DIGEST_HEADER, GRANT_HEADER, PEER_HEADER};
use crate::limits::{Held, Permit};
use crate::server::ClientAddr;

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client, on a public listener.
    Client,
    /// Another gateway node, on the peer listener: it must carry a valid peer credential,
    /// and is served locally or refused, never forwarded again.
    Peer,
}

impl Origin {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Client => "client",
            Origin::Peer => "peer",
        }
    }
}

/// One request's context, made when it arrives and filled in by its phases. `Debug` never
/// shows the peer credential or grant.
pub struct RequestContext {
    pub origin: Origin,
    pub started: Instant,
    /// Passed on to the worker: DuckDB logs it.
    pub user_agent: Option<HeaderValue>,
    pub peer_credential: Option<HeaderValue>,
    /// The grant an edge sent with a session it placed here, unchecked until admitted.
    pub peer_grant: Option<HeaderValue>,
    /// The body digest a peer request announces, unchecked until admitted.
    pub peer_digest: Option<HeaderValue>,
    /// Set once a peer request's credential verified.
    pub admitted: Option<Admitted>,
    /// The client's address (behind trusted proxies, the one they report); limits key on it.
    pub client_ip: Option<IpAddr>,
    /// The message type's name, once the header has been read.
    pub msg_type: Option<&'static str>,
    /// What the audit record of this request says.
    pub audit: AuditFacts,
    pub audit_config: AuditConfig,
    /// The request's place among its principal's requests in flight.
    pub in_flight: Option<Permit<u32>>,
    /// Set once the last phase has run; a context dropped before (its client went away while
    /// it waited) still leaves a record, `abandoned`.
    finished: bool,
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext")
            .field("origin", &self.origin)
            .field("client_ip", &self.client_ip)
            .field("msg_type", &self.msg_type)
            .finish_non_exhaustive()
    }
}

impl RequestContext {
    pub fn new<B>(origin: Origin, req: &Request<B>) -> Self {
        RequestContext {
            origin,
            started: Instant::now(),
            user_agent: req.headers().get(USER_AGENT).cloned(),
            peer_credential: req.headers().get(PEER_HEADER).cloned(),
            peer_grant: req.headers().get(GRANT_HEADER).cloned(),
            peer_digest: req.headers().get(DIGEST_HEADER).cloned(),
            admitted: None,
            client_ip: req.extensions().get::<ClientAddr>().map(|a| a.0),
            msg_type: None,
            audit: AuditFacts::default(),
            audit_config: AuditConfig::default(),
            in_flight: None,
            finished: false,
        }
    }

    /// The last phase has run, and made the request's record.
    pub fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for RequestContext {
    fn drop(&mut self) {
        let Some(msg_type) = self.msg_type.filter(|_| !self.finished) else {
            return;
        };
        crate::audit::record(
            self.audit_config,
            &self.audit,
            &crate::audit::Outcome {
                msg_type,
                origin: self.origin.as_str(),
                client: self.client_ip,
                result: "abandoned",
                duration_ms: self.started.elapsed().as_millis() as u64,
                rows: None,
            },
        );
    }
}

/// A peer request whose credential verified.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// Its answer is sealed for this nonce.
    pub nonce: Nonce,
    /// The session's principal, for a CONNECTION_REQUEST placed here by an edge.
    pub grant: Option<Principal>,
}

/// What goes on after the header: the whole checked message, or a stream.
pub enum Outgoing {
    Whole(Bytes),
    /// A whole APPEND, walked: what goes to a worker comes from `flat`, with its compressed
    /// vectors written flat. `walk_held` is the memory `flat` takes beyond `message`, under
    /// the caps; both are given back once the body has gone.
    Append {
        message: Bytes,
        flat: FlatAppend,
        walk_held: Held<u32>,
    },
    Streamed {
        /// What was read to decode the header.
        prefix: Bytes,
        rest: Limited<Incoming>,
        /// The client's Content-Length, when it sent one.
        declared_length: Option<u64>,
    },
}
