//! An APPEND on its way to a worker, read whole first (`proxy::read::read_append`): walked
//! once ([`walk_append`]), so that one not in the layout DuckDB 1.5.5 writes is refused before
//! any worker is reached, and then sent ([`WalkedAppend`]) with each compressed vector a client
//! sent as the flat vector DuckDB writes for the same rows (`quack_codec::FlatAppend`): DuckDB
//! trusts a compressed vector it deserializes to keep rules it never checks. Its length
//! changes, so it goes on chunked.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use quack_codec::{CodecError, FlatAppend};

use crate::body::BoxError;
use crate::limits::Held;

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

/// An APPEND the node has read whole and walked (`Outgoing::Append`): the worker's header,
/// then what the walk passes on after the client's header, its compressed vectors made flat as
/// the worker takes them.
pub struct WalkedAppend {
    header: Option<Bytes>,
    /// Bytes of the client's header still to be dropped from what the walk passes on.
    skip: usize,
    flat: FlatAppend,
    /// The walk's memory under the caps, given back with the body.
    _walk_held: Held<u32>,
}

impl WalkedAppend {
    pub fn new(
        header: Bytes,
        client_header_len: usize,
        flat: FlatAppend,
        walk_held: Held<u32>,
    ) -> Self {
        WalkedAppend {
            header: Some(header),
            skip: client_header_len,
            flat,
            _walk_held: walk_held,
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
    use http_body_util::BodyExt;

    use super::*;

    fn fixture(name: &str) -> Bytes {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/quack")
            .join(name);
        Bytes::from(std::fs::read(path).expect("the fixture"))
    }

    #[tokio::test]
    async fn a_walked_append_goes_on_flat_behind_the_workers_header() {
        // The DuckDB 1.5.5 CLI's APPEND of a sequence and constants.
        let message = fixture("append_request_cli_compressed.bin");
        let client_header = quack_codec::decode_header(&message).unwrap().len;
        let flat = walk_append(message.clone()).await.unwrap();
        let caps = std::sync::Arc::new(crate::limits::ByteCaps::new(1, 1));
        let out = WalkedAppend::new(
            Bytes::from_static(b"HEADER"),
            client_header,
            flat,
            caps.hold(0),
        )
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap();
        let whole = quack_codec::flatten_append(message).unwrap();
        assert_ne!(
            whole[client_header..],
            fixture("append_request_cli_compressed.bin")[client_header..]
        );
        assert_eq!(&out[..6], b"HEADER");
        assert_eq!(out[6..], whole[client_header..]);
    }

    #[tokio::test]
    async fn an_append_cut_short_is_refused_by_its_walk_on_either_thread() {
        let large = quack_codec::append_request(
            b"ID",
            1,
            "main",
            "t",
            &[quack_codec::AppendColumn::BigInt((0..40_000).collect())],
        );
        assert!(large.len() > WALK_INLINE_BYTES);
        let small = fixture("append_request_cli_compressed.bin");
        for message in [large, small] {
            assert!(walk_append(message.clone()).await.is_ok());
            let cut = message.slice(..message.len() - 1);
            assert!(matches!(
                walk_append(cut).await,
                Err(CodecError::Truncated(_))
            ));
        }
    }
}
