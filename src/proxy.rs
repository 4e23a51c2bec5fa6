//! Handling of one client HTTP request: the Quack message path (`POST /quack`) and the two
//! informational endpoints the DuckDB server also answers.
//!
//! For a Quack message only the header is read before deciding anything. A CONNECTION_REQUEST
//! is checked against the client address's failed-authentication backoff, authenticated,
//! admitted under the session limits, placed on the least-loaded ready worker of its access
//! (read-only principals on read-only workers) and forwarded with the internal worker token in
//! place of the client's; the worker's connection id in the answer is replaced by a signed,
//! routable one that also carries the session's access and expiry. Every later message is
//! verified, refused once its session's token has expired (when so configured), stripped of
//! the routing part of its id and forwarded to the worker its id names, never anywhere else and
//! never twice. Small
//! request types are checked in full first; APPEND and unknown types stream through with only
//! their header checked. Responses stream back untouched, except the small ones, which are read
//! whole to notice when a worker no longer knows a session.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Incoming;
use tracing::{debug, warn};

use crate::app::AppState;
use crate::auth::Access;
use crate::cluster::{PeerAuthError, NODE_PATH, PEER_HEADER};
use crate::error::{full, quack_response, GatewayError, Side};
use crate::quack::codec::{self, CodecError, ConnectionRequest, Header};
use crate::quack::{msg_type, server_errors, BANNER, QUACK_PATH};
use crate::routable_id::Grant;
use crate::routing::RoutingError;
use crate::server::ClientAddr;
use crate::upstream::{BoxError, LeasedBody, UpstreamBody, UpstreamError};
use crate::workers::Worker;

/// Body type of every response the gateway sends.
pub type ResponseBody = BoxBody<Bytes, hyper::Error>;

/// A header longer than this is refused; real ones are under 100 bytes.
const MAX_HEADER_BYTES: usize = 1024;
/// Cap on a CONNECTION_REQUEST and on the CONNECTION_RESPONSE to it; real ones are < 100 bytes.
const MAX_CONNECT_MESSAGE_BYTES: usize = 64 * 1024;
/// Cap on FETCH and DISCONNECT bodies; real ones are under 40 bytes.
const MAX_SMALL_MESSAGE_BYTES: u64 = 4 * 1024;
/// Responses up to this size are read whole to spot `Invalid connection id` (43 bytes).
const MAX_INSPECTED_RESPONSE_BYTES: u64 = 256;
/// Time a client gets to send a message the gateway reads whole before forwarding.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a worker gets to answer a CONNECTION_REQUEST (it only checks the token).
const CONNECT_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client, on a public listener.
    Client,
    /// Another gateway node, on the peer listener: it must carry a valid peer credential,
    /// and is served locally or refused, never forwarded again.
    Peer,
}

