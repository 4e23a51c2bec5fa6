//! One client HTTP request: the Quack message path (`POST /quack`) and the two informational
//! endpoints the DuckDB server also answers.
//!
//! A Quack message goes through named phases, each in its own file:
//! 1. **read the header** (`read`), bounded in size and time; nothing is decided before it;
//! 2. **admit**: a request on the peer listener is read whole and must carry a credential
//!    that covers it (`peer`);
//! 3. a CONNECTION_REQUEST opens a session (`connect`: authenticate, place, exchange, mint),
//!    on an edge by placing it on a node;
//! 4. any other message is **resolved** by its signed id to the worker or node that owns its
//!    session and forwarded there once, never anywhere else and never twice (`session`).
//!    Small request types are read and checked in full first; an APPEND is held whole (in
//!    memory, then on disk: `held_append`), walked once and sent with its compressed vectors
//!    flat (`append_check`); other types stream with only their header checked (a 1.5.5
//!    worker refuses them from the header; the peer leg reads them whole);
//! 5. on the peer listener, the answer is **sealed** for the sender (`peer`).
//!
//! `error` decides what the client sees when a phase fails.

pub mod abandon;
pub mod append_check;
pub mod connect;
pub mod context;
pub mod peer;
pub mod read;
pub mod session;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tracing::{debug, warn};

use crate::audit;
use crate::body::{empty, full, ResponseBody};
use crate::cluster::credential::PEER_HEADER;
use crate::cluster::status::STATUS_PATH;
use crate::error::{GatewayError, Side};
use crate::proxy::append_check::walk_append;
use crate::proxy::context::{Outgoing, RequestContext};
use crate::proxy::read::{
    buffered_cap, declared_length, read_append, read_header, read_rest, with_client_timeout,
    MAX_CONNECT_MESSAGE_BYTES,
};
use crate::proxy::session::Destination;
use crate::role::Role;
use crate::state::AppState;
use quack_codec as codec;
use quack_codec::{msg_type, BANNER, QUACK_PATH};

pub use crate::proxy::context::Origin;

/// Serves one request. Never fails: every error becomes the reply `error` decides on.
pub async fn handle(
    state: Arc<AppState>,
    origin: Origin,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, STATUS_PATH) if origin == Origin::Peer => {
            peer::status(&state, req.headers().get(PEER_HEADER))
        }
        (&Method::POST, QUACK_PATH) => {
            let mut ctx = RequestContext::new(origin, &req);
            ctx.audit_config = state.audit;
            let result = forward(&state, &mut ctx, req).await;
            let response = finish(&state, &mut ctx, result);
            match &ctx.admitted {
                Some(admitted) => peer::seal(&state, &admitted.nonce, response).await,
                None => response,
            }
        }
        (&Method::GET, "/") => Response::builder()
            .header(CONTENT_TYPE, "text/plain")
            .header(CONTENT_LENGTH, BANNER.len())
            .body(full(Bytes::from_static(BANNER.as_bytes())))
            .expect("valid by construction"),
        (&Method::OPTIONS, QUACK_PATH) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header("access-control-allow-methods", "GET, POST, OPTIONS")
            .header("access-control-allow-headers", "*")
            .header("access-control-allow-origin", "*")
            .body(empty())
            .expect("valid by construction"),
        _ => not_found(),
    };
    Ok(response)
}

