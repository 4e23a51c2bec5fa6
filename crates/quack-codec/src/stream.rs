//! Bytes that arrive in pieces, read by a walker written as an async fn that waits for the
//! next piece. The walker holds only the piece it is reading (the caller's frame, shared, not
//! copied), so a message of any size is walked in constant memory, and a walk that needs more
//! bytes than have come simply waits. The futures are driven by hand ([`Feed`]'s owner polls
//! after each piece, with a no-op waker), never by a runtime.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use bytes::{Bytes, BytesMut};

use crate::decode::{decode_header, Header};
use crate::error::CodecError;
use crate::flatten::Flattened;
use crate::wire::MAX_VARINT_BYTES;

/// A header longer than this is not one; real ones are under 100 bytes.
const MAX_HEADER_BYTES: usize = 1024;

/// Why a walk stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The input ended first.
    Truncated,
    /// Not a layout the walker knows.
    Unknown,
}

impl From<CodecError> for Stop {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Truncated(_) => Stop::Truncated,
            CodecError::Malformed { .. } => Stop::Unknown,
        }
    }
}

#[derive(Default)]
struct Queue {
    pieces: VecDeque<Bytes>,
    ended: bool,
    /// What the walk replaces, when it rewrites what it reads.
    rewrites: Option<Rewrites>,
}

/// Ranges of the input the walk has replaced, in order, and how far it has read.
#[derive(Default)]
struct Rewrites {
    /// Where the walk waited last for a piece: it has read every byte before.
    walked: u64,
    /// The start of a range being read that will be replaced.
    open: Option<u64>,
    done: VecDeque<Edit>,
    /// [`Flattened::heap_bytes`] of every replacement made so far.
    heap: u64,
}

/// The input from `start` to `end` replaced `with` a vector's flat form.
pub(crate) struct Edit {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) with: Flattened,
}

/// The bytes read since a point, kept to be read again once the walk has checked them.
struct Capture {
    start: u64,
    first: Bytes,
    pieces: Vec<Bytes>,
}

/// The feeding side: pieces in, then the end.
pub(crate) struct Feed(Arc<Mutex<Queue>>);

/// The walker's side.
pub(crate) struct Source {
    queue: Arc<Mutex<Queue>>,
    piece: Bytes,
    pos: usize,
    /// Bytes of every piece taken from the queue.
    taken: u64,
    rewriting: bool,
    capture: Option<Capture>,
}

/// A feed and the source it fills; a walk through it may replace ranges it reads when
/// `rewriting`.
pub(crate) fn pair(rewriting: bool) -> (Feed, Source) {
    let queue = Arc::new(Mutex::new(Queue {
        rewrites: rewriting.then(Rewrites::default),
        ..Queue::default()
    }));
    (
        Feed(queue.clone()),
        Source {
            queue,
            piece: Bytes::new(),
            pos: 0,
            taken: 0,
            rewriting,
            capture: None,
        },
    )
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Feed {
    pub(crate) fn push(&self, piece: Bytes) {
        if !piece.is_empty() {
            lock(&self.0).pieces.push_back(piece);
        }
    }

    pub(crate) fn end(&self) {
        lock(&self.0).ended = true;
    }

    /// Drops what the walker will not read.
    pub(crate) fn clear(&self) {
        lock(&self.0).pieces.clear();
    }

    /// The input before this has been read and will not be replaced but as [`Feed::next_edit`]
    /// says.
    pub(crate) fn settled(&self) -> u64 {
        lock(&self.0)
            .rewrites
            .as_ref()
            .map_or(0, |r| r.open.unwrap_or(r.walked))
    }

    /// Memory the replacements made so far took when they were made.
    pub(crate) fn rewrites_heap(&self) -> u64 {
        lock(&self.0).rewrites.as_ref().map_or(0, |r| r.heap)
    }

    /// The first replacement not yet taken, if it starts before `limit`; taken only if it also
    /// ends by then.
    pub(crate) fn next_edit(&self, limit: u64) -> Option<Result<Edit, u64>> {
        let mut queue = lock(&self.0);
        let done = &mut queue.rewrites.as_mut()?.done;
        let edit = done.front().filter(|e| e.start < limit)?;
        if edit.end > limit {
            return Some(Err(edit.start));
        }
        done.pop_front().map(Ok)
    }

    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        lock(&self.0).pieces.len()
    }
}

