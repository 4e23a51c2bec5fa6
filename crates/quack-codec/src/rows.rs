//! Counting the rows of a result as its answer streams past, for the audit trail.
//!
//! A PREPARE_RESPONSE (body field 4) and a FETCH_RESPONSE (body field 1) carry a list of
//! DataChunks, each with its row count in field 100. The chunks are not length-prefixed, so
//! reaching the next one means walking the vectors of this one. That needs the column types
//! (field 101) only to tell which form a field takes: field 102 is one blob for fixed-size
//! types and a list of strings for string types, 103 a list of child vectors for a STRUCT and a
//! size for an ARRAY, 104 a size for a LIST and the child vector for an ARRAY. Every length is
//! in the bytes, so nothing is decoded beyond that.
//!
//! After the chunks it reads the body to its end, and keeps the result's uuid (a PREPARE
//! answer's field 5, echoed by every FETCH of that result) so records can be joined.
//!
//! The counter copies a chunk's bytes until the chunk can be walked, and tries again only when
//! it holds twice as many bytes as at its last try, so the cost is linear in the answer. A type
//! or field it does not know ends the count: [`RowCounter::finish`] then says `None`, never a
//! wrong number.

use crate::decode::decode_header;
use crate::error::CodecError;
use crate::msg_type;
use crate::wire::{Reader, END};

/// A chunk the counter would have to hold whole past this is not counted (`None`).
const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;
/// Nesting of types and vectors past this is not counted (`None`); DuckDB's own is far less.
const MAX_DEPTH: usize = 64;

/// How field 102, 103 and 104 of a vector are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Fixed,
    Strings,
    Struct(Vec<Shape>),
    List(Box<Shape>),
    Array(Box<Shape>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The header and the body's fields before the chunk list.
    Start,
    /// This many chunks are left in the list.
    Chunks(u64),
    /// The fields after the chunks, to the end of the body.
    Tail,
    Done,
    Failed,
}

/// What a whole result answer held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRows {
    pub rows: u64,
    /// The result's uuid as encoded (a PREPARE answer's field 5), when the answer has one.
    pub uuid: Option<Vec<u8>>,
}

/// Why a step could not finish.
enum Stop {
    /// More bytes may let it finish.
    NeedMore,
    /// It never will: not a result, or a layout this counter does not know.
    Unknown,
}

impl From<CodecError> for Stop {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Truncated(_) => Stop::NeedMore,
            CodecError::Malformed { .. } => Stop::Unknown,
        }
    }
}

/// Counts the rows of one PREPARE_RESPONSE or FETCH_RESPONSE fed to it in pieces.
#[derive(Debug)]
pub struct RowCounter {
    held: Vec<u8>,
    phase: Phase,
    rows: u64,
    uuid: Option<Vec<u8>>,
    /// Bytes `held` must reach before the next try.
    next_try: usize,
}

impl Default for RowCounter {
    fn default() -> Self {
        RowCounter {
            held: Vec::new(),
            phase: Phase::Start,
            rows: 0,
            uuid: None,
            next_try: 0,
        }
    }
}

impl RowCounter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if matches!(self.phase, Phase::Done | Phase::Failed) {
            return;
        }
        self.held.extend_from_slice(bytes);
        if self.held.len() > MAX_HELD_BYTES {
            self.fail();
            return;
        }
        if self.held.len() >= self.next_try {
            self.advance();
        }
    }

    /// What the whole answer held, or `None` when it was not a whole result or not understood.
    pub fn finish(mut self) -> Option<ResultRows> {
        if !matches!(self.phase, Phase::Done | Phase::Failed) {
            self.advance();
        }
        (self.phase == Phase::Done).then_some(ResultRows {
            rows: self.rows,
            uuid: self.uuid,
        })
    }

    fn fail(&mut self) {
        self.phase = Phase::Failed;
        self.held = Vec::new();
    }

    fn advance(&mut self) {
        let mut pos = 0;
        let stop = loop {
            let mut r = Reader::new(&self.held, pos);
            let step = match self.phase {
                Phase::Start => start(&mut r).map(|chunks| {
                    self.phase = match chunks {
                        Some(0) | None => Phase::Tail,
                        Some(n) => Phase::Chunks(n),
                    }
                }),
                Phase::Chunks(left) => chunk(&mut r).map(|rows| {
                    self.rows = self.rows.saturating_add(rows);
                    self.phase = match left - 1 {
                        0 => Phase::Tail,
                        n => Phase::Chunks(n),
                    };
                }),
                Phase::Tail => tail(&mut r).map(|uuid| {
                    self.uuid = uuid;
                    self.phase = Phase::Done;
                }),
                Phase::Done | Phase::Failed => break None,
            };
            match step {
                Ok(()) => pos = r.pos,
                Err(stop) => break Some(stop),
            }
        };
        match stop {
            Some(Stop::Unknown) => self.fail(),
            None => self.held = Vec::new(),
            Some(Stop::NeedMore) => {
                self.held.drain(..pos);
                self.next_try = self.held.len().saturating_mul(2).max(1);
            }
        }
    }
}

