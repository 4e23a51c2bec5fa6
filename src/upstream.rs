//! The HTTP/1.1 client leg to the workers and peer nodes: kept-alive connections on loopback,
//! each driven inside the task of the request that uses it; no read timeout and no retry of
//! anything that may have been sent.
//!
//! A pooled client that runs every connection in a task of its own (hyper-util's) hands each
//! response chunk from that task to the request's task through a channel and a wakeup, often
//! onto the other core; leasing the connection to the request instead cost about 5% less CPU
//! per request (bench/RESULTS.md). The request's task polls the connection while waiting for
//! the answer and while streaming the body, and the body puts it back in the pool once the
//! exchange is over. A body dropped early takes its connection with it, since the worker may
//! still be writing on it.
//!
//! Peers may sit behind an HTTP/1.1 ingress that routes by name (Azure Container Apps' Envoy):
//! an [`Endpoint`] carries the name for the Host header and SNI besides the address, and peer
//! connections may be TLS. They are pooled like worker connections, per endpoint.
//!
//! A PREPARE answers only when the query's first batch is ready, so a request may rightly take
//! as long as the query; the only timeout is on connecting. Idle connections are dropped well
//! before the worker's own 10 s keep-alive ends, so the gateway does not race the worker
//! closing them. A request goes out again only when the connection it was given closed before
//! any of it was written, which cannot run anything twice; every other failure goes back to
//! the client.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::body::{loopback, whole, UpstreamBody};
use quack_codec::{QUACK_PATH, REQUEST_CONTENT_TYPE};

/// How long connecting to a worker or peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One connect attempt on loopback, where a handshake takes microseconds (see [`open`]).
const LOOPBACK_CONNECT_ATTEMPT: Duration = Duration::from_millis(100);
/// Idle connections are dropped after this, well inside the worker's 10 s keep-alive.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// How often idle connections past [`POOL_IDLE_TIMEOUT`] are looked for.
const POOL_SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Idle connections kept per worker or peer.
const POOL_MAX_IDLE_PER_WORKER: usize = 64;
/// New connections opened at once to one destination (see [`Pool::gate`]).
const CONNECTS_PER_DESTINATION: usize = 4;
/// Idle time before TCP keepalive probes start on a connection to a worker or a peer.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// How long a health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer to a probe or a status request.
const PROBE_MAX_BODY: usize = 64 * 1024;

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection to the worker could be made: nothing was sent.
    #[error("connecting to worker: {0}")]
    Connect(#[source] std::io::Error),
    /// A new connection closed before any of the request was written: nothing was sent.
    #[error("worker closed the connection before the request was sent: {0}")]
    Unsent(#[source] hyper::Error),
    /// The exchange failed after the request may have reached the worker.
    #[error("exchange with worker failed: {0}")]
    Exchange(#[source] hyper::Error),
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
        !matches!(self, UpstreamError::Connect(_) | UpstreamError::Unsent(_))
    }
}

/// A connection's transport: plain to workers, plain or TLS to peers.
type Stream = Either<TcpStream, TlsStream<TcpStream>>;
type Connection = http1::Connection<TokioIo<Stream>, UpstreamBody>;

/// Where a request goes: an address, and for a peer behind a name-routing ingress, the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `host:port` for the Host header, and its host for SNI; the address when `None`.
    pub authority: Option<Arc<str>>,
    /// Whether to speak TLS, with [`Upstream::with_peer_tls`]'s configuration.
    pub tls: bool,
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            authority: None,
            tls: false,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.authority {
            Some(name) => write!(f, "{name} ({})", self.addr)?,
            None => write!(f, "{}", self.addr)?,
        }
        if self.tls {
            f.write_str(" tls")?;
        }
        Ok(())
    }
}

impl Endpoint {
    /// `host:port` as configured: the Host header.
    pub fn host_header(&self) -> String {
        match &self.authority {
            Some(name) => name.to_string(),
            None => self.addr.to_string(),
        }
    }

    /// The name the peer's certificate must carry.
    fn server_name(&self) -> Result<ServerName<'static>, std::io::Error> {
        let host = match &self.authority {
            Some(name) => name
                .rsplit_once(':')
                .map_or(&**name, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            None => self.addr.ip().to_string(),
        };
        ServerName::try_from(host)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    }
}

/// One connection to a worker or peer, in use by one exchange or idle in the pool.
struct Leased {
    sender: http1::SendRequest<UpstreamBody>,
    /// `None` once the connection has ended; it is then never reused.
    conn: Option<Pin<Box<Connection>>>,
}

