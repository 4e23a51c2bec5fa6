//! A compressed vector of a client's APPEND written out as the flat vector DuckDB's own
//! `Vector::Serialize` writes for the same rows. DuckDB 1.5.5 trusts a CONSTANT, DICTIONARY or
//! SEQUENCE vector it deserializes to keep rules it never checks, and four reviews in a row
//! crashed a worker or read its memory through one, past every rule the walk had then. A
//! worker that is only ever sent flat vectors is not reachable through those layouts at all.
//!
//! The walk ([`crate::rows`]) has checked the bytes first and bounded what the rows cost; this
//! reads the vector again into its values and writes one row for each row it stands for.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::CodecError;
use crate::shape::Shape;
use crate::wire::{put_varint, put_varint_field, sleb128, Reader, END};

/// A flat vector, its values borrowed from the bytes it was read from.
struct Flat<'a> {
    /// Field 99, GEOMETRY's storage format.
    geometry: Option<u64>,
    /// Bit `i` set when row `i` is valid; `None` when every row is.
    mask: Option<&'a [u8]>,
    data: Data<'a>,
}

enum Data<'a> {
    Fixed {
        width: usize,
        bytes: &'a [u8],
    },
    Strings(Vec<&'a [u8]>),
    Struct(Vec<Flat<'a>>),
    /// The child has `size` rows.
    List {
        size: u64,
        entries: Vec<(u64, u64)>,
        child: Box<Flat<'a>>,
    },
    Array {
        size: u64,
        child: Box<Flat<'a>>,
    },
}

/// Which row of the vector read each row written is.
#[derive(Clone, Copy)]
enum Rows<'s> {
    /// Row `i` is row `i`, of this many.
    Same(u64),
    /// Row 0, this many times.
    First(u64),
    /// A `u32` index for each row, little-endian.
    Picked(&'s [u8]),
    /// An ARRAY's child under rows of its parent: `size` values for each.
    Each(&'s Rows<'s>, u64),
}

impl Rows<'_> {
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
                let at = (i as usize).saturating_mul(4);
                let bytes = sel.get(at..at + 4).ok_or(MALFORMED)?;
                u64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            }
            Rows::Each(parent, size) => parent.source(i / size)? * size + i % size,
        })
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
/// of a CONSTANT, DICTIONARY or SEQUENCE of `shape`) stands for, serialized.
pub(crate) fn vector(compressed: &[u8], shape: &Shape, rows: u64) -> Result<Bytes, CodecError> {
    let shape = unkeyed(shape);
    let mut r = Reader::new(compressed, 0);
    expect(&mut r, 90)?;
    let mut out = BytesMut::new();
    match r.varint()? {
        2 => {
            let one = read(&mut r, shape, 1, 0)?;
            write(&mut out, &one, Rows::First(rows))?;
        }
        3 => {
            expect(&mut r, 91)?;
            let sel = r.string()?;
            let sel = &compressed[sel];
            if sel.len() as u64 != rows.saturating_mul(4) {
                return Err(MALFORMED);
            }
            expect(&mut r, 92)?;
            let size = r.varint()?;
            let dictionary = read(&mut r, shape, size, 0)?;
            let picked = Rows::Picked(sel);
            for i in 0..rows {
                if picked.source(i)? >= size {
                    return Err(MALFORMED);
                }
            }
            write(&mut out, &dictionary, picked)?;
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
            let width = *width as usize;
            out.put_u16_le(100);
            out.put_u8(0);
            out.put_u16_le(102);
            put_varint(&mut out, rows.saturating_mul(width as u64));
            let mut value = start;
            for _ in 0..rows {
                out.put_slice(&value.to_le_bytes()[..width.min(8)]);
                value = value.wrapping_add(step);
            }
            out.put_u16_le(END);
        }
        _ => return Err(MALFORMED),
    }
    if r.pos != compressed.len() {
        return Err(MALFORMED);
    }
    Ok(out.freeze())
}

fn unkeyed(shape: &Shape) -> &Shape {
    match shape {
        Shape::Key(key) => unkeyed(key),
        shape => shape,
    }
}