/// Serves one request. Never fails: every error becomes the reply `error.rs` decides on.
pub async fn handle(
    state: Arc<AppState>,
    origin: Origin,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, NODE_PATH) if origin == Origin::Peer => match &state.cluster {
            Some(cluster) => Response::builder()
                .header(CONTENT_TYPE, "text/plain")
                .body(full(Bytes::from(cluster.identity())))
                .expect("valid by construction"),
            None => not_found(),
        },
        (&Method::POST, QUACK_PATH) => {
            let started = Instant::now();
            let mut msg_type = None;
            let result = forward(&state, origin, req, &mut msg_type).await;
            if let Some(t) = msg_type {
                state.metrics.answered(t, started.elapsed());
            }
            match result {
                Ok(response) => response,
                Err(e) => {
                    state.metrics.error(e.kind());
                    if let GatewayError::Auth(why) = &e {
                        state.metrics.auth_failure(why.reason());
                    }
                    match e.side() {
                        Side::Client => {
                            debug!(error = %e, error.kind = e.kind(), "quack request refused")
                        }
                        Side::Upstream => {
                            warn!(error = %e, error.kind = e.kind(), elapsed_ms = started.elapsed().as_millis() as u64, "quack request failed at the worker")
                        }
                    }
                    e.into_response()
                }
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

/// What goes to the worker after the header: the whole checked message, or a stream.
enum Outgoing {
    Whole(Bytes),
    Streamed {
        prefix: Bytes,
        rest: Limited<Incoming>,
        declared_length: Option<u64>,
    },
}

/// `msg_type` is set to the message's type name as soon as the header is read.
async fn forward(
    state: &AppState,
    origin: Origin,
    req: Request<Incoming>,
    msg_type: &mut Option<&'static str>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let limit = state.max_body_bytes;
    let declared_length = declared_length(req.headers(), limit)?;
    let user_agent = req.headers().get(USER_AGENT).cloned();
    let peer_credential = req.headers().get(PEER_HEADER).cloned();
    let client_ip = req.extensions().get::<ClientAddr>().map(|a| a.0);
    let mut body = Limited::new(
        req.into_body(),
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    let (prefix, header) = with_client_timeout(read_header(&mut body, limit)).await?;
    let type_name = msg_type::name(header.msg_type);
    *msg_type = Some(type_name);
    state.metrics.request(
        type_name,
        match origin {
            Origin::Client => "client",
            Origin::Peer => "peer",
        },
    );
    debug!(quack.msg_type = type_name, "quack request");

    if origin == Origin::Peer {
        // Peers only ever forward messages of existing sessions, never new ones.
        if header.msg_type == msg_type::CONNECTION_REQUEST {
            return Err(PeerAuthError::Malformed.into());
        }
        let id = header
            .connection_id(&prefix)
            .ok_or(GatewayError::PeerAuth(PeerAuthError::Malformed))?;
        let cluster = state
            .cluster
            .as_ref()
            .ok_or(GatewayError::PeerAuth(PeerAuthError::Malformed))?;
        cluster.verify(peer_credential.as_ref(), header.msg_type, id)?;
        state
            .peer_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        let request = codec::decode_connection_request(&message, &header)?;
        return connect(state, message, &header, request, user_agent, client_ip).await;
    }
    // Route on the header alone, so nothing is buffered for a request that goes nowhere.
    let target = resolve(state, origin, &prefix, &header)?;
    let outgoing = match buffered_cap(header.msg_type, limit) {
        Some(cap) => {
            let message = with_client_timeout(read_rest(prefix, body, cap, limit)).await?;
            codec::validate_request(&message, &header)?;
            Outgoing::Whole(message)
        }
        None => Outgoing::Streamed {
            prefix,
            rest: body,
            declared_length,
        },
    };
    match target {
        Target::Local(route) => pinned(state, route, outgoing, &header, user_agent).await,
        Target::Peer { node, addr, id } => {
            to_peer(state, node, addr, id, header.msg_type, outgoing, user_agent).await
        }
    }
}

/// How much of a message is read before forwarding: all of the small types whose layout is
/// known, so they can be checked; nothing of the others (APPEND, newer types), which stream.
fn buffered_cap(t: u64, limit: u64) -> Option<u64> {
    match t {
        msg_type::PREPARE_REQUEST => Some(limit),
        msg_type::FETCH_REQUEST | msg_type::DISCONNECT => Some(MAX_SMALL_MESSAGE_BYTES.min(limit)),
        _ => None,
    }
}

/// A new session: authenticate, place, swap the token, and sign the id in the answer.
async fn connect(
    state: &AppState,
    message: Bytes,
    header: &Header,
    request: ConnectionRequest,
    user_agent: Option<HeaderValue>,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let token = request.token.clone().and_then(|range| message.get(range));
    if let Some(ip) = client_ip {
        state.throttle.check(ip, Instant::now())?;
    }
    let principal = match state.auth.authenticate(token) {
        Ok(principal) => principal,
        Err(e) => {
            if let Some(backoff) =
                client_ip.and_then(|ip| state.throttle.failed(ip, Instant::now()))
            {
                warn!(
                    client.ip = ?client_ip,
                    backoff_secs = backoff.as_secs(),
                    "repeated failed authentications: this address backs off"
                );
            }
            return Err(e.into());
        }
    };
    let reservation = state.sessions.reserve(&principal.name)?;
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
    let worker = state
        .sessions
        .place(&state.workers, placed_as)
        .ok_or_else(|| {
            let serves_access = state.workers.iter().any(|w| w.access == placed_as);
            if serves_access {
                RoutingError::NoWorkerReady
            } else {
                RoutingError::NoReadOnlyWorker
            }
        })?;
    let port = worker.serving_port().ok_or(RoutingError::NoWorkerReady)?;
    let generation = worker.generation();
    let _connecting = worker.connecting();
    let swapped = codec::replace_token(
        &message,
        header,
        &request,
        internal_token.expose().as_bytes(),
    );
    let length = swapped.len() as u64;
    let exchange = async {
        let response = state
            .upstream
            .send(
                worker_addr(port),
                whole(swapped),
                Some(length),
                user_agent,
                None,
            )
            .await?;
        let (parts, body) = response.into_parts();
        if parts.status != StatusCode::OK {
            return Err(GatewayError::BadWorkerResponse(format!(
                "HTTP {} to a CONNECTION_REQUEST",
                parts.status
            )));
        }
        Limited::new(body, MAX_CONNECT_MESSAGE_BYTES)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(|e| GatewayError::BadWorkerResponse(e.to_string()))
    };
    let answer = tokio::time::timeout(CONNECT_EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| UpstreamError::Timeout)??;
    let answer_header = codec::decode_header(&answer)
        .map_err(|e| GatewayError::BadWorkerResponse(e.to_string()))?;
    if answer_header.msg_type != msg_type::CONNECTION_RESPONSE {
        // For example a Quack version mismatch: the worker's own words are the clearest.
        return Ok(quack_response(answer));
    }
    let inner_id = answer_header
        .connection_id(&answer)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            GatewayError::BadWorkerResponse("no connection id in CONNECTION_RESPONSE".into())
        })?;
    let grant = Grant::new(principal.access, principal.expires_at, &principal.name);
    let id = state
        .ids
        .mint(&state.node_id, worker.index, &grant, inner_id);
    let new_header = codec::rewrite_header(&answer, &answer_header, &id);
    let mut out = BytesMut::with_capacity(new_header.len() + answer.len() - answer_header.len);
    out.extend_from_slice(&new_header);
    out.extend_from_slice(&answer[answer_header.len..]);
    state
        .sessions
        .opened(&id, worker, generation, Instant::now(), reservation);
    state.metrics.session_opened(principal.access.as_str());
    debug!(
        principal.name = %principal.name,
        principal.access = principal.access.as_str(),
        worker.id = %worker.id,
        "session opened"
    );
    Ok(quack_response(out.freeze()))
}

/// Where an existing session's message goes.
struct Route<'a> {
    /// The routable id, as the client sent it.
    id: Vec<u8>,
    worker: &'a Worker,
    port: u16,
    /// The message header with the worker's own id in place of the routable one.
    header: Bytes,
}

