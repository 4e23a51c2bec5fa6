//! Walking the DataChunks of a message as it streams past: counting the rows of a result for
//! the audit trail, and checking that an APPEND is whole before its last byte reaches a worker
//! (DuckDB 1.5.5 reads past the end of a message cut short).
//!
//! A PREPARE_RESPONSE (body field 4) and a FETCH_RESPONSE (body field 1) carry a list of
//! DataChunks, and an APPEND_REQUEST one (body field 3, after the schema and the table in
//! fields 1 and 2), each with its row count in field 100. The chunks are not length-prefixed,
//! so reaching the end of one means walking its vectors. That needs the column types (field
//! 101) only to tell which form a field takes: field 102 is one blob for fixed-size types and
//! a list of strings for string types, 103 a list of child vectors for a STRUCT and a size for
//! an ARRAY, 104 a size for a LIST and the child vector for an ARRAY. Every length is in the
//! bytes, so nothing is decoded beyond that.
//!
//! After the chunks it reads the body to its end, and keeps the result's uuid (a PREPARE
//! answer's field 5, echoed by every FETCH of that result) so records can be joined.
//!
//! The walk is an async fn over the pieces as they arrive ([`crate::stream`]): it holds only
//! the piece it is reading, so a message of any size is walked in constant memory. A type or
//! field it does not know ends the walk: [`RowCounter::finish`] then says `None`, never a
//! wrong number, as it does for a message cut short.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::error::CodecError;
use crate::flatten;
use crate::msg_type;
use crate::shape::{Shape, Values};
use crate::stream::{self, Feed, Source, Stop};
use crate::wire::{sleb128, END};
use crate::wkb;

/// Nesting of types and vectors past this is not walked (`None`); DuckDB's own is far less.
const MAX_DEPTH: usize = 64;

/// What a whole message held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRows {
    pub rows: u64,
    /// The result's uuid as encoded (a PREPARE answer's field 5), when the answer has one.
    pub uuid: Option<Vec<u8>>,
}

type Walk = Pin<Box<dyn Future<Output = Result<ResultRows, Stop>> + Send + Sync>>;

/// Walks one PREPARE_RESPONSE, FETCH_RESPONSE or APPEND_REQUEST fed to it in pieces.
pub struct RowCounter {
    feed: Feed,
    walk: Option<Walk>,
    outcome: Option<Result<ResultRows, Stop>>,
}

impl Default for RowCounter {
    fn default() -> Self {
        Self::walking(false)
    }
}

impl fmt::Debug for RowCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowCounter")
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl RowCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A walk that also writes each compressed vector of an APPEND flat
    /// ([`crate::flatten`]), for [`crate::FlatAppend`] to splice in.
    pub(crate) fn walking(rewriting: bool) -> Self {
        let (feed, source) = stream::pair(rewriting);
        RowCounter {
            feed,
            walk: Some(Box::pin(message(source))),
            outcome: None,
        }
    }

    pub(crate) fn feed_side(&self) -> &Feed {
        &self.feed
    }

    /// The next piece, copied.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.walk.is_some() && !bytes.is_empty() {
            self.feed_bytes(Bytes::copy_from_slice(bytes));
        }
    }

    /// The next piece, shared rather than copied.
    pub fn feed_bytes(&mut self, bytes: Bytes) {
        if self.walk.is_some() {
            self.feed.push(bytes);
            self.poll();
        }
    }

    fn poll(&mut self) {
        let Some(walk) = &mut self.walk else {
            return;
        };
        if let Poll::Ready(outcome) = walk.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            self.outcome = Some(outcome);
            self.walk = None;
            self.feed.clear();
        }
    }

    /// Whether the walk has already met what it does not know: no more bytes can help.
    pub fn has_failed(&self) -> bool {
        matches!(self.outcome, Some(Err(Stop::Unknown)))
    }

    /// What the whole message held, or `None` when it was not whole, not one of the three
    /// kinds, or not understood.
    pub fn finish(self) -> Option<ResultRows> {
        self.finish_checked().ok()
    }

    /// What the whole message held, or why not: `Truncated` when it ended early,
    /// `Malformed` when it is not in a layout DuckDB 1.5.5 writes.
    ///
    /// # Errors
    /// As said.
    pub fn finish_checked(mut self) -> Result<ResultRows, CodecError> {
        self.end()
    }

    /// As [`RowCounter::finish_checked`], keeping what the walk left in the feed.
    pub(crate) fn end(&mut self) -> Result<ResultRows, CodecError> {
        self.feed.end();
        self.poll();
        match self.outcome.clone() {
            Some(Ok(whole)) => Ok(whole),
            Some(Err(Stop::Truncated)) | None => Err(CodecError::Truncated(0)),
            Some(Err(Stop::Unknown)) => Err(CodecError::Malformed {
                at: 0,
                what: "not a result or an APPEND in the layout DuckDB 1.5.5 writes",
            }),
        }
    }
}

/// Checks that `message` is one whole APPEND_REQUEST in the layout DuckDB 1.5.5 writes; the
/// rows of its chunk.
///
/// # Errors
/// As [`RowCounter::finish_checked`], and `Malformed` for a message of another type.
pub fn check_append(message: impl Into<Bytes>) -> Result<u64, CodecError> {
    let message = message.into();
    if crate::decode_header(&message)?.msg_type != msg_type::APPEND_REQUEST {
        return Err(CodecError::Malformed {
            at: 0,
            what: "not an APPEND",
        });
    }
    // The walk that rewrites, so that what passes here is what the rewrite takes.
    let mut counter = RowCounter::walking(true);
    counter.feed_bytes(message);
    Ok(counter.finish_checked()?.rows)
}

/// One whole message: its header, the body's fields up to the chunks, the chunks, and the
/// fields after them to the end of the input.
async fn message(mut src: Source) -> Result<ResultRows, Stop> {
    let header = src.header().await?;
    if src.rewriting() && header.msg_type != msg_type::APPEND_REQUEST {
        return Err(Stop::Unknown);
    }
    let chunks = match header.msg_type {
        msg_type::PREPARE_RESPONSE => {
            if src.peek_field_id().await? == 1 {
                src.field_id().await?;
                let mut budget = Budget::default();
                for _ in 0..src.varint().await? {
                    logical_type(&mut src, 0, &mut budget).await?;
                }
            }
            if src.peek_field_id().await? == 2 {
                src.field_id().await?;
                for _ in 0..src.varint().await? {
                    src.string().await?;
                }
            }
            if src.peek_field_id().await? == 3 {
                src.field_id().await?;
                src.byte().await?;
            }
            chunk_list(&mut src, 4).await?
        }
        msg_type::FETCH_RESPONSE => chunk_list(&mut src, 1).await?,
        msg_type::APPEND_REQUEST => {
            for field in [1, 2] {
                if src.peek_field_id().await? == field {
                    src.field_id().await?;
                    src.string().await?;
                }
            }
            // One chunk, not a list.
            if src.peek_field_id().await? == 3 {
                src.field_id().await?;
                1
            } else {
                0
            }
        }
        _ => return Err(Stop::Unknown),
    };
    // What a worker deserializes must be what its DuckDB reads safely; an answer only counts.
    let strict = header.msg_type == msg_type::APPEND_REQUEST;
    let mut rows = 0u64;
    for _ in 0..chunks {
        rows = rows.saturating_add(chunk(&mut src, strict).await?);
    }
    let uuid = tail(&mut src, header.msg_type).await?;
    Ok(ResultRows { rows, uuid })
}

/// The fields after the chunks: a PREPARE answer's uuid (5), a FETCH answer's batch index
/// (2), an APPEND's none. The uuid's bytes, if there is one.
async fn tail(src: &mut Source, msg_type: u64) -> Result<Option<Vec<u8>>, Stop> {
    let mut uuid = None;
    loop {
        match (src.field_id().await?, msg_type) {
            // A hugeint: signed upper half, unsigned lower half.
            (5, msg_type::PREPARE_RESPONSE) => {
                let mut bytes = src.signed_varint().await?;
                bytes.extend(src.signed_varint().await?);
                uuid = Some(bytes);
            }
            (2, msg_type::FETCH_RESPONSE) => {
                src.varint().await?;
            }
            (END, _) => {
                src.end_of_input().await?;
                return Ok(uuid);
            }
            _ => return Err(Stop::Unknown),
        }
    }
}

/// The number of chunks in the list of `field`, or 0 when the body has none.
async fn chunk_list(src: &mut Source, field: u16) -> Result<u64, Stop> {
    if src.peek_field_id().await? != field {
        return Ok(0);
    }
    src.field_id().await?;
    src.varint().await
}

/// One chunk: a present flag, and the holder whose field 300 is the DataChunk. Its row count.
async fn chunk(src: &mut Source, strict: bool) -> Result<u64, Stop> {
    match src.byte().await? {
        0 => return Ok(0),
        1 => {}
        _ => return Err(Stop::Unknown),
    }
    let mut rows = 0;
    loop {
        match src.field_id().await? {
            300 => rows = data_chunk(src, strict).await?,
            END => return Ok(rows),
            _ => return Err(Stop::Unknown),
        }
    }
}

async fn data_chunk(src: &mut Source, strict: bool) -> Result<u64, Stop> {
    let mut rows = 0;
    let mut shapes = Vec::new();
    let mut budget = Budget {
        strict,
        from: src.position(),
        ..Budget::default()
    };
    loop {
        match src.field_id().await? {
            // A `sel_t` in DuckDB.
            100 => {
                rows = src.varint().await?;
                if rows > u64::from(u32::MAX) {
                    return Err(Stop::Unknown);
                }
            }
            101 => {
                for _ in 0..src.varint().await? {
                    let shape = logical_type(src, 0, &mut budget).await?;
                    shapes.push(shape.ok_or(Stop::Unknown)?);
                }
            }
            102 => {
                let n = src.varint().await?;
                if n != shapes.len() as u64 {
                    return Err(Stop::Unknown);
                }
                // DuckDB makes every column hold at least a standard vector before it reads.
                let capacity = rows.max(STANDARD_VECTOR_SIZE);
                for shape in &shapes {
                    budget.allocate(shape.bytes(capacity));
                }
                for shape in &shapes {
                    vector(src, shape, rows, Within::COLUMN, 0, &mut budget).await?;
                }
            }
            END => {
                budget.bounded(src.position())?;
                return Ok(rows);
            }
            _ => return Err(Stop::Unknown),
        }
    }
}

