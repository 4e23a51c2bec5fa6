//! A compressed vector of a client's APPEND written out as the flat vector DuckDB's own
//! `Vector::Serialize` writes for the same rows. DuckDB 1.5.5 trusts a CONSTANT, DICTIONARY or
//! SEQUENCE vector it deserializes to keep rules it never checks, and four reviews in a row
//! crashed a worker or read its memory through one, past every rule the walk had then. A
//! worker that is only ever sent flat vectors is not reachable through those layouts at all.
//!
//! The walk ([`crate::rows`]) has checked the bytes first and bounded what the rows cost; this
//! reads the vector again into its values, and writes one row for each row it stands for as
//! the worker takes them: it holds the vector as it was sent, never all the rows it stands
//! for (a constant of a few bytes may stand for tens of megabytes).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::CodecError;
use crate::shape::Shape;
use crate::wire::{put_varint, put_varint_field, sleb128, Reader, END};

/// About this many bytes of rows are made at a time.
const PIECE_BYTES: usize = 64 * 1024;

/// A flat vector, its values slices of the bytes it was read from.
struct Flat {
    /// Field 99, GEOMETRY's storage format.
    geometry: Option<u64>,
    /// Bit `i` set when row `i` is valid; `None` when every row is.
    mask: Option<Bytes>,
    data: Data,
}

enum Data {
    Fixed {
        width: usize,
        bytes: Bytes,
    },
    /// Each string's start and length in `all`.
    Strings {
        all: Bytes,
        spans: Arc<Vec<(u32, u32)>>,
    },
    Struct(Vec<Flat>),
    /// The child has `size` rows.
    List {
        size: u64,
        entries: Arc<Vec<(u64, u64)>>,
        child: Box<Flat>,
    },
    Array {
        size: u64,
        child: Box<Flat>,
    },
}

/// Which row of the vector read each row written is.
#[derive(Clone)]
enum Rows {
    /// Row `i` is row `i`, of this many.
    Same(u64),
    /// Row 0, this many times.
    First(u64),
    /// A `u32` index for each row, little-endian.
    Picked(Bytes),
    /// An ARRAY's child under rows of its parent: `size` values for each.
    Each(Arc<Rows>, u64),
}

impl Rows {
    fn len(&self) -> u64 {
        match self {
            Rows::Same(n) | Rows::First(n) => *n,
            Rows::Picked(sel) => sel.len() as u64 / 4,
            Rows::Each(parent, size) => parent.len().saturating_mul(*size),
        }
    }

    fn source(&self, i: u64) -> Result<u64, CodecError> {
        Ok(match self {
            Rows::Same(_) => i,
            Rows::First(_) => 0,
            Rows::Picked(sel) => {
                let at = usize::try_from(i).map_err(|_| MALFORMED)?.saturating_mul(4);
                let bytes = sel.get(at..at.saturating_add(4)).ok_or(MALFORMED)?;
                u64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            }
            Rows::Each(parent, size) => parent.source(i / size)? * size + i % size,
        })
    }
}

/// A mask read and the rows written from it: whether each row written is valid.
#[derive(Clone)]
struct Validity {
    mask: Option<Bytes>,
    rows: Rows,
}

impl Validity {
    fn valid(&self, i: u64) -> Result<bool, CodecError> {
        let Some(mask) = &self.mask else {
            return Ok(true);
        };
        let row = self.rows.source(i)?;
        let byte = mask
            .get(usize::try_from(row / 8).map_err(|_| MALFORMED)?)
            .ok_or(MALFORMED)?;
        Ok(byte >> (row % 8) & 1 == 1)
    }
}

/// A vector's flat form, its rows made as they are taken.
pub(crate) struct Flattened {
    parts: VecDeque<Part>,
}

/// A run of the flat form: bytes as they are, or rows made from the vector read.
enum Part {
    Bytes(Bytes),
    /// DuckDB's `ValidityMaskSize` bytes: whole 64-bit words, rows past the count valid.
    Mask {
        validity: Validity,
        next: u64,
        bytes: u64,
    },
    Fixed {
        bytes: Bytes,
        width: usize,
        rows: Rows,
        next: u64,
    },
    /// A NULL row's string is empty.
    Strings {
        all: Bytes,
        spans: Arc<Vec<(u32, u32)>>,
        validity: Validity,
        next: u64,
    },
    /// A NULL row's entry is 0/0.
    Entries {
        entries: Arc<Vec<(u64, u64)>>,
        validity: Validity,
        next: u64,
    },
    Sequence {
        value: i64,
        step: i64,
        width: usize,
        left: u64,
    },
}