impl Source {
    /// Bytes read so far.
    pub(crate) fn position(&self) -> u64 {
        self.taken - (self.piece.len() - self.pos) as u64
    }

    /// The next piece, once there is one; `Truncated` once the input has ended.
    async fn next_piece(&mut self) -> Result<Bytes, Stop> {
        let at = self.position();
        let piece = poll_fn(|_| {
            let mut queue = lock(&self.queue);
            match queue.pieces.pop_front() {
                Some(piece) => Poll::Ready(Ok(piece)),
                None if queue.ended => Poll::Ready(Err(Stop::Truncated)),
                None => {
                    if let Some(rewrites) = &mut queue.rewrites {
                        rewrites.walked = at;
                    }
                    Poll::Pending
                }
            }
        })
        .await?;
        self.taken += piece.len() as u64;
        if let Some(capture) = &mut self.capture {
            capture.pieces.push(piece.clone());
        }
        Ok(piece)
    }

    /// Whether the walk's caller passes on what it reads with replacements ([`Feed::next_edit`]).
    pub(crate) fn rewriting(&self) -> bool {
        self.rewriting
    }

    /// The next `n` bytes, unread.
    pub(crate) async fn peek(&mut self, n: usize) -> Result<&[u8], Stop> {
        Ok(&self.contiguous(n).await?[..n])
    }

    /// Keeps what is read from here, which will be replaced: nothing from here goes on until
    /// [`Source::replace`].
    pub(crate) fn capture(&mut self) {
        let start = self.position();
        self.capture = Some(Capture {
            start,
            first: self.piece.slice(self.pos..),
            pieces: Vec::new(),
        });
        if let Some(rewrites) = &mut lock(&self.queue).rewrites {
            rewrites.open = Some(start);
        }
    }

    /// What was read since [`Source::capture`].
    pub(crate) fn captured(&self) -> Bytes {
        let Some(capture) = &self.capture else {
            return Bytes::new();
        };
        let len = (self.position() - capture.start) as usize;
        if capture.pieces.is_empty() {
            return capture.first.slice(..len.min(capture.first.len()));
        }
        let mut bytes = BytesMut::with_capacity(len);
        for piece in std::iter::once(&capture.first).chain(&capture.pieces) {
            let want = len - bytes.len();
            bytes.extend_from_slice(&piece[..piece.len().min(want)]);
        }
        bytes.freeze()
    }

    /// Replaces what was read since [`Source::capture`] `with` a vector's flat form.
    pub(crate) fn replace(&mut self, with: Flattened) {
        let Some(capture) = self.capture.take() else {
            return;
        };
        let end = self.position();
        if let Some(rewrites) = &mut lock(&self.queue).rewrites {
            rewrites.open = None;
            rewrites.heap += with.heap_bytes();
            rewrites.done.push_back(Edit {
                start: capture.start,
                end,
                with,
            });
        }
    }

    /// Makes at least `n` unread bytes contiguous, joining pieces where needed (only a few
    /// bytes ever are: a header, a field id looked at before it is read).
    async fn contiguous(&mut self, n: usize) -> Result<&[u8], Stop> {
        while self.piece.len() - self.pos < n {
            let next = self.next_piece().await?;
            let mut joined = BytesMut::with_capacity(self.piece.len() - self.pos + next.len());
            joined.extend_from_slice(&self.piece[self.pos..]);
            joined.extend_from_slice(&next);
            self.piece = joined.freeze();
            self.pos = 0;
        }
        Ok(&self.piece[self.pos..])
    }