/// What a vector's place allows, from the vectors around it.
#[derive(Debug, Clone, Copy)]
struct Within {
    /// It may be compressed (field 90). DuckDB writes a constant's value, a dictionary's values
    /// and an ARRAY's child flat, children and all, and reads them with no limit on nesting:
    /// a dictionary of dictionaries recursed a worker off its stack in a review, a constant
    /// STRUCT marks its children constant whatever they were read as (a dictionary read as a
    /// list crashed another), and a compressed ARRAY child of a NULL row had DuckDB clear bits
    /// past the child's mask (a third).
    packed: bool,
    /// It may carry no validity mask: it is, or is within, a constant that stands for more
    /// than [`STANDARD_VECTOR_SIZE`] rows. DuckDB sizes a constant's mask for that many and
    /// flattens it to its count without resizing: a twenty-fifth review's NULL constant wrote
    /// past the mask, and a valid one with a mask read a worker's heap into a table's NULLs.
    maskless: bool,
    /// No row of it may be NULL: it is, or is within, a MAP's key.
    keys: bool,
}

impl Within {
    /// A chunk's column.
    const COLUMN: Within = Within {
        packed: true,
        maskless: false,
        keys: false,
    };

    /// A child's, of a vector that is flat (`flat`) or compressed.
    fn child(self, flat: bool) -> Within {
        Within {
            packed: self.packed && flat,
            ..self
        }
    }
}

/// DuckDB's `STANDARD_VECTOR_SIZE`.
const STANDARD_VECTOR_SIZE: u64 = 2048;
/// What a chunk may make DuckDB allocate whatever its size: 2,048 rows of a thousand 16-byte
/// columns, and more.
const ALLOCATION_FLOOR: u64 = 64 << 20;
/// Types one chunk may name, nested ones counted (a STRUCT of 25 million fields cost the
/// gateway 611 MB in a review).
const MAX_TYPES: u64 = 100_000;

/// What a chunk's walk has counted against its bounds, and how strict it is.
#[derive(Default)]
struct Budget {
    /// A chunk a worker will deserialize (an APPEND's), not an answer only counted: its types
    /// are only those whose values DuckDB reads with no index or offset it trusts, so not
    /// ENUM (its values index its dictionary unchecked: a review read a worker's memory into
    /// a table so), UNION, VARIANT or BIGNUM.
    strict: bool,
    types: u64,
    /// Bytes DuckDB allocates as it reads the chunk: each column's capacity, each list's
    /// reservation.
    allocated: u64,
    /// Where the chunk starts in the message.
    from: u64,
}

impl Budget {
    /// Whether what DuckDB allocates to read the chunk up to `position` is bounded by what it
    /// carries there: a sequence or a constant of a billion rows is a few bytes.
    fn bounded(&self, position: u64) -> Result<(), Stop> {
        let carried = position - self.from;
        if self.allocated > ALLOCATION_FLOOR.saturating_add(carried.saturating_mul(8)) {
            return Err(Stop::Unknown);
        }
        Ok(())
    }

    fn allocate(&mut self, bytes: u64) {
        self.allocated = self.allocated.saturating_add(bytes);
    }

    fn another_type(&mut self) -> Result<(), Stop> {
        self.types += 1;
        if self.types > MAX_TYPES {
            return Err(Stop::Unknown);
        }
        Ok(())
    }
}

/// A walk that may recurse, boxed so that its future has a size.
type Step<'a, T> = Pin<Box<dyn Future<Output = Result<T, Stop>> + Send + Sync + 'a>>;

/// What an ExtraTypeInfo says that the layout depends on.
#[derive(Default)]
struct TypeInfo {
    /// Its kind (DuckDB's `ExtraTypeInfoType`), which must be the type's own.
    kind: Option<u64>,
    children: Vec<Option<Shape>>,
    /// DECIMAL's width and scale.
    width: Option<u64>,
    scale: Option<u64>,
    /// ENUM's number of values; ARRAY's size.
    size: Option<u64>,
}

/// A LogicalType object; its shape, or `None` for a type id this walker does not know.
fn logical_type<'a>(
    src: &'a mut Source,
    depth: usize,
    budget: &'a mut Budget,
) -> Step<'a, Option<Shape>> {
    Box::pin(async move {
        if depth > MAX_DEPTH {
            return Err(Stop::Unknown);
        }
        budget.another_type()?;
        let mut id = None;
        let mut info = TypeInfo::default();
        loop {
            match src.field_id().await? {
                100 => id = Some(src.varint().await?),
                101 => match src.byte().await? {
                    0 => {}
                    1 => {
                        let id = id.ok_or(Stop::Unknown)?;
                        type_info(src, id, &mut info, depth, budget).await?;
                    }
                    _ => return Err(Stop::Unknown),
                },
                END => break,
                _ => return Err(Stop::Unknown),
            }
        }
        let Some(id) = id else {
            return Err(Stop::Unknown);
        };
        // DuckDB reads the info as the kind it names, whatever the type: a STRUCT with a
        // GENERIC info crashed a worker in a review.
        let kind_fits = match (info.kind, id) {
            (None, 21 | 100..=102 | 104 | 107..=109) => false,
            (None, _) => true,
            (Some(kind), _) => {
                kind == match id {
                    21 => 2,
                    24 | 25 if kind == 3 => 3,
                    101 | 102 => 4,
                    100 | 107 | 109 => 5,
                    104 => 6,
                    108 => 9,
                    60 if kind == 13 => 13,
                    _ => 1,
                }
            }
        };
        // TIME_TZ, TIME_NS, BIT, BIGNUM, ENUM, UNION, VARIANT: values DuckDB trusts to keep
        // rules this walk does not check (a TIME_NS of -1 ended a worker's DuckDB; a BIT's
        // padding byte sized a buffer written past).
        if !kind_fits
            || (budget.strict && matches!(id, 34..=36 | 39 | 104 | 107 | 109))
            || info.width.is_some_and(|w| w > 38)
            || info.scale.is_some_and(|s| s > info.width.unwrap_or(0))
            || info.size.is_some_and(|n| n > u64::from(u32::MAX))
        {
            return Err(Stop::Unknown);
        }
        let mut children = info.children.into_iter();
        let mut child = || children.next().flatten().ok_or(Stop::Unknown);
        Ok(Some(match id {
            // TINYINT, SMALLINT, INTEGER, BIGINT.
            11 => Shape::Fixed(1, Values::Signed),
            12 => Shape::Fixed(2, Values::Signed),
            13 => Shape::Fixed(4, Values::Signed),
            14 => Shape::Fixed(8, Values::Signed),
            // UTINYINT, USMALLINT, UINTEGER, UBIGINT; UHUGEINT, HUGEINT.
            28 => Shape::Fixed(1, Values::Any),
            29 => Shape::Fixed(2, Values::Any),
            30 => Shape::Fixed(4, Values::Any),
            31 => Shape::Fixed(8, Values::Any),
            49 | 50 => Shape::Fixed(16, Values::Any),
            10 => Shape::Fixed(1, Values::Boolean),
            // SQLNULL (an INTEGER); DATE, FLOAT.
            1 => Shape::Fixed(4, Values::Null),
            15 | 22 => Shape::Fixed(4, Values::Any),
            16 => Shape::Fixed(8, Values::TimeOfDay),
            // The TIMESTAMPs, DOUBLE, TIMESTAMP_TZ, TIME_TZ, TIME_NS.
            17..=20 | 23 | 32 | 34 | 35 => Shape::Fixed(8, Values::Any),
            // INTERVAL, UUID.
            27 | 54 => Shape::Fixed(16, Values::Any),
            21 => {
                let width = info.width.ok_or(Stop::Unknown)?;
                let bytes = match width {
                    0..=4 => 2,
                    5..=9 => 4,
                    10..=18 => 8,
                    _ => 16,
                };
                Shape::Fixed(bytes, Values::Decimal(width))
            }
            104 => Shape::Fixed(
                match info.size.ok_or(Stop::Unknown)? {
                    0..=0xFF => 1,
                    0x100..=0xFFFF => 2,
                    _ => 4,
                },
                Values::Any,
            ),
            // CHAR, VARCHAR, BLOB, BIT, BIGNUM, GEOMETRY (WKB).
            24..=26 | 36 | 39 => Shape::Strings,
            60 => Shape::Wkb,
            // STRUCT, UNION, VARIANT (a STRUCT of its own parts).
            100 | 107 | 109 => {
                let mut fields = Vec::new();
                for c in children.by_ref() {
                    fields.push(c.ok_or(Stop::Unknown)?);
                }
                if fields.is_empty() {
                    return Err(Stop::Unknown);
                }
                Shape::Struct(fields)
            }
            // LIST, MAP.
            101 => Shape::List(Box::new(child()?)),
            // A MAP is a LIST of STRUCT(key, value): DuckDB's casts of a MAP read its second
            // field unchecked, and one of another child (a twenty-third review's) was an
            // internal error that ended a worker's database.
            102 => match child()? {
                Shape::Struct(mut fields) if fields.len() == 2 && !fields[0].names_null() => {
                    let key = fields.remove(0);
                    fields.insert(0, Shape::Key(Box::new(key)));
                    Shape::List(Box::new(Shape::Struct(fields)))
                }
                _ => return Err(Stop::Unknown),
            },
            108 => Shape::Array(Box::new(child()?), info.size.ok_or(Stop::Unknown)?),
            _ => return Ok(None),
        }))
    })
}

