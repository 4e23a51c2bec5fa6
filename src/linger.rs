//! Lingering close, as nginx does it: a refusal must reach the client.
//!
//! When the gateway answers before reading the whole request (a 413 for a body over a limit, a
//! 431 for headers over hyper's buffer), the client is usually still sending. Closing the socket
//! with its bytes unread makes the kernel send a reset, and the reset throws away the answer
//! the client has not read yet: it sees a broken pipe, or over TLS an EOF, and no status. So
//! when hyper shuts the connection down, [`Lingering`] shuts down the write side only (the FIN
//! follows the answer, and over TLS the close_notify), then reads and discards what the client
//! still sends until it closes, for at most [`LINGER_TIME`] in all, [`LINGER_IDLE`] without
//! a byte, or [`LINGER_MAX_BYTES`]; only then is the socket closed.
//!
//! It wraps the TCP stream, below TLS: the discarded bytes are never decrypted. On a normal
//! close the client has already closed its side, the first read sees the end at once, and no
//! timer is set.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Longest time a closing connection is read for (nginx's `lingering_time` is 30 s).
pub const LINGER_TIME: Duration = Duration::from_secs(10);
/// Longest wait for the next byte of a closing connection (nginx's `lingering_timeout`).
pub const LINGER_IDLE: Duration = Duration::from_secs(5);
/// Most bytes discarded from a closing connection: a client still sending after this is
/// reset.
pub const LINGER_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Bytes read per discarding read.
const DISCARD_CHUNK: usize = 16 * 1024;

/// A stream whose shutdown is a lingering close.
#[derive(Debug)]
pub struct Lingering<S> {
    inner: S,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Serving; nothing shut down yet.
    Open,
    /// The write side is shut down; discarding what the client still sends.
    Draining {
        /// Set at the first read that does not end the stream: a normal close never needs it.
        timer: Option<Pin<Box<Sleep>>>,
        /// When lingering ends whatever the client does.
        until: Option<Instant>,
        left: u64,
    },
    /// Done: the socket may be closed.
    Closed,
}

impl<S> Lingering<S> {
    pub fn new(inner: S) -> Self {
        Lingering {
            inner,
            state: State::Open,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lingering<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Open => {
                    if let Err(e) = ready!(Pin::new(&mut this.inner).poll_shutdown(cx)) {
                        // The client is gone already (a reset): nothing left to deliver.
                        this.state = State::Closed;
                        return Poll::Ready(Err(e));
                    }
                    this.state = State::Draining {
                        timer: None,
                        until: None,
                        left: LINGER_MAX_BYTES,
                    };
                }
                State::Draining { timer, until, left } => {
                    if let Some(timer) = timer.as_mut() {
                        if timer.as_mut().poll(cx).is_ready() {
                            this.state = State::Closed;
                            continue;
                        }
                    }
                    let mut chunk = [0u8; DISCARD_CHUNK];
                    let mut buf = ReadBuf::new(&mut chunk);
                    let read = match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) => buf.filled().len() as u64,
                        // An error ends the stream as surely as its end does.
                        Poll::Ready(Err(_)) => 0,
                        Poll::Pending if timer.is_some() => return Poll::Pending,
                        // The client has not closed yet: from now on the time is bounded.
                        Poll::Pending => 1,
                    };
                    if read == 0 || read >= *left {
                        this.state = State::Closed;
                        continue;
                    }
                    *left -= read;
                    let now = Instant::now();
                    let end = *until.get_or_insert(now + LINGER_TIME);
                    let next = (now + LINGER_IDLE).min(end);
                    match timer {
                        Some(t) => t.as_mut().reset(next),
                        None => *timer = Some(Box::pin(tokio::time::sleep_until(next))),
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A loopback pair: (the gateway's side wrapped, the client's side).
    async fn pair() -> (Lingering<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Lingering::new(server), client)
    }

    #[tokio::test]
    async fn the_answer_survives_a_client_that_is_still_sending() {
        let (mut server, mut client) = pair().await;
        let sender = tokio::spawn(async move {
            // 8 MiB: far more than the socket buffers hold, so the server closes mid-send.
            let junk = vec![7u8; 8 << 20];
            let sent = client.write_all(&junk).await;
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            (sent.is_ok(), answer)
        });
        let mut first = [0u8; 1024];
        server.read_exact(&mut first).await.unwrap();
        server
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), server.shutdown())
            .await
            .expect("lingering is bounded")
            .unwrap();
        drop(server);
        let (sent, answer) = sender.await.unwrap();
        assert!(sent, "the client could send its whole body");
        assert_eq!(answer, b"HTTP/1.1 413 Payload Too Large\r\n\r\n");
    }

    #[tokio::test]
    async fn a_client_that_never_closes_is_let_go_after_the_idle_time() {
        let (mut server, mut client) = pair().await;
        client.write_all(b"more").await.unwrap();
        let started = Instant::now();
        server.shutdown().await.unwrap();
        assert!(started.elapsed() >= LINGER_IDLE && started.elapsed() < LINGER_TIME);
        drop(client);
    }

    #[tokio::test]
    async fn a_client_that_closed_already_costs_no_timer() {
        let (mut server, client) = pair().await;
        drop(client);
        server.shutdown().await.unwrap();
        assert!(matches!(server.state, State::Closed));
    }
}