/// Where a session's message goes: a worker here, or the node that owns the session.
enum Target<'a> {
    Local(Route<'a>),
    Peer {
        node: String,
        addr: SocketAddr,
        id: Vec<u8>,
    },
}

/// Verifies the id in a message header and finds its worker (which must be running), or the
/// peer node that owns it.
fn resolve<'a>(
    state: &'a AppState,
    origin: Origin,
    head: &[u8],
    header: &Header,
) -> Result<Target<'a>, GatewayError> {
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
        let addr = cluster
            .peer(route.node)
            .ok_or_else(|| GatewayError::OwnerUnknown(route.node.to_string()))?;
        return Ok(Target::Peer {
            node: route.node.to_string(),
            addr,
            id: id.to_vec(),
        });
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
    Ok(Target::Local(Route {
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now > expires_at.saturating_add(leeway.as_secs()) {
        return Err(GatewayError::SessionExpired);
    }
    Ok(())
}

/// A message of a session another node owns: passed to that node's peer listener unchanged,
/// once, and its answer streamed back.
async fn to_peer(
    state: &AppState,
    node: String,
    addr: SocketAddr,
    id: Vec<u8>,
    msg_type: u64,
    outgoing: Outgoing,
    user_agent: Option<HeaderValue>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let cluster = state.cluster.as_ref().ok_or(RoutingError::ForeignNode)?;
    let (body, length) = match outgoing {
        Outgoing::Whole(message) => {
            let length = message.len() as u64;
            (whole(message), Some(length))
        }
        Outgoing::Streamed {
            prefix,
            rest,
            declared_length,
        } => (
            PrefixedBody::new([prefix, Bytes::new()], rest).boxed(),
            declared_length,
        ),
    };
    let credential = cluster.sign(msg_type, &id);
    let response = state
        .upstream
        .send(
            addr,
            body,
            length,
            user_agent,
            Some((PEER_HEADER, credential)),
        )
        .await
        .map_err(|source| GatewayError::OwnerUnreachable { node, source })?;
    Ok(stream_back(response))
}

/// A message of an existing session: to the worker its id names, and only there.
async fn pinned(
    state: &AppState,
    route: Route<'_>,
    outgoing: Outgoing,
    header: &Header,
    user_agent: Option<HeaderValue>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let new_header = route.header;
    let (body, length) = match outgoing {
        Outgoing::Whole(message) => {
            let mut out = BytesMut::with_capacity(new_header.len() + message.len() - header.len);
            out.extend_from_slice(&new_header);
            out.extend_from_slice(&message[header.len..]);
            let length = out.len() as u64;
            (whole(out.freeze()), Some(length))
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
            (PrefixedBody::new([new_header, tail], rest).boxed(), length)
        }
    };
    state.sessions.touched(&route.id, Instant::now());
    let response = state
        .upstream
        .send(worker_addr(route.port), body, length, user_agent, None)
        .await?;
    if header.msg_type == msg_type::DISCONNECT {
        state.sessions.closed(&route.id, &state.workers);
    }
    debug!(worker.id = %route.worker.id, "forwarded");
    relay(state, response, &route.id).await
}

/// Passes a worker's answer back: small ones read whole (to see session loss), others streamed.
async fn relay(
    state: &AppState,
    response: Response<LeasedBody>,
    id: &[u8],
) -> Result<Response<ResponseBody>, GatewayError> {
    let (parts, body) = response.into_parts();
    let length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if parts.status == StatusCode::OK && length.is_some_and(|l| l <= MAX_INSPECTED_RESPONSE_BYTES) {
        let answer = body
            .collect()
            .await
            .map_err(UpstreamError::Body)?
            .to_bytes();
        if codec::error_message(&answer) == Some(server_errors::INVALID_CONNECTION_ID.as_bytes()) {
            state.sessions.closed(id, &state.workers);
        }
        return Ok(quack_response(answer));
    }
    Ok(stream_back(Response::from_parts(parts, body)))
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

/// The Content-Length the client declared, refused early when over the limit.
fn declared_length(headers: &HeaderMap, limit: u64) -> Result<Option<u64>, GatewayError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => Err(GatewayError::BodyTooLarge { limit }),
        other => Ok(other),
    }
}

/// Reads frames until the header decodes. Usually the first frame holds the whole message.
async fn read_header(
    body: &mut Limited<Incoming>,
    limit: u64,
) -> Result<(Bytes, Header), GatewayError> {
    let mut buf = Bytes::new();
    loop {
        match codec::decode_header(&buf) {
            Ok(header) => return Ok((buf, header)),
            Err(CodecError::Truncated(_)) if buf.len() < MAX_HEADER_BYTES => {}
            Err(e) => return Err(e.into()),
        }
        match body.frame().await {
            None => return Err(CodecError::Truncated(buf.len()).into()),
            Some(Err(e)) => return Err(body_error(e, limit)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf = if buf.is_empty() {
                        data
                    } else {
                        let mut joined = BytesMut::with_capacity(buf.len() + data.len());
                        joined.extend_from_slice(&buf);
                        joined.extend_from_slice(&data);
                        joined.freeze()
                    };
                }
            }
        }
    }
}

