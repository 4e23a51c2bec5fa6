//! Every message of an existing session: **resolve** its id to a worker here or to the node
//! that owns it, then forward it there once, **pinned** to its worker or **to the peer** node,
//! and stream the answer back untouched.
//!
//! A session's id verifies for as long as the secret does, so it routes only while the session
//! table holds it. The session table is never changed by what an answer says: a worker's `Invalid connection
//! id` is byte for byte what client SQL gets from `SELECT error('Invalid connection id')`, so
//! reading it would let a client drop its own session from the limits. Sessions leave the
//! table on DISCONNECT, when their worker's process ends, or when they idle out.
//!
//! A worker's HTTP error (its Quack server threw instead of answering) is not passed on: a
//! Quack client shows only its status phrase, so the client gets a Quack error instead.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use tracing::{debug, warn};

use crate::auth::Access;
use crate::body::{full, loopback, PrefixedBody, ResponseBody};
use crate::error::{quack_response, GatewayError};
use crate::proxy::abandon::AbandonGuard;
use crate::proxy::append_check::WalkedAppend;
use crate::proxy::context::{Origin, Outgoing, RequestContext};
use crate::proxy::peer;
use crate::proxy::read::{read_rest, streamed_body_failure, with_client_timeout, TimedBody};
use crate::role::Role;
use crate::routable_id::Grant;
use crate::routing::RoutingError;
use crate::sessions::table::SessionRefused;
use crate::state::AppState;
use crate::upstream::{Endpoint, LeasedBody, QuackPost, UpstreamError};
use crate::workers::Worker;
use quack_codec::msg_type;
use quack_codec::{self as codec, Header};

/// Where a session's message goes.
pub enum Destination<'a> {
    /// A worker of this node.
    Worker(PinnedWorker<'a>),
    /// The node that owns the session.
    Peer(OwnerNode),
}

impl Destination<'_> {
    /// The tag of the principal whose session it is (`routable_id::Grant`).
    pub fn principal_tag(&self) -> u32 {
        match self {
            Destination::Worker(w) => w.principal_tag,
            Destination::Peer(o) => o.principal_tag,
        }
    }
}

/// The node that owns a session, and where its peer listener is.
pub struct OwnerNode {
    node: String,
    principal_tag: u32,
    /// `None` when the node is not among the known peers (yet).
    to: Option<Endpoint>,
    /// The session's static token was revoked here: it is to be ended there
    /// ([`end_revoked_at_peer`]), not served.
    pub revoked: bool,
}

/// The worker of this node that holds a session.
pub struct PinnedWorker<'a> {
    /// The routable id, as the client sent it.
    id: Vec<u8>,
    worker: &'a Worker,
    worker_index: u16,
    port: u16,
    principal_tag: u32,
    /// The session's principal, as the session table recorded it.
    principal: Arc<str>,
    /// The message header with the worker's own id in place of the routable one.
    header: Bytes,
}