impl Flattened {
    /// Memory its parts and row indexes take (string spans, list entries) beyond the bytes it
    /// was read from; indexes shared by parts are counted for each.
    pub(crate) fn heap_bytes(&self) -> u64 {
        let indexes: usize = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Strings { spans, .. } => spans.capacity() * std::mem::size_of::<(u32, u32)>(),
                Part::Entries { entries, .. } => {
                    entries.capacity() * std::mem::size_of::<(u64, u64)>()
                }
                _ => 0,
            })
            .sum();
        (indexes + self.parts.capacity() * std::mem::size_of::<Part>()) as u64
    }

    /// The next bytes of the flat form, `None` once all have been taken.
    ///
    /// # Errors
    /// `Malformed` for a row the vector read does not have; the walk and the read before
    /// this leave none.
    pub(crate) fn next_piece(&mut self) -> Result<Option<Bytes>, CodecError> {
        while let Some(part) = self.parts.front_mut() {
            match part.next()? {
                Some(piece) if !piece.is_empty() => return Ok(Some(piece)),
                Some(_) => {}
                None => {
                    self.parts.pop_front();
                }
            }
        }
        Ok(None)
    }
}

impl Part {
    /// Its next bytes, `None` once it has none left.
    fn next(&mut self) -> Result<Option<Bytes>, CodecError> {
        let mut out = BytesMut::with_capacity(PIECE_BYTES + 64);
        match self {
            Part::Bytes(bytes) => {
                return Ok((!bytes.is_empty()).then(|| std::mem::take(bytes)));
            }
            Part::Mask {
                validity,
                next,
                bytes,
            } => {
                let rows = validity.rows.len();
                while *next < *bytes && out.len() < PIECE_BYTES {
                    let mut byte = 0u8;
                    for bit in 0..8 {
                        let row = *next * 8 + bit;
                        if row >= rows || validity.valid(row)? {
                            byte |= 1 << bit;
                        }
                    }
                    out.put_u8(byte);
                    *next += 1;
                }
            }
            Part::Fixed {
                bytes,
                width,
                rows,
                next,
            } => {
                while *next < rows.len() && out.len() < PIECE_BYTES {
                    let at = usize::try_from(rows.source(*next)?)
                        .map_err(|_| MALFORMED)?
                        .saturating_mul(*width);
                    let value = bytes.get(at..at.saturating_add(*width));
                    out.put_slice(value.ok_or(MALFORMED)?);
                    *next += 1;
                }
            }
            Part::Strings {
                all,
                spans,
                validity,
                next,
            } => {
                while *next < validity.rows.len() && out.len() < PIECE_BYTES {
                    let value: &[u8] = match validity.valid(*next)? {
                        true => {
                            let row = validity.rows.source(*next)?;
                            let row = usize::try_from(row).map_err(|_| MALFORMED)?;
                            let (start, len) = *spans.get(row).ok_or(MALFORMED)?;
                            let (start, len) = (start as usize, len as usize);
                            all.get(start..start + len).ok_or(MALFORMED)?
                        }
                        false => &[],
                    };
                    put_varint(&mut out, value.len() as u64);
                    out.put_slice(value);
                    *next += 1;
                }
            }
            Part::Entries {
                entries,
                validity,
                next,
            } => {
                while *next < validity.rows.len() && out.len() < PIECE_BYTES {
                    let (offset, length) = match validity.valid(*next)? {
                        true => {
                            let row = validity.rows.source(*next)?;
                            let row = usize::try_from(row).map_err(|_| MALFORMED)?;
                            *entries.get(row).ok_or(MALFORMED)?
                        }
                        false => (0, 0),
                    };
                    put_varint_field(&mut out, 100, offset);
                    put_varint_field(&mut out, 101, length);
                    out.put_u16_le(END);
                    *next += 1;
                }
            }
            Part::Sequence {
                value,
                step,
                width,
                left,
            } => {
                while *left > 0 && out.len() < PIECE_BYTES {
                    out.put_slice(&value.to_le_bytes()[..(*width).min(8)]);
                    *value = value.wrapping_add(*step);
                    *left -= 1;
                }
            }
        }
        Ok((!out.is_empty()).then(|| out.freeze()))
    }
}

const MALFORMED: CodecError = CodecError::Malformed {
    at: 0,
    what: "a compressed vector not in the layout DuckDB 1.5.5 writes",
};

fn expect(r: &mut Reader<'_>, field: u16) -> Result<(), CodecError> {
    if r.field_id()? != field {
        return Err(MALFORMED);
    }
    Ok(())
}

