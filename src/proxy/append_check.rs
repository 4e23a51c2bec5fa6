//! An APPEND's body checked and rewritten as it streams to its worker
//! (`quack_codec::FlatAppend`). DuckDB 1.5.5 reads past the end of a message cut short, and
//! trusts a compressed vector it deserializes to keep rules it never checks, so a worker gets
//! each compressed vector a client sent as the flat vector DuckDB writes for the same rows, and
//! nothing of the client's last piece until the whole message has been walked. A body that ends
//! early, or is not in the layout DuckDB writes, is cut off before the worker has all of it; a
//! worker runs no request whose body it has not had whole. Its length changes, so it goes on
//! chunked. An APPEND the node has already read whole goes the same way ([`WalkedAppend`]).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use quack_codec::{CodecError, FlatAppend};

use crate::body::BoxError;

/// Messages larger than this are walked on a blocking thread: a walk takes about 5 ms a
/// megabyte, and the runtime (one thread on a 2-core node) must serve everyone else meanwhile
/// (a twenty-ninth review froze a gateway for 10 s with eight 250 MB APPENDs walked in turn,
/// and a worker waiting for the rest of another APPEND ran what it had).
const WALK_INLINE_BYTES: usize = 256 * 1024;

/// A whole APPEND walked: refused, or what goes to its worker ([`WalkedAppend`]).
///
/// # Errors
/// As [`FlatAppend::push`] and [`FlatAppend::finish`].
pub async fn walk_append(message: Bytes) -> Result<FlatAppend, CodecError> {
    let inline = message.len() <= WALK_INLINE_BYTES;
    let walk = move || {
        let mut flat = FlatAppend::new();
        flat.push(message)?;
        flat.finish()?;
        Ok(flat)
    };
    if inline {
        return walk();
    }
    tokio::task::spawn_blocking(walk)
        .await
        .unwrap_or(Err(CodecError::Malformed {
            at: 0,
            what: "the APPEND's walk did not finish",
        }))
}

/// Why an APPEND's body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the APPEND's body is not whole: {0}")]
pub struct AppendNotWhole(pub CodecError);

pub struct CheckedAppend<B> {
    inner: B,
    append: Option<FlatAppend>,
    /// The client's body has ended and proved whole: what is left comes from `append`.
    whole: bool,
}

impl<B> CheckedAppend<B> {
    pub fn new(inner: B) -> Self {
        CheckedAppend {
            inner,
            append: Some(FlatAppend::new()),
            whole: false,
        }
    }
}

fn cut_off(
    append: &mut Option<FlatAppend>,
    e: CodecError,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    *append = None;
    Poll::Ready(Some(Err(Box::new(AppendNotWhole(e)))))
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
            let Some(append) = this.append.as_mut() else {
                return Poll::Ready(None);
            };
            // What may go on is taken before more is read, so no more is made than the worker
            // takes.
            match append.next_out() {
                Ok(Some(piece)) => return Poll::Ready(Some(Ok(Frame::data(piece)))),
                Ok(None) if this.whole => {
                    this.append = None;
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(e) => return cut_off(&mut this.append, e),
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                // Trailers are dropped: a Quack client sends none; they would end the body early.
                Some(Ok(frame)) => {
                    if let Ok(piece) = frame.into_data() {
                        if let Err(e) = append.push(piece) {
                            return cut_off(&mut this.append, e);
                        }
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => match append.finish() {
                    Ok(_rows) => this.whole = true,
                    Err(e) => return cut_off(&mut this.append, e),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.append.is_none()
    }
}

/// An APPEND the node has read whole and walked (`Outgoing::Append`): the worker's header,
/// then what the walk passes on after the client's header, its compressed vectors made flat as
/// the worker takes them.
pub struct WalkedAppend {
    header: Option<Bytes>,
    /// Bytes of the client's header still to be dropped from what the walk passes on.
    skip: usize,
    flat: FlatAppend,
}

impl WalkedAppend {
    pub fn new(header: Bytes, client_header_len: usize, flat: FlatAppend) -> Self {
        WalkedAppend {
            header: Some(header),
            skip: client_header_len,
            flat,
        }
    }
}

impl Body for WalkedAppend {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(header) = this.header.take() {
            return Poll::Ready(Some(Ok(Frame::data(header))));
        }
        loop {
            let piece = match this.flat.next_out() {
                Ok(Some(piece)) => piece,
                Ok(None) => return Poll::Ready(None),
                Err(e) => return Poll::Ready(Some(Err(Box::new(AppendNotWhole(e))))),
            };
            if this.skip >= piece.len() {
                this.skip -= piece.len();
                continue;
            }
            let piece = piece.slice(this.skip..);
            this.skip = 0;
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
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
    async fn a_flat_append_goes_through_unchanged_in_any_pieces() {
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
    async fn a_compressed_append_goes_on_flat_in_any_pieces() {
        // The DuckDB 1.5.5 CLI's APPEND of a sequence and constants.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/quack/append_request_cli_compressed.bin");
        let message = std::fs::read(path).expect("the fixture");
        let flat = quack_codec::flatten_append(Bytes::from(message.clone())).expect("flattens");
        assert_ne!(flat, message);
        for size in [1, 100, 4096, message.len()] {
            let out = CheckedAppend::new(pieces(&message, size))
                .collect()
                .await
                .map(|c| c.to_bytes());
            assert_eq!(out.ok(), Some(flat.clone()), "pieces of {size}");
        }
    }

    #[tokio::test]
    async fn a_walked_append_goes_on_flat_behind_the_workers_header() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/quack/append_request_cli_compressed.bin");
        let message = Bytes::from(std::fs::read(path).expect("the fixture"));
        let client_header = quack_codec::decode_header(&message).unwrap().len;
        let mut flat = FlatAppend::new();
        flat.push(message.clone()).unwrap();
        flat.finish().unwrap();
        let out = WalkedAppend::new(Bytes::from_static(b"HEADER"), client_header, flat)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap();
        let whole = quack_codec::flatten_append(message).unwrap();
        assert_eq!(&out[..6], b"HEADER");
        assert_eq!(out[6..], whole[client_header..]);
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
