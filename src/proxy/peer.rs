//! The peer leg of one request, on both ends.
//!
//! **Sending** (an edge, or a node forwarding to the session's owner): the whole message is
//! signed for the node it goes to, sent once, and the node's whole answer is checked before
//! any of it reaches the client. An answer without a valid MAC did not come from the node:
//! typically the ingress in front of it saying the node is down (502/503) or slow (504).
//!
//! **Receiving** (a node's peer listener): a request is **admitted** only with a credential
//! that covers its whole body, for this node, never seen before; a CONNECTION_REQUEST must also
//! carry a grant, which stands in for the client's token. Every answer is **sealed** with a MAC
//! bound to the request's nonce, errors included, so the sender can pass them on.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tracing::debug;

use crate::auth::Principal;
use crate::body::{full, ResponseBody};
use crate::cluster::credential::{
    body_digest, Nonce, PeerAuthError, RequestFacts, ANSWER_HEADER, DIGEST_HEADER, GRANT_HEADER,
    PEER_HEADER,
};
use crate::cluster::status::NodeLoad;
use crate::cluster::{grant_header, Cluster, ANY_NODE};
use crate::error::{quack_response, GatewayError};
use crate::proxy::context::{Admitted, RequestContext};
use crate::state::AppState;
use crate::upstream::{Endpoint, QuackPost};
use quack_codec::{msg_type, Header, QUACK_PATH};

/// Sends `message` to `node` at `to`, and returns its verified answer. `grant` goes with a
/// CONNECTION_REQUEST placed on the node.
pub async fn send(
    state: &AppState,
    ctx: &RequestContext,
    node: &str,
    to: Endpoint,
    msg_type: u64,
    message: Bytes,
    grant: Option<&Principal>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let cluster = cluster(state)?;
    let grant = grant.map(Principal::to_grant);
    let digest = body_digest(&message);
    let facts = RequestFacts {
        target: node,
        path: QUACK_PATH,
        msg_type,
        body_sha256: digest,
        grant: grant.as_deref().map(str::as_bytes),
    };
    let (credential, nonce) = cluster.key().sign_request(cluster.node_id(), &facts);
    let mut post = QuackPost::whole(to, message)
        .user_agent(ctx.user_agent.clone())
        .header(PEER_HEADER, credential)
        .header(
            DIGEST_HEADER,
            HeaderValue::from_str(&hex::encode(digest)).expect("hex is valid header text"),
        );
    if let Some(grant) = &grant {
        post = post.header(GRANT_HEADER, grant_header(grant));
    }
    let unreachable = |source| GatewayError::OwnerUnreachable {
        node: node.to_string(),
        source,
    };
    let (parts, body) = state
        .upstream
        .send(post)
        .await
        .map_err(unreachable)?
        .into_parts();
    let limit = usize::try_from(state.max_body_bytes).unwrap_or(usize::MAX);
    let body = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| GatewayError::PeerAnswer {
            node: node.to_string(),
            why: format!("reading it: {e}"),
        })?
        .to_bytes();
    let mac = parts.headers.get(ANSWER_HEADER);
    if mac.is_none() && parts.status != StatusCode::OK {
        // Not the node's words: its ingress (or whatever holds its name) answered.
        return Err(GatewayError::PeerIngress {
            node: node.to_string(),
            status: parts.status.as_u16(),
        });
    }
    cluster
        .key()
        .verify_answer(&nonce, node, parts.status.as_u16(), &body, mac)
        .map_err(|why| GatewayError::PeerAnswer {
            node: node.to_string(),
            why: why.to_string(),
        })?;
    let mut out = Response::builder().status(parts.status);
    if let Some(t) = parts.headers.get(CONTENT_TYPE) {
        out = out.header(CONTENT_TYPE, t);
    }
    Ok(out
        .header(CONTENT_LENGTH, body.len())
        .header("access-control-allow-origin", "*")
        .body(full(body))
        .expect("headers copied from a valid response"))
}