    /// The message header, read whole.
    pub(crate) async fn header(&mut self) -> Result<Header, Stop> {
        let mut want = 1;
        loop {
            let bytes = self.contiguous(want).await?;
            match decode_header(bytes) {
                Ok(header) => {
                    self.pos += header.len;
                    return Ok(header);
                }
                Err(CodecError::Truncated(_)) if bytes.len() < MAX_HEADER_BYTES => {
                    want = bytes.len() + 1;
                }
                Err(_) => return Err(Stop::Unknown),
            }
        }
    }

    pub(crate) async fn byte(&mut self) -> Result<u8, Stop> {
        while self.pos == self.piece.len() {
            self.piece = self.next_piece().await?;
            self.pos = 0;
        }
        self.pos += 1;
        Ok(self.piece[self.pos - 1])
    }

    pub(crate) async fn skip(&mut self, mut n: u64) -> Result<(), Stop> {
        loop {
            let left = (self.piece.len() - self.pos) as u64;
            if n <= left {
                // `n` fits in what is left of a piece in memory.
                self.pos += n as usize;
                return Ok(());
            }
            n -= left;
            self.piece = self.next_piece().await?;
            self.pos = 0;
        }
    }

    pub(crate) async fn field_id(&mut self) -> Result<u16, Stop> {
        if let Some(&[a, b]) = self.piece.get(self.pos..self.pos + 2) {
            self.pos += 2;
            return Ok(u16::from_le_bytes([a, b]));
        }
        Ok(u16::from_le_bytes([self.byte().await?, self.byte().await?]))
    }