/// The flat vector of `rows` rows that `compressed` (a whole serialized vector, field 90 first,
/// of a CONSTANT, DICTIONARY or SEQUENCE of `shape`) stands for, to be written out.
pub(crate) fn vector(compressed: Bytes, shape: &Shape, rows: u64) -> Result<Flattened, CodecError> {
    let shape = unkeyed(shape);
    let mut r = Reader::new(&compressed, 0);
    expect(&mut r, 90)?;
    let mut w = Writer::default();
    match r.varint()? {
        2 => {
            let one = read(&compressed, &mut r, shape, 1, 0)?;
            write(&mut w, &one, Rows::First(rows))?;
        }
        3 => {
            expect(&mut r, 91)?;
            let sel = compressed.slice(r.string()?);
            if sel.len() as u64 != rows.saturating_mul(4) {
                return Err(MALFORMED);
            }
            expect(&mut r, 92)?;
            let size = r.varint()?;
            let dictionary = read(&compressed, &mut r, shape, size, 0)?;
            let picked = Rows::Picked(sel);
            for i in 0..rows {
                if picked.source(i)? >= size {
                    return Err(MALFORMED);
                }
            }
            write(&mut w, &dictionary, picked)?;
        }
        4 => {
            let Shape::Fixed(width, _) = shape else {
                return Err(MALFORMED);
            };
            let mut signed = |field| {
                expect(&mut r, field)?;
                let from = r.pos;
                r.signed_varint()?;
                sleb128(r.consumed_since(from))
            };
            let (start, step) = (signed(91)?, signed(92)?);
            r.end_of_object()?;
            w.lit.put_u16_le(100);
            w.lit.put_u8(0);
            w.lit.put_u16_le(102);
            put_varint(&mut w.lit, rows.saturating_mul(*width));
            w.lazy(Part::Sequence {
                value: start,
                step,
                width: *width as usize,
                left: rows,
            });
            w.lit.put_u16_le(END);
        }
        _ => return Err(MALFORMED),
    }
    if r.pos != compressed.len() {
        return Err(MALFORMED);
    }
    Ok(w.done())
}

fn unkeyed(shape: &Shape) -> &Shape {
    match shape {
        Shape::Key(key) => unkeyed(key),
        shape => shape,
    }
}

/// The bytes of a string or blob whose length the reader is at, as a slice of `all`.
fn blob(all: &Bytes, r: &mut Reader<'_>) -> Result<Bytes, CodecError> {
    Ok(all.slice(r.string()?))
}

/// A flat vector of `count` rows, its end marker too.
fn read(
    all: &Bytes,
    r: &mut Reader<'_>,
    shape: &Shape,
    count: u64,
    depth: usize,
) -> Result<Flat, CodecError> {
    if depth > 64 {
        return Err(MALFORMED);
    }
    let shape = unkeyed(shape);
    let mut field = r.field_id()?;
    if field == 90 {
        if r.varint()? != 0 {
            return Err(MALFORMED);
        }
        field = r.field_id()?;
    }
    let mut geometry = None;
    if field == 99 {
        geometry = Some(r.varint()?);
        field = r.field_id()?;
    }
    if field != 100 {
        return Err(MALFORMED);
    }
    let mut mask = None;
    if r.take(1)?[0] != 0 {
        expect(r, 101)?;
        let bytes = blob(all, r)?;
        if (bytes.len() as u64) < count.div_ceil(8) {
            return Err(MALFORMED);
        }
        mask = Some(bytes);
    }
    let data = match shape {
        Shape::Fixed(width, _) => {
            expect(r, 102)?;
            let bytes = blob(all, r)?;
            if bytes.len() as u64 != count.saturating_mul(*width) {
                return Err(MALFORMED);
            }
            Data::Fixed {
                width: *width as usize,
                bytes,
            }
        }
        Shape::Strings | Shape::Wkb => {
            expect(r, 102)?;
            if r.varint()? != count {
                return Err(MALFORMED);
            }
            let mut spans = Vec::new();
            for _ in 0..count {
                let span = r.string()?;
                let start = u32::try_from(span.start).map_err(|_| MALFORMED)?;
                let len = u32::try_from(span.len()).map_err(|_| MALFORMED)?;
                spans.push((start, len));
            }
            Data::Strings {
                all: all.clone(),
                spans: Arc::new(spans),
            }
        }
        Shape::Struct(fields) => {
            expect(r, 103)?;
            if r.varint()? != fields.len() as u64 {
                return Err(MALFORMED);
            }
            let mut read_fields = Vec::with_capacity(fields.len());
            for field in fields {
                read_fields.push(read(all, r, field, count, depth + 1)?);
            }
            Data::Struct(read_fields)
        }
        Shape::List(child) => {
            expect(r, 104)?;
            let size = r.varint()?;
            expect(r, 105)?;
            if r.varint()? != count {
                return Err(MALFORMED);
            }
            let mut entries = Vec::new();
            for _ in 0..count {
                let (mut offset, mut length) = (0, 0);
                loop {
                    match r.field_id()? {
                        100 => offset = r.varint()?,
                        101 => length = r.varint()?,
                        END => break,
                        _ => return Err(MALFORMED),
                    }
                }
                if offset.checked_add(length).is_none_or(|end| end > size) {
                    return Err(MALFORMED);
                }
                entries.push((offset, length));
            }
            expect(r, 106)?;
            let child = Box::new(read(all, r, child, size, depth + 1)?);
            Data::List {
                size,
                entries: Arc::new(entries),
                child,
            }
        }
        Shape::Array(child, size) => {
            expect(r, 103)?;
            if r.varint()? != *size {
                return Err(MALFORMED);
            }
            expect(r, 104)?;
            let rows = count.saturating_mul(*size);
            let child = Box::new(read(all, r, child, rows, depth + 1)?);
            Data::Array { size: *size, child }
        }
        Shape::Key(_) => return Err(MALFORMED),
    };
    r.end_of_object()?;
    Ok(Flat {
        geometry,
        mask,
        data,
    })
}