/// Verifies the id in a message header and finds its worker (which must be running), or the
/// peer node that owns it.
pub fn resolve<'a>(
    state: &'a AppState,
    ctx: &mut RequestContext,
    head: &[u8],
    header: &Header,
) -> Result<Destination<'a>, GatewayError> {
    let origin = ctx.origin;
    let audit = &mut ctx.audit;
    let id = header
        .connection_id(head)
        .ok_or(RoutingError::NoConnectionId)?;
    let route = state.ids.verify(id).map_err(RoutingError::from)?;
    if state.audit.enabled {
        audit.session_id(id);
        audit.node = Some(route.node.to_string());
    }
    let mut revoked = false;
    // DISCONNECT still goes through: it frees the session's memory on the worker.
    if header.msg_type != msg_type::DISCONNECT {
        check_expiry(state, &route.grant)?;
        if origin == Origin::Client {
            if let Err(refused) = check_revoked(state, &route.grant) {
                // Ended, not suspended: the token coming back does not bring it back, and its
                // worker is free for others (`sessions::revoked` ends the idle ones here; a
                // node's session is ended there, `end_revoked_at_peer`).
                if route.node == state.node_id {
                    state.ender().end(id.into(), "revoked");
                    return Err(refused);
                }
                revoked = true;
            }
        }
    }
    if route.node != state.node_id {
        // A peer's request is served here or nowhere, so nothing ever loops.
        let cluster = match (origin, &state.cluster) {
            (Origin::Client, Some(cluster)) => cluster,
            _ => return Err(RoutingError::ForeignNode.into()),
        };
        // A node this process does not know yet may be one another edge just read from the
        // peers file: `to_peer` reads the list again before giving up.
        return Ok(Destination::Peer(OwnerNode {
            node: route.node.to_string(),
            principal_tag: route.grant.principal_tag,
            to: cluster.peer(route.node),
            revoked,
        }));
    }
    // An id outlives its session: it verifies forever, so the table decides.
    let principal = match state.sessions.principal_for(id, ctx.client_ip) {
        Ok(principal) => principal,
        Err(refused @ SessionRefused::OtherAddress { .. }) => {
            // Someone holds an id that is not theirs, or the opener's address changed.
            warn!(client.ip = ?ctx.client_ip, error = %refused, "session refused");
            return Err(RoutingError::SessionElsewhere.into());
        }
        Err(SessionRefused::Ended) => return Err(RoutingError::SessionEnded.into()),
    };
    audit.principal = Some(principal.clone());
    let worker = state
        .workers
        .get(route.worker)
        .ok_or(RoutingError::UnknownWorker(route.worker))?;
    let shared_worker = route.grant.access == Access::ReadOnly && state.roles_share_workers;
    if worker.access != route.grant.access && !shared_worker {
        return Err(RoutingError::AccessMismatch(route.worker).into());
    }
    let port = worker
        .serving_port()
        .ok_or(RoutingError::WorkerDown(route.worker))?;
    audit.worker = Some(route.worker);
    Ok(Destination::Worker(PinnedWorker {
        header: codec::rewrite_header(head, header, route.inner_id),
        id: id.to_vec(),
        worker,
        worker_index: route.worker,
        port,
        principal_tag: route.grant.principal_tag,
        principal,
    }))
}