/// Reads the rest of a message that is checked whole, up to `cap` bytes.
async fn read_rest(
    prefix: Bytes,
    mut body: Limited<Incoming>,
    cap: u64,
    limit: u64,
) -> Result<Bytes, GatewayError> {
    let too_large = || GatewayError::BodyTooLarge {
        limit: cap.min(limit),
    };
    if prefix.len() as u64 > cap {
        return Err(too_large());
    }
    let mut buf: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(e, limit))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let b = buf.get_or_insert_with(|| BytesMut::from(&prefix[..]));
        if (b.len() + data.len()) as u64 > cap {
            return Err(too_large());
        }
        b.extend_from_slice(&data);
    }
    Ok(buf.map_or(prefix, BytesMut::freeze))
}

async fn with_client_timeout<T>(
    read: impl std::future::Future<Output = Result<T, GatewayError>>,
) -> Result<T, GatewayError> {
    tokio::time::timeout(CLIENT_READ_TIMEOUT, read)
        .await
        .map_err(|_| GatewayError::ClientTimeout)?
}

fn body_error(e: BoxError, limit: u64) -> GatewayError {
    if e.is::<LengthLimitError>() {
        GatewayError::BodyTooLarge { limit }
    } else {
        GatewayError::ClientBody(e)
    }
}

fn worker_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn whole(bytes: Bytes) -> UpstreamBody {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed()
}

fn not_found() -> Response<ResponseBody> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(empty())
        .expect("valid by construction")
}

fn empty() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A request body made of already-read chunks followed by the rest of the client's stream,
/// so a streamed message is forwarded without being buffered.
struct PrefixedBody<B> {
    head: VecDeque<Bytes>,
    rest: B,
}

impl<B> PrefixedBody<B> {
    fn new(head: [Bytes; 2], rest: B) -> Self {
        PrefixedBody {
            head: head.into_iter().filter(|b| !b.is_empty()).collect(),
            rest,
        }
    }
}

impl<B> Body for PrefixedBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.head.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let head: u64 = self.head.iter().map(|b| b.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(head + rest.lower());
        if let Some(upper) = rest.upper() {
            hint.set_upper(head + upper);
        }
        hint
    }
}