impl Leased {
    /// Lets the connection read and write what it can. Returns false once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(conn) = &mut self.conn {
            if conn.as_mut().poll(cx).is_ready() {
                // Dropping the connection fails a request still queued on it, with the
                // request handed back, instead of leaving it waiting forever.
                self.conn = None;
            }
        }
        self.conn.is_some()
    }
}

struct Idle {
    leased: Leased,
    since: Instant,
}

/// Idle connections and connect gates, per destination.
#[derive(Default)]
struct Pool {
    /// Oldest first; the newest is reused first, so the rest age out.
    idle: DashMap<Endpoint, VecDeque<Idle>>,
    gates: DashMap<Endpoint, Arc<Semaphore>>,
}

impl Pool {
    /// A live idle connection to `to`, ready for a request, if there is one.
    async fn reuse(&self, to: &Endpoint) -> Option<Leased> {
        loop {
            let mut leased = self.take_idle(to)?;
            // An idle connection nobody polled may have been closed by the worker meanwhile;
            // polling it once notices, and readies it for the next request.
            let ready = poll_fn(|cx| {
                Poll::Ready(
                    leased.drive(cx) && matches!(leased.sender.poll_ready(cx), Poll::Ready(Ok(()))),
                )
            })
            .await;
            if ready {
                return Some(leased);
            }
        }
    }

    fn take_idle(&self, to: &Endpoint) -> Option<Leased> {
        let mut list = self.idle.get_mut(to)?;
        let expired = Self::split_expired(&mut list, Instant::now());
        let newest = list.pop_back();
        drop(list);
        drop(expired);
        newest.map(|idle| idle.leased)
    }

    fn put_back(&self, to: Endpoint, leased: Leased) {
        let mut list = self.idle.entry(to).or_default();
        list.push_back(Idle {
            leased,
            since: Instant::now(),
        });
        let surplus = list.len().saturating_sub(POOL_MAX_IDLE_PER_WORKER);
        let dropped: Vec<Idle> = list.drain(..surplus).collect();
        drop(list);
        // Closing sockets happens outside the map's lock.
        drop(dropped);
    }

    /// Takes out the connections idle for longer than [`POOL_IDLE_TIMEOUT`].
    fn split_expired(list: &mut VecDeque<Idle>, now: Instant) -> Vec<Idle> {
        let fresh_from = list
            .iter()
            .position(|idle| now.duration_since(idle.since) < POOL_IDLE_TIMEOUT)
            .unwrap_or(list.len());
        list.drain(..fresh_from).collect()
    }

    fn sweep(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        for mut entry in self.idle.iter_mut() {
            expired.extend(Self::split_expired(entry.value_mut(), now));
        }
        drop(expired);
        // Worker ports change at every restart and peers come and go: forget destinations
        // with nothing idle and nobody connecting.
        self.idle.retain(|_, list| !list.is_empty());
        self.gates.retain(|_, gate| Arc::strong_count(gate) > 1);
    }

    /// New connections to one destination are opened a few at a time.
    ///
    /// A DuckDB worker listens with a backlog of 5. When a burst of requests finds the pool
    /// empty (500 sessions querying at once, in the bench), hundreds of simultaneous connects
    /// overflow that backlog, and the kernel resends the dropped SYNs only after 1, 3, 7 and
    /// 15 s: requests then stall for seconds and health probes fail. Waiting here instead
    /// costs microseconds, and most waiting requests end up on connections the first ones
    /// put back.
    fn gate(&self, to: &Endpoint) -> Arc<Semaphore> {
        self.gates
            .entry(to.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(CONNECTS_PER_DESTINATION)))
            .clone()
    }
}

/// A response body that holds the connection it arrives on. Reading it drives that
/// connection; once it has been read to the end, dropping it puts the connection back.
pub struct LeasedBody {
    body: Incoming,
    lease: Option<(Leased, Arc<Pool>, Endpoint)>,
    /// The body said it has no more frames (a body without a length never counts down).
    ended: bool,
}

impl Body for LeasedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame),
            Poll::Pending => {
                // Nothing buffered yet: let the connection read, then look again.
                if let Some((leased, _, _)) = &mut this.lease {
                    leased.drive(cx);
                }
                Pin::new(&mut this.body).poll_frame(cx)
            }
        };
        if matches!(frame, Poll::Ready(None)) {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for LeasedBody {
    fn drop(&mut self) {
        if let Some((leased, pool, to)) = self.lease.take() {
            // Ready means the exchange is over both ways: the worker may answer before it
            // has read all of a streamed request, and such a connection is still busy.
            let done = self.ended || self.body.is_end_stream();
            if done && leased.conn.is_some() && leased.sender.is_ready() {
                pool.put_back(to, leased);
            }
        }
    }
}

impl std::fmt::Debug for LeasedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedBody").finish_non_exhaustive()
    }
}

