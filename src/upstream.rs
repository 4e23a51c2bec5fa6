//! The HTTP/1.1 client leg to the workers: pooled keep-alive connections on loopback, no
//! read timeout, and no retries.
//!
//! A PREPARE answers only when the query's first batch is ready, so a request may rightly take
//! as long as the query; the only timeout is on connecting. Pooled connections are released
//! well before the worker's own 10 s keep-alive ends, so the gateway does not race the worker
//! closing them. hyper resends a request only when a pooled connection closed before any of it
//! was written, which cannot run anything twice; every other failure goes back to the client.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use crate::quack::{QUACK_PATH, REQUEST_CONTENT_TYPE};

/// Error type of request bodies: the client's body may fail mid-stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body on its way to a worker.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;

/// How long connecting to a worker on loopback may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle pooled connections are dropped after this, well inside the worker's 10 s keep-alive.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle pooled connections kept per worker or peer.
const POOL_MAX_IDLE_PER_WORKER: usize = 64;
/// New connections opened at once to one destination (see [`PacedConnector`]).
const CONNECTS_PER_DESTINATION: usize = 4;
/// Idle time before TCP keepalive probes start on a connection to a worker or a peer.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// How long a health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection to the worker could be made: nothing was sent.
    #[error("connecting to worker: {0}")]
    Connect(#[source] hyper_util::client::legacy::Error),
    /// The exchange failed after the request may have reached the worker.
    #[error("exchange with worker failed: {0}")]
    Exchange(#[source] hyper_util::client::legacy::Error),
    /// The worker did not answer in time.
    #[error("worker did not answer in time")]
    Timeout,
    /// The worker's response body failed midway.
    #[error("reading the worker's response: {0}")]
    Body(#[source] hyper::Error),
}

impl UpstreamError {
    /// Whether the worker may have received (and run) the request. Quack requests are not
    /// idempotent, so a request that may have arrived is never sent again.
    pub fn may_have_reached_worker(&self) -> bool {
        !matches!(self, UpstreamError::Connect(_))
    }
}

/// The shared client to every worker.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<PacedConnector, UpstreamBody>,
}

/// Opens new connections a few at a time per destination.
///
/// A DuckDB worker listens with a backlog of 5. When a burst of requests finds the pool empty
/// (500 sessions querying at once, in the bench), hundreds of simultaneous connects overflow
/// that backlog, and the kernel resends the dropped SYNs only after 1, 3, 7 and 15 s: requests
/// then stall for seconds and health probes fail. Waiting here instead costs microseconds,
/// and the waiting requests mostly end up on connections the first ones return to the pool.
#[derive(Clone, Debug)]
pub struct PacedConnector {
    inner: HttpConnector,
    /// One gate per destination (`host:port`), made on first use.
    gates: Arc<DashMap<String, Arc<Semaphore>>>,
}

impl tower_service::Service<Uri> for PacedConnector {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let key = dst.authority().map(|a| a.to_string()).unwrap_or_default();
        let gate = self
            .gates
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(CONNECTS_PER_DESTINATION)))
            .clone();
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let _permit = gate.acquire_owned().await;
            inner.call(dst).await
        })
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstream {
    /// A client with the pool and timeouts above.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // A peer node that vanishes mid-request (no FIN, no RST) is noticed in about a minute
        // instead of the kernel's default of hours; a long query keeps its connection busy,
        // not idle, so keepalive never cuts a live exchange.
        connector.set_keepalive(Some(TCP_KEEPALIVE));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_WORKER)
            .build(PacedConnector {
                inner: connector,
                gates: Arc::new(DashMap::new()),
            });
        Upstream { client }
    }

    /// POSTs a Quack message to a worker (`127.0.0.1:<port>`) or to a peer node's listener,
    /// with `extra` (the peer credential) as an added header.
    ///
    /// # Errors
    /// [`UpstreamError`], telling whether the other side may have seen the request.
    pub async fn send(
        &self,
        to: SocketAddr,
        body: UpstreamBody,
        content_length: Option<u64>,
        user_agent: Option<HeaderValue>,
        extra: Option<(&'static str, HeaderValue)>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{to}{QUACK_PATH}"))
            .header(HOST, to.to_string())
            .header(CONTENT_TYPE, REQUEST_CONTENT_TYPE);
        if let Some((name, value)) = extra {
            req = req.header(name, value);
        }
        if let Some(len) = content_length {
            req = req.header(CONTENT_LENGTH, len);
        }
        if let Some(ua) = user_agent {
            req = req.header(USER_AGENT, ua);
        }
        let req = req
            .body(body)
            .expect("method, uri and headers are valid by construction");
        self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                UpstreamError::Connect(e)
            } else {
                UpstreamError::Exchange(e)
            }
        })
    }

    /// Whether the worker on `port` answers `GET /` with 200 in time.
    pub async fn probe(&self, port: u16) -> bool {
        self.get(SocketAddr::from(([127, 0, 0, 1], port)), "/")
            .await
            .is_some()
    }

    /// The body of a `GET` that answers 200 within the probe timeout.
    pub async fn get(&self, to: SocketAddr, path: &str) -> Option<Bytes> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{to}{path}"))
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .expect("valid by construction");
        let exchange = async {
            let resp = self.client.request(req).await.ok()?;
            let ok = resp.status().is_success();
            // Read the body to the end so the connection goes back to the pool.
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            ok.then_some(body)
        };
        tokio::time::timeout(PROBE_TIMEOUT, exchange)
            .await
            .ok()
            .flatten()
    }
}