/// Reads the header and the body up to its chunk list; the number of chunks, or `None` when
/// the result has none.
fn start(r: &mut Reader<'_>) -> Result<Option<u64>, Stop> {
    let header = decode_header(r.rest()).map_err(Stop::from)?;
    r.pos += header.len;
    match header.msg_type {
        msg_type::PREPARE_RESPONSE => {
            if r.peek_field_id()? == 1 {
                r.field_id()?;
                for _ in 0..r.varint()? {
                    logical_type(r, 0)?;
                }
            }
            if r.peek_field_id()? == 2 {
                r.field_id()?;
                for _ in 0..r.varint()? {
                    r.string()?;
                }
            }
            if r.peek_field_id()? == 3 {
                r.field_id()?;
                r.take(1)?;
            }
            chunk_list(r, 4)
        }
        msg_type::FETCH_RESPONSE => chunk_list(r, 1),
        _ => Err(Stop::Unknown),
    }
}

/// The fields after the chunk list: a PREPARE answer's uuid (5), a FETCH answer's batch
/// index (2). The uuid's bytes, if there is one.
fn tail(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, Stop> {
    let mut uuid = None;
    loop {
        match r.field_id()? {
            // A hugeint: signed upper half, unsigned lower half.
            5 => {
                let from = r.pos;
                r.signed_varint()?;
                r.varint()?;
                uuid = Some(r.consumed_since(from).to_vec());
            }
            2 => {
                r.varint()?;
            }
            END if r.rest().is_empty() => return Ok(uuid),
            _ => return Err(Stop::Unknown),
        }
    }
}

fn chunk_list(r: &mut Reader<'_>, field: u16) -> Result<Option<u64>, Stop> {
    if r.peek_field_id()? != field {
        return Ok(None);
    }
    r.field_id()?;
    Ok(Some(r.varint()?))
}

/// One element of a chunk list: a present flag, and the holder whose field 300 is the
/// DataChunk. Its row count.
fn chunk(r: &mut Reader<'_>) -> Result<u64, Stop> {
    match r.take(1)?[0] {
        0 => return Ok(0),
        1 => {}
        _ => return Err(Stop::Unknown),
    }
    let mut rows = 0;
    loop {
        match r.field_id()? {
            300 => rows = data_chunk(r)?,
            END => return Ok(rows),
            _ => return Err(Stop::Unknown),
        }
    }
}

fn data_chunk(r: &mut Reader<'_>) -> Result<u64, Stop> {
    let mut rows = 0;
    let mut shapes = Vec::new();
    loop {
        match r.field_id()? {
            100 => rows = r.varint()?,
            101 => {
                for _ in 0..r.varint()? {
                    shapes.push(logical_type(r, 0)?.ok_or(Stop::Unknown)?);
                }
            }
            102 => {
                let n = r.varint()?;
                if n != shapes.len() as u64 {
                    return Err(Stop::Unknown);
                }
                for shape in &shapes {
                    vector(r, shape, 0)?;
                }
            }
            END => return Ok(rows),
            _ => return Err(Stop::Unknown),
        }
    }
}

/// A LogicalType object; its shape, or `None` for a type id this counter does not know.
fn logical_type(r: &mut Reader<'_>, depth: usize) -> Result<Option<Shape>, Stop> {
    if depth > MAX_DEPTH {
        return Err(Stop::Unknown);
    }
    let mut id = None;
    let mut children = Vec::new();
    loop {
        match r.field_id()? {
            100 => id = Some(r.varint()?),
            101 => match r.take(1)?[0] {
                0 => {}
                1 => type_info(r, id.ok_or(Stop::Unknown)?, &mut children, depth)?,
                _ => return Err(Stop::Unknown),
            },
            END => break,
            _ => return Err(Stop::Unknown),
        }
    }
    let Some(id) = id else {
        return Err(Stop::Unknown);
    };
    let mut children = children.into_iter();
    let mut child = || children.next().flatten().ok_or(Stop::Unknown);
    Ok(Some(match id {
        // BOOLEAN .. DOUBLE, INTERVAL, the unsigned integers, TIMESTAMP_TZ, TIME_TZ, TIME_NS,
        // UHUGEINT, HUGEINT, UUID, and SQLNULL (an INTEGER) and ENUM (an unsigned integer).
        1 | 10..=23 | 27..=32 | 34 | 35 | 49 | 50 | 54 | 104 => Shape::Fixed,
        // CHAR, VARCHAR, BLOB, BIT, BIGNUM, GEOMETRY (WKB).
        24..=26 | 36 | 39 | 60 => Shape::Strings,
        // STRUCT, UNION, VARIANT (a STRUCT of its own parts).
        100 | 107 | 109 => {
            let mut fields = Vec::new();
            for c in children.by_ref() {
                fields.push(c.ok_or(Stop::Unknown)?);
            }
            Shape::Struct(fields)
        }
        // LIST, MAP.
        101 | 102 => Shape::List(Box::new(child()?)),
        108 => Shape::Array(Box::new(child()?)),
        _ => return Ok(None),
    }))
}

/// The fields of an ExtraTypeInfo that this counter can read, pushing the child types it
/// names onto `children`.
fn type_info(
    r: &mut Reader<'_>,
    id: u64,
    children: &mut Vec<Option<Shape>>,
    depth: usize,
) -> Result<(), Stop> {
    loop {
        match (r.field_id()?, id) {
            (100, _) => {
                r.varint()?;
            }
            // The alias; VARCHAR's collation.
            (101, _) | (200, 24 | 25) => {
                r.string()?;
            }
            // Modifiers and extension info: values this counter does not read.
            (102, _) => {
                if r.varint()? != 0 {
                    return Err(Stop::Unknown);
                }
            }
            (103, _) => {
                if r.take(1)?[0] != 0 {
                    return Err(Stop::Unknown);
                }
            }
            // DECIMAL's width and scale, ENUM's size, ARRAY's size.
            (200 | 201, 21) | (200, 104) | (201, 108) => {
                r.varint()?;
            }
            // ENUM's values.
            (201, 104) => {
                for _ in 0..r.varint()? {
                    r.string()?;
                }
            }
            // LIST, MAP, ARRAY: the child type.
            (200, 101 | 102 | 108) => children.push(logical_type(r, depth + 1)?),
            // STRUCT, UNION, VARIANT: (name, type) pairs, each an object of fields 0 and 1.
            (200, 100 | 107 | 109) => {
                for _ in 0..r.varint()? {
                    let mut child = None;
                    loop {
                        match r.field_id()? {
                            0 => {
                                r.string()?;
                            }
                            1 => child = logical_type(r, depth + 1)?,
                            END => break,
                            _ => return Err(Stop::Unknown),
                        }
                    }
                    children.push(child);
                }
            }
            (END, _) => return Ok(()),
            _ => return Err(Stop::Unknown),
        }
    }
}

/// One serialized Vector of `shape`, whatever its row count: every length is in the bytes.
fn vector(r: &mut Reader<'_>, shape: &Shape, depth: usize) -> Result<(), Stop> {
    if depth > MAX_DEPTH {
        return Err(Stop::Unknown);
    }
    loop {
        match (r.field_id()?, shape) {
            // The vector type of compressed serialization, which Quack does not use; only a
            // flat vector (0) is laid out as below.
            (90, _) => {
                if r.varint()? != 0 {
                    return Err(Stop::Unknown);
                }
            }
            // The geometry format.
            (99, _) => {
                r.varint()?;
            }
            (100, _) => {
                r.take(1)?;
            }
            // The validity mask; fixed-size data.
            (101, _) | (102, Shape::Fixed) => {
                r.string()?;
            }
            (102, Shape::Strings) => {
                for _ in 0..r.varint()? {
                    r.string()?;
                }
            }
            // Strings as their total length, a blob of lengths and a blob of bytes.
            (107, Shape::Strings) => {
                r.varint()?;
            }
            (108 | 109, Shape::Strings) => {
                r.string()?;
            }
            (103, Shape::Struct(fields)) => {
                if r.varint()? != fields.len() as u64 {
                    return Err(Stop::Unknown);
                }
                for field in fields {
                    vector(r, field, depth + 1)?;
                }
            }
            (103, Shape::Array(_)) | (104, Shape::List(_)) => {
                r.varint()?;
            }
            (105, Shape::List(_)) => {
                for _ in 0..r.varint()? {
                    loop {
                        match r.field_id()? {
                            100 | 101 => {
                                r.varint()?;
                            }
                            END => break,
                            _ => return Err(Stop::Unknown),
                        }
                    }
                }
            }
            (106, Shape::List(child)) | (104, Shape::Array(child)) => vector(r, child, depth + 1)?,
            (END, _) => return Ok(()),
            _ => return Err(Stop::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::fixture;

    fn count_in_pieces(bytes: &[u8], piece: usize) -> Option<ResultRows> {
        let mut c = RowCounter::new();
        for p in bytes.chunks(piece.max(1)) {
            c.feed(p);
        }
        c.finish()
    }

    /// Answers captured from a DuckDB 1.5.5 Quack server, with the rows each holds. The SQL
    /// of the first is beside it; the others are `SELECT range::INTEGER FROM range(30000)`
    /// (12 chunks in the PREPARE answer, the rest in one FETCH), `SELECT 'POINT(1 2)'::GEOMETRY`,
    /// `SELECT 12345678901234567890123456789::BIGNUM, 42::VARIANT` and `SELECT 1 WHERE false`.
    const CAPTURED: [(&str, u64); 7] = [
        ("result_types_300_rows_prepare.bin", 300),
        ("result_30000_ints_prepare.bin", 12 * 2048),
        ("result_30000_ints_fetch.bin", 30000 - 12 * 2048),
        ("fetch_response_last_empty.bin", 0),
        ("result_geometry_prepare.bin", 1),
        ("result_bignum_variant_prepare.bin", 1),
        ("result_empty_prepare.bin", 0),
    ];

    #[test]
    fn every_captured_answer_is_counted_however_it_is_cut() {
        for (name, rows) in CAPTURED {
            let bytes = fixture(name);
            for piece in [1, 7, 1000, 16384, usize::MAX] {
                let counted = count_in_pieces(&bytes, piece).map(|c| c.rows);
                assert_eq!(counted, Some(rows), "{name} in pieces of {piece}");
            }
        }
        let bytes = fixture("prepare_response_needs_fetch_12chunks.bin");
        assert_eq!(count_in_pieces(&bytes, 4096).unwrap().rows, 12 * 2048);
        // The uuid is what a FETCH of this result echoes.
        let bytes = fixture("prepare_response_select42.bin");
        let counted = count_in_pieces(&bytes, 4096).unwrap();
        assert_eq!(counted.rows, 1);
        let fetch = fixture("fetch_request.bin");
        let header = crate::decode_header(&fetch).unwrap();
        assert_eq!(counted.uuid.as_deref().map(<[u8]>::len), Some(20));
        assert_eq!(
            crate::fetch_result(&fetch, &header).map(<[u8]>::len),
            Some(20)
        );
    }

    #[test]
    fn what_is_not_a_whole_result_is_not_counted() {
        for name in ["error_invalid_connection_id.bin", "success_response.bin"] {
            assert_eq!(count_in_pieces(&fixture(name), 5), None, "{name}");
        }
        let bytes = fixture("result_types_300_rows_prepare.bin");
        for cut in [3, 40, bytes.len() / 2, bytes.len() - 3] {
            assert_eq!(count_in_pieces(&bytes[..cut], 100), None, "cut at {cut}");
        }
        // A type id this counter does not know, in the last chunk's types: the count stops
        // rather than guess.
        let mut unknown = fixture("result_30000_ints_prepare.bin");
        let at = unknown
            .windows(5)
            .rposition(|w| w == [0x64, 0x00, 0x0d, 0xff, 0xff])
            .unwrap();
        unknown[at + 2] = 0x7f;
        assert_eq!(count_in_pieces(&unknown, 100), None);
    }

    #[test]
    fn a_chunk_is_walked_a_bounded_number_of_times() {
        // Fed a byte at a time, a try happens only when the held bytes have doubled.
        let bytes = fixture("result_types_300_rows_prepare.bin");
        let mut c = RowCounter::new();
        let mut tries = 0;
        for b in &bytes {
            let before = c.next_try;
            c.feed(std::slice::from_ref(b));
            tries += usize::from(c.next_try != before);
        }
        assert!(tries < 40, "{tries} tries for {} bytes", bytes.len());
        assert_eq!(c.finish().map(|c| c.rows), Some(300));
    }
}