/// The last phase of every Quack message: metrics, the audit record and the log, and an error
/// turned into the client's answer.
fn finish(
    state: &AppState,
    ctx: &mut RequestContext,
    result: Result<Response<ResponseBody>, GatewayError>,
) -> Response<ResponseBody> {
    ctx.finish();
    if let Some(t) = ctx.msg_type {
        state.metrics.answered(t, ctx.started.elapsed());
        match result {
            // Recorded when its answer has streamed to its end, with its rows.
            Ok(response) if audit::counts_rows(state.audit, &ctx.audit, t) => {
                let pending = audit::Pending {
                    config: state.audit,
                    facts: std::mem::take(&mut ctx.audit),
                    msg_type: t,
                    origin: ctx.origin.as_str(),
                    client: ctx.client_ip,
                    started: ctx.started,
                };
                return response.map(|body| audit::CountedAnswer::new(body, pending).boxed());
            }
            _ => audit::record(
                state.audit,
                &ctx.audit,
                &audit::Outcome {
                    msg_type: t,
                    origin: ctx.origin.as_str(),
                    client: ctx.client_ip,
                    result: result.as_ref().map_or_else(|e| e.kind(), |_| "ok"),
                    duration_ms: ctx.started.elapsed().as_millis() as u64,
                    rows: None,
                },
            ),
        }
    }
    let e = match result {
        Ok(response) => return response,
        Err(e) => e,
    };
    state.metrics.error(e.kind());
    if let GatewayError::Auth(why) = &e {
        state.metrics.auth_failure(why.reason());
    }
    match e.side() {
        Side::Client => debug!(error = %e, error.kind = e.kind(), "quack request refused"),
        Side::Upstream => {
            warn!(error = %e, error.kind = e.kind(), elapsed_ms = ctx.started.elapsed().as_millis() as u64, "quack request failed at the worker")
        }
    }
    e.into_response()
}

