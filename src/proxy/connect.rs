//! A new session, in four phases: **authenticate** the client's token (behind the address's
//! failed-authentication backoff), **place** the session on the least-loaded ready worker of
//! its access, **exchange** the CONNECTION_REQUEST with the worker under the internal token
//! (and without any connection id the client put in its header),
//! and **mint** the routable id that replaces the worker's own in the answer.
//!
//! An edge places the session on a node instead: the least-loaded ready node, over the peer
//! leg, with the client's token taken out and the principal sent as a grant. The node takes
//! the grant in place of authentication, and does the other three phases.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tracing::{debug, warn};

use crate::auth::{Access, Principal, WorkerToken};
use crate::body::{loopback, ResponseBody};
use crate::cluster::PeerAuthError;
use crate::error::{quack_response, GatewayError};
use crate::proxy::context::RequestContext;
use crate::proxy::peer;
use crate::proxy::read::MAX_CONNECT_MESSAGE_BYTES;
use crate::proxy::session::exception_what;
use crate::role::Role;
use crate::routable_id::Grant;
use crate::routing::RoutingError;
use crate::sessions::table::Placement;
use crate::sessions::table::Reservation;
use crate::state::AppState;
use crate::upstream::{QuackPost, UpstreamError};
use crate::workers::{ConnectingGuard, Worker};
use quack_codec::msg_type;
use quack_codec::{self as codec, ConnectionRequest, Header};

/// Time a worker gets to answer a CONNECTION_REQUEST (it only checks the token).
const CONNECT_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Time a connect waits for a worker process started for its principal (isolated workers):
/// a worker starts in well under a second without a lake, a few with one.
const FREEING_WAIT: Duration = Duration::from_secs(30);

/// Opens a session for the CONNECTION_REQUEST `message`, whose header is `header`.
pub async fn connect(
    state: &AppState,
    ctx: &mut RequestContext,
    message: Bytes,
    header: &Header,
) -> Result<Response<ResponseBody>, GatewayError> {
    let request = codec::decode_connection_request(&message, header)?;
    let principal = match &ctx.admitted {
        // Placed here by an edge, which checked the client's token.
        Some(admitted) => admitted.grant.clone().ok_or(PeerAuthError::Malformed)?,
        None => authenticate(state, ctx, &message, &request)?,
    };
    ctx.audit.principal = Some(principal.name.clone());
    ctx.audit.access = Some(principal.access);
    if state.role == Role::Edge {
        return place_on_node(state, ctx, &message, header, &request, &principal).await;
    }
    if let Some(left) = state
        .workers
        .exits
        .refused_for(&principal.name, Instant::now())
    {
        return Err(GatewayError::PrincipalEndsWorkers {
            secs: left.as_secs().max(1),
        });
    }
    let reservation = state.sessions.reserve(&principal.name, ctx.client_ip)?;
    let placed = place(state, &principal).await?;
    ctx.audit.node = Some(state.node_id.clone());
    ctx.audit.worker = Some(placed.worker.index);
    let swapped = outgoing_request(
        &message,
        header,
        &request,
        placed.internal_token.expose().as_bytes(),
    )?;
    let answer = exchange(state, ctx, placed.port, swapped).await?;
    mint(state, &principal, &placed, answer, reservation)
}

/// On an edge: the session goes to the least-loaded ready node. A node that could not be
/// reached is marked so and the next one is tried: when nothing was sent, or when the ingress
/// in front of it said it has no node behind it (502, 503). A CONNECTION_REQUEST is the one
/// message ever sent twice, and only to another node: it changes no data, and a session the
/// first node may have opened all the same idles out there.
async fn place_on_node(
    state: &AppState,
    ctx: &mut RequestContext,
    message: &Bytes,
    header: &Header,
    request: &ConnectionRequest,
    principal: &Principal,
) -> Result<Response<ResponseBody>, GatewayError> {
    let cluster = state.cluster.as_deref().ok_or(RoutingError::NoNodeReady)?;
    // The token stays here: a node never sees it.
    let outgoing = outgoing_request(message, header, request, b"")?;
    let mut tried = Vec::new();
    loop {
        let node = cluster
            .board
            .place(principal.access, &tried)
            .ok_or(RoutingError::NoNodeReady)?;
        let Some(to) = cluster.peer(&node) else {
            tried.push(node);
            continue;
        };
        let sent = peer::send(
            state,
            ctx,
            &node,
            to,
            msg_type::CONNECTION_REQUEST,
            outgoing.clone(),
            Some(principal),
        )
        .await;
        match sent {
            Err(e) if node_absent(&e) => {
                warn!(peer.node = %node, error = %e, "node unreachable; placing the session on another");
                cluster.board.unreachable(&node);
                tried.push(node);
            }
            other => {
                debug!(principal.name = %principal.name, peer.node = %node, "session placed");
                ctx.audit.node = Some(node);
                return other;
            }
        }
    }
}

