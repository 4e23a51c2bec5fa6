//! The body types of both legs, and the small constructors every module shares. A leaf: it
//! depends on nothing of the crate, so the request path, the admin listener and the error
//! mapping can all name the same types without importing each other.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Error type of request bodies: the client's body may fail mid-stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response the gateway sends to a client.
pub type ResponseBody = BoxBody<Bytes, hyper::Error>;
/// A request body on its way to a worker or a peer.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;

/// A complete response body.
pub fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An empty response body.
pub fn empty() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A complete request body for a worker or a peer.
pub fn whole(bytes: Bytes) -> UpstreamBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Workers serve on IPv4 loopback only.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A request body made of already-read chunks followed by the rest of the client's stream,
/// so a streamed message is forwarded without being buffered.
pub struct PrefixedBody<B> {
    head: VecDeque<Bytes>,
    rest: B,
}

impl<B> PrefixedBody<B> {
    /// `head`'s non-empty chunks, then `rest`.
    pub fn new(head: [Bytes; 2], rest: B) -> Self {
        PrefixedBody {
            head: head.into_iter().filter(|b| !b.is_empty()).collect(),
            rest,
        }
    }
}

impl<B> Body for PrefixedBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.head.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let head: u64 = self.head.iter().map(|b| b.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(head + rest.lower());
        if let Some(upper) = rest.upper() {
            hint.set_upper(head + upper);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_prefixed_body_yields_its_head_then_the_rest_and_skips_empty_chunks() {
        let rest = whole(Bytes::from_static(b"cd"));
        let body = PrefixedBody::new([Bytes::from_static(b"ab"), Bytes::new()], rest);
        assert_eq!(body.size_hint().exact(), Some(4));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abcd");
    }
}