/// The parts of a flat form, the bytes between its runs of rows gathered as they come.
#[derive(Default)]
struct Writer {
    parts: VecDeque<Part>,
    lit: BytesMut,
}

impl Writer {
    fn lazy(&mut self, part: Part) {
        if !self.lit.is_empty() {
            self.parts.push_back(Part::Bytes(self.lit.split().freeze()));
        }
        self.parts.push_back(part);
    }

    fn done(mut self) -> Flattened {
        if !self.lit.is_empty() {
            self.parts.push_back(Part::Bytes(self.lit.freeze()));
        }
        Flattened { parts: self.parts }
    }
}

/// `flat`'s `rows`, as DuckDB writes a flat vector: a validity mask only when a row is NULL,
/// a NULL row's string empty and its list entry 0/0.
fn write(w: &mut Writer, flat: &Flat, rows: Rows) -> Result<(), CodecError> {
    let n = rows.len();
    let validity = Validity {
        mask: flat.mask.clone(),
        rows: rows.clone(),
    };
    if let Some(format) = flat.geometry {
        put_varint_field(&mut w.lit, 99, format);
    }
    let mut nulls = false;
    if flat.mask.is_some() {
        for i in 0..n {
            if !validity.valid(i)? {
                nulls = true;
                break;
            }
        }
    }
    w.lit.put_u16_le(100);
    w.lit.put_u8(u8::from(nulls));
    if nulls {
        let bytes = n.div_ceil(64) * 8;
        w.lit.put_u16_le(101);
        put_varint(&mut w.lit, bytes);
        w.lazy(Part::Mask {
            validity: validity.clone(),
            next: 0,
            bytes,
        });
    }
    match &flat.data {
        Data::Fixed { width, bytes } => {
            w.lit.put_u16_le(102);
            put_varint(&mut w.lit, n.saturating_mul(*width as u64));
            w.lazy(Part::Fixed {
                bytes: bytes.clone(),
                width: *width,
                rows,
                next: 0,
            });
        }
        Data::Strings { all, spans } => {
            w.lit.put_u16_le(102);
            put_varint(&mut w.lit, n);
            w.lazy(Part::Strings {
                all: all.clone(),
                spans: spans.clone(),
                validity,
                next: 0,
            });
        }
        Data::Struct(fields) => {
            w.lit.put_u16_le(103);
            put_varint(&mut w.lit, fields.len() as u64);
            for field in fields {
                write(w, field, rows.clone())?;
            }
        }
        Data::List {
            size,
            entries,
            child,
        } => {
            put_varint_field(&mut w.lit, 104, *size);
            w.lit.put_u16_le(105);
            put_varint(&mut w.lit, n);
            w.lazy(Part::Entries {
                entries: entries.clone(),
                validity,
                next: 0,
            });
            w.lit.put_u16_le(106);
            write(w, child, Rows::Same(*size))?;
        }
        Data::Array { size, child } => {
            put_varint_field(&mut w.lit, 103, *size);
            w.lit.put_u16_le(104);
            write(w, child, Rows::Each(Arc::new(rows), *size))?;
        }
    }
    w.lit.put_u16_le(END);
    Ok(())
}
