//! The admin listener: liveness and readiness for orchestrators, kept off the public port;
//! and the health listener (`gateway.health_listen`), which serves only those two, so that
//! platform probes reach them while the admin listener stays on loopback.
//!
//! `/healthz` is 200 while the process runs. `/readyz` is 200 only while every worker serves
//! and the gateway is not draining, so a load balancer stops sending new clients before a
//! drain and while a worker restarts; on an edge, while some node takes new sessions.
//! `/status` lists this node's workers (readiness, sessions, restarts) and known peers, and on
//! an edge every node with its state and load; `/metrics` is the Prometheus text format. On the
//! catalog, `POST /lake/maintenance` asks for a lake maintenance run now. Bodies never say
//! anything about the host or platform.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{full, ResponseBody};
use crate::cluster::status::NodeState;
use crate::metrics::Readings;
use crate::role::Role;
use crate::state::AppState;

/// Serves one request of the health listener: `/healthz` and `/readyz`, nothing else.
pub async fn handle_health(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz" | "/readyz") => handle(state, req).await,
        _ => Ok(Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header(CONTENT_LENGTH, 0)
            .body(full(Bytes::new()))
            .expect("valid by construction")),
    }
}

/// Serves one admin request.
pub async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let mut content_type = "text/plain; charset=utf-8";
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            content_type = "text/plain; version=0.0.4; charset=utf-8";
            let readings = Readings {
                workers: &state.workers,
                sessions_open: state.sessions.len(),
                draining: state.is_draining(),
                peer_requests: state
                    .peer_requests
                    .load(std::sync::atomic::Ordering::Relaxed),
                throttled_addresses: state.throttle.tracked(),
                held_appends: state.held_appends.reading(),
                lake: (state.role == Role::Catalog).then(|| &*state.workers.lake),
            };
            (StatusCode::OK, state.metrics.render(&readings))
        }
        (&Method::GET, "/healthz") => (StatusCode::OK, "ok\n".to_string()),
        (&Method::GET, "/readyz") if state.role == Role::Edge => {
            let any = state.cluster.as_ref().is_some_and(|c| c.board.any_ready());
            if state.is_draining() {
                (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_string())
            } else if any {
                (
                    StatusCode::OK,
                    "ready: a node takes new sessions\n".to_string(),
                )
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: no node takes new sessions\n".to_string(),
                )
            }
        }
        (&Method::GET, "/readyz") => {
            let ready = state.workers.ready_count();
            let total = state.workers.len();
            if state.is_draining() {
                (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_string())
            } else if ready == total {
                (StatusCode::OK, format!("ready: {ready}/{total} workers\n"))
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {ready}/{total} workers\n"),
                )
            }
        }
        (&Method::GET, "/status") => (StatusCode::OK, status(&state)),
        (&Method::POST, "/lake/maintenance") if state.role == Role::Catalog => {
            state.workers.lake.request_run();
            (
                StatusCode::ACCEPTED,
                "lake maintenance run requested; lake_maintenance_runs on /metrics counts it when done\n"
                    .to_string(),
            )
        }
        _ => (StatusCode::NOT_FOUND, String::new()),
    };
    Ok(Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header(CONTENT_LENGTH, body.len())
        .body(full(Bytes::from(body)))
        .expect("valid by construction"))
}

/// This node's load and health, one line per worker and peer, for operators and balancers.
fn status(state: &AppState) -> String {
    let runtime = tokio::runtime::Handle::current();
    let mut out = format!(
        "node {} draining={} sessions={} peer_requests={} runtime={:?} runtime_threads={}\n",
        state.node_id,
        state.is_draining(),
        state.sessions.len(),
        state
            .peer_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        runtime.runtime_flavor(),
        runtime.metrics().num_workers()
    );
    for w in state.workers.iter() {
        out.push_str(&format!(
            "worker {} ready={} sessions={} restarts={}\n",
            w.id,
            w.is_ready(),
            w.session_count(),
            w.restart_count()
        ));
    }
    if let Some(cluster) = &state.cluster {
        if state.role == Role::Edge {
            let now = std::time::Instant::now();
            for (node, node_state) in cluster.board.snapshot() {
                let endpoint = cluster
                    .peer(&node)
                    .map_or_else(|| "-".to_string(), |e| e.host_header());
                let (sessions, rw, ro) = match node_state {
                    NodeState::Reported { load, placed, .. } => {
                        (load.sessions + placed, load.read_write, load.read_only)
                    }
                    _ => (0, 0, 0),
                };
                out.push_str(&format!(
                    "node {node} {endpoint} {} sessions={sessions} workers={rw}+{ro}\n",
                    node_state.label(now)
                ));
            }
        } else {
            for (node, endpoint) in cluster.peer_list() {
                out.push_str(&format!("peer {node} {endpoint}\n"));
            }
        }
    }
    out
}
