//! Ending a session at its worker with a DISCONNECT: v1.5 servers keep a session's memory
//! until one arrives, and neither a client that crashes nor one whose request a proxy cut off
//! at its timeout sends it. Used by the idle sweep and for abandoned requests.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tracing::debug;

use crate::body::loopback;
use crate::routable_id::IdSigner;
use crate::sessions::table::SessionTable;
use crate::upstream::{QuackPost, Upstream};
use crate::workers::WorkerSet;
use quack_codec as codec;

/// Time a worker gets to answer the DISCONNECT.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What ending a session needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionEnder {
    pub sessions: Arc<SessionTable>,
    pub workers: Arc<WorkerSet>,
    pub ids: IdSigner,
    pub upstream: Upstream,
}

impl SessionEnder {
    /// Forgets session `id` (a routable id of this node) and ends it at its worker, in a task
    /// of its own under a timeout, so a stuck worker holds up nobody.
    pub fn end(&self, id: Box<[u8]>, why: &'static str) {
        self.sessions.closed(&id, &self.workers);
        let ender = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(DISCONNECT_TIMEOUT, ender.disconnect(&id)).await {
                Ok(Ok(())) => debug!(why, "session ended at its worker"),
                Ok(Err(e)) => debug!(why, error = %e, "ending a session at its worker"),
                Err(_) => debug!(why, "ending a session at its worker: no answer in time"),
            }
        });
    }

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
