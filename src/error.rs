//! The one place that decides what a client sees when a request fails.
//!
//! Quack clients show the text of an ERROR_RESPONSE (`Invalid Input Error: <text>`) but only
//! the status phrase of a non-200 answer (`IO Error: Failed to send message: Bad Request`), so
//! every failure of a well-formed Quack request is answered in the protocol's own way: an
//! ERROR_RESPONSE in an HTTP 200. HTTP statuses are kept for requests that are not Quack
//! messages at all (malformed bodies, oversize bodies), which are refused before anything is
//! forwarded. Internal detail goes to the log, never to the client.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::auth::jwt::JwtRejection;
use crate::auth::AuthError;
use crate::body::{full, BoxError, ResponseBody};
use crate::cluster::PeerAuthError;
use crate::held_append::HoldError;
use crate::limits::Throttled;
use crate::routing::RoutingError;
use crate::sessions::table::LimitError;
use crate::upstream::UpstreamError;
use quack_codec::server_errors;
use quack_codec::{self as codec, CodecError};

/// Who caused a failure, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong.
    Client,
    /// A worker failed or is gone.
    Upstream,
}

/// Everything that can go wrong with one Quack request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The body is not a Quack message the gateway can check.
    #[error("malformed quack message: {0}")]
    Malformed(#[from] CodecError),
    /// The body is larger than `gateway.max_body_bytes`.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// A PREPARE is larger than `gateway.max_prepare_bytes`.
    #[error("statement larger than {limit} bytes")]
    PrepareTooLarge { limit: u64, at_catalog: bool },
    /// The worker did not answer within `limits.statement_timeout_secs`; the session was ended,
    /// and, when `stopped`, its worker restarted to stop the statement.
    #[error("no answer within the statement timeout")]
    StatementTimeout { stopped: bool },
    /// The principal has `limits.max_requests_per_principal` requests in flight already.
    #[error("{limit} requests of this principal in flight")]
    PrincipalBusy { limit: usize },
    /// This APPEND could not be held whole: a cap (`held_append`), or the spill folder.
    #[error(transparent)]
    AppendNotHeld(#[from] HoldError),
    /// The principal's sessions ended workers in a loop (`workers::exits`); its new sessions
    /// are refused for `secs` more.
    #[error("principal's sessions ended workers in a loop; new sessions refused for {secs} s")]
    PrincipalEndsWorkers { secs: u64 },
    /// Reading the client's body failed (it hung up, or sent a bad chunk).
    #[error("reading the request body: {0}")]
    ClientBody(#[source] BoxError),
    /// The client was too slow sending a message the gateway reads whole.
    #[error("client did not send its message in time")]
    ClientTimeout,
    /// The gateway is draining and takes no new sessions.
    #[error("draining: new sessions are refused")]
    Draining,
    /// The token is wrong or missing.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    /// The client's address failed to authenticate too often and must wait.
    #[error(transparent)]
    Throttled(#[from] Throttled),
    /// A session limit refuses a new session.
    #[error("session limit: {0}")]
    Limit(#[from] LimitError),
    /// The token the session was opened with has expired.
    #[error("the session's token has expired")]
    SessionExpired,
    /// The static token the session was opened with is no longer accepted.
    #[error("the session's static token was revoked")]
    SessionRevoked,
    /// The request does not route to a live session.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// Forwarding to the worker failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A request on the peer listener without a valid peer credential.
    #[error("peer request refused: {0}")]
    PeerAuth(#[from] PeerAuthError),
    /// The id names a node this one does not know (not, or no longer, in its peers).
    #[error("node {0}, which owns the session, is not among the known peers")]
    OwnerUnknown(String),
    /// The node that owns the session cannot be reached, or failed during the exchange.
    #[error("node {node}, which owns the session, is unreachable: {source}")]
    OwnerUnreachable {
        node: String,
        #[source]
        source: UpstreamError,
    },
    /// Something in front of the node (its ingress) answered instead of the node.
    #[error("node {node}: its ingress answered HTTP {status}")]
    PeerIngress { node: String, status: u16 },
    /// The node's answer did not verify, or broke off.
    #[error("node {node}: answer refused: {why}")]
    PeerAnswer { node: String, why: String },
    /// The worker answered something that is not a valid Quack response.
    #[error("invalid response from worker: {0}")]
    BadWorkerResponse(String),
    /// The worker answered a session's message with an HTTP error instead of a Quack answer:
    /// its Quack server's handler threw. DuckDB 1.5.5 does so for an APPEND whose table the
    /// lake cannot read while its catalog is away (HTTP 500, empty body, the exception in an
    /// `EXCEPTION_WHAT` header). `what` is that exception, for the client only: it may quote
    /// the statement, so it stays out of the logs above debug.
    #[error("worker answered HTTP {status} instead of a Quack message")]
    WorkerFailed { status: u16, what: Option<String> },
}

impl GatewayError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Malformed(_) => "malformed",
            GatewayError::BodyTooLarge { .. } => "body_too_large",
            GatewayError::PrepareTooLarge { .. } => "prepare_too_large",
            GatewayError::PrincipalBusy { .. } => "principal_requests_limit",
            GatewayError::AppendNotHeld(HoldError::Full { .. }) => "append_bytes_held",
            GatewayError::AppendNotHeld(HoldError::GaveWay { .. }) => "append_gave_way",
            GatewayError::AppendNotHeld(HoldError::Disk(_)) => "append_spill_failed",
            GatewayError::PrincipalEndsWorkers { .. } => "principal_ends_workers",
            GatewayError::StatementTimeout { .. } => "statement_timeout",
            GatewayError::ClientBody(_) => "client_body",
            GatewayError::ClientTimeout => "client_timeout",
            GatewayError::Draining => "draining",
            GatewayError::Auth(_) => "auth",
            GatewayError::Throttled(_) => "auth_throttled",
            GatewayError::Limit(LimitError::Principal(_)) => "principal_session_limit",
            GatewayError::Limit(LimitError::Total(_)) => "session_limit",
            GatewayError::SessionExpired => "session_expired",
            GatewayError::SessionRevoked => "session_revoked",
            GatewayError::Routing(RoutingError::NoReadOnlyWorker) => "no_read_only_worker",
            GatewayError::Routing(RoutingError::NoWorkerReady) => "no_worker_ready",
            GatewayError::Routing(RoutingError::NoNodeReady) => "no_node_ready",
            GatewayError::Routing(RoutingError::WorkersTaken) => "workers_taken",
            GatewayError::Routing(RoutingError::SessionElsewhere) => "session_elsewhere",
            GatewayError::Routing(_) => "invalid_connection_id",
            GatewayError::Upstream(e) if e.may_have_reached_worker() => "upstream_exchange",
            GatewayError::Upstream(_) => "upstream_connect",
            GatewayError::BadWorkerResponse(_) => "bad_worker_response",
            GatewayError::WorkerFailed { .. } => "worker_http_error",
            GatewayError::PeerAuth(_) => "peer_auth",
            GatewayError::OwnerUnreachable { .. } => "owner_unreachable",
            GatewayError::OwnerUnknown(_) => "owner_unknown",
            GatewayError::PeerIngress { status: 504, .. } => "peer_timeout",
            GatewayError::PeerIngress { .. } => "peer_ingress",
            GatewayError::PeerAnswer { .. } => "peer_answer",
        }
    }

    /// Who caused it.
    pub fn side(&self) -> Side {
        match self {
            GatewayError::Malformed(_)
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::PrepareTooLarge { .. }
            | GatewayError::PrincipalBusy { .. }
            | GatewayError::AppendNotHeld(HoldError::Full { .. } | HoldError::GaveWay { .. })
            | GatewayError::PrincipalEndsWorkers { .. }
            | GatewayError::ClientBody(_)
            | GatewayError::ClientTimeout
            | GatewayError::Draining
            | GatewayError::Auth(_)
            | GatewayError::Throttled(_)
            | GatewayError::Limit(_)
            | GatewayError::SessionExpired
            | GatewayError::SessionRevoked
            | GatewayError::StatementTimeout { .. }
            | GatewayError::Routing(_)
            | GatewayError::PeerAuth(_) => Side::Client,
            GatewayError::Upstream(_)
            | GatewayError::AppendNotHeld(HoldError::Disk(_))
            | GatewayError::BadWorkerResponse(_)
            | GatewayError::WorkerFailed { .. }
            | GatewayError::OwnerUnreachable { .. }
            | GatewayError::OwnerUnknown(_)
            | GatewayError::PeerIngress { .. }
            | GatewayError::PeerAnswer { .. } => Side::Upstream,
        }
    }

    /// What the client is told: an HTTP status for non-Quack input, else Quack error text.
    pub fn client_reply(&self) -> ClientReply {
        match self {
            GatewayError::Malformed(_) | GatewayError::ClientBody(_) => {
                ClientReply::Status(StatusCode::BAD_REQUEST, "malformed Quack message\n")
            }
            GatewayError::BodyTooLarge { .. } => ClientReply::Status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large: over gateway.max_body_bytes, or over the cap of its \
                 message type (64 KiB for a CONNECTION_REQUEST, 4 KiB for a FETCH)\n",
            ),
            GatewayError::ClientTimeout => ClientReply::Status(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time\n",
            ),
            GatewayError::PrepareTooLarge {
                at_catalog: false, ..
            } => ClientReply::Quack(
                "quackgate: the statement is larger than gateway.max_prepare_bytes; send data \
                 with INSERT INTO r.t (APPEND), not inside the SQL text",
            ),
            // A worker's DuckLake commit, which carries a small insert's rows (a twenty-fourth
            // review's one row of a 30 MB string did not fit in 64 MiB).
            GatewayError::PrepareTooLarge {
                at_catalog: true, ..
            } => ClientReply::Quack(
                "quackgate catalog: this DuckLake commit is larger than the catalog's \
                 gateway.max_prepare_bytes (64 MiB unless set); a commit carries the rows of \
                 a small insert, so very large values can exceed it: raise the setting in the \
                 catalog's config",
            ),
            GatewayError::StatementTimeout { stopped: true } => ClientReply::Quack(
                "quackgate: the statement ran longer than limits.statement_timeout_secs; it was \
                 stopped by restarting its worker, which ended this principal's sessions there; \
                 ATTACH again",
            ),
            GatewayError::StatementTimeout { stopped: false } => ClientReply::Quack(
                "quackgate: the statement ran longer than limits.statement_timeout_secs; its \
                 session was ended (a worker shared with other principals cannot stop it); \
                 ATTACH again",
            ),
            GatewayError::PrincipalBusy { .. } => ClientReply::Quack(
                "quackgate: this principal has as many requests in flight as it may \
                 (limits.max_requests_per_principal); try again when some have finished",
            ),
            GatewayError::AppendNotHeld(HoldError::Full { limit, setting }) => {
                ClientReply::QuackText(format!(
                    "quackgate: this APPEND was not run: the gateway holds each APPEND whole \
                     before its worker gets it, and holding this one would pass {setting} ({} \
                     MiB); try again when others have finished, or send smaller batches",
                    limit >> 20
                ))
            }
            GatewayError::AppendNotHeld(HoldError::GaveWay { rate }) => {
                ClientReply::QuackText(format!(
                    "quackgate: this APPEND was not run: it was arriving slower than \
                     limits.append_rate_under_pressure ({} KiB/s) while the room this node \
                     holds APPENDs in was full, and gave way to another; send it again",
                    rate >> 10
                ))
            }
            GatewayError::AppendNotHeld(HoldError::Disk(_)) => ClientReply::Quack(
                "quackgate: this APPEND was not run: the gateway could not hold it on disk \
                 (limits.append_spill_dir); its log says why",
            ),
            GatewayError::Draining => ClientReply::Quack(
                "quackgate: this gateway is shutting down and takes no new connections; connect again",
            ),
            GatewayError::PrincipalEndsWorkers { secs } => ClientReply::QuackText(format!(
                "quackgate: this principal's connections ended {} DuckDB workers within {} s (a crash, or quack_stop); its new connections are refused for {secs} s more",
                crate::workers::exits::LIMIT,
                crate::workers::exits::WINDOW.as_secs()
            )),
            GatewayError::Auth(AuthError::Jwt(why)) => ClientReply::Quack(jwt_text(why)),
            GatewayError::Auth(_) => ClientReply::Quack(server_errors::AUTHENTICATION_FAILED),
            GatewayError::Throttled(_) => ClientReply::Quack(
                "quackgate: too many failed authentications from this address; wait and try again",
            ),
            GatewayError::Limit(LimitError::Principal(_)) => ClientReply::Quack(
                "quackgate: this principal has as many open connections as it may \
                 (limits.max_sessions_per_principal); DETACH one and try again",
            ),
            GatewayError::Limit(LimitError::Total(_)) => ClientReply::Quack(
                "quackgate: this gateway has as many open connections as it may \
                 (limits.max_sessions); try again later",
            ),
            GatewayError::SessionRevoked => ClientReply::Quack(
                "quackgate: the token this connection was opened with was revoked; DETACH and \
                 ATTACH again with a valid token",
            ),
            GatewayError::SessionExpired => ClientReply::Quack(
                "quackgate: the token this connection was opened with has expired; \
                 DETACH and ATTACH again with a new token",
            ),
            GatewayError::Routing(RoutingError::NoReadOnlyWorker) => ClientReply::Quack(
                "quackgate: read-only connections are not served by this gateway \
                 (workers.read_only_count is 0)",
            ),
            GatewayError::Routing(RoutingError::NoWorkerReady) => ClientReply::Quack(
                "quackgate: no DuckDB worker is ready for a new connection; try again shortly",
            ),
            GatewayError::Routing(RoutingError::NoNodeReady) => ClientReply::Quack(
                "quackgate: no node is ready for a new connection; try again shortly",
            ),
            GatewayError::Routing(RoutingError::WorkersTaken) => ClientReply::Quack(
                "quackgate: every DuckDB worker here serves another principal's open sessions \
                 (workers.isolation = \"principal\"); try again once one ends, or run more workers",
            ),
            // The exact server text: 2.0 clients re-handshake on it, 1.5 clients show it.
            GatewayError::Routing(_) => ClientReply::Quack(server_errors::INVALID_CONNECTION_ID),
            GatewayError::Upstream(e) if e.may_have_reached_worker() => ClientReply::Quack(
                "quackgate: the connection to the DuckDB worker failed during this request; \
                 it was not retried and may or may not have run",
            ),
            GatewayError::Upstream(_) => ClientReply::Quack(
                "quackgate: could not reach the DuckDB worker; the request was not sent",
            ),
            GatewayError::BadWorkerResponse(_) => {
                ClientReply::Quack("quackgate: the DuckDB worker sent an invalid response")
            }
            // A Quack client would show only `Failed to send message: Internal Server Error`.
            GatewayError::WorkerFailed { status, what } => ClientReply::QuackText(format!(
                "quackgate: the DuckDB worker failed this request (HTTP {status}){}; it was not \
                 retried and may or may not have run",
                what.as_deref().map(|w| format!(": {w}")).unwrap_or_default()
            )),
            GatewayError::PeerAuth(_) => {
                ClientReply::Status(StatusCode::FORBIDDEN, "not a quackgate peer\n")
            }
            GatewayError::OwnerUnreachable { node, .. } => ClientReply::QuackText(format!(
                "quackgate: node {node}, which holds this session, is unreachable (the request \
                 was not retried); the session is lost unless the node comes back (DETACH and \
                 ATTACH again)"
            )),
            GatewayError::OwnerUnknown(node) => ClientReply::QuackText(format!(
                "quackgate: node {node}, which held this session, has left the cluster; the \
                 session is lost (DETACH and ATTACH again)"
            )),
            GatewayError::PeerIngress { node, status: 504 } => ClientReply::QuackText(format!(
                "quackgate: node {node} did not answer within the request timeout of the proxy \
                 in front of it (HTTP 504); the node ends this session, and the statement may \
                 still run to its end there (see README: long statements behind a proxy's \
                 request timeout); ATTACH again"
            )),
            GatewayError::PeerIngress { node, status } => ClientReply::QuackText(format!(
                "quackgate: node {node}, which holds this session, is unreachable (its ingress \
                 answered HTTP {status}; the request was not retried); DETACH and ATTACH again"
            )),
            GatewayError::PeerAnswer { node, .. } => ClientReply::QuackText(format!(
                "quackgate: the answer from node {node} was refused (it did not verify); the \
                 request was not retried and may or may not have run"
            )),
        }
    }

    /// The response for this error.
    pub fn into_response(self) -> Response<ResponseBody> {
        self.client_reply().into_response()
    }
}

/// `Authentication failed`, as the DuckDB server words it, with why a JWT failed: its holder
/// can read the token's claims anyway, and "expired" is what an operator needs to hear.
fn jwt_text(why: &JwtRejection) -> &'static str {
    match why {
        JwtRejection::Malformed => "Authentication failed: malformed token",
        JwtRejection::Algorithm => "Authentication failed: algorithm not allowed for this key",
        JwtRejection::UnknownKey => "Authentication failed: unknown signing key (kid)",
        JwtRejection::Signature => "Authentication failed: invalid token signature",
        JwtRejection::Expired => "Authentication failed: token expired",
        JwtRejection::NotYetValid => "Authentication failed: token not yet valid (nbf)",
        JwtRejection::Issuer => "Authentication failed: wrong token issuer",
        JwtRejection::Audience => "Authentication failed: wrong token audience",
        JwtRejection::MissingClaim => "Authentication failed: a required claim is missing",
        JwtRejection::UnknownRole => "Authentication failed: unknown role",
        JwtRejection::Type => "Authentication failed: not a JWT (typ)",
        JwtRejection::Lifetime => {
            "Authentication failed: token valid for longer than auth.jwt.max_lifetime_secs"
        }
    }
}