    pub(crate) async fn peek_field_id(&mut self) -> Result<u16, Stop> {
        let bytes = self.contiguous(2).await?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    /// As [`crate::wire::Reader::varint`].
    pub(crate) async fn varint(&mut self) -> Result<u64, Stop> {
        // Most often whole in the piece at hand: read without waiting.
        let rest = &self.piece[self.pos..];
        if let Some(end) = rest
            .iter()
            .take(MAX_VARINT_BYTES)
            .position(|b| b & 0x80 == 0)
        {
            let bytes = &rest[..=end];
            if end == MAX_VARINT_BYTES - 1 && bytes[end] > 1 {
                return Err(Stop::Unknown);
            }
            self.pos += end + 1;
            return Ok(bytes
                .iter()
                .enumerate()
                .fold(0, |value, (i, b)| value | u64::from(b & 0x7F) << (7 * i)));
        }
        let mut value: u64 = 0;
        for i in 0..MAX_VARINT_BYTES {
            let byte = self.byte().await?;
            if i == MAX_VARINT_BYTES - 1 && byte > 1 {
                return Err(Stop::Unknown);
            }
            value |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Stop::Unknown)
    }

    /// A little-endian signed integer of `width` bytes (at most 16).
    pub(crate) async fn signed_le(&mut self, width: u64) -> Result<i128, Stop> {
        let mut bytes = [0u8; 16];
        for b in bytes.iter_mut().take(width as usize) {
            *b = self.byte().await?;
        }
        // Sign-extend from the top byte read.
        let width = width.clamp(1, 16) as usize;
        if bytes[width - 1] & 0x80 != 0 {
            bytes[width..].fill(0xFF);
        }
        Ok(i128::from_le_bytes(bytes))
    }

    /// A signed LEB128 value, as its bytes.
    pub(crate) async fn signed_varint(&mut self) -> Result<Vec<u8>, Stop> {
        let mut bytes = Vec::new();
        for _ in 0..MAX_VARINT_BYTES {
            let byte = self.byte().await?;
            bytes.push(byte);
            if byte & 0x80 == 0 {
                return Ok(bytes);
            }
        }
        Err(Stop::Unknown)
    }

    /// A string or blob, skipped. DuckDB reads a string's length as 32 bits.
    pub(crate) async fn string(&mut self) -> Result<(), Stop> {
        self.string_len().await.map(|_| ())
    }

    /// A string or blob, its bytes.
    pub(crate) async fn string_bytes(&mut self) -> Result<Vec<u8>, Stop> {
        let len = self.varint().await?;
        if len > u64::from(u32::MAX) {
            return Err(Stop::Unknown);
        }
        let len = len as usize;
        let mut bytes = Vec::with_capacity(len.min(1 << 20));
        while bytes.len() < len {
            if self.pos == self.piece.len() {
                self.piece = self.next_piece().await?;
                self.pos = 0;
            }
            let n = (len - bytes.len()).min(self.piece.len() - self.pos);
            bytes.extend_from_slice(&self.piece[self.pos..self.pos + n]);
            self.pos += n;
        }
        Ok(bytes)
    }

    /// A string or blob, skipped; its length.
    async fn string_len(&mut self) -> Result<u64, Stop> {
        let len = self.varint().await?;
        if len > u64::from(u32::MAX) {
            return Err(Stop::Unknown);
        }
        self.skip(len).await?;
        Ok(len)
    }

    /// `n` strings, skipped: those whole in the piece at hand without waiting. The longest's
    /// length.
    pub(crate) async fn strings(&mut self, mut n: u64) -> Result<u64, Stop> {
        let mut longest = 0;
        while n > 0 {
            let rest = &self.piece[self.pos..];
            let whole = rest
                .iter()
                .take(MAX_VARINT_BYTES - 1)
                .position(|b| b & 0x80 == 0)
                .and_then(|end| {
                    let len = rest[..=end]
                        .iter()
                        .enumerate()
                        .fold(0u64, |v, (i, b)| v | u64::from(b & 0x7F) << (7 * i));
                    let total = (end as u64 + 1).checked_add(len)?;
                    (total <= rest.len() as u64).then_some((total as usize, len))
                });
            let len = match whole {
                Some((total, len)) => {
                    self.pos += total;
                    len
                }
                None => self.string_len().await?,
            };
            longest = longest.max(len);
            n -= 1;
        }
        Ok(longest)
    }

    /// Whether the input ends here: `Unknown` if a byte follows.
    pub(crate) async fn end_of_input(&mut self) -> Result<(), Stop> {
        if self.pos < self.piece.len() {
            return Err(Stop::Unknown);
        }
        match self.next_piece().await {
            Ok(_) => Err(Stop::Unknown),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};

    use super::*;

    #[test]
    fn a_read_waits_for_its_bytes_across_pieces_and_fails_at_the_end() {
        let (feed, mut source) = pair(false);
        let mut read = pin!(async move {
            let id = source.field_id().await?;
            let n = source.varint().await?;
            source.skip(n).await?;
            source.end_of_input().await?;
            Ok::<_, Stop>((id, n))
        });
        let mut cx = Context::from_waker(Waker::noop());
        for piece in [&[0x05][..], &[0x00, 0x83], &[0x01, 1, 2], &[]] {
            feed.push(Bytes::copy_from_slice(piece));
            assert!(read.as_mut().poll(&mut cx).is_pending());
        }
        // 0x83 0x01 is 131: 129 bytes short.
        feed.push(Bytes::from(vec![0; 129]));
        assert!(
            read.as_mut().poll(&mut cx).is_pending(),
            "waits for the end"
        );
        feed.end();
        assert_eq!(read.as_mut().poll(&mut cx), Poll::Ready(Ok((5, 131))));

        let (feed, mut source) = pair(false);
        let mut read = pin!(async move { source.skip(10).await });
        feed.push(Bytes::from_static(&[0; 9]));
        feed.end();
        assert_eq!(
            read.as_mut().poll(&mut cx),
            Poll::Ready(Err(Stop::Truncated))
        );
    }
}
