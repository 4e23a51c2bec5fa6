//! The accept loops: they accept, and nothing more.
//!
//! Listeners are bound with `gateway.listen_backlog` (4096) rather than the 128 that
//! `TcpListener::bind` asks for. v1.5 clients open a connection per request, so a burst can
//! outrun the accept loop for a moment. When the kernel's accept queue is full it drops the SYN,
//! and the client sends it again only a second later.
//!
//! Each accepted socket gets `TCP_NODELAY`, a permit from the connection limit, and its own
//! task. The TLS handshake, HTTP parsing and everything after run inside that task, the
//! handshake under `gateway.tls_handshake_timeout_secs`. Accept errors (such as running out of
//! file descriptors) back off instead of ending the loop. On drain, the loop stops accepting and
//! every open connection finishes its in-flight request, then closes.
//!
//! Every connection closes lingering (`linger`): the write side first, then the client's
//! remaining bytes are read and discarded for a bounded time, so an answer sent before the
//! request was read whole (a 413, a 431) reaches the client instead of being lost to a reset.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error};

use crate::body::ResponseBody;
use crate::forwarded::TrustedProxies;
use crate::limits::ConnectionCaps;
use crate::linger::Lingering;

/// Longest pause after a failed accept.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Time a client gets to send a request's head (hyper's default, stated here): a connection
/// that sends none, or sends it a byte at a time, is closed after it, with no answer.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The client's address, put into every request's extensions: limits key on it. It is the TCP
/// peer's, or behind a trusted proxy the one the proxy reports ([`TrustedProxies`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// What one listener serves.
pub struct Listener {
    /// The bound socket.
    pub tcp: TcpListener,
    /// TLS for this listener; `None` serves plain HTTP.
    pub tls: Option<(TlsAcceptor, Duration)>,
    /// A name for logs: `https`, `plain` or `admin`.
    pub name: &'static str,
    /// Peers whose `X-Forwarded-For` is believed; they are exempt from `per_address`.
    pub trusted: Arc<TrustedProxies>,
    /// Caps on open connections per client address; `None` for the peer and admin listeners.
    pub per_address: Option<Arc<ConnectionCaps>>,
    /// Serve only `trusted` proxies: a plain listener off loopback, behind a proxy that
    /// terminates TLS.
    pub only_trusted: bool,
}

/// A listener on `addr` whose accept queue holds `backlog` connections (the kernel caps it at
/// `net.core.somaxconn`). Like `TcpListener::bind`, it sets `SO_REUSEADDR`.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// `net.core.somaxconn`, the kernel's cap on every listen backlog; `None` where it cannot be read.
pub fn kernel_backlog_cap() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Accepts on `listener` until `drain` is cancelled, serving each connection with `handler`.
/// Connection tasks are spawned on `tracker`, so the caller can wait for them to finish.
pub async fn run<H, F>(
    listener: Listener,
    handler: H,
    limit: Arc<Semaphore>,
    drain: CancellationToken,
    tracker: TaskTracker,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, std::convert::Infallible>> + Send + 'static,
{
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = drain.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
                Ok(accepted) => {
                    backoff = Duration::from_millis(5);
                    accepted
                }
                Err(e) => {
                    error!(listener = listener.name, error = %e, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            _ = drain.cancelled() => return,
        };
        if listener.only_trusted && !listener.trusted.trusts(peer.ip()) {
            debug!(client.addr = %peer, listener = listener.name, "connection refused: not a trusted proxy");
            continue;
        }
        // Closed at once: the address already holds as many connections as it may.
        let address_permit = match &listener.per_address {
            Some(caps) if !listener.trusted.trusts(peer.ip()) => match caps.admit(peer.ip()) {
                Some(permit) => Some(permit),
                None => {
                    debug!(client.addr = %peer, "connection refused: limits.max_connections_per_address");
                    continue;
                }
            },
            _ => None,
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(client.addr = %peer, error = %e, "set_nodelay failed");
        }
        let tls = listener.tls.clone();
        let trusted = listener.trusted.clone();
        let handler = handler.clone();
        let drain = drain.clone();
        tracker.spawn(async move {
            serve_connection(stream, peer, trusted, tls, handler, drain).await;
            drop(address_permit);
            drop(permit);
        });
    }
}

async fn serve_connection<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    trusted: Arc<TrustedProxies>,
    tls: Option<(TlsAcceptor, Duration)>,
    handler: H,
    drain: CancellationToken,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, std::convert::Infallible>> + Send + 'static,
{
    let stream = Lingering::new(stream);
    match tls {
        None => serve_http(stream, peer, trusted, handler, drain).await,
        Some((acceptor, timeout)) => {
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => serve_http(tls_stream, peer, trusted, handler, drain).await,
                Ok(Err(e)) => debug!(client.addr = %peer, error = %e, "tls handshake failed"),
                Err(_) => {
                    debug!(client.addr = %peer, timeout_secs = timeout.as_secs(), "tls handshake timed out")
                }
            }
        }
    }
}

async fn serve_http<I, H, F>(
    io: I,
    peer: SocketAddr,
    trusted: Arc<TrustedProxies>,
    handler: H,
    drain: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, std::convert::Infallible>> + Send + 'static,
{
    let service = service_fn(move |mut req: Request<Incoming>| {
        let client = trusted.client_ip(peer.ip(), req.headers());
        req.extensions_mut().insert(ClientAddr(client));
        handler(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = drain.cancelled() => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(client.addr = %peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_connections_nobody_has_accepted_yet_is_queued_not_dropped() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), 4096).unwrap();
        let addr = listener.local_addr().unwrap();
        // Nothing accepts: every connection waits in the accept queue. With the 128 that
        // `TcpListener::bind` asks for, the 130th SYN is dropped and its connect takes a second.
        let burst = 400.min(kernel_backlog_cap().unwrap_or(4096) as usize);
        let mut held = Vec::with_capacity(burst);
        for i in 0..burst {
            let connect =
                tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr));
            match connect.await {
                Ok(Ok(s)) => held.push(s),
                Ok(Err(e)) => panic!("connection {i}: {e}"),
                Err(_) => panic!("connection {i} was not queued (its SYN was dropped)"),
            }
        }
        assert_eq!(held.len(), burst);
    }
}