/// One Quack message for a worker or a peer, with the headers it travels with.
pub struct QuackPost {
    to: Endpoint,
    body: UpstreamBody,
    /// `None` sends the body chunked.
    content_length: Option<u64>,
    user_agent: Option<HeaderValue>,
    extra_headers: Vec<(&'static str, HeaderValue)>,
}

impl QuackPost {
    /// A message whose body streams, with its length when known.
    pub fn streamed(
        to: impl Into<Endpoint>,
        body: UpstreamBody,
        content_length: Option<u64>,
    ) -> Self {
        QuackPost {
            to: to.into(),
            body,
            content_length,
            user_agent: None,
            extra_headers: Vec::new(),
        }
    }

    /// A message whose bytes are all at hand.
    pub fn whole(to: impl Into<Endpoint>, message: Bytes) -> Self {
        let length = message.len() as u64;
        Self::streamed(to, whole(message), Some(length))
    }

    /// Passes the client's `User-Agent` on.
    pub fn user_agent(mut self, user_agent: Option<HeaderValue>) -> Self {
        self.user_agent = user_agent;
        self
    }

    /// Adds one header (the peer credential, a grant).
    pub fn header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.extra_headers.push((name, value));
        self
    }
}

/// The shared client to every worker and peer.
#[derive(Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    /// For endpoints with `tls`; `None` refuses them.
    peer_tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstream {
    /// An empty pool. Inside a Tokio runtime, a task also drops connections idle too long.
    pub fn new() -> Self {
        let pool = Arc::new(Pool::default());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&pool)));
        }
        Upstream {
            pool,
            peer_tls: None,
        }
    }

    /// The same client, speaking TLS with `config` to endpoints that ask for it.
    pub fn with_peer_tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.peer_tls = Some(TlsConnector::from(config));
        self
    }

    /// POSTs a Quack message to a worker or to a peer node's listener.
    ///
    /// # Errors
    /// [`UpstreamError`], telling whether the other side may have seen the request.
    pub async fn send(&self, post: QuackPost) -> Result<Response<LeasedBody>, UpstreamError> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(QUACK_PATH)
            .header(HOST, post.to.host_header())
            .header(CONTENT_TYPE, REQUEST_CONTENT_TYPE);
        for (name, value) in post.extra_headers {
            req = req.header(name, value);
        }
        if let Some(len) = post.content_length {
            req = req.header(CONTENT_LENGTH, len);
        }
        if let Some(ua) = post.user_agent {
            req = req.header(USER_AGENT, ua);
        }
        let req = req
            .body(post.body)
            .expect("method, uri and headers are valid by construction");
        self.request(post.to, req).await
    }

    /// Sends `req` on a pooled connection to `to`, or on a new one.
    async fn request(
        &self,
        to: Endpoint,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<LeasedBody>, UpstreamError> {
        loop {
            let (mut leased, reused) = self.lease(&to).await?;
            let answer = {
                let response = leased.sender.try_send_request(req);
                tokio::pin!(response);
                poll_fn(|cx| {
                    leased.drive(cx);
                    response.as_mut().poll(cx)
                })
                .await
            };
            match answer {
                Ok(response) => {
                    return Ok(response.map(|body| LeasedBody {
                        body,
                        lease: Some((leased, self.pool.clone(), to.clone())),
                        ended: false,
                    }))
                }
                Err(mut e) => match e.take_message() {
                    // Not a byte was written: another connection may carry it.
                    Some(unsent) if reused => req = unsent,
                    Some(_) => return Err(UpstreamError::Unsent(e.into_error())),
                    None => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
    }

    /// A connection to `to`, and whether it was used before.
    async fn lease(&self, to: &Endpoint) -> Result<(Leased, bool), UpstreamError> {
        if let Some(leased) = self.pool.reuse(to).await {
            return Ok((leased, true));
        }
        let gate = self.pool.gate(to);
        let _permit = gate.acquire().await;
        // Connections may have come back while this request waited for its turn.
        if let Some(leased) = self.pool.reuse(to).await {
            return Ok((leased, true));
        }
        Ok((self.connect(to).await?, false))
    }

    /// Opens a connection: `TCP_NODELAY`, keepalive probes, TLS when asked, and the HTTP/1.1
    /// client state.
    async fn connect(&self, to: &Endpoint) -> Result<Leased, UpstreamError> {
        let tcp = open(to.addr).await.map_err(UpstreamError::Connect)?;
        tcp.set_nodelay(true).map_err(UpstreamError::Connect)?;
        // A peer node that vanishes mid-request (no FIN, no RST) is noticed in about a minute
        // instead of the kernel's default of hours; a long query keeps its connection busy,
        // not idle, so keepalive never cuts a live exchange.
        SockRef::from(&tcp)
            .set_tcp_keepalive(&TcpKeepalive::new().with_time(TCP_KEEPALIVE))
            .map_err(UpstreamError::Connect)?;
        let stream = if to.tls {
            let connector = self.peer_tls.as_ref().ok_or_else(|| {
                UpstreamError::Connect(std::io::Error::other("no TLS client configured"))
            })?;
            let name = to.server_name().map_err(UpstreamError::Connect)?;
            let handshake = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp));
            let tls = handshake
                .await
                .map_err(|_| {
                    UpstreamError::Connect(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    ))
                })?
                .map_err(UpstreamError::Connect)?;
            Either::Right(tls)
        } else {
            Either::Left(tcp)
        };
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Unsent)?;
        Ok(Leased {
            sender,
            conn: Some(Box::pin(conn)),
        })
    }

    /// Whether the worker on `port` answers `GET /` with 200 in time.
    pub async fn probe(&self, port: u16) -> bool {
        self.get(loopback(port), "/").await.is_some()
    }

    /// The body of a `GET` that answers 200 within the probe timeout.
    pub async fn get(&self, to: impl Into<Endpoint>, path: &str) -> Option<Bytes> {
        let (parts, body) = self.get_with(to.into(), path, &[]).await?;
        parts.status.is_success().then_some(body)
    }

    /// A `GET` with extra headers, answered (with any status) within the probe timeout: the
    /// answer's head and its whole (small) body.
    pub async fn get_with(
        &self,
        to: Endpoint,
        path: &str,
        headers: &[(&'static str, HeaderValue)],
    ) -> Option<(http::response::Parts, Bytes)> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, to.host_header());
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .ok()?;
        let exchange = async {
            let (parts, body) = self.request(to, req).await.ok()?.into_parts();
            // Read the body to the end so the connection goes back to the pool.
            let body = http_body_util::Limited::new(body, PROBE_MAX_BODY)
                .collect()
                .await
                .ok()?
                .to_bytes();
            Some((parts, body))
        };
        tokio::time::timeout(PROBE_TIMEOUT, exchange)
            .await
            .ok()
            .flatten()
    }
}