/// A flat vector of `count` rows, its end marker too.
fn read<'a>(
    r: &mut Reader<'a>,
    shape: &Shape,
    count: u64,
    depth: usize,
) -> Result<Flat<'a>, CodecError> {
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
        let from = r.pos;
        let range = r.string()?;
        let bytes = r.consumed_since(from);
        let bytes = &bytes[bytes.len() - range.len()..];
        if (bytes.len() as u64) < count.div_ceil(8) {
            return Err(MALFORMED);
        }
        mask = Some(bytes);
    }
    let data = match shape {
        Shape::Fixed(width, _) => {
            expect(r, 102)?;
            let len = r.varint()?;
            if len != count.saturating_mul(*width) {
                return Err(MALFORMED);
            }
            let bytes = r.take(usize::try_from(len).map_err(|_| MALFORMED)?)?;
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
            let mut strings = Vec::new();
            for _ in 0..count {
                let from = r.pos;
                let range = r.string()?;
                let bytes = r.consumed_since(from);
                strings.push(&bytes[bytes.len() - range.len()..]);
            }
            Data::Strings(strings)
        }
        Shape::Struct(fields) => {
            expect(r, 103)?;
            if r.varint()? != fields.len() as u64 {
                return Err(MALFORMED);
            }
            let mut read_fields = Vec::with_capacity(fields.len());
            for field in fields {
                read_fields.push(read(r, field, count, depth + 1)?);
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
            let child = Box::new(read(r, child, size, depth + 1)?);
            Data::List {
                size,
                entries,
                child,
            }
        }
        Shape::Array(child, size) => {
            expect(r, 103)?;
            if r.varint()? != *size {
                return Err(MALFORMED);
            }
            expect(r, 104)?;
            let child = Box::new(read(r, child, count.saturating_mul(*size), depth + 1)?);
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

/// `flat`'s `rows`, as DuckDB writes a flat vector: a validity mask only when a row is NULL,
/// a NULL row's string empty and its list entry 0/0.
fn write(out: &mut BytesMut, flat: &Flat<'_>, rows: Rows<'_>) -> Result<(), CodecError> {
    let n = rows.len();
    let valid = |i: u64| -> Result<bool, CodecError> {
        let Some(mask) = flat.mask else {
            return Ok(true);
        };
        let row = rows.source(i)?;
        let byte = mask.get((row / 8) as usize).ok_or(MALFORMED)?;
        Ok(byte >> (row % 8) & 1 == 1)
    };
    if let Some(format) = flat.geometry {
        put_varint_field(out, 99, format);
    }
    let mut nulls = false;
    if flat.mask.is_some() {
        for i in 0..n {
            if !valid(i)? {
                nulls = true;
                break;
            }
        }
    }
    out.put_u16_le(100);
    out.put_u8(u8::from(nulls));
    if nulls {
        // DuckDB's `ValidityMaskSize`: whole 64-bit words.
        let size = n.div_ceil(64) * 8;
        out.put_u16_le(101);
        put_varint(out, size);
        let mut byte = 0u8;
        for i in 0..size * 8 {
            if i >= n || valid(i)? {
                byte |= 1 << (i % 8);
            }
            if i % 8 == 7 {
                out.put_u8(byte);
                byte = 0;
            }
        }
    }
    match &flat.data {
        Data::Fixed { width, bytes } => {
            out.put_u16_le(102);
            put_varint(out, n.saturating_mul(*width as u64));
            for i in 0..n {
                let at = usize::try_from(rows.source(i)?)
                    .map_err(|_| MALFORMED)?
                    .saturating_mul(*width);
                out.put_slice(bytes.get(at..at + width).ok_or(MALFORMED)?);
            }
        }
        Data::Strings(strings) => {
            out.put_u16_le(102);
            put_varint(out, n);
            for i in 0..n {
                let string = match valid(i)? {
                    true => *strings.get(rows.source(i)? as usize).ok_or(MALFORMED)?,
                    false => &[][..],
                };
                put_varint(out, string.len() as u64);
                out.put_slice(string);
            }
        }
        Data::Struct(fields) => {
            out.put_u16_le(103);
            put_varint(out, fields.len() as u64);
            for field in fields {
                write(out, field, rows)?;
            }
        }
        Data::List {
            size,
            entries,
            child,
        } => {
            put_varint_field(out, 104, *size);
            out.put_u16_le(105);
            put_varint(out, n);
            for i in 0..n {
                let (offset, length) = match valid(i)? {
                    true => *entries.get(rows.source(i)? as usize).ok_or(MALFORMED)?,
                    false => (0, 0),
                };
                put_varint_field(out, 100, offset);
                put_varint_field(out, 101, length);
                out.put_u16_le(END);
            }
            out.put_u16_le(106);
            write(out, child, Rows::Same(*size))?;
        }
        Data::Array { size, child } => {
            put_varint_field(out, 103, *size);
            out.put_u16_le(104);
            write(out, child, Rows::Each(&rows, *size))?;
        }
    }
    out.put_u16_le(END);
    Ok(())
}