async fn forward(
    state: &AppState,
    ctx: &mut RequestContext,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let limit = state.max_body_bytes;
    let declared_length = declared_length(req.headers(), limit)?;
    let mut body = Limited::new(
        req.into_body(),
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    let (prefix, header) = with_client_timeout(read_header(&mut body, limit)).await?;
    let type_name = msg_type::name(header.msg_type);
    ctx.msg_type = Some(type_name);
    state.metrics.request(type_name, ctx.origin.as_str());
    debug!(quack.msg_type = type_name, "quack request");

    if ctx.origin == Origin::Peer {
        // Nothing of an unsigned request's body is read; a signed one is read whole and must
        // match the digest its credential covers.
        let digest = peer::admit(state, ctx, &header)?;
        if header.msg_type == msg_type::APPEND_REQUEST {
            // Held as a client's APPEND is, under the caps of the principal it is for; the
            // digest is checked before a worker is reached.
            let destination = session::resolve(state, ctx, &prefix, &header)?;
            admit_in_flight(state, ctx, &header, destination.principal_tag())?;
            let held = state.held_appends.body(destination.principal_tag());
            let rate = state.min_append_rate;
            let message = read_append(prefix, body, limit, rate, held).await?;
            peer::body_matches(&message, &digest)?;
            let flat = walk_append(message.clone()).await?;
            let walk_held = state
                .held_appends
                .hold_memory(destination.principal_tag(), flat.held_bytes())?;
            let outgoing = Outgoing::Append {
                message,
                flat,
                walk_held,
            };
            return match destination {
                Destination::Worker(to) => session::pinned(state, ctx, to, outgoing, &header).await,
                Destination::Peer(_) => Err(crate::routing::RoutingError::ForeignNode.into()),
            };
        }
        let message = with_client_timeout(read_rest(prefix, body, limit, limit)).await?;
        peer::body_matches(&message, &digest)?;
        if header.msg_type == msg_type::CONNECTION_REQUEST {
            if state.is_draining() {
                return Err(GatewayError::Draining);
            }
            return connect::connect(state, ctx, message, &header).await;
        }
        let destination = session::resolve(state, ctx, &message, &header)?;
        // Counted here too: the edge's count ends when its client hangs up, while the
        // statement runs on here to its deadline (a thirty-fifth review ran six at once so).
        admit_in_flight(state, ctx, &header, destination.principal_tag())?;
        if let Some(cap) = buffered_cap(header.msg_type, limit, state.max_prepare_bytes) {
            if message.len() as u64 > cap {
                return Err(too_large(state, header.msg_type, cap));
            }
            codec::validate_request(&message, &header)?;
            ctx.audit.request(&message, &header, state.audit);
        }
        let outgoing = Outgoing::Whole(message);
        return match destination {
            Destination::Worker(to) => session::pinned(state, ctx, to, outgoing, &header).await,
            // `resolve` never sends a peer's request on to another node.
            Destination::Peer(_) => Err(crate::routing::RoutingError::ForeignNode.into()),
        };
    }
    if header.msg_type == msg_type::CONNECTION_REQUEST {
        if state.is_draining() {
            return Err(GatewayError::Draining);
        }
        let message = with_client_timeout(read_rest(
            prefix,
            body,
            MAX_CONNECT_MESSAGE_BYTES as u64,
            limit,
        ))
        .await?;
        return connect::connect(state, ctx, message, &header).await;
    }
    // Route on the header alone, so nothing is buffered for a request that goes nowhere.
    let destination = session::resolve(state, ctx, &prefix, &header)?;
    let destination = match destination {
        Destination::Peer(owner) if owner.revoked => {
            let id = header.connection_id(&prefix).unwrap_or_default().to_vec();
            return Err(session::end_revoked_at_peer(state, ctx, owner, &id).await);
        }
        destination => destination,
    };
    admit_in_flight(state, ctx, &header, destination.principal_tag())?;
    let outgoing = match buffered_cap(header.msg_type, limit, state.max_prepare_bytes) {
        Some(cap) => {
            if declared_length.is_some_and(|n| n > cap) {
                return Err(too_large(state, header.msg_type, cap));
            }
            let message = with_client_timeout(read_rest(prefix, body, cap, limit))
                .await
                .map_err(|e| match e {
                    GatewayError::BodyTooLarge { .. } => too_large(state, header.msg_type, cap),
                    e => e,
                })?;
            codec::validate_request(&message, &header)?;
            ctx.audit.request(&message, &header, state.audit);
            Outgoing::Whole(message)
        }
        None if header.msg_type == msg_type::APPEND_REQUEST => {
            // Its places under the caps are given back with the last of its bytes, once its
            // worker has read them (`pinned`), not when it answers: an APPEND may wait there
            // behind a long statement of its session.
            let held = state.held_appends.body(destination.principal_tag());
            let rate = state.min_append_rate;
            let message = read_append(prefix, body, limit, rate, held).await?;
            // Walked whole, so refused before a worker is reached; what the walk rewrites is
            // made as the worker takes it (`pinned`).
            let flat = walk_append(message.clone()).await?;
            let walk_held = state
                .held_appends
                .hold_memory(destination.principal_tag(), flat.held_bytes())?;
            Outgoing::Append {
                message,
                flat,
                walk_held,
            }
        }
        None => Outgoing::Streamed {
            prefix,
            rest: body,
            declared_length,
        },
    };
    match destination {
        Destination::Worker(to) => session::pinned(state, ctx, to, outgoing, &header).await,
        Destination::Peer(owner) => {
            session::to_peer(state, ctx, owner, header.msg_type, outgoing).await
        }
    }
}

/// Takes the request's place among its principal's requests in flight on this node
/// (`limits.max_requests_per_principal`), held while its body is read and its worker answers,
/// or past that while an abandoned request's statement runs (`abandon`). DISCONNECT, which
/// frees memory on the worker, always passes.
fn admit_in_flight(
    state: &AppState,
    ctx: &mut RequestContext,
    header: &codec::Header,
    principal_tag: u32,
) -> Result<(), GatewayError> {
    if header.msg_type == msg_type::DISCONNECT {
        return Ok(());
    }
    let permit = state
        .in_flight
        .admit_key(principal_tag)
        .ok_or(GatewayError::PrincipalBusy {
            limit: state.in_flight.max(),
        })?;
    ctx.in_flight = Some(permit);
    Ok(())
}

/// A message over its type's cap: a PREPARE's is a Quack error naming the setting.
fn too_large(state: &AppState, t: u64, cap: u64) -> GatewayError {
    match t {
        msg_type::PREPARE_REQUEST => GatewayError::PrepareTooLarge {
            limit: cap,
            at_catalog: state.role == Role::Catalog,
        },
        _ => GatewayError::BodyTooLarge { limit: cap },
    }
}

fn not_found() -> Response<ResponseBody> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(empty())
        .expect("valid by construction")
}

#[cfg(test)]
mod tests;