/// The fields of an ExtraTypeInfo that this walker can read, the child types it names pushed
/// onto `info.children`.
fn type_info<'a>(
    src: &'a mut Source,
    id: u64,
    info: &'a mut TypeInfo,
    depth: usize,
    budget: &'a mut Budget,
) -> Step<'a, ()> {
    Box::pin(async move {
        loop {
            match (src.field_id().await?, id) {
                (100, _) => info.kind = Some(src.varint().await?),
                // The alias; VARCHAR's collation.
                (101, _) | (200, 24 | 25) => src.string().await?,
                // Modifiers and extension info: values this walker does not read.
                (102, _) => {
                    if src.varint().await? != 0 {
                        return Err(Stop::Unknown);
                    }
                }
                (103, _) => {
                    if src.byte().await? != 0 {
                        return Err(Stop::Unknown);
                    }
                }
                (200, 21) => info.width = Some(src.varint().await?),
                (201, 21) => info.scale = Some(src.varint().await?),
                (200, 104) | (201, 108) => info.size = Some(src.varint().await?),
                // ENUM's values: DuckDB writes as many as are listed into a vector of the size.
                (201, 104) => {
                    let n = src.varint().await?;
                    if Some(n) != info.size {
                        return Err(Stop::Unknown);
                    }
                    budget.allocate(n.saturating_mul(16));
                    src.strings(n).await?;
                }
                // LIST, MAP, ARRAY: the child type.
                (200, 101 | 102 | 108) => {
                    let child = logical_type(src, depth + 1, budget).await?;
                    info.children.push(child);
                }
                // STRUCT, UNION, VARIANT: (name, type) pairs, each an object of fields 0 and 1.
                (200, 100 | 107 | 109) => {
                    for _ in 0..src.varint().await? {
                        let mut child = None;
                        loop {
                            match src.field_id().await? {
                                0 => src.string().await?,
                                1 => child = logical_type(src, depth + 1, budget).await?,
                                END => break,
                                _ => return Err(Stop::Unknown),
                            }
                        }
                        budget.another_type()?;
                        info.children.push(child);
                    }
                }
                (END, _) => return Ok(()),
                _ => return Err(Stop::Unknown),
            }
        }
    })
}

/// Whether a vector whose fields 90 to 109 are the bits of `seen` has every field DuckDB reads
/// for its type: a sequence's start and step; a dictionary's selection and size; and then,
/// unless it is a sequence, the mask flag, the mask exactly when the flag says so, and its
/// shape's data or children.
fn has_every_field(seen: u32, masked: bool, vector_type: u64, shape: &Shape) -> bool {
    let has = |fields: &[u32]| fields.iter().all(|f| seen & (1 << (f - 90)) != 0);
    match vector_type {
        4 => return has(&[91, 92]),
        3 if !has(&[91, 92]) => return false,
        _ => {}
    }
    let data: &[u32] = match shape {
        Shape::Fixed(..) | Shape::Strings | Shape::Wkb => &[100, 102],
        Shape::Struct(_) => &[100, 103],
        Shape::List(_) => &[100, 104, 105, 106],
        Shape::Array(..) => &[100, 103, 104],
        Shape::Key(_) => return false,
    };
    has(data) && has(&[101]) == masked
}

/// Whether row `row` is valid in a validity mask read whole (none: every row is).
fn valid(mask: &Option<Vec<u8>>, row: u64) -> bool {
    mask.as_ref().is_none_or(|mask| {
        mask.get((row / 8) as usize)
            .is_some_and(|byte| byte >> (row % 8) & 1 == 1)
    })
}

