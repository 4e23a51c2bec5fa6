//! Reading the client's body, always bounded in size and time: the header first, then, for the
//! message types whose layout is known, the whole message; an APPEND in the bytes the node
//! may hold ([`read_append`]). A body streamed to a worker (a newer message type) is bounded
//! too: in size by `gateway.max_body_bytes`, in time by [`TimedBody`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;
use crate::error::GatewayError;
use crate::held_append::HeldBody;
use crate::proxy::append_check::AppendNotWhole;
use crate::upstream::UpstreamError;
use quack_codec::msg_type;
use quack_codec::{self as codec, CodecError, Header};

/// A header longer than this is refused; real ones are under 100 bytes.
const MAX_HEADER_BYTES: usize = 1024;
/// Cap on a CONNECTION_REQUEST and on the CONNECTION_RESPONSE to it; real ones are < 100 bytes.
pub const MAX_CONNECT_MESSAGE_BYTES: usize = 64 * 1024;
/// Cap on FETCH and DISCONNECT bodies; real ones are under 40 bytes.
const MAX_SMALL_MESSAGE_BYTES: u64 = 4 * 1024;
/// Time a client gets to send a message the gateway reads whole before forwarding.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest a streamed body may arrive, after its first [`CLIENT_READ_TIMEOUT`]: 8 KiB/s,
/// a 64 kbit/s line. Apache's mod_reqtimeout does the same with `body=..,MinRate=500`.
const MIN_BODY_RATE: f64 = 8.0 * 1024.0;
/// The longest an APPEND read whole may pause between pieces. DuckDB 1.5.5's own server gives
/// a body 5 s, so no client of it pauses longer.
const HELD_IDLE: Duration = Duration::from_secs(10);

/// A streamed body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// The Content-Length the client declared, refused early when over the limit.
pub fn declared_length(headers: &HeaderMap, limit: u64) -> Result<Option<u64>, GatewayError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => Err(GatewayError::BodyTooLarge { limit }),
        other => Ok(other),
    }
}

/// How much of a message is read before forwarding: all of the small types whose layout is
/// known, so they can be checked, a PREPARE up to `prepare_limit`; nothing of the others
/// (APPEND, newer types), which stream.
pub fn buffered_cap(t: u64, limit: u64, prepare_limit: u64) -> Option<u64> {
    match t {
        msg_type::PREPARE_REQUEST => Some(prepare_limit.min(limit)),
        msg_type::FETCH_REQUEST | msg_type::DISCONNECT => Some(MAX_SMALL_MESSAGE_BYTES.min(limit)),
        _ => None,
    }
}

/// Reads frames until the header decodes. Usually the first frame holds the whole message.
pub async fn read_header(
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
pub async fn read_rest(
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

/// Reads a whole APPEND into `held` (`held_append`: memory, then disk). An APPEND reaches its
/// worker only whole: DuckDB 1.5.5's server, left waiting 5 s for the rest of a body, runs
/// what it has, reading the rest from its heap (a twenty-eighth review), so no client's pause
/// may reach a worker. In time it is bounded by [`CLIENT_READ_TIMEOUT`] plus one second per
/// `min_rate` bytes received (`limits.min_append_rate`: its bytes are held against caps other
/// principals share, so a body sent fast and then dripped must not earn hours, as a
/// twenty-ninth review's did at 8 KiB/s), and by [`HELD_IDLE`] between pieces; in size by
/// `limit` and by what may be held; and cut when it is behind while the caps are full
/// (`held_append`'s `give_way`).
pub async fn read_append(
    prefix: Bytes,
    mut body: Limited<Incoming>,
    limit: u64,
    min_rate: u64,
    mut held: HeldBody,
) -> Result<Bytes, GatewayError> {
    held.push(&prefix).await?;
    let mut received = prefix.len() as u64;
    let started = Instant::now();
    let cut = held.cut();
    loop {
        let earned = Duration::from_secs_f64(received as f64 / min_rate.max(1) as f64);
        let until = (started + CLIENT_READ_TIMEOUT + earned).min(Instant::now() + HELD_IDLE);
        let next = tokio::select! {
            biased;
            () = cut.cancelled() => return Err(held.gave_way().into()),
            next = tokio::time::timeout_at(until, body.frame()) => next,
        };
        let Some(frame) = next.map_err(|_| GatewayError::ClientTimeout)? else {
            return Ok(held.finish().await?);
        };
        let frame = frame.map_err(|e| body_error(e, limit))?;
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
            held.push(&data).await?;
        }
    }
}

/// Bounds a read of the client's body by [`CLIENT_READ_TIMEOUT`].
pub async fn with_client_timeout<T>(
    read: impl std::future::Future<Output = Result<T, GatewayError>>,
) -> Result<T, GatewayError> {
    tokio::time::timeout(CLIENT_READ_TIMEOUT, read)
        .await
        .map_err(|_| GatewayError::ClientTimeout)?
}

/// A client body streamed to a worker, cut off unless it arrives within
/// [`CLIENT_READ_TIMEOUT`] plus one second per [`MIN_BODY_RATE`] bytes received: a client
/// sending a byte a second would otherwise hold a worker's request for as long as it likes,
/// while a large body on a slow but honest line keeps earning time.
pub struct TimedBody<B> {
    inner: B,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B) -> Self {
        let deadline = Instant::now() + CLIENT_READ_TIMEOUT;
        TimedBody {
            inner,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                let earned = data.map_or(0, Bytes::len) as f64 / MIN_BODY_RATE;
                this.deadline += Duration::from_secs_f64(earned);
            }
            return Poll::Ready(frame);
        }
        if this.timer.deadline() != this.deadline {
            this.timer.as_mut().reset(this.deadline);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A failed exchange whose cause was the client's streamed body, not the worker: over
/// `limit`, too slow, or an APPEND that was not whole. The worker got an incomplete request, which it does not run.
pub fn streamed_body_failure(e: UpstreamError, limit: u64) -> GatewayError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if c.is::<LengthLimitError>() {
            return GatewayError::BodyTooLarge { limit };
        }
        if c.is::<BodyTimedOut>() {
            return GatewayError::ClientTimeout;
        }
        if let Some(AppendNotWhole(e)) = c.downcast_ref() {
            return GatewayError::Malformed(e.clone());
        }
        cause = c.source();
    }
    e.into()
}

fn body_error(e: BoxError, limit: u64) -> GatewayError {
    if e.is::<LengthLimitError>() {
        GatewayError::BodyTooLarge { limit }
    } else if e.is::<BodyTimedOut>() {
        GatewayError::ClientTimeout
    } else {
        GatewayError::ClientBody(e)
    }
}
