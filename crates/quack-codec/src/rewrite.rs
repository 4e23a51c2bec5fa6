//! An APPEND on its way to a worker: checked as it streams ([`crate::RowCounter`]), each
//! compressed vector its client sent replaced by the flat one DuckDB writes for the same rows
//! ([`crate::flatten`]), and everything else passed on as it came. What it passes on is only
//! what the walk has read and will not replace, and never the client's last piece before the
//! message is known whole, so a worker never has the end of a message cut short or not in
//! DuckDB's layout. It holds the pieces not yet passed on: a compressed vector's bytes until
//! its end, and the last piece.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::error::CodecError;
use crate::rows::RowCounter;
use crate::stream::Edit;

pub struct FlatAppend {
    walk: RowCounter,
    /// The input not yet passed on or dropped, from `from`.
    input: VecDeque<Bytes>,
    from: u64,
    fed: u64,
}

impl Default for FlatAppend {
    fn default() -> Self {
        FlatAppend {
            walk: RowCounter::walking(true),
            input: VecDeque::new(),
            from: 0,
            fed: 0,
        }
    }
}

impl FlatAppend {
    pub fn new() -> Self {
        Self::default()
    }

    /// The client's next piece; what may go on to the worker now.
    ///
    /// # Errors
    /// `Malformed` as soon as the message is known not to be an APPEND in DuckDB's layout.
    pub fn push(&mut self, piece: Bytes) -> Result<Vec<Bytes>, CodecError> {
        if piece.is_empty() {
            return Ok(Vec::new());
        }
        self.fed += piece.len() as u64;
        let last = piece.len() as u64;
        self.input.push_back(piece.clone());
        self.walk.feed_bytes(piece);
        if self.walk.has_failed() {
            return self.walk.end().map(|_| Vec::new());
        }
        let limit = self.walk.feed_side().settled().min(self.fed - last);
        Ok(self.pass(limit))
    }

    /// The end of the client's message: the rest of it, once it is whole, and its rows.
    ///
    /// # Errors
    /// As [`RowCounter::finish_checked`]; a message that is not an APPEND is `Malformed`.
    pub fn finish(mut self) -> Result<(Vec<Bytes>, u64), CodecError> {
        let whole = self.walk.end()?;
        let rest = self.pass(self.fed);
        Ok((rest, whole.rows))
    }

    /// The input up to `limit`, with the replacements that end by then.
    fn pass(&mut self, limit: u64) -> Vec<Bytes> {
        let mut out = Vec::new();
        loop {
            match self.walk.feed_side().next_edit(limit) {
                Some(Ok(Edit { start, end, with })) => {
                    self.take(start, Some(&mut out));
                    out.push(with);
                    self.take(end, None);
                }
                Some(Err(start)) => {
                    self.take(start, Some(&mut out));
                    return out;
                }
                None => {
                    self.take(limit, Some(&mut out));
                    return out;
                }
            }
        }
    }

    /// The input up to `to`, passed on into `out` or dropped.
    fn take(&mut self, to: u64, mut out: Option<&mut Vec<Bytes>>) {
        while self.from < to {
            let Some(front) = self.input.front_mut() else {
                return;
            };
            let n = (to - self.from).min(front.len() as u64) as usize;
            let piece = front.split_to(n);
            if front.is_empty() {
                self.input.pop_front();
            }
            self.from += n as u64;
            if let Some(out) = out.as_deref_mut() {
                out.push(piece);
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
    let mut out = append.push(message)?;
    out.extend(append.finish()?.0);
    Ok(match out.len() {
        1 => out.pop().unwrap_or_default(),
        _ => out.concat().into(),
    })
}
