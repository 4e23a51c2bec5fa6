//! An APPEND on its way to a worker: checked as it streams ([`crate::RowCounter`]), each
//! compressed vector its client sent replaced by the flat one DuckDB writes for the same rows
//! ([`crate::flatten`]), and everything else passed on as it came. What it passes on is only
//! what the walk has read and will not replace, and never the client's last piece before the
//! message is known whole, so a worker never has the end of a message cut short or not in
//! DuckDB's layout. It holds the pieces not yet passed on (a compressed vector's bytes until
//! its end, and the last piece), and makes a flat form's rows only as they are taken, so it
//! is pulled ([`FlatAppend::next_out`]) until it has nothing, and only then fed again.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::error::CodecError;
use crate::flatten::Flattened;
use crate::rows::RowCounter;
use crate::stream::Edit;

pub struct FlatAppend {
    walk: RowCounter,
    /// The input not yet passed on or dropped, from `from`.
    input: VecDeque<Bytes>,
    from: u64,
    fed: u64,
    /// How far the input may go on.
    limit: u64,
    /// The next replacement, taken from the walk, and the one being passed on.
    next_edit: Option<Edit>,
    replacing: Option<Flattened>,
}

impl Default for FlatAppend {
    fn default() -> Self {
        FlatAppend {
            walk: RowCounter::walking(true),
            input: VecDeque::new(),
            from: 0,
            fed: 0,
            limit: 0,
            next_edit: None,
            replacing: None,
        }
    }
}

impl FlatAppend {
    pub fn new() -> Self {
        Self::default()
    }

    /// The client's next piece.
    ///
    /// # Errors
    /// `Malformed` as soon as the message is known not to be an APPEND in DuckDB's layout.
    pub fn push(&mut self, piece: Bytes) -> Result<(), CodecError> {
        if piece.is_empty() {
            return Ok(());
        }
        self.fed += piece.len() as u64;
        let last = piece.len() as u64;
        self.input.push_back(piece.clone());
        self.walk.feed_bytes(piece);
        if self.walk.has_failed() {
            return self.walk.end().map(|_| ());
        }
        self.limit = self.walk.feed_side().settled().min(self.fed - last);
        Ok(())
    }

    /// The end of the client's message: its rows, once it is whole. What is left of it to pass
    /// on is then taken with [`FlatAppend::next_out`].
    ///
    /// # Errors
    /// As [`RowCounter::finish_checked`]; a message that is not an APPEND is `Malformed`.
    pub fn finish(&mut self) -> Result<u64, CodecError> {
        let whole = self.walk.end()?;
        self.limit = self.fed;
        Ok(whole.rows)
    }

    /// Memory the flat forms of its compressed vectors take beyond the message, at most: what
    /// holding it walked costs on top of its bytes.
    pub fn held_bytes(&self) -> u64 {
        self.walk.feed_side().rewrites_heap()
    }

    /// The next bytes that may go on to the worker, `None` until more is pushed or the end.
    ///
    /// # Errors
    /// As [`Flattened::next_piece`].
    pub fn next_out(&mut self) -> Result<Option<Bytes>, CodecError> {
        loop {
            if let Some(replacing) = &mut self.replacing {
                if let Some(piece) = replacing.next_piece()? {
                    return Ok(Some(piece));
                }
                self.replacing = None;
            }
            let mut waiting = None;
            if self.next_edit.is_none() {
                match self.walk.feed_side().next_edit(self.limit) {
                    Some(Ok(edit)) => self.next_edit = Some(edit),
                    Some(Err(start)) => waiting = Some(start),
                    None => {}
                }
            }
            let to = self
                .next_edit
                .as_ref()
                .map(|e| e.start)
                .or(waiting)
                .unwrap_or(self.limit);
            if self.from < to {
                return Ok(self.take(to));
            }
            let Some(edit) = self.next_edit.take() else {
                return Ok(None);
            };
            self.drop_to(edit.end);
            self.replacing = Some(edit.with);
        }
    }

    /// The input from `from` up to `to`, as much as one piece holds.
    fn take(&mut self, to: u64) -> Option<Bytes> {
        let front = self.input.front_mut()?;
        let n = (to - self.from).min(front.len() as u64) as usize;
        let piece = front.split_to(n);
        if front.is_empty() {
            self.input.pop_front();
        }
        self.from += n as u64;
        Some(piece)
    }

    fn drop_to(&mut self, to: u64) {
        while self.from < to {
            if self.take(to).is_none() {
                return;
            }
        }
    }
}

/// A whole APPEND_REQUEST checked as [`crate::check_append`] does, with its compressed vectors
/// written flat.
///
/// # Errors
/// As [`crate::check_append`].
pub fn flatten_append(message: Bytes) -> Result<Bytes, CodecError> {
    let mut append = FlatAppend::new();
    append.push(message)?;
    append.finish()?;
    let mut out = BytesMut::new();
    while let Some(piece) = append.next_out()? {
        out.extend_from_slice(&piece);
    }
    Ok(out.freeze())
}
