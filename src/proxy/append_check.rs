//! An APPEND's body checked as it streams to its worker. DuckDB 1.5.5 reads past the end of a
//! message cut short, and an APPEND is not read whole before it is forwarded (its rows stream
//! through), so the last piece is held back until the whole message has been walked
//! (`quack_codec::RowCounter`, which holds nothing but the piece it reads). A body that ends
//! early, or is not in the layout DuckDB writes, is cut off before the worker has all of it;
//! a worker runs no request whose body it has not had whole.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use quack_codec::{CodecError, RowCounter};

use crate::body::BoxError;

/// Why an APPEND's body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the APPEND's body is not whole: {0}")]
pub struct AppendNotWhole(pub CodecError);

pub struct CheckedAppend<B> {
    inner: B,
    counter: Option<RowCounter>,
    /// The last piece read, sent once the next one comes or the message is found whole.
    held: Option<Bytes>,
}

impl<B> CheckedAppend<B> {
    pub fn new(inner: B) -> Self {
        CheckedAppend {
            inner,
            counter: Some(RowCounter::new()),
            held: None,
        }
    }
}

impl<B> CheckedAppend<B> {
    /// Ends the walk: the error to fail the body with when the message is not whole, its held
    /// piece dropped unsent.
    fn finish(&mut self) -> Option<BoxError> {
        let e = self.counter.take()?.finish_checked().err()?;
        self.held = None;
        Some(Box::new(AppendNotWhole(e)))
    }
}

impl<B> Body for CheckedAppend<B>
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
        loop {
            let Some(counter) = this.counter.as_mut() else {
                // Checked whole: the held piece goes last.
                return Poll::Ready(this.held.take().map(|piece| Ok(Frame::data(piece))));
            };
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(piece) if piece.is_empty() => {}
                    Ok(piece) => {
                        counter.feed_bytes(piece.clone());
                        // Not DuckDB's layout: no need to wait for the end to say so.
                        if counter.has_failed() {
                            if let Some(e) = this.finish() {
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                        if let Some(earlier) = this.held.replace(piece) {
                            return Poll::Ready(Some(Ok(Frame::data(earlier))));
                        }
                    }
                    // Trailers: a Quack client sends none; they would end the body early.
                    Err(_) => {}
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    if let Some(e) = this.finish() {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.counter.is_none() && self.held.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.held.as_ref().map_or(0, |b| b.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(held));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    use super::*;

    /// A client's body in pieces of `size`.
    struct Pieces(VecDeque<Bytes>);

    impl Body for Pieces {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn pieces(bytes: &[u8], size: usize) -> Pieces {
        Pieces(bytes.chunks(size).map(Bytes::copy_from_slice).collect())
    }

    fn append() -> Vec<u8> {
        quack_codec::append_request(
            b"ID",
            1,
            "main",
            "t",
            &[quack_codec::AppendColumn::BigInt((0..2048).collect())],
        )
        .to_vec()
    }

    #[tokio::test]
    async fn a_whole_append_goes_through_unchanged_in_any_pieces() {
        let message = append();
        for size in [1, 100, 4096, message.len()] {
            let out = CheckedAppend::new(pieces(&message, size))
                .collect()
                .await
                .map(|c| c.to_bytes());
            assert_eq!(out.ok().as_deref(), Some(&message[..]), "pieces of {size}");
        }
    }

    #[tokio::test]
    async fn a_cut_append_never_sends_its_last_piece() {
        let message = append();
        for cut in [1, 40, message.len() / 2, message.len() - 1] {
            let mut body = CheckedAppend::new(pieces(&message[..cut], 64));
            let mut sent = 0;
            let end = loop {
                match body.frame().await {
                    Some(Ok(frame)) => sent += frame.into_data().map_or(0, |d| d.len()),
                    other => break other,
                }
            };
            assert!(
                matches!(end, Some(Err(e)) if e.is::<AppendNotWhole>()),
                "cut at {cut}"
            );
            assert!(sent < cut, "cut at {cut}: {sent} bytes sent");
        }
    }
}