/// Refuses a session whose token has expired, when `auth.jwt.session_expiry = "end"`.
fn check_expiry(state: &AppState, grant: &Grant) -> Result<(), GatewayError> {
    let (Some(expires_at), Some(leeway)) = (grant.expires_at, state.session_expiry_leeway) else {
        return Ok(());
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now > expires_at.saturating_add(leeway.as_secs()) {
        return Err(GatewayError::SessionExpired);
    }
    Ok(())
}

/// Refuses a session whose static token was revoked (taken out of the tokens this process
/// accepts, or given another role). A static token's session is one without an expiry; a node
/// leaves this to the edge that authenticates its clients.
fn check_revoked(state: &AppState, grant: &Grant) -> Result<(), GatewayError> {
    if grant.expires_at.is_some() || state.role == Role::Node {
        return Ok(());
    }
    if state
        .auth
        .static_tokens()
        .principal_known(grant.principal_tag, grant.access)
    {
        return Ok(());
    }
    Err(GatewayError::SessionRevoked)
}

/// Ends at its node a session whose static token this edge no longer accepts: a DISCONNECT
/// in its place, so that the token coming back does not revive it and the node's worker is
/// free for others (a thirty-fourth review revived one behind an edge). The client gets the
/// revocation error.
pub async fn end_revoked_at_peer(
    state: &AppState,
    ctx: &RequestContext,
    owner: OwnerNode,
    id: &[u8],
) -> GatewayError {
    let message = codec::encode_disconnect(id);
    let outgoing = Outgoing::Whole(message);
    if let Err(e) = to_peer(state, ctx, owner, msg_type::DISCONNECT, outgoing).await {
        debug!(error = %e, "ending a revoked session at its node");
    }
    GatewayError::SessionRevoked
}

/// A message of a session another node owns: read whole, signed, and passed to that node
/// unchanged, once; its answer is checked before it is passed back.
pub async fn to_peer(
    state: &AppState,
    ctx: &RequestContext,
    owner: OwnerNode,
    msg_type: u64,
    outgoing: Outgoing,
) -> Result<Response<ResponseBody>, GatewayError> {
    let message = match outgoing {
        Outgoing::Whole(message) => message,
        // Only the walk's verdict was needed here: the node walks the message again.
        Outgoing::Append {
            message,
            flat,
            walk_held,
        } => {
            drop((flat, walk_held));
            message
        }
        Outgoing::Streamed { prefix, rest, .. } => {
            let limit = state.max_body_bytes;
            with_client_timeout(read_rest(prefix, rest, limit, limit)).await?
        }
    };
    let to = match owner.to {
        Some(to) => to,
        None => {
            let cluster = state.cluster.clone().ok_or(RoutingError::ForeignNode)?;
            cluster
                .catch_up(&owner.node)
                .await
                .ok_or_else(|| GatewayError::OwnerUnknown(owner.node.clone()))?
        }
    };
    // A request that outlives the request timeout of the node's ingress is cut off there;
    // the node sees its request abandoned and ends the session (`AbandonGuard`).
    peer::send(state, ctx, &owner.node, to, msg_type, message, None).await
}

/// A message of an existing session: to the worker its id names, and only there.
pub async fn pinned(
    state: &AppState,
    ctx: &mut RequestContext,
    to: PinnedWorker<'_>,
    outgoing: Outgoing,
    header: &Header,
) -> Result<Response<ResponseBody>, GatewayError> {
    let new_header = to.header;
    let post = match outgoing {
        Outgoing::Whole(message) => {
            let mut out = BytesMut::with_capacity(new_header.len() + message.len() - header.len);
            out.extend_from_slice(&new_header);
            out.extend_from_slice(&message[header.len..]);
            QuackPost::whole(loopback(to.port), out.freeze())
        }
        Outgoing::Append {
            message,
            flat,
            walk_held,
        } => {
            // The body alone holds the bytes from here, so that they, and their places under
            // the caps, go once the worker has read them: it may answer only after a long
            // statement of the same session (a thirty-first review held the caps so for the
            // statement's hour).
            drop(message);
            let body = WalkedAppend::new(new_header, header.len, flat, walk_held).boxed();
            QuackPost::streamed(loopback(to.port), body, None)
        }
        Outgoing::Streamed {
            prefix,
            rest,
            declared_length,
        } => {
            // Without a usable declared length the body goes out chunked.
            let length = declared_length
                .and_then(|d| d.checked_sub(header.len as u64))
                .and_then(|d| d.checked_add(new_header.len() as u64));
            let tail = prefix.slice(header.len..);
            let body = PrefixedBody::new([new_header, tail], TimedBody::new(rest));
            QuackPost::streamed(loopback(to.port), body.boxed(), length)
        }
    };
    state.sessions.touched(&to.id, Instant::now());
    let deadline = match to.worker.access {
        _ if header.msg_type == msg_type::DISCONNECT || state.role == Role::Catalog => None,
        Access::ReadWrite => state.statement_timeout,
        Access::ReadOnly => state.read_only_statement_timeout,
    };
    let upstream = state.upstream.clone();
    let post = post.user_agent(ctx.user_agent.clone());
    let mut abandoned = AbandonGuard {
        state,
        id: (header.msg_type != msg_type::DISCONNECT).then_some(&to.id[..]),
        since: Instant::now(),
        exchange: Some(Box::pin(async move { upstream.send(post).await })),
        deadline,
        worker: to.worker_index,
        principal: to.principal.clone(),
        in_flight: ctx.in_flight.take(),
    };
    let Some(response) = abandoned.answer().await else {
        let deadline = deadline.unwrap_or_default();
        let stopped = to.worker.stop_statements(&to.principal);
        warn!(
            worker.id = %to.worker.id,
            timeout_secs = deadline.as_secs(),
            worker_restarted = stopped,
            "a request ran past limits.statement_timeout_secs; its session is ended"
        );
        state.ender().end(to.id.clone().into(), "statement_timeout");
        return Err(GatewayError::StatementTimeout { stopped });
    };
    let response = response.map_err(|e| streamed_body_failure(e, state.max_body_bytes))?;
    if header.msg_type == msg_type::DISCONNECT {
        state.sessions.closed(&to.id, &state.workers);
    }
    if response.status() != StatusCode::OK {
        // The worker's Quack server threw instead of answering: a Quack client would show only
        // the status phrase, so it gets a Quack error with the worker's exception instead.
        let what = exception_what(response.headers());
        debug!(worker.id = %to.worker.id, status = %response.status(), msg_type = header.msg_type, exception = ?what, "worker answered an HTTP error");
        return Err(GatewayError::WorkerFailed {
            status: response.status().as_u16(),
            what,
        });
    }
    debug!(worker.id = %to.worker.id, "forwarded");
    answer(response).await
}

/// Answers up to this size are read whole before they go on; larger ones stream untouched.
const SMALL_ANSWER_BYTES: u64 = 64 * 1024;

/// The **answer** phase: a worker's answer, back to the client. A small one is read whole
/// first, so that an internal error's stack trace can be cut from it
/// ([`codec::without_stack_trace`]); DuckDB 1.5.5 writes one into every internal error, with
/// the worker binary's path and load address, and has no setting against it.
async fn answer(response: Response<LeasedBody>) -> Result<Response<ResponseBody>, GatewayError> {
    let small = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n <= SMALL_ANSWER_BYTES);
    if !small {
        return Ok(stream_back(response.map(|body| body.boxed())));
    }
    let (parts, body) = response.into_parts();
    let whole = body
        .collect()
        .await
        .map_err(|e| GatewayError::Upstream(UpstreamError::Body(e)))?
        .to_bytes();
    if let Some(cut) = codec::without_stack_trace(&whole) {
        return Ok(quack_response(cut));
    }
    Ok(stream_back(Response::from_parts(parts, full(whole))))
}