/// Whether a failed placement shows the node was never reached.
fn node_absent(e: &GatewayError) -> bool {
    match e {
        GatewayError::OwnerUnreachable { source, .. } => !source.may_have_reached_worker(),
        GatewayError::PeerIngress { status, .. } => matches!(status, 502 | 503),
        _ => false,
    }
}

/// The CONNECTION_REQUEST `message` as it leaves the gateway: its token swapped for `token`
/// (the worker's internal token, or none towards a node) and any connection id the client put
/// in its header taken out. Every other byte is the client's. Public for the fuzz targets.
///
/// # Errors
/// When the swapped message does not decode again, which a `message` that decoded cannot cause.
pub fn outgoing_request(
    message: &[u8],
    header: &Header,
    request: &ConnectionRequest,
    token: &[u8],
) -> Result<Bytes, GatewayError> {
    let swapped = codec::replace_token(message, header, request, token);
    // DuckDB clients send none; only then is the header decoded a second time.
    if header.connection_id(message).is_some() {
        return without_client_id(swapped);
    }
    Ok(swapped)
}

/// The message without a connection id of the client's choosing: a new session's id is the
/// worker's to make, and nothing the client picks reaches the worker in its place.
fn without_client_id(message: Bytes) -> Result<Bytes, GatewayError> {
    let header = codec::decode_header(&message)?;
    let new_header = codec::rewrite_header(&message, &header, b"");
    let mut out = BytesMut::with_capacity(message.len());
    out.extend_from_slice(&new_header);
    out.extend_from_slice(&message[header.len..]);
    Ok(out.freeze())
}

/// The principal the token names, unless the client's address is backing off.
fn authenticate(
    state: &AppState,
    ctx: &RequestContext,
    message: &Bytes,
    request: &ConnectionRequest,
) -> Result<Principal, GatewayError> {
    let token = request.token.clone().and_then(|range| message.get(range));
    if let Some(ip) = ctx.client_ip {
        state.throttle.check(ip, Instant::now())?;
    }
    state.auth.authenticate(token).map_err(|e| {
        let backoff = ctx
            .client_ip
            .and_then(|ip| state.throttle.failed(ip, Instant::now()));
        if let Some(backoff) = backoff {
            warn!(
                client.ip = ?ctx.client_ip,
                backoff_secs = backoff.as_secs(),
                "repeated failed authentications: this address backs off"
            );
        }
        e.into()
    })
}

/// Where a new session goes.
struct Placed<'a> {
    worker: &'a Worker,
    /// Counts the connect in the worker's load (and, for isolated workers, keeps its process
    /// from being freed for another principal) until the session is recorded.
    _connecting: ConnectingGuard<'a>,
    port: u16,
    /// Its process: the session is recorded only if this one still serves once it is open.
    generation: u64,
    internal_token: &'a WorkerToken,
}

async fn place<'s>(state: &'s AppState, principal: &Principal) -> Result<Placed<'s>, GatewayError> {
    // On the catalog, one worker serves both kinds and tells them apart by token.
    let internal_token = match principal.access {
        Access::ReadWrite => &state.worker_token,
        Access::ReadOnly => &state.read_only_worker_token,
    };
    let placed_as = if state.roles_share_workers {
        Access::ReadWrite
    } else {
        principal.access
    };
    let owner = state.isolate_principals.then_some(&principal.name);
    let deadline = tokio::time::Instant::now() + FREEING_WAIT;
    let connecting = loop {
        match state.sessions.place_for(&state.workers, placed_as, owner) {
            Placement::Placed(connecting) => break connecting,
            Placement::Freeing(worker) => {
                debug!(principal.name = %principal.name, worker.id = %worker.id, "waiting for a worker freed for this principal");
                tokio::time::timeout_at(deadline, worker.ready())
                    .await
                    .map_err(|_| RoutingError::NoWorkerReady)?;
            }
            Placement::Taken => return Err(RoutingError::WorkersTaken.into()),
            Placement::None => {
                let serves_access = state.workers.iter().any(|w| w.access == placed_as);
                return Err(if serves_access {
                    RoutingError::NoWorkerReady
                } else {
                    RoutingError::NoReadOnlyWorker
                }
                .into());
            }
        }
    };
    let worker = connecting.worker();
    let port = worker.serving_port().ok_or(RoutingError::NoWorkerReady)?;
    Ok(Placed {
        worker,
        _connecting: connecting,
        port,
        generation: worker.generation(),
        internal_token,
    })
}