/// What the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientReply {
    /// An ERROR_RESPONSE with this text, in an HTTP 200.
    Quack(&'static str),
    /// The same, with text made for this failure (naming a node, which is no secret).
    QuackText(String),
    /// This HTTP status with a short plain-text body.
    Status(StatusCode, &'static str),
}

impl ClientReply {
    /// The HTTP response.
    pub fn into_response(self) -> Response<ResponseBody> {
        match self {
            ClientReply::Quack(text) => quack_response(codec::encode_error_response(text)),
            ClientReply::QuackText(text) => quack_response(codec::encode_error_response(&text)),
            ClientReply::Status(status, text) => Response::builder()
                .status(status)
                .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                .header(CONTENT_LENGTH, text.len())
                .body(full(Bytes::from_static(text.as_bytes())))
                .expect("valid by construction"),
        }
    }
}

/// A 200 carrying a Quack message, with the headers the DuckDB server sends.
pub fn quack_response(body: Bytes) -> Response<ResponseBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, quack_codec::RESPONSE_CONTENT_TYPE)
        .header(CONTENT_LENGTH, body.len())
        .header("access-control-allow-origin", "*")
        .body(full(body))
        .expect("valid by construction")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routable_id::IdError;

    fn quack_text(e: GatewayError) -> &'static str {
        match e.client_reply() {
            ClientReply::Quack(t) => t,
            other => panic!("expected a Quack error, got {other:?}"),
        }
    }

    #[test]
    fn jwt_failures_say_why_after_the_servers_words() {
        for why in [
            JwtRejection::Expired,
            JwtRejection::UnknownKey,
            JwtRejection::Algorithm,
        ] {
            let text = quack_text(AuthError::Jwt(why).into());
            assert!(text.starts_with("Authentication failed: "), "{text}");
        }
    }

    #[test]
    fn limits_and_expiry_are_quack_errors_that_say_what_to_do() {
        assert!(quack_text(LimitError::Principal(2).into()).contains("max_sessions_per_principal"));
        assert!(quack_text(LimitError::Total(2).into()).contains("limits.max_sessions"));
        assert!(quack_text(GatewayError::SessionExpired).contains("ATTACH again"));
        let throttled = Throttled {
            retry_after: std::time::Duration::from_secs(3),
        };
        assert!(quack_text(throttled.into()).contains("failed authentications"));
    }

    #[test]
    fn auth_failures_get_the_servers_exact_text() {
        assert_eq!(
            quack_text(AuthError::Unknown.into()),
            "Authentication failed"
        );
        assert_eq!(
            quack_text(AuthError::Missing.into()),
            "Authentication failed"
        );
    }

    #[test]
    fn every_unroutable_id_gets_invalid_connection_id() {
        for e in [
            RoutingError::Id(IdError::Format),
            RoutingError::Id(IdError::Signature),
            RoutingError::ForeignNode,
            RoutingError::UnknownWorker(7),
            RoutingError::WorkerDown(1),
            RoutingError::NoConnectionId,
        ] {
            assert_eq!(quack_text(e.into()), "Invalid connection id");
        }
    }

    #[test]
    fn no_ready_worker_is_a_quack_error_that_says_so() {
        assert!(
            quack_text(RoutingError::NoWorkerReady.into()).contains("no DuckDB worker is ready")
        );
    }

    #[test]
    fn a_draining_gateway_says_so_in_quack_terms() {
        assert!(quack_text(GatewayError::Draining).contains("shutting down"));
    }

    #[test]
    fn malformed_input_is_400_and_oversize_is_413() {
        let malformed = GatewayError::Malformed(CodecError::Truncated(3));
        assert!(matches!(
            malformed.client_reply(),
            ClientReply::Status(StatusCode::BAD_REQUEST, _)
        ));
        let big = GatewayError::BodyTooLarge { limit: 1 };
        assert!(matches!(
            big.client_reply(),
            ClientReply::Status(StatusCode::PAYLOAD_TOO_LARGE, _)
        ));
    }

    #[test]
    fn a_worker_s_http_error_is_a_quack_error_with_its_exception() {
        let e = GatewayError::WorkerFailed {
            status: 500,
            what: Some("IO Error: Failed to query most recent snapshot for DuckLake".into()),
        };
        assert_eq!(e.side(), Side::Upstream);
        // The log line does not carry the exception (it may quote the statement).
        assert!(!e.to_string().contains("DuckLake"));
        let ClientReply::QuackText(text) = e.client_reply() else {
            panic!("expected a Quack error");
        };
        assert!(
            text.contains(
                "(HTTP 500): IO Error: Failed to query most recent snapshot for DuckLake;"
            ),
            "{text}"
        );
        assert!(
            text.contains("not retried and may or may not have run"),
            "{text}"
        );
        let bare = GatewayError::WorkerFailed {
            status: 500,
            what: None,
        };
        let ClientReply::QuackText(text) = bare.client_reply() else {
            panic!("expected a Quack error");
        };
        assert!(text.contains("(HTTP 500); it was not retried"), "{text}");
    }

    #[test]
    fn a_quack_error_reply_is_an_error_response_in_a_200() {
        let resp = ClientReply::Quack("Invalid connection id").into_response();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/vnd.duckdb");
        assert_eq!(resp.headers()[CONTENT_LENGTH], "43");
    }
}