/// Longest exception text passed on from a worker's HTTP error.
const MAX_EXCEPTION_CHARS: usize = 2000;

/// The exception an HTTP error of the worker's Quack server names: cpp-httplib puts what the
/// handler threw in an `EXCEPTION_WHAT` header, which DuckDB fills with JSON
/// (`{"exception_type":"IO","exception_message":"..."}`), rendered here as DuckDB words it
/// (`IO Error: ...`). Other text is passed on as it is; either is cut at
/// [`MAX_EXCEPTION_CHARS`].
pub(super) fn exception_what(headers: &HeaderMap) -> Option<String> {
    let raw = String::from_utf8_lossy(headers.get("exception_what")?.as_bytes()).into_owned();
    let text = match serde_json::from_str::<serde_json::Value>(&raw) {
        Ok(json) => match (
            json.get("exception_type").and_then(|t| t.as_str()),
            json.get("exception_message").and_then(|m| m.as_str()),
        ) {
            (Some(kind), Some(message)) => format!("{kind} Error: {message}"),
            (None, Some(message)) => message.to_string(),
            _ => raw,
        },
        Err(_) => raw,
    };
    let text = text.trim();
    (!text.is_empty()).then(|| text.chars().take(MAX_EXCEPTION_CHARS).collect())
}

/// An upstream answer passed on as it streams in, with the headers a Quack client reads.
fn stream_back(response: Response<ResponseBody>) -> Response<ResponseBody> {
    let (parts, body) = response.into_parts();
    let mut out = Response::builder().status(parts.status);
    for name in [CONTENT_TYPE, CONTENT_LENGTH] {
        if let Some(value) = parts.headers.get(&name) {
            out = out.header(name, value);
        }
    }
    out.header("access-control-allow-origin", "*")
        .body(body)
        .expect("headers copied from a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("exception_what", value.parse().unwrap());
        h
    }

    #[test]
    fn a_worker_exception_is_read_as_duckdb_words_it() {
        let h = with(
            r#"{"exception_type":"Invalid Input","exception_message":"Failed to query most recent snapshot for DuckLake: Invalid connection id"}"#,
        );
        assert_eq!(
            exception_what(&h).as_deref(),
            Some("Invalid Input Error: Failed to query most recent snapshot for DuckLake: Invalid connection id")
        );
        assert_eq!(exception_what(&with("boom")).as_deref(), Some("boom"));
        assert_eq!(exception_what(&with(" ")), None);
        assert_eq!(exception_what(&HeaderMap::new()), None);
        let long = "x".repeat(MAX_EXCEPTION_CHARS + 10);
        assert_eq!(
            exception_what(&with(&long)).map(|t| t.len()),
            Some(MAX_EXCEPTION_CHARS)
        );
    }
}