/// The TCP connection, within [`CONNECT_TIMEOUT`].
///
/// A worker's listen backlog is 5. When it is full the kernel drops the SYN and sends the
/// next only after 1 s, then 3 s: a client that flooded the worker's port just before left
/// requests stalled for seconds (seen in the bench, after the direct contender). On loopback a
/// connect that has not completed in [`LOOPBACK_CONNECT_ATTEMPT`] was dropped, so it is tried
/// again then, and gets in as soon as the worker has accepted what was queued.
async fn open(to: SocketAddr) -> std::io::Result<TcpStream> {
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let attempt = if to.ip().is_loopback() {
        LOOPBACK_CONNECT_ATTEMPT
    } else {
        CONNECT_TIMEOUT
    };
    loop {
        let until = (tokio::time::Instant::now() + attempt).min(deadline);
        match tokio::time::timeout_at(until, TcpStream::connect(to)).await {
            Ok(result) => return result,
            Err(_) if until < deadline => continue,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            }
        }
    }
}

/// Drops idle connections past their time until the pool itself is gone.
async fn sweep(pool: Weak<Pool>) {
    let mut tick = tokio::time::interval(POOL_SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.sweep(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use http_body_util::Full;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    /// A loopback HTTP/1.1 server that answers every request with `size` bytes and records the
    /// client port of each request, so a test sees which connection carried it. Connections
    /// whose client port is in `close` are ended after their current answer.
    async fn server(size: usize) -> (SocketAddr, Arc<Mutex<Vec<u16>>>, Arc<Mutex<Vec<u16>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let close: Arc<Mutex<Vec<u16>>> = Arc::new(Mutex::new(Vec::new()));
        let (seen2, close2) = (seen.clone(), close.clone());
        tokio::spawn(async move {
            loop {
                let (stream, peer) = listener.accept().await.unwrap();
                let seen = seen2.clone();
                let close = close2.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req: Request<Incoming>| {
                        seen.lock().unwrap().push(peer.port());
                        let mut resp = Response::new(Full::new(Bytes::from(vec![7u8; size])));
                        if close.lock().unwrap().contains(&peer.port()) {
                            resp.headers_mut().insert(
                                http::header::CONNECTION,
                                HeaderValue::from_static("close"),
                            );
                        }
                        async move { Ok::<_, std::convert::Infallible>(resp) }
                    });
                    let _ = server::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, seen, close)
    }

    fn body() -> UpstreamBody {
        Full::new(Bytes::from_static(b"q"))
            .map_err(|never| match never {})
            .boxed()
    }

    async fn fetch(upstream: &Upstream, to: SocketAddr) -> usize {
        let resp = upstream
            .send(QuackPost::streamed(to, body(), Some(1)))
            .await
            .unwrap();
        resp.into_body().collect().await.unwrap().to_bytes().len()
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_is_reused() {
        let (addr, seen, _) = server(300_000).await;
        let upstream = Upstream::new();
        for _ in 0..3 {
            assert_eq!(fetch(&upstream, addr).await, 300_000);
        }
        let ports = seen.lock().unwrap().clone();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    }

    #[tokio::test]
    async fn a_body_dropped_early_takes_its_connection_with_it() {
        let (addr, seen, _) = server(300_000).await;
        let upstream = Upstream::new();
        let resp = upstream
            .send(QuackPost::streamed(addr, body(), Some(1)))
            .await
            .unwrap();
        let mut partial = resp.into_body();
        let first = partial.frame().await.unwrap().unwrap();
        assert!(first.data_ref().is_some_and(|d| d.len() < 300_000));
        drop(partial);
        assert_eq!(fetch(&upstream, addr).await, 300_000);
        let ports = seen.lock().unwrap().clone();
        assert_eq!(ports.len(), 2);
        assert_ne!(ports[0], ports[1], "the half-read connection was reused");
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_reused() {
        let (addr, seen, close) = server(10).await;
        let upstream = Upstream::new();
        assert_eq!(fetch(&upstream, addr).await, 10);
        // The server ends that connection after its next answer, as a worker does at its
        // keep-alive limit; the request after that must go out on a new one, and succeed.
        let first = seen.lock().unwrap()[0];
        close.lock().unwrap().push(first);
        assert_eq!(fetch(&upstream, addr).await, 10);
        assert_eq!(fetch(&upstream, addr).await, 10);
        let ports = seen.lock().unwrap().clone();
        assert_eq!(&ports[..2], &[first, first]);
        assert_ne!(ports[2], first);
    }

    #[tokio::test]
    async fn a_request_the_worker_may_have_read_is_never_sent_again() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A raw server: answers the first request of a connection, reads the second and
        // closes without answering, as a worker that dies mid-request.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (a, r) = (accepted.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for answer in [true, false] {
                        // Headers and the one-byte body.
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.last() != Some(&b'q')
                        {
                            let mut chunk = [0u8; 1024];
                            let n = stream.read(&mut chunk).await.unwrap();
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        buf.clear();
                        r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if answer {
                            stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await
                                .unwrap();
                        }
                    }
                    // Dropping the stream closes it with the second request unanswered.
                });
            }
        });
        let upstream = Upstream::new();
        assert_eq!(fetch(&upstream, addr).await, 2);
        let err = upstream
            .send(QuackPost::streamed(addr, body(), Some(1)))
            .await
            .unwrap_err();
        assert!(err.may_have_reached_worker(), "{err}");
        // Once, on the one connection: no second connection was opened to try again.
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connect_dropped_by_a_full_backlog_is_tried_again_before_the_kernel_would() {
        use socket2::{Domain, Socket, Type};
        // A listener with the smallest backlog, filled by connections nobody accepts: the
        // kernel now drops new SYNs, and would resend ours only after 1 s.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket.listen(0).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let listener: std::net::TcpListener = socket.into();
        let mut fillers = Vec::new();
        while let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await
        {
            fillers.push(stream);
            assert!(fillers.len() < 64, "the backlog never filled");
        }
        // The queue drains 200 ms from now, as a busy worker catches up.
        let drain = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            listener.set_nonblocking(false).unwrap();
            (0..=fillers.len())
                .map(|_| listener.accept().unwrap().0)
                .collect::<Vec<_>>()
        });
        let started = Instant::now();
        let stream = open(addr).await.expect("connected");
        let took = started.elapsed();
        drop(stream);
        drop(drain.join().unwrap());
        // The kernel's first SYN retransmission comes after 1 s.
        assert!(took < Duration::from_millis(900), "took {took:?}");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error_that_sent_nothing() {
        let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = unused.local_addr().unwrap();
        drop(unused);
        let err = Upstream::new()
            .send(QuackPost::streamed(addr, body(), Some(1)))
            .await
            .unwrap_err();
        assert!(!err.may_have_reached_worker(), "{err}");
    }
}