/// One serialized Vector of `shape` holding `count` rows, as DuckDB 1.5.5's
/// `Vector::Deserialize` reads it. Every count in the bytes must agree with `count`: DuckDB
/// writes as many strings and list entries as the bytes list into a vector sized by `count`,
/// and uses list offsets and dictionary indexes unchecked, so a disagreement writes or reads
/// past its buffers (a review leaked a worker's catalog session id that way).
///
/// A client's APPEND may compress a vector: field 90 names its type, and a CONSTANT (2) is
/// then laid out as a flat vector of one row, a DICTIONARY (3) as its selection (91: a `u32`
/// index per row) and size (92), then its flat dictionary of that size, and a SEQUENCE (4)
/// of an integer type as its start and increment (91 and 92), and nothing else.
///
/// What a vector's place among the vectors around it allows ([`Within`]) is checked too.
fn vector<'a>(
    src: &'a mut Source,
    shape: &'a Shape,
    count: u64,
    within: Within,
    depth: usize,
    budget: &'a mut Budget,
) -> Step<'a, ()> {
    Box::pin(async move {
        if depth > MAX_DEPTH {
            return Err(Stop::Unknown);
        }
        if let Shape::Key(key) = shape {
            let within = Within {
                keys: true,
                ..within
            };
            return vector(src, key, count, within, depth, budget).await;
        }
        let from = src.position();
        // A client's compressed vector goes on written flat (`crate::flatten`): no layout a
        // client chose reaches a worker's `Vector::Deserialize`, only the one DuckDB writes.
        let rewritten = within.packed
            && src.rewriting()
            && match src.peek(3).await? {
                // DuckDB writes a vector type in one byte; one written in more (a
                // twenty-eighth review's `82 00` for a constant) would pass as flat here.
                [90, 0, t] if t & 0x80 != 0 => return Err(Stop::Unknown),
                [90, 0, 2..=4] => true,
                _ => false,
            };
        if rewritten {
            src.capture();
        }
        let mut vector_type = 0;
        let mut count = count;
        // The rows a constant or dictionary stands for.
        let stands_for = count;
        let mut longest_string = 0;
        let mut within = within;
        let mut highest_index = None;
        let mut list_size = None;
        let mut validity: Option<Vec<u8>> = None;
        let mut sequence_start = None;
        let mut wkb_format = false;
        // DuckDB reads a vector's fields in order, and the type first: a type after another
        // field would change the count this walk checks against, not the one DuckDB uses.
        let mut last = None;
        // Fields 90 to 109 read, a bit each, and whether the vector said it has a mask.
        let mut seen = 0u32;
        let mut masked = false;
        loop {
            let field = src.field_id().await?;
            let previous = last.replace(field);
            if (90..110).contains(&field) {
                seen |= 1 << (field - 90);
            }
            match (field, shape) {
                (90, _) if previous.is_none() && within.packed => {
                    vector_type = src.varint().await?;
                    match (vector_type, shape) {
                        (0 | 3, _) | (4, Shape::Fixed(_, Values::Signed)) => {}
                        // DuckDB reads one row whatever the count; it writes a constant only
                        // for one row or more.
                        (2, _) if count > 0 => {
                            within.maskless |= count > STANDARD_VECTOR_SIZE;
                            count = 1;
                        }
                        _ => return Err(Stop::Unknown),
                    }
                }
                // A flat vector may say so; a dictionary's values follow its size.
                (90, _) if previous.is_none() || (vector_type == 3 && previous == Some(92)) => {
                    if src.varint().await? != 0 {
                        return Err(Stop::Unknown);
                    }
                }
                (91, _) if vector_type == 3 && previous == Some(90) => {
                    if src.varint().await? != count.saturating_mul(4) {
                        return Err(Stop::Unknown);
                    }
                    for _ in 0..count {
                        let bytes = [
                            src.byte().await?,
                            src.byte().await?,
                            src.byte().await?,
                            src.byte().await?,
                        ];
                        let index = u32::from_le_bytes(bytes);
                        highest_index = highest_index.max(Some(index));
                    }
                }
                (92, _) if vector_type == 3 && previous == Some(91) => {
                    let size = src.varint().await?;
                    if size > count || highest_index.is_some_and(|i| u64::from(i) >= size) {
                        return Err(Stop::Unknown);
                    }
                    count = size;
                }
                (91, _) if vector_type == 4 && previous == Some(90) => {
                    sequence_start = Some(sleb128(&src.signed_varint().await?)?);
                }
                (92, Shape::Fixed(width, _)) if vector_type == 4 && previous == Some(91) => {
                    let step = sleb128(&src.signed_varint().await?)?;
                    let start = sequence_start.ok_or(Stop::Unknown)?;
                    let last =
                        i128::from(start) + i128::from(step) * i128::from(count.saturating_sub(1));
                    let bits = (*width * 8) as u32;
                    let range = -(1i128 << (bits - 1))..(1i128 << (bits - 1));
                    if ![start, step]
                        .iter()
                        .all(|v| range.contains(&i128::from(*v)))
                        || !range.contains(&last)
                    {
                        return Err(Stop::Unknown);
                    }
                }
                // The geometry format.
                // The geometry format: WKB, the one DuckDB writes; without it, DuckDB reads the
                // values in the spatial extension's older format, which this walk does not.
                (99, shape) => {
                    let format = src.varint().await?;
                    if budget.strict && (*shape != Shape::Wkb || format != 1) {
                        return Err(Stop::Unknown);
                    }
                    wkb_format = true;
                }
                (100, _) => {
                    masked = src.byte().await? != 0;
                    if masked && within.maskless
                        || budget.strict && *shape == Shape::Wkb && !wkb_format
                    {
                        return Err(Stop::Unknown);
                    }
                }
                // A key's mask may be there, with every row valid (DuckDB writes one whenever
                // the vector has one allocated).
                (101, _) if within.keys => {
                    let len = src.varint().await?;
                    if len > count.div_ceil(8).saturating_add(8) {
                        return Err(Stop::Unknown);
                    }
                    let mut row = 0u64;
                    for _ in 0..len {
                        let byte = src.byte().await?;
                        let rows_here = count.saturating_sub(row).min(8);
                        if rows_here > 0 && byte | (0xFF << rows_here) as u8 != 0xFF {
                            return Err(Stop::Unknown);
                        }
                        row += rows_here;
                    }
                    if row < count {
                        return Err(Stop::Unknown);
                    }
                }
                // The validity mask: DuckDB reads exactly the mask of `count` rows; kept where
                // the values of valid rows are checked.
                (
                    101,
                    Shape::Fixed(_, Values::Decimal(_) | Values::TimeOfDay | Values::Boolean)
                    | Shape::Wkb,
                ) if budget.strict => {
                    let len = src.varint().await?;
                    if len > count.div_ceil(8).saturating_add(8) {
                        return Err(Stop::Unknown);
                    }
                    let mut mask = Vec::with_capacity(len as usize);
                    for _ in 0..len {
                        mask.push(src.byte().await?);
                    }
                    validity = Some(mask);
                }
                (101, _) => src.string().await?,
                (102, Shape::Fixed(width, values)) => {
                    let len = src.varint().await?;
                    if len != count.saturating_mul(*width) {
                        return Err(Stop::Unknown);
                    }
                    match values {
                        Values::Decimal(_) | Values::TimeOfDay | Values::Boolean
                            if budget.strict =>
                        {
                            for row in 0..count {
                                let value = src.signed_le(*width).await?;
                                if valid(&validity, row) && !values.holds(value) {
                                    return Err(Stop::Unknown);
                                }
                            }
                        }
                        _ => src.skip(len).await?,
                    }
                }
                (102, Shape::Wkb) if budget.strict => {
                    if src.varint().await? != count {
                        return Err(Stop::Unknown);
                    }
                    for row in 0..count {
                        let value = src.string_bytes().await?;
                        longest_string = longest_string.max(value.len() as u64);
                        if valid(&validity, row) && !wkb::is_geometry(&value) {
                            return Err(Stop::Unknown);
                        }
                    }
                }
                (102, Shape::Strings | Shape::Wkb) => {
                    if src.varint().await? != count {
                        return Err(Stop::Unknown);
                    }
                    longest_string = src.strings(count).await?;
                }
                // Strings as their total length, a blob of lengths and a blob of bytes: not
                // what DuckDB 1.5.5 reads.
                (107, Shape::Strings) if !budget.strict => {
                    src.varint().await?;
                }
                (108 | 109, Shape::Strings) if !budget.strict => src.string().await?,
                (103, Shape::Struct(fields)) => {
                    if src.varint().await? != fields.len() as u64 {
                        return Err(Stop::Unknown);
                    }
                    for field in fields {
                        let within = within.child(vector_type == 0);
                        vector(src, field, count, within, depth + 1, budget).await?;
                    }
                }
                (103, Shape::Array(_, size)) => {
                    if src.varint().await? != *size {
                        return Err(Stop::Unknown);
                    }
                }
                (104, Shape::List(child)) => {
                    let size = src.varint().await?;
                    // `Reserve` rounds up to a power of two.
                    budget.allocate(
                        child.bytes(size.checked_next_power_of_two().unwrap_or(u64::MAX)),
                    );
                    list_size = Some(size);
                }
                (105, Shape::List(child)) => {
                    let size = list_size.ok_or(Stop::Unknown)?;
                    if src.varint().await? != count {
                        return Err(Stop::Unknown);
                    }
                    // Entries may overlap, and DuckDB copies each row's values: a twenty-fifth
                    // review had a 60 KB APPEND make a server take 650 MB so.
                    let mut values = 0u64;
                    for _ in 0..count {
                        let (mut offset, mut length) = (0u64, 0u64);
                        loop {
                            match src.field_id().await? {
                                100 => offset = src.varint().await?,
                                101 => length = src.varint().await?,
                                END => break,
                                _ => return Err(Stop::Unknown),
                            }
                        }
                        if offset.checked_add(length).is_none_or(|end| end > size) {
                            return Err(Stop::Unknown);
                        }
                        values = values.saturating_add(length);
                    }
                    budget.allocate(child.bytes(values));
                }
                (106, Shape::List(child)) => {
                    let size = list_size.ok_or(Stop::Unknown)?;
                    let within = within.child(vector_type == 0);
                    vector(src, child, size, within, depth + 1, budget).await?;
                }
                // DuckDB flattens an ARRAY, children and all, before it writes it, and trusts
                // the child to hold rows × size: it marks a NULL row's child values NULL in the
                // child's mask, which a compressed child (one row) does not have (a
                // twenty-fourth review corrupted a worker's heap so).
                (104, Shape::Array(child, size)) => {
                    let rows = count.saturating_mul(*size);
                    vector(src, child, rows, within.child(false), depth + 1, budget).await?;
                }
                (END, _) => {
                    // DuckDB reads each of these, and fails on the first that is not there.
                    if budget.strict && !has_every_field(seen, masked, vector_type, shape) {
                        return Err(Stop::Unknown);
                    }
                    // DuckDB copies a constant's or a dictionary's value once for each row it stands
                    // for (a twenty-sixth review had a 4 KB APPEND take a worker 1 GB so); a fixed
                    // value's rows are in the column's capacity already.
                    let carried = src.position() - from;
                    let each = match (vector_type, shape) {
                        (2, _) => carried,
                        (3, Shape::Strings | Shape::Wkb) => longest_string.saturating_add(16),
                        (3, Shape::Fixed(..)) => 0,
                        (3, _) => carried,
                        _ => 0,
                    };
                    budget.allocate(stands_for.saturating_sub(1).saturating_mul(each));
                    if rewritten {
                        // Bounded before it is written out, not only at the chunk's end.
                        budget.bounded(src.position())?;
                        let flat = flatten::vector(src.captured(), shape, stands_for)?;
                        src.replace(flat);
                    }
                    return Ok(());
                }
                _ => return Err(Stop::Unknown),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    use crate::fixtures::{fixture, CID};
    use crate::wire::{put_header, put_string_field, put_varint, put_varint_field};
    use crate::AppendColumn;

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
    fn a_message_is_walked_without_being_held() {
        // Fed a byte at a time, nothing waits in the feed after each piece: the walk has read
        // it, and holds only the piece it is in.
        let bytes = fixture("result_types_300_rows_prepare.bin");
        let mut c = RowCounter::new();
        for b in &bytes {
            c.feed(std::slice::from_ref(b));
            assert_eq!(c.feed.queued(), 0);
        }
        assert_eq!(c.finish().map(|c| c.rows), Some(300));
    }

    #[test]
    fn a_whole_append_passes_and_every_cut_or_padded_one_does_not() {
        let captured = fixture("append_request.bin");
        let built = crate::append_request(
            CID,
            7,
            "main",
            "events",
            &[
                AppendColumn::BigInt((0..2048).collect()),
                AppendColumn::Varchar((0..2048).map(|i| "x".repeat(i % 40)).collect()),
                AppendColumn::Integer(vec![1; 2048]),
            ],
        );
        // The DuckDB 1.5.5 CLI's `INSERT INTO r.capx SELECT range, 'k' || (range % 3), 42,
        // [range, range], {'a': range}, NULL FROM range(3000)`: its first APPEND, with sequence
        // and constant vectors.
        let compressed = fixture("append_request_cli_compressed.bin");
        // `INSERT INTO r.capx (k) SELECT k FROM 'd.parquet'`, a column the Parquet reader gives
        // as a dictionary vector, and NULL constants for the others.
        let dictionary = fixture("append_request_cli_dictionary.bin");
        for (message, rows) in [
            (captured, 2),
            (built.to_vec(), 2048),
            (compressed, 2048),
            (dictionary, 2048),
        ] {
            assert_eq!(check_append(Bytes::from(message.clone())), Ok(rows));
            for piece in [1, 3, 1000] {
                assert_eq!(count_in_pieces(&message, piece).map(|c| c.rows), Some(rows));
            }
            // Every cut of the small ones; of the large, a spread and the last bytes.
            let len = message.len();
            for cut in (0..len).filter(|&c| len < 10_000 || c % 97 == 0 || c + 64 > len) {
                assert!(
                    matches!(
                        check_append(Bytes::copy_from_slice(&message[..cut])),
                        Err(CodecError::Truncated(_))
                    ),
                    "cut at {cut} of {}",
                    message.len()
                );
            }
            let mut padded = message.clone();
            padded.push(0);
            assert!(matches!(
                check_append(Bytes::from(padded)),
                Err(CodecError::Malformed { .. })
            ));
        }
        // A result is not an APPEND's layout, and an APPEND is not a result's.
        let mut c = RowCounter::new();
        c.feed(&fixture("success_response.bin"));
        assert!(c.has_failed(), "known before the end");
        assert_eq!(c.finish(), None);
    }

    /// An APPEND of one chunk that `chunk` writes (rows, types, vectors, its end).
    fn append_of(chunk: impl FnOnce(&mut BytesMut)) -> Bytes {
        let mut out = BytesMut::new();
        put_header(&mut out, msg_type::APPEND_REQUEST, Some(CID), 1);
        put_string_field(&mut out, 1, b"main");
        put_string_field(&mut out, 2, b"t");
        out.put_u16_le(3);
        out.put_u8(1);
        out.put_u16_le(300);
        chunk(&mut out);
        // The chunk holder, the body.
        out.put_u16_le(END);
        out.put_u16_le(END);
        out.freeze()
    }

    /// A LogicalType object of a type with no extra info.
    fn plain_type(out: &mut BytesMut, id: u64) {
        put_varint_field(out, 100, id);
        out.put_u16_le(END);
    }

    /// A STRUCT LogicalType object of `fields`, each a name and a type id with no extra info.
    fn struct_type<'a>(out: &mut BytesMut, fields: impl ExactSizeIterator<Item = (&'a [u8], u64)>) {
        put_varint_field(out, 100, 100);
        out.put_u16_le(101);
        out.put_u8(1);
        put_varint_field(out, 100, 5);
        put_varint_field(out, 200, fields.len() as u64);
        for (name, id) in fields {
            put_string_field(out, 0, name);
            out.put_u16_le(1);
            plain_type(out, id);
            out.put_u16_le(END);
        }
        out.put_u16_le(END);
        out.put_u16_le(END);
    }

    /// `fields` INTEGER fields named f0, f1, ...
    fn integer_fields(fields: u64) -> Vec<(Vec<u8>, u64)> {
        (0..fields)
            .map(|i| (format!("f{i}").into_bytes(), 13))
            .collect()
    }

    fn strings(out: &mut BytesMut, field: u16, values: &[&str]) {
        put_varint_field(out, field, values.len() as u64);
        for v in values {
            put_varint(out, v.len() as u64);
            out.put_slice(v.as_bytes());
        }
    }

    /// One VARCHAR column of `rows` rows whose vector lists `values`.
    fn varchar_chunk(rows: u64, values: &[&str]) -> Bytes {
        append_of(|out| {
            put_varint_field(out, 100, rows);
            put_varint_field(out, 101, 1);
            plain_type(out, 25);
            put_varint_field(out, 102, 1);
            put_varint_field(out, 100, 0);
            strings(out, 102, values);
            out.put_u16_le(END);
            out.put_u16_le(END);
        })
    }

    /// One INTEGER[] row, `[1, 2]`, whose list entry says `offset` and `length`.
    fn list_chunk(offset: u64, length: u64) -> Bytes {
        append_of(|out| {
            put_varint_field(out, 100, 1);
            put_varint_field(out, 101, 1);
            put_varint_field(out, 100, 101);
            out.put_u16_le(101);
            out.put_u8(1);
            put_varint_field(out, 100, 4);
            out.put_u16_le(200);
            plain_type(out, 13);
            out.put_u16_le(END);
            out.put_u16_le(END);
            put_varint_field(out, 102, 1);
            put_varint_field(out, 100, 0);
            put_varint_field(out, 104, 2);
            put_varint_field(out, 105, 1);
            put_varint_field(out, 100, offset);
            put_varint_field(out, 101, length);
            out.put_u16_le(END);
            out.put_u16_le(106);
            put_varint_field(out, 100, 0);
            out.put_u16_le(102);
            put_varint(out, 8);
            out.put_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
            out.put_u16_le(END);
            out.put_u16_le(END);
            out.put_u16_le(END);
        })
    }

    /// One VARCHAR dictionary vector of `indexes.len()` rows over `values`, said to hold
    /// `size` values.
    fn dictionary_chunk(indexes: &[u32], size: u64, values: &[&str]) -> Bytes {
        append_of(|out| {
            put_varint_field(out, 100, indexes.len() as u64);
            put_varint_field(out, 101, 1);
            plain_type(out, 25);
            put_varint_field(out, 102, 1);
            put_varint_field(out, 90, 3);
            out.put_u16_le(91);
            put_varint(out, 4 * indexes.len() as u64);
            indexes.iter().for_each(|i| out.put_u32_le(*i));
            put_varint_field(out, 92, size);
            put_varint_field(out, 100, 0);
            strings(out, 102, values);
            out.put_u16_le(END);
            out.put_u16_le(END);
        })
    }

    /// One BIGINT column of `rows` rows as a sequence: a few bytes, whatever `rows` is.
    fn sequence_chunk(rows: u64) -> Bytes {
        sequence_of(14, rows, 0, 1)
    }

    /// One column of type `id` and `rows` rows as the sequence `start`, `start + step`, ...
    fn sequence_of(id: u64, rows: u64, start: i64, step: i64) -> Bytes {
        let sleb = |out: &mut BytesMut, field: u16, mut v: i64| {
            out.put_u16_le(field);
            loop {
                let byte = (v & 0x7F) as u8;
                v >>= 7;
                if (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0) {
                    out.put_u8(byte);
                    break;
                }
                out.put_u8(byte | 0x80);
            }
        };
        append_of(|out| {
            put_varint_field(out, 100, rows);
            put_varint_field(out, 101, 1);
            plain_type(out, id);
            put_varint_field(out, 102, 1);
            put_varint_field(out, 90, 4);
            sleb(out, 91, start);
            sleb(out, 92, step);
            out.put_u16_le(END);
            out.put_u16_le(END);
        })
    }

    /// One `STRUCT(s VARCHAR)` column of `rows` rows: `outer` writes the struct vector's
    /// fields before its children, `child` the one child vector's fields.
    fn struct_chunk(
        rows: u64,
        outer: impl FnOnce(&mut BytesMut),
        child: impl FnOnce(&mut BytesMut),
    ) -> Bytes {
        append_of(|out| {
            put_varint_field(out, 100, rows);
            put_varint_field(out, 101, 1);
            struct_type(out, [(&b"s"[..], 25)].into_iter());
            put_varint_field(out, 102, 1);
            outer(out);
            put_varint_field(out, 100, 0);
            put_varint_field(out, 103, 1);
            child(out);
            out.put_u16_le(END);
            out.put_u16_le(END);
        })
    }

    /// A VARCHAR dictionary vector's fields: `rows` rows, all the one value `"x"`, whose
    /// values say that they are of vector type `inner` when given.
    fn dictionary_fields(out: &mut BytesMut, rows: u64, inner: Option<u64>) {
        put_varint_field(out, 90, 3);
        out.put_u16_le(91);
        put_varint(out, 4 * rows);
        (0..rows).for_each(|_| out.put_u32_le(0));
        put_varint_field(out, 92, 1);
        if let Some(inner) = inner {
            put_varint_field(out, 90, inner);
        }
        put_varint_field(out, 100, 0);
        strings(out, 102, &["x"]);
    }

    /// One MAP column, no rows, whose entries are a STRUCT of `fields` INTEGER fields, or a
    /// bare INTEGER when `fields` is 0.
    fn map_chunk(fields: u64) -> Bytes {
        append_of(|out| {
            put_varint_field(out, 100, 0);
            put_varint_field(out, 101, 1);
            put_varint_field(out, 100, 102);
            out.put_u16_le(101);
            out.put_u8(1);
            put_varint_field(out, 100, 4);
            out.put_u16_le(200);
            if fields == 0 {
                plain_type(out, 13);
            } else {
                let names = integer_fields(fields);
                struct_type(out, names.iter().map(|(n, id)| (&n[..], *id)));
            }
            out.put_u16_le(END);
            out.put_u16_le(END);
            put_varint_field(out, 102, 1);
            put_varint_field(out, 100, 0);
            put_varint_field(out, 104, 0);
            put_varint_field(out, 105, 0);
            out.put_u16_le(106);
            put_varint_field(out, 100, 0);
            if fields == 0 {
                put_varint_field(out, 102, 0);
            } else {
                put_varint_field(out, 103, fields);
                for _ in 0..fields {
                    put_varint_field(out, 100, 0);
                    put_varint_field(out, 102, 0);
                    out.put_u16_le(END);
                }
            }
            out.put_u16_le(END);
            out.put_u16_le(END);
            out.put_u16_le(END);
        })
    }

    /// One INTEGER[] column whose rows are `entries` (offset, length) over one child of
    /// `child_len` zeros.
    fn list_entries_chunk(entries: &[(u64, u64)], child_len: u64) -> Bytes {
        append_of(|out| {
            put_varint_field(out, 100, entries.len() as u64);
            put_varint_field(out, 101, 1);
            put_varint_field(out, 100, 101);
            out.put_u16_le(101);
            out.put_u8(1);
            put_varint_field(out, 100, 4);
            out.put_u16_le(200);
            plain_type(out, 13);
            out.put_u16_le(END);
            out.put_u16_le(END);
            put_varint_field(out, 102, 1);
            put_varint_field(out, 100, 0);
            put_varint_field(out, 104, child_len);
            put_varint_field(out, 105, entries.len() as u64);
            for (offset, length) in entries {
                put_varint_field(out, 100, *offset);
                put_varint_field(out, 101, *length);
                out.put_u16_le(END);
            }
            out.put_u16_le(106);
            put_varint_field(out, 100, 0);
            out.put_u16_le(102);
            put_varint(out, 4 * child_len);
            out.put_slice(&vec![0; 4 * child_len as usize]);
            out.put_u16_le(END);
            out.put_u16_le(END);
            out.put_u16_le(END);
        })
    }

    #[test]
    fn a_constant_past_a_vectors_rows_carries_no_mask_and_lists_copy_within_the_budget() {
        let malformed = |m: Bytes| matches!(check_append(m), Err(CodecError::Malformed { .. }));
        // A twenty-fifth review: DuckDB sizes a constant's mask for 2,048 rows and flattens it
        // to its count unresized, so a NULL one past 2,048 rows wrote past it, and a masked
        // valid one read the heap into a table's NULLs.
        let flat = |_: &mut BytesMut| {};
        let null_constant = |out: &mut BytesMut| {
            put_varint_field(out, 90, 2);
            put_varint_field(out, 100, 1);
            out.put_u16_le(101);
            put_varint(out, 8);
            out.put_slice(&[0; 8]);
            strings(out, 102, &[""]);
            out.put_u16_le(END);
        };
        let valid_constant = |out: &mut BytesMut| {
            put_varint_field(out, 90, 2);
            put_varint_field(out, 100, 0);
            strings(out, 102, &["a"]);
            out.put_u16_le(END);
        };
        assert_eq!(check_append(struct_chunk(3, flat, null_constant)), Ok(3));
        assert_eq!(
            check_append(struct_chunk(2048, flat, null_constant)),
            Ok(2048)
        );
        assert!(malformed(struct_chunk(2049, flat, null_constant)));
        assert_eq!(
            check_append(struct_chunk(5000, flat, valid_constant)),
            Ok(5000)
        );
        // Overlapping entries are real (a repeated list value), but DuckDB copies each row's.
        assert_eq!(
            check_append(list_entries_chunk(&[(0, 2), (0, 2)], 2)),
            Ok(2)
        );
        let overlapping: Vec<_> = (0..2048).map(|i| (i, 10_000 - i)).collect();
        assert!(malformed(list_entries_chunk(&overlapping, 10_000)));
        let disjoint: Vec<_> = (0..2048).map(|i| (i * 4, 4)).collect();
        assert_eq!(check_append(list_entries_chunk(&disjoint, 8192)), Ok(2048));
    }

    /// One MAP(`key_type`, INTEGER) row of one entry, its key with the validity mask byte
    /// `key_mask` when given.
    fn map_row_chunk(key_type: u64, key_mask: Option<u8>) -> Bytes {
        append_of(|out| {
            put_varint_field(out, 100, 1);
            put_varint_field(out, 101, 1);
            put_varint_field(out, 100, 102);
            out.put_u16_le(101);
            out.put_u8(1);
            put_varint_field(out, 100, 4);
            out.put_u16_le(200);
            struct_type(
                out,
                [(&b"key"[..], key_type), (&b"value"[..], 13)].into_iter(),
            );
            out.put_u16_le(END);
            out.put_u16_le(END);
            put_varint_field(out, 102, 1);
            put_varint_field(out, 100, 0);
            put_varint_field(out, 104, 1);
            put_varint_field(out, 105, 1);
            put_varint_field(out, 100, 0);
            put_varint_field(out, 101, 1);
            out.put_u16_le(END);
            out.put_u16_le(106);
            put_varint_field(out, 100, 0);
            put_varint_field(out, 103, 2);
            for mask in [key_mask, Some(1)] {
                if let Some(mask) = mask {
                    put_varint_field(out, 100, 1);
                    out.put_u16_le(101);
                    put_varint(out, 8);
                    out.put_slice(&[mask, 0, 0, 0, 0, 0, 0, 0]);
                } else {
                    put_varint_field(out, 100, 0);
                }
                out.put_u16_le(102);
                put_varint(out, 4);
                out.put_slice(&[7, 0, 0, 0]);
                out.put_u16_le(END);
            }
            out.put_u16_le(END);
            out.put_u16_le(END);
            out.put_u16_le(END);
        })
    }

    #[test]
    fn a_maps_keys_are_never_null() {
        let malformed = |m: Bytes| matches!(check_append(m), Err(CodecError::Malformed { .. }));
        // A twenty-sixth review stored a NULL key (masked, or SQLNULL cast to the table's key
        // type), and `map_concat` on it ended the worker's database.
        assert_eq!(check_append(map_row_chunk(13, None)), Ok(1));
        assert_eq!(
            check_append(map_row_chunk(13, Some(1))),
            Ok(1),
            "a mask of valid rows"
        );
        assert!(malformed(map_row_chunk(13, Some(0))));
        assert!(malformed(map_row_chunk(1, None)));
    }

    #[test]
    fn a_compressed_value_counts_once_for_each_row_it_stands_for() {
        let malformed = |m: Bytes| matches!(check_append(m), Err(CodecError::Malformed { .. }));
        let long = "x".repeat(100_000);
        let constant = |rows: u64, value: &str| {
            append_of(|out| {
                put_varint_field(out, 100, rows);
                put_varint_field(out, 101, 1);
                plain_type(out, 25);
                put_varint_field(out, 102, 1);
                put_varint_field(out, 90, 2);
                put_varint_field(out, 100, 0);
                strings(out, 102, &[value]);
                out.put_u16_le(END);
                out.put_u16_le(END);
            })
        };
        // A twenty-sixth review: a 100 KB string standing for 10,000 rows took a worker 2 GB.
        assert_eq!(check_append(constant(2048, &long[..1000])), Ok(2048));
        assert_eq!(check_append(constant(3, &long)), Ok(3));
        assert!(malformed(constant(10_000, &long)));
        let dictionary = |rows: u64, values: &[&str]| {
            let indexes: Vec<u32> = (0..rows)
                .map(|i| (i % values.len() as u64) as u32)
                .collect();
            dictionary_chunk(&indexes, values.len() as u64, values)
        };
        let urls: Vec<String> = (0..1000)
            .map(|i| format!("https://example.com/{i:0>990}"))
            .collect();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        assert_eq!(
            check_append(dictionary(2048, &urls)),
            Ok(2048),
            "a real dictionary"
        );
        assert!(malformed(dictionary(10_000, &[&long])));
    }

    #[test]
    fn a_map_is_a_list_of_key_value_structs() {
        let malformed = |m: Bytes| matches!(check_append(m), Err(CodecError::Malformed { .. }));
        assert_eq!(check_append(map_chunk(2)), Ok(0));
        for fields in [0, 1, 3] {
            assert!(malformed(map_chunk(fields)), "{fields} fields");
        }
    }

    #[test]
    fn compressed_vectors_pass_only_as_duckdb_writes_them() {
        let malformed = |m: Bytes| matches!(check_append(m), Err(CodecError::Malformed { .. }));
        // A twenty-third review: a sequence starting past TINYINT's range is an internal
        // error that ends the worker's database; DuckDB generates only signed sequences.
        assert_eq!(check_append(sequence_of(11, 3, 125, 1)), Ok(3));
        assert!(malformed(sequence_of(11, 3, 1000, 1)));
        assert!(malformed(sequence_of(11, 3, 126, 1)), "runs past 127");
        assert!(malformed(sequence_of(12, 3, 1, 100_000)));
        assert_eq!(check_append(sequence_of(13, 3, 1, 100_000)), Ok(3));
        assert_eq!(check_append(sequence_of(14, 3, -5, -1)), Ok(3));
        assert_eq!(check_append(sequence_of(14, 2, i64::MIN, 0)), Ok(2));
        assert!(malformed(sequence_of(14, 2, i64::MAX, 1)));
        for unsigned_or_huge in [28, 29, 30, 31, 49, 50] {
            assert!(malformed(sequence_of(unsigned_or_huge, 3, 1, 1)));
        }
        // A dictionary's values and a constant's value are written flat: a dictionary of
        // dictionaries recursed a worker off its stack.
        let dictionary = |inner| {
            append_of(|out| {
                put_varint_field(out, 100, 3);
                put_varint_field(out, 101, 1);
                plain_type(out, 25);
                put_varint_field(out, 102, 1);
                dictionary_fields(out, 3, inner);
                out.put_u16_le(END);
                out.put_u16_le(END);
            })
        };
        assert_eq!(check_append(dictionary(None)), Ok(3));
        assert_eq!(check_append(dictionary(Some(0))), Ok(3));
        assert!(malformed(dictionary(Some(3))));
        assert!(malformed(dictionary(Some(2))));
        let constant = |rows| {
            append_of(|out| {
                put_varint_field(out, 100, rows);
                put_varint_field(out, 101, 1);
                plain_type(out, 25);
                put_varint_field(out, 102, 1);
                put_varint_field(out, 90, 2);
                put_varint_field(out, 100, 0);
                strings(out, 102, &["a"]);
                out.put_u16_le(END);
                out.put_u16_le(END);
            })
        };
        assert_eq!(check_append(constant(3)), Ok(3));
        assert!(malformed(constant(0)), "DuckDB reads a row all the same");
        // A flat STRUCT's children may be compressed; a constant STRUCT's may not, since
        // DuckDB then marks them constant whatever they were read as.
        let flat = |_: &mut BytesMut| {};
        let const_struct = |out: &mut BytesMut| put_varint_field(out, 90, 2);
        let flat_child = |out: &mut BytesMut| {
            put_varint_field(out, 100, 0);
            strings(out, 102, &["a"]);
            out.put_u16_le(END);
        };
        let flat_child_of = |rows: usize| {
            move |out: &mut BytesMut| {
                put_varint_field(out, 100, 0);
                strings(out, 102, &vec!["a"; rows]);
                out.put_u16_le(END);
            }
        };
        let dictionary_child = |out: &mut BytesMut| {
            dictionary_fields(out, 3, None);
            out.put_u16_le(END);
        };
        assert_eq!(
            check_append(struct_chunk(3, const_struct, flat_child)),
            Ok(3)
        );
        assert_eq!(check_append(struct_chunk(3, flat, dictionary_child)), Ok(3));
        assert_eq!(check_append(struct_chunk(3, flat, flat_child_of(3))), Ok(3));
        assert!(malformed(struct_chunk(
            3,
            const_struct,
            |out: &mut BytesMut| {
                dictionary_fields(out, 1, None);
                out.put_u16_le(END);
            }
        )));
        assert!(malformed(struct_chunk(
            3,
            const_struct,
            |out: &mut BytesMut| {
                put_varint_field(out, 90, 2);
                flat_child(out);
            }
        )));
        // An ARRAY's child is written flat: a twenty-fourth review's constant child of a NULL
        // row had DuckDB clear bits past the child's mask.
        let array = |child: &dyn Fn(&mut BytesMut)| {
            append_of(|out| {
                put_varint_field(out, 100, 1);
                put_varint_field(out, 101, 1);
                put_varint_field(out, 100, 108);
                out.put_u16_le(101);
                out.put_u8(1);
                put_varint_field(out, 100, 9);
                out.put_u16_le(200);
                plain_type(out, 13);
                put_varint_field(out, 201, 2);
                out.put_u16_le(END);
                out.put_u16_le(END);
                put_varint_field(out, 102, 1);
                put_varint_field(out, 100, 0);
                put_varint_field(out, 103, 2);
                out.put_u16_le(104);
                child(out);
                out.put_u16_le(END);
                out.put_u16_le(END);
                out.put_u16_le(END);
            })
        };
        let ints = |out: &mut BytesMut| {
            put_varint_field(out, 100, 0);
            out.put_u16_le(102);
            put_varint(out, 8);
            out.put_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        };
        assert_eq!(check_append(array(&ints)), Ok(1));
        assert!(malformed(array(&|out: &mut BytesMut| {
            put_varint_field(out, 90, 2);
            put_varint_field(out, 100, 0);
            out.put_u16_le(102);
            put_varint(out, 4);
            out.put_slice(&[1, 0, 0, 0]);
        })));
        assert!(malformed(array(&|out: &mut BytesMut| {
            put_varint_field(out, 90, 4);
            put_varint_field(out, 91, 1);
            put_varint_field(out, 92, 1);
        })));
    }

    /// A STRUCT type of `fields` INTEGER fields, and no rows.
    fn wide_struct_chunk(fields: u64) -> Bytes {
        append_of(|out| {
            put_varint_field(out, 100, 0);
            put_varint_field(out, 101, 1);
            let names = integer_fields(fields);
            struct_type(out, names.iter().map(|(n, id)| (&n[..], *id)));
            put_varint_field(out, 102, 1);
            put_varint_field(out, 100, 0);
            put_varint_field(out, 103, fields);
            for _ in 0..fields {
                put_varint_field(out, 100, 0);
                out.put_u16_le(102);
                put_varint(out, 0);
                out.put_u16_le(END);
            }
            out.put_u16_le(END);
            out.put_u16_le(END);
        })
    }

    #[test]
    fn an_append_whose_counts_disagree_with_its_rows_is_refused() {
        // What DuckDB would write past or read past its buffers with (a nineteenth review
        // crashed a worker, and read its heap into a table), beside the same shapes whole.
        let malformed = |m: Bytes| matches!(check_append(m), Err(CodecError::Malformed { .. }));
        assert_eq!(check_append(varchar_chunk(3, &["a", "b", "c"])), Ok(3));
        assert!(malformed(varchar_chunk(1, &["a", "b", "c"])));
        assert!(malformed(varchar_chunk(3, &["a"])));
        assert_eq!(check_append(list_chunk(0, 2)), Ok(1));
        assert!(malformed(list_chunk(0, 6000)));
        assert!(malformed(list_chunk(1, 2)));
        assert!(malformed(list_chunk(u64::MAX, 2)));
        assert_eq!(
            check_append(dictionary_chunk(&[0, 1, 1, 0], 2, &["x", "y"])),
            Ok(4)
        );
        assert!(malformed(dictionary_chunk(&[0, 5, 1, 0], 2, &["x", "y"])));
        assert!(malformed(dictionary_chunk(&[0, 1], 3, &["x", "y", "z"])));
        // The type after another field: DuckDB has read the vector as flat by then.
        let late_constant = append_of(|out| {
            put_varint_field(out, 100, 3);
            put_varint_field(out, 101, 1);
            plain_type(out, 25);
            put_varint_field(out, 102, 1);
            put_varint_field(out, 100, 0);
            put_varint_field(out, 90, 2);
            strings(out, 102, &["a"]);
            out.put_u16_le(END);
            out.put_u16_le(END);
        });
        assert!(malformed(late_constant));
        // A billion rows in a few bytes would have DuckDB allocate 8 GB for them.
        assert_eq!(check_append(sequence_chunk(2048)), Ok(2048));
        assert!(malformed(sequence_chunk(1_000_000_000)));
        // A type of 25 million fields cost the gateway 611 MB in that review.
        assert_eq!(check_append(wide_struct_chunk(1000)), Ok(0));
        assert!(malformed(wide_struct_chunk(200_000)));
        // A twentieth review: a STRUCT whose info is of another kind (DuckDB read it as a
        // STRUCT's, past its end), and ENUM data, whose values index its dictionary unchecked.
        let struct_with_generic_info = append_of(|out| {
            put_varint_field(out, 100, 0);
            put_varint_field(out, 101, 1);
            put_varint_field(out, 100, 100);
            out.put_u16_le(101);
            out.put_u8(1);
            put_varint_field(out, 100, 1);
            out.put_u16_le(END);
            out.put_u16_le(END);
            put_varint_field(out, 102, 1);
            put_varint_field(out, 100, 0);
            put_varint_field(out, 103, 0);
            out.put_u16_le(END);
            out.put_u16_le(END);
        });
        assert!(malformed(struct_with_generic_info));
        let enum_chunk = append_of(|out| {
            put_varint_field(out, 100, 1);
            put_varint_field(out, 101, 1);
            put_varint_field(out, 100, 104);
            out.put_u16_le(101);
            out.put_u8(1);
            put_varint_field(out, 100, 6);
            put_varint_field(out, 200, 1);
            strings(out, 201, &["a"]);
            out.put_u16_le(END);
            out.put_u16_le(END);
            put_varint_field(out, 102, 1);
            put_varint_field(out, 100, 0);
            out.put_u16_le(102);
            put_varint(out, 1);
            out.put_u8(200);
            out.put_u16_le(END);
            out.put_u16_le(END);
        });
        assert!(malformed(enum_chunk));
        // A twenty-first review: values DuckDB's casts trust to keep a rule.
        assert_eq!(
            check_append(fixed_chunk(16, None, &[1_000_000, 86_400_000_000])),
            Ok(2)
        );
        assert!(malformed(fixed_chunk(16, None, &[1 << 62])));
        assert!(malformed(fixed_chunk(16, None, &[-1])));
        // A NULL row may hold anything: only valid rows are held to the rule.
        assert_eq!(
            check_append(fixed_chunk(16, Some(0b01), &[5, 1 << 62])),
            Ok(2)
        );
        assert_eq!(
            check_append(decimal_chunk(18, 0, &[999_999_999_999_999_999])),
            Ok(1)
        );
        assert!(malformed(decimal_chunk(18, 0, &[i64::MIN])));
        assert!(malformed(decimal_chunk(
            18,
            0,
            &[1_000_000_000_000_000_000]
        )));
        assert!(malformed(decimal_chunk(4, 25, &[1])));
        let booleans = |bytes: &[u8]| {
            append_of(|out| {
                put_varint_field(out, 100, bytes.len() as u64);
                put_varint_field(out, 101, 1);
                plain_type(out, 10);
                put_varint_field(out, 102, 1);
                put_varint_field(out, 100, 0);
                out.put_u16_le(102);
                put_varint(out, bytes.len() as u64);
                out.put_slice(bytes);
                out.put_u16_le(END);
                out.put_u16_le(END);
            })
        };
        assert_eq!(check_append(booleans(&[0, 1, 1])), Ok(3));
        assert!(malformed(booleans(&[0, 0xff])));
        for id in [34, 35, 36] {
            assert!(malformed(fixed_chunk(id, None, &[0])), "type {id}");
        }
    }

    /// One column of type `id` (8-byte values), with a validity mask when given.
    fn fixed_chunk(id: u64, validity: Option<u8>, values: &[i64]) -> Bytes {
        append_of(|out| {
            put_varint_field(out, 100, values.len() as u64);
            put_varint_field(out, 101, 1);
            plain_type(out, id);
            put_varint_field(out, 102, 1);
            fixed_vector(out, validity, values);
            out.put_u16_le(END);
        })
    }

    fn fixed_vector(out: &mut BytesMut, validity: Option<u8>, values: &[i64]) {
        put_varint_field(out, 100, u64::from(validity.is_some()));
        if let Some(mask) = validity {
            out.put_u16_le(101);
            put_varint(out, 8);
            out.put_slice(&[mask, 0, 0, 0, 0, 0, 0, 0]);
        }
        out.put_u16_le(102);
        put_varint(out, 8 * values.len() as u64);
        values.iter().for_each(|v| out.put_i64_le(*v));
        out.put_u16_le(END);
    }

    /// One DECIMAL(`width`, `scale`) column stored as BIGINTs.
    fn decimal_chunk(width: u64, scale: u64, values: &[i64]) -> Bytes {
        append_of(|out| {
            put_varint_field(out, 100, values.len() as u64);
            put_varint_field(out, 101, 1);
            put_varint_field(out, 100, 21);
            out.put_u16_le(101);
            out.put_u8(1);
            put_varint_field(out, 100, 2);
            put_varint_field(out, 200, width);
            put_varint_field(out, 201, scale);
            out.put_u16_le(END);
            out.put_u16_le(END);
            put_varint_field(out, 102, 1);
            fixed_vector(out, None, values);
            out.put_u16_le(END);
        })
    }

    #[test]
    fn a_vector_without_a_field_duckdb_reads_is_refused() {
        let malformed = |m: Bytes| matches!(check_append(m), Err(CodecError::Malformed { .. }));
        // `fields` writes a VARCHAR vector of three rows "a", its end included.
        let varchar = |fields: &dyn Fn(&mut BytesMut)| {
            append_of(|out| {
                put_varint_field(out, 100, 3);
                put_varint_field(out, 101, 1);
                plain_type(out, 25);
                put_varint_field(out, 102, 1);
                fields(out);
                out.put_u16_le(END);
            })
        };
        let selection = |out: &mut BytesMut| {
            put_varint_field(out, 90, 3);
            out.put_u16_le(91);
            put_varint(out, 12);
            out.put_slice(&[0; 12]);
        };
        let values = |out: &mut BytesMut| {
            put_varint_field(out, 100, 0);
            strings(out, 102, &["a"]);
            out.put_u16_le(END);
        };
        let whole = |out: &mut BytesMut| {
            selection(out);
            put_varint_field(out, 92, 1);
            values(out);
        };
        assert_eq!(check_append(varchar(&whole)), Ok(3));
        // A fuzzer's: a dictionary with no size, which the rewrite could not read.
        assert!(malformed(varchar(&|out: &mut BytesMut| {
            selection(out);
            out.put_u16_le(END);
        })));
        assert!(malformed(varchar(&|out: &mut BytesMut| {
            selection(out);
            values(out);
        })));
        // No mask flag, no data, or a mask flag with no mask.
        assert!(malformed(varchar(&|out: &mut BytesMut| {
            strings(out, 102, &["a", "a", "a"]);
            out.put_u16_le(END);
        })));
        assert!(malformed(varchar(&|out: &mut BytesMut| {
            put_varint_field(out, 100, 0);
            out.put_u16_le(END);
        })));
        assert!(malformed(varchar(&|out: &mut BytesMut| {
            put_varint_field(out, 100, 1);
            strings(out, 102, &["a", "a", "a"]);
            out.put_u16_le(END);
        })));
    }

    /// One GEOMETRY column of `values.len()` rows, its format field `format` when given,
    /// the rows NULL where `mask`'s bit is clear.
    fn geometry_chunk(format: Option<u64>, mask: Option<u8>, values: &[&[u8]]) -> Bytes {
        append_of(|out| {
            put_varint_field(out, 100, values.len() as u64);
            put_varint_field(out, 101, 1);
            plain_type(out, 60);
            put_varint_field(out, 102, 1);
            if let Some(format) = format {
                put_varint_field(out, 99, format);
            }
            put_varint_field(out, 100, u64::from(mask.is_some()));
            if let Some(mask) = mask {
                out.put_u16_le(101);
                put_varint(out, 8);
                out.put_slice(&[mask, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
            }
            put_varint_field(out, 102, values.len() as u64);
            for v in values {
                put_varint(out, v.len() as u64);
                out.put_slice(v);
            }
            out.put_u16_le(END);
            out.put_u16_le(END);
        })
    }

    #[test]
    fn a_geometry_is_appended_only_whole_and_in_duckdbs_wkb() {
        let malformed = |m: Bytes| matches!(check_append(m), Err(CodecError::Malformed { .. }));
        let mut point = vec![1, 1, 0, 0, 0];
        point.extend_from_slice(&[0; 16]);
        // A twenty-seventh review's MULTIPOINT of 2^32 - 1 points, in nine bytes.
        let too_many = [1, 4, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            check_append(geometry_chunk(Some(1), None, &[&point])),
            Ok(1)
        );
        assert!(malformed(geometry_chunk(
            Some(1),
            None,
            &[&point, &too_many]
        )));
        assert!(malformed(geometry_chunk(Some(1), None, &[&point[..20]])));
        // A NULL row's value is not read.
        assert_eq!(
            check_append(geometry_chunk(Some(1), Some(0b01), &[&point, &too_many])),
            Ok(2)
        );
        // The spatial extension's older format, named or by default, is not walked.
        assert!(malformed(geometry_chunk(Some(0), None, &[&point])));
        assert!(malformed(geometry_chunk(None, None, &[&point])));
        // Answers are only counted.
        let mut answer = RowCounter::new();
        answer.feed(&fixture("result_geometry_prepare.bin"));
        assert_eq!(answer.finish().map(|r| r.rows), Some(1));
    }

    /// What a worker is sent for `message`, fed in pieces of `piece`: the pieces passed on
    /// before the end, and all of it.
    fn flattened_in_pieces(message: &[u8], piece: usize) -> (usize, Vec<u8>) {
        let mut append = crate::FlatAppend::new();
        let mut out = Vec::new();
        for p in message.chunks(piece) {
            append.push(Bytes::copy_from_slice(p)).expect("walks");
            drain(&mut append, &mut out);
        }
        let before_the_end = out.len();
        append.finish().expect("whole");
        drain(&mut append, &mut out);
        (before_the_end, out)
    }

    fn drain(append: &mut crate::FlatAppend, out: &mut Vec<u8>) {
        while let Some(b) = append.next_out().expect("rows") {
            out.extend_from_slice(&b);
        }
    }

    #[test]
    fn the_memory_a_walked_append_holds_beyond_its_bytes_is_counted() {
        let walked = |message: Vec<u8>| {
            let mut append = crate::FlatAppend::new();
            append.push(Bytes::from(message)).expect("walks");
            append.finish().expect("whole");
            append.held_bytes()
        };
        // Nothing compressed: nothing beyond the message.
        assert_eq!(walked(fixture("append_request.bin")), 0);
        // A dictionary: a span for each of its strings, and the parts of its flat form.
        let dictionary = walked(fixture("append_request_cli_dictionary.bin"));
        assert!(dictionary > 0, "{dictionary}");
        assert!(walked(fixture("append_request_cli_compressed.bin")) > 0);
        // Its strings are what grows: 2,048 rows picked from a dictionary of 2,048 one-byte
        // strings (about 14 KB sent) hold a span (8 bytes) for each.
        let indexes: Vec<u32> = (0..2048).collect();
        let tiny = dictionary_chunk(&indexes, 2048, &vec!["a"; 2048]);
        assert_eq!(check_append(tiny.clone()), Ok(2048));
        assert!(walked(tiny.to_vec()) >= 8 * 2048);
    }

    #[test]
    fn compressed_vectors_go_on_as_the_flat_vectors_duckdb_writes() {
        let flat = |m: Bytes| crate::flatten_append(m).expect("flattens");
        // A dictionary, a constant and a sequence: the flat vector of the same rows.
        assert_eq!(
            flat(dictionary_chunk(&[0, 1, 0], 2, &["a", "b"])),
            varchar_chunk(3, &["a", "b", "a"])
        );
        let constant = |rows, mask: Option<u8>| {
            append_of(|out| {
                put_varint_field(out, 100, rows);
                put_varint_field(out, 101, 1);
                plain_type(out, 14);
                put_varint_field(out, 102, 1);
                put_varint_field(out, 90, 2);
                fixed_vector(out, mask, &[42]);
                out.put_u16_le(END);
            })
        };
        assert_eq!(flat(constant(3, None)), fixed_chunk(14, None, &[42; 3]));
        assert_eq!(flat(constant(3, Some(1))), fixed_chunk(14, None, &[42; 3]));
        // A NULL one: a mask of whole 64-bit words, the rows past the count valid.
        let mut nulls = BytesMut::new();
        put_varint_field(&mut nulls, 100, 1);
        nulls.put_u16_le(101);
        put_varint(&mut nulls, 8);
        nulls.put_slice(&[0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        let null_rows = flat(constant(3, Some(0)));
        assert!(null_rows.windows(nulls.len()).any(|w| w == &nulls[..]));
        assert_eq!(check_append(null_rows), Ok(3));
        assert_eq!(
            flat(sequence_of(14, 3, -5, -1)),
            fixed_chunk(14, None, &[-5, -6, -7])
        );
        assert_eq!(
            flat(sequence_of(11, 3, 125, 1)).slice(..),
            append_of(|out| {
                put_varint_field(out, 100, 3);
                put_varint_field(out, 101, 1);
                plain_type(out, 11);
                put_varint_field(out, 102, 1);
                put_varint_field(out, 100, 0);
                out.put_u16_le(102);
                put_varint(out, 3);
                out.put_slice(&[125, 126, 127]);
                out.put_u16_le(END);
                out.put_u16_le(END);
            })
        );
        // A constant of a million rows: its 8 MB are made as they are taken, a piece at a time.
        let mut append = crate::FlatAppend::new();
        append.push(constant(1_000_000, None)).expect("walks");
        append.finish().expect("whole");
        let (mut pieces, mut total) = (0, 0);
        while let Some(piece) = append.next_out().expect("rows") {
            assert!(piece.len() <= 64 * 1024 + 8, "{}", piece.len());
            pieces += 1;
            total += piece.len();
        }
        assert!(
            pieces > 100 && total > 8_000_000,
            "{pieces} pieces, {total} bytes"
        );
        // Within a flat STRUCT, and a constant STRUCT with its children.
        let rows_of = |values: &'static [&'static str]| {
            move |out: &mut BytesMut| {
                put_varint_field(out, 100, 0);
                strings(out, 102, values);
                out.put_u16_le(END);
            }
        };
        let as_flat = |_: &mut BytesMut| {};
        let as_constant = |out: &mut BytesMut| put_varint_field(out, 90, 2);
        assert_eq!(
            flat(struct_chunk(3, as_constant, rows_of(&["a"]))),
            struct_chunk(3, as_flat, rows_of(&["a", "a", "a"]))
        );
        assert_eq!(
            flat(struct_chunk(3, as_flat, |out: &mut BytesMut| {
                dictionary_fields(out, 3, None);
                out.put_u16_le(END);
            })),
            struct_chunk(3, as_flat, rows_of(&["x", "x", "x"]))
        );
        // What DuckDB 1.5.5's CLI sent: flat once rewritten, the same rows, and a flat one
        // goes on unchanged.
        for (name, compressed) in [
            ("append_request.bin", false),
            ("append_request_cli_compressed.bin", true),
            ("append_request_cli_dictionary.bin", true),
        ] {
            let message = Bytes::from(fixture(name));
            let rows = check_append(message.clone());
            let once = flat(message.clone());
            assert_eq!(once != message, compressed, "{name}");
            assert_eq!(check_append(once.clone()), rows, "{name}");
            assert_eq!(
                flat(once.clone()),
                once,
                "{name}: nothing compressed is left"
            );
            // However it arrives; nothing of its last piece goes on before it is whole.
            for piece in [1, 3, 1000, message.len()] {
                let (before, out) = flattened_in_pieces(&message, piece);
                assert_eq!(out, once, "{name} in pieces of {piece}");
                let last = message.len() - (message.len() - 1) / piece * piece;
                assert!(before <= out.len() - last, "{name} in pieces of {piece}");
            }
            for cut in (1..message.len()).step_by(37) {
                let mut append = crate::FlatAppend::new();
                let mut sent = Vec::new();
                for p in message[..cut].chunks(50) {
                    if append.push(Bytes::copy_from_slice(p)).is_ok() {
                        drain(&mut append, &mut sent);
                    }
                }
                assert!(append.finish().is_err(), "{name} cut at {cut}");
                assert!(
                    once.starts_with(&sent) && sent.len() < once.len(),
                    "{name} cut at {cut}: {} of {} sent",
                    sent.len(),
                    once.len()
                );
            }
        }
        // A vector type in two bytes, which DuckDB reads as one but never writes (a
        // twenty-eighth review's way past the rewrite).
        let mut long_type = constant(3, None).to_vec();
        let at = long_type.windows(3).position(|w| w == [90, 0, 2]).unwrap();
        long_type.splice(at + 2..at + 3, [0x82, 0x00]);
        assert!(check_append(Bytes::from(long_type.clone())).is_err());
        assert!(crate::flatten_append(long_type.into()).is_err());
        // What the walk refuses is not rewritten either; nor is what is not an APPEND.
        assert!(crate::flatten_append(sequence_of(11, 3, 1000, 1)).is_err());
        assert!(
            crate::flatten_append(fixture("result_types_300_rows_prepare.bin").into()).is_err()
        );
    }
}
