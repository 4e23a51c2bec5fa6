//! Every message of an existing session: **resolve** its id to a worker here or to the node
//! that owns it, then forward it there once, **pinned** to its worker or **to the peer** node,
//! and stream the answer back untouched.
//!
//! The session table is never changed by what an answer says: a worker's `Invalid connection
//! id` is byte for byte what client SQL gets from `SELECT error('Invalid connection id')`, so
//! reading it would let a client drop its own session from the limits. Sessions leave the
//! table on DISCONNECT, when their worker's process ends, or when they idle out.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::Response;
use http_body_util::BodyExt;
use tracing::{debug, warn};

use crate::auth::Access;
use crate::body::{loopback, PrefixedBody, ResponseBody};
use crate::error::GatewayError;
use crate::proxy::context::{Origin, Outgoing, RequestContext};
use crate::proxy::peer;
use crate::proxy::read::{read_rest, with_client_timeout};
use crate::routable_id::Grant;
use crate::routing::RoutingError;
use crate::state::AppState;
use crate::upstream::{Endpoint, LeasedBody, QuackPost};
use crate::workers::Worker;
use quack_codec::msg_type;
use quack_codec::{self as codec, Header};

/// Time given to a DISCONNECT that ends a timed-out session.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a session's message goes.
pub enum Destination<'a> {
    /// A worker of this node.
    Worker(PinnedWorker<'a>),
    /// The node that owns the session.
    Peer(OwnerNode),
}

/// The node that owns a session, and where its peer listener is.
pub struct OwnerNode {
    node: String,
    to: Endpoint,
    /// The routable id, as the client sent it.
    id: Vec<u8>,
}

/// The worker of this node that holds a session.
pub struct PinnedWorker<'a> {
    /// The routable id, as the client sent it.
    id: Vec<u8>,
    worker: &'a Worker,
    port: u16,
    /// The message header with the worker's own id in place of the routable one.
    header: Bytes,
}

/// Verifies the id in a message header and finds its worker (which must be running), or the
/// peer node that owns it.
pub fn resolve<'a>(
    state: &'a AppState,
    origin: Origin,
    head: &[u8],
    header: &Header,
) -> Result<Destination<'a>, GatewayError> {
    let id = header
        .connection_id(head)
        .ok_or(RoutingError::NoConnectionId)?;
    let route = state.ids.verify(id).map_err(RoutingError::from)?;
    // DISCONNECT still goes through: it frees the session's memory on the worker.
    if header.msg_type != msg_type::DISCONNECT {
        check_expiry(state, &route.grant)?;
    }
    if route.node != state.node_id {
        // A peer's request is served here or nowhere, so nothing ever loops.
        let cluster = match (origin, &state.cluster) {
            (Origin::Client, Some(cluster)) => cluster,
            _ => return Err(RoutingError::ForeignNode.into()),
        };
        let to = cluster
            .peer(route.node)
            .ok_or_else(|| GatewayError::OwnerUnknown(route.node.to_string()))?;
        return Ok(Destination::Peer(OwnerNode {
            node: route.node.to_string(),
            to,
            id: id.to_vec(),
        }));
    }
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
    Ok(Destination::Worker(PinnedWorker {
        header: codec::rewrite_header(head, header, route.inner_id),
        id: id.to_vec(),
        worker,
        port,
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
        Outgoing::Streamed { prefix, rest, .. } => {
            let limit = state.max_body_bytes;
            with_client_timeout(read_rest(prefix, rest, limit, limit)).await?
        }
    };
    let sent = peer::send(
        state,
        ctx,
        &owner.node,
        owner.to.clone(),
        msg_type,
        message,
        None,
    )
    .await;
    if matches!(sent, Err(GatewayError::PeerIngress { status: 504, .. }))
        && msg_type != msg_type::DISCONNECT
    {
        end_timed_out(state, ctx, &owner).await;
    }
    sent
}

/// A request outlived the request timeout of the ingress in front of its node: the client
/// has its error, and the session would stay busy with a statement nobody will read. Ending
/// it frees the session (its memory, its place in the limits) now, not at the idle timeout.
/// DuckDB 1.5.5 cannot interrupt the statement itself; it runs to its end on the worker.
async fn end_timed_out(state: &AppState, ctx: &RequestContext, owner: &OwnerNode) {
    let disconnect = codec::encode_disconnect(&owner.id);
    let ended = tokio::time::timeout(
        DISCONNECT_TIMEOUT,
        peer::send(
            state,
            ctx,
            &owner.node,
            owner.to.clone(),
            msg_type::DISCONNECT,
            disconnect,
            None,
        ),
    )
    .await;
    match ended {
        Ok(Ok(_)) => debug!(peer.node = %owner.node, "timed-out session ended"),
        Ok(Err(e)) => {
            warn!(peer.node = %owner.node, error = %e, "ending a timed-out session failed; it idles out")
        }
        Err(_) => {
            warn!(peer.node = %owner.node, "ending a timed-out session took too long; it idles out")
        }
    }
}

/// A message of an existing session: to the worker its id names, and only there.
pub async fn pinned(
    state: &AppState,
    ctx: &RequestContext,
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
            QuackPost::streamed(
                loopback(to.port),
                PrefixedBody::new([new_header, tail], rest).boxed(),
                length,
            )
        }
    };
    state.sessions.touched(&to.id, Instant::now());
    let response = state
        .upstream
        .send(post.user_agent(ctx.user_agent.clone()))
        .await?;
    if header.msg_type == msg_type::DISCONNECT {
        state.sessions.closed(&to.id, &state.workers);
    }
    debug!(worker.id = %to.worker.id, "forwarded");
    Ok(stream_back(response))
}

/// An upstream answer passed on as it streams in, with the headers a Quack client reads.
fn stream_back(response: Response<LeasedBody>) -> Response<ResponseBody> {
    let (parts, body) = response.into_parts();
    let mut out = Response::builder().status(parts.status);
    for name in [CONTENT_TYPE, CONTENT_LENGTH] {
        if let Some(value) = parts.headers.get(&name) {
            out = out.header(name, value);
        }
    }
    out.header("access-control-allow-origin", "*")
        .body(body.boxed())
        .expect("headers copied from a valid response")
}