/// Admits a Quack message on the peer listener on its header alone, before its body is read:
/// the credential must verify for this node over the digest it announces. Returns that digest,
/// which the body must then match ([`body_matches`]).
pub fn admit(
    state: &AppState,
    ctx: &mut RequestContext,
    header: &Header,
) -> Result<[u8; 32], GatewayError> {
    let cluster = cluster(state)?;
    let mut digest = [0u8; 32];
    ctx.peer_digest
        .as_ref()
        .and_then(|v| hex::decode_to_slice(v.as_bytes(), &mut digest).ok())
        .ok_or(PeerAuthError::Malformed)?;
    let grant = ctx.peer_grant.as_ref().map(HeaderValue::as_bytes);
    let facts = RequestFacts {
        target: &state.node_id,
        path: QUACK_PATH,
        msg_type: header.msg_type,
        body_sha256: digest,
        grant,
    };
    let verified = cluster
        .key()
        .verify_request(ctx.peer_credential.as_ref(), &facts)?;
    let grant = match grant {
        Some(g) => Some(Principal::from_grant(g).ok_or(PeerAuthError::Malformed)?),
        None => None,
    };
    // A session is opened here only for a principal an edge vouched for.
    if (header.msg_type == msg_type::CONNECTION_REQUEST) != grant.is_some() {
        return Err(PeerAuthError::Malformed.into());
    }
    debug!(peer.sender = %verified.sender, "peer request admitted");
    ctx.admitted = Some(Admitted {
        nonce: verified.nonce,
        grant,
    });
    state.peer_request_served();
    Ok(digest)
}

/// Whether an admitted request's body is the one its credential announced.
pub fn body_matches(message: &[u8], digest: &[u8; 32]) -> Result<(), GatewayError> {
    if body_digest(message) == *digest {
        Ok(())
    } else {
        Err(PeerAuthError::Signature.into())
    }
}

/// This node's answer to `GET /peer/status`: its load, sealed for the asker's nonce.
pub fn status(state: &AppState, credential: Option<&HeaderValue>) -> Response<ResponseBody> {
    let Ok(cluster) = cluster(state) else {
        return GatewayError::PeerAuth(PeerAuthError::Malformed).into_response();
    };
    let facts = RequestFacts {
        target: ANY_NODE,
        path: crate::cluster::status::STATUS_PATH,
        msg_type: 0,
        body_sha256: body_digest(b""),
        grant: None,
    };
    let verified = match cluster.key().verify_request(credential, &facts) {
        Ok(v) => v,
        Err(e) => return GatewayError::PeerAuth(e).into_response(),
    };
    let body = Bytes::from(load(state).encode(&state.node_id));
    let mac = cluster
        .key()
        .sign_answer(&verified.nonce, &state.node_id, 200, &body);
    Response::builder()
        .header(CONTENT_TYPE, "text/plain")
        .header(ANSWER_HEADER, mac)
        .body(full(body))
        .expect("valid by construction")
}

fn load(state: &AppState) -> NodeLoad {
    let ready = |access| {
        state
            .workers
            .iter()
            .filter(|w| w.access == access && w.is_ready())
            .count()
    };
    NodeLoad {
        draining: state.is_draining(),
        sessions: state.sessions.len(),
        read_write: ready(crate::auth::Access::ReadWrite),
        read_only: if state.roles_share_workers {
            ready(crate::auth::Access::ReadWrite)
        } else {
            ready(crate::auth::Access::ReadOnly)
        },
    }
}

/// The answer to an admitted peer request, read whole and sealed with this node's MAC.
pub async fn seal(
    state: &AppState,
    nonce: &Nonce,
    response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    let limit = usize::try_from(state.max_body_bytes).unwrap_or(usize::MAX);
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            // The worker's answer broke off: the sender gets a sealed error instead.
            let e = GatewayError::BadWorkerResponse(format!("reading the answer: {e}"));
            let (p, b) = e.into_response().into_parts();
            parts = p;
            match b.collect().await {
                Ok(c) => c.to_bytes(),
                Err(_) => Bytes::new(),
            }
        }
    };
    let Some(cluster) = state.cluster.as_ref() else {
        return quack_response(body);
    };
    let mac = cluster
        .key()
        .sign_answer(nonce, &state.node_id, parts.status.as_u16(), &body);
    parts.headers.insert(ANSWER_HEADER, mac);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, full(body))
}

fn cluster(state: &AppState) -> Result<&Cluster, GatewayError> {
    state
        .cluster
        .as_deref()
        .ok_or(GatewayError::PeerAuth(PeerAuthError::Malformed))
}
