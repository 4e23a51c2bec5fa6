//! A request whose client went away before its worker answered: the proxy in front cut it off
//! at its request timeout (a PREPARE waits as long as its statement runs), or its client gave
//! up. v1.5 clients cannot cancel, and DuckDB 1.5.5 cannot interrupt a served statement, so
//! after [`ABANDONED_AFTER`] its session is ended at the worker (its memory and its place in
//! the limits come back at once) and its exchange is kept, so that the statement still meets
//! its deadline (`limits.statement_timeout_secs`): past it, an isolated worker is replaced,
//! as for a statement whose client waits. A thirty-third review ran a statement for 40 s past
//! a 5 s deadline by closing its socket. A request cut off sooner (an edge replica that
//! crashed mid-FETCH) leaves its session alone, since the client may go on, but its exchange
//! is kept to its deadline all the same.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Response;
use tracing::{info, warn};

use crate::limits::Permit;
use crate::state::AppState;
use crate::upstream::{LeasedBody, UpstreamError};
use crate::workers::WorkerSet;

/// A request to a worker, on its way or waiting for the answer.
pub(super) type Exchange =
    Pin<Box<dyn Future<Output = Result<Response<LeasedBody>, UpstreamError>> + Send>>;

/// How long a request must have waited for its dropping to end its session.
const ABANDONED_AFTER: Duration = Duration::from_secs(1);

/// Armed while a request waits for its worker's answer; dropped armed, the request was
/// abandoned.
pub(super) struct AbandonGuard<'a> {
    pub(super) state: &'a AppState,
    /// The session, while its request is armed; `None` for one whose dropping ends nothing
    /// (a DISCONNECT, or a request answered or past its deadline).
    pub(super) id: Option<&'a [u8]>,
    pub(super) since: Instant,
    /// Polled by the request; handed to a task of its own when the request is abandoned.
    pub(super) exchange: Option<Exchange>,
    pub(super) deadline: Option<Duration>,
    pub(super) worker: u16,
    pub(super) principal: Arc<str>,
    /// Kept by the exchange handed off: its statement is still in flight.
    pub(super) in_flight: Option<Permit<u32>>,
}

impl AbandonGuard<'_> {
    /// The request's answer, under `deadline`: `None` past it.
    pub(super) async fn answer(&mut self) -> Option<Result<Response<LeasedBody>, UpstreamError>> {
        let exchange = self.exchange.as_mut()?;
        let answer = match self.deadline {
            Some(deadline) => tokio::time::timeout_at((self.since + deadline).into(), exchange)
                .await
                .ok(),
            None => Some(exchange.await),
        };
        // Done, or past its deadline, which the request deals with: nothing to hand off.
        self.exchange = None;
        self.id = None;
        answer
    }
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        // However soon it was abandoned, its statement still meets its deadline.
        if let (Some(exchange), Some(deadline)) = (self.exchange.take(), self.deadline) {
            let at = self.since + deadline;
            let workers = self.state.workers.clone();
            let (worker, principal) = (self.worker, self.principal.clone());
            let in_flight = self.in_flight.take();
            tokio::spawn(async move {
                stop_past_deadline(exchange, at, workers, worker, principal, deadline).await;
                drop(in_flight);
            });
        }
        if self.since.elapsed() < ABANDONED_AFTER {
            return;
        }
        info!("a request was abandoned before its answer (client gone, or a proxy's request timeout); ending its session");
        self.state.metrics.error("abandoned");
        self.state.ender().end(id.into(), "abandoned");
    }
}

/// Waits for an abandoned request's answer until its deadline; past it, stops the statement
/// as [`crate::workers::Worker::stop_statements`] can.
async fn stop_past_deadline(
    exchange: Exchange,
    at: Instant,
    workers: Arc<WorkerSet>,
    worker: u16,
    principal: Arc<str>,
    deadline: Duration,
) {
    if tokio::time::timeout_at(at.into(), exchange).await.is_ok() {
        return;
    }
    let Some(worker) = workers.get(worker) else {
        return;
    };
    let stopped = worker.stop_statements(&principal);
    warn!(
        worker.id = %worker.id,
        timeout_secs = deadline.as_secs(),
        worker_restarted = stopped,
        "an abandoned request ran past limits.statement_timeout_secs"
    );
}