/// Sends the CONNECTION_REQUEST to the worker and reads its whole, small answer.
async fn exchange(
    state: &AppState,
    ctx: &RequestContext,
    port: u16,
    message: Bytes,
) -> Result<Bytes, GatewayError> {
    let post = QuackPost::whole(loopback(port), message).user_agent(ctx.user_agent.clone());
    let exchange = async {
        let (parts, body) = state.upstream.send(post).await?.into_parts();
        if parts.status != StatusCode::OK {
            // As for a session's messages: its Quack server threw (DuckDB 1.5.5 does while the
            // lake's catalog is away), so the client reads the worker's exception.
            return Err(GatewayError::WorkerFailed {
                status: parts.status.as_u16(),
                what: exception_what(&parts.headers),
            });
        }
        Limited::new(body, MAX_CONNECT_MESSAGE_BYTES)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(|e| GatewayError::BadWorkerResponse(e.to_string()))
    };
    tokio::time::timeout(CONNECT_EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| UpstreamError::Timeout)?
}

/// The worker's answer with a routable id in place of its own, and the session recorded.
fn mint(
    state: &AppState,
    principal: &Principal,
    placed: &Placed<'_>,
    answer: Bytes,
    reservation: Reservation<'_>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let answer_header = codec::decode_header(&answer)
        .map_err(|e| GatewayError::BadWorkerResponse(e.to_string()))?;
    if answer_header.msg_type != msg_type::CONNECTION_RESPONSE {
        // For example a Quack version mismatch: the worker's own words are the clearest.
        return Ok(quack_response(
            codec::without_stack_trace(&answer).unwrap_or(answer),
        ));
    }
    let inner_id = answer_header
        .connection_id(&answer)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            GatewayError::BadWorkerResponse("no connection id in CONNECTION_RESPONSE".into())
        })?;
    let grant = Grant {
        access: principal.access,
        expires_at: principal.expires_at,
        principal_tag: principal.tag,
    };
    let worker = placed.worker;
    let id = state
        .ids
        .mint(&state.node_id, worker.index, &grant, inner_id);
    let new_header = codec::rewrite_header(&answer, &answer_header, &id);
    let mut out = BytesMut::with_capacity(new_header.len() + answer.len() - answer_header.len);
    out.extend_from_slice(&new_header);
    out.extend_from_slice(&answer[answer_header.len..]);
    state
        .sessions
        .opened(&id, worker, placed.generation, Instant::now(), reservation);
    state.metrics.session_opened(principal.access.as_str());
    debug!(
        principal.name = %principal.name,
        principal.access = principal.access.as_str(),
        worker.id = %worker.id,
        "session opened"
    );
    Ok(quack_response(out.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured_connection_request() -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/quack/connection_request.bin");
        std::fs::read(path).expect("captured fixture")
    }

    #[test]
    fn the_token_is_swapped_and_a_client_id_stripped() {
        let plain = captured_connection_request();
        let header = codec::decode_header(&plain).unwrap();
        // The same request with an id the client chose in its header.
        let mut with_id = codec::rewrite_header(&plain, &header, b"chosen-by-client").to_vec();
        with_id.extend_from_slice(&plain[header.len..]);
        for message in [plain.clone(), with_id] {
            let header = codec::decode_header(&message).unwrap();
            let request = codec::decode_connection_request(&message, &header).unwrap();
            for token in [&b"internal"[..], b""] {
                let out = outgoing_request(&message, &header, &request, token).unwrap();
                let h = codec::decode_header(&out).unwrap();
                assert_eq!(h.connection_id, None);
                let r = codec::decode_connection_request(&out, &h).unwrap();
                assert_eq!(&out[r.token.unwrap()], token);
                // Client version, platform and Quack versions are the client's bytes.
                assert!(out.ends_with(&plain[plain.len() - 31..]));
            }
        }
    }
}
