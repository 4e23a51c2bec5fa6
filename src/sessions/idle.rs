//! Ends sessions unused for `gateway.session_idle_secs`: forgotten by the table and sent a
//! DISCONNECT at their worker, since v1.5 servers keep a session's memory until one arrives
//! and clients that crash never send it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::body::loopback;
use crate::routable_id::IdSigner;
use crate::sessions::table::SessionTable;
use crate::upstream::{QuackPost, Upstream};
use crate::workers::WorkerSet;
use quack_codec as codec;

/// Longest time between two sweeps.
const SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(60);
/// Time a worker gets to answer the DISCONNECT of an idle session.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the sweep reads and the DISCONNECTs go through.
#[derive(Debug, Clone)]
pub struct IdleSweep {
    pub sessions: Arc<SessionTable>,
    pub workers: Arc<WorkerSet>,
    pub ids: IdSigner,
    pub upstream: Upstream,
    pub idle: Duration,
}

impl IdleSweep {
    /// Sweeps until `stop`. A short idle time (as in tests) is honoured to within half of
    /// itself.
    pub async fn run(self, stop: CancellationToken) {
        let period = (self.idle / 2).clamp(Duration::from_secs(1), SWEEP_INTERVAL_MAX);
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let expired = self
                .sessions
                .expire_idle(&self.workers, Instant::now(), self.idle);
            if expired.is_empty() {
                continue;
            }
            info!(
                expired = expired.len(),
                open = self.sessions.len(),
                "ending idle sessions"
            );
            // Each on its own, under a timeout: a stuck worker holds up neither the others nor
            // the next sweep.
            for id in expired {
                let sweep = self.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(DISCONNECT_TIMEOUT, sweep.disconnect(&id)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => debug!(error = %e, "ending an idle session at its worker"),
                        Err(_) => debug!("ending an idle session at its worker: no answer in time"),
                    }
                });
            }
        }
    }

    /// Sends a DISCONNECT for session `id` (a routable id of this node) to its worker.
    async fn disconnect(&self, id: &[u8]) -> Result<(), String> {
        let route = self.ids.verify(id).map_err(|e| e.to_string())?;
        let port = self
            .workers
            .get(route.worker)
            .and_then(|w| w.serving_port())
            .ok_or("its worker is not running")?;
        let message = codec::encode_disconnect(route.inner_id);
        let response = self
            .upstream
            .send(QuackPost::whole(loopback(port), message))
            .await
            .map_err(|e| e.to_string())?;
        response
            .into_body()
            .collect()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
