//! The BinarySerializer primitives every message is made of: a bounds-checked reader and the
//! writers for field ids, LEB128 integers, strings and the header. A leaf: the decoding,
//! encoding and client files build on it, never the other way round.

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use crate::error::CodecError;

/// End-of-object marker.
pub(crate) const END: u16 = 0xFFFF;
/// Longest LEB128 encoding of a 64-bit value.
pub(crate) const MAX_VARINT_BYTES: usize = 10;
/// Header field 3 (`client_query_id`) of responses, and of the client's DISCONNECT: an unset
/// `optional_idx`.
pub(crate) const NO_QUERY_ID: u64 = u64::MAX;

/// A cursor over a byte slice whose every read is bounds-checked.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    pub(crate) fn field_id(&mut self) -> Result<u16, CodecError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    /// The bytes from `from` to the cursor.
    pub(crate) fn consumed_since(&self, from: usize) -> &'a [u8] {
        &self.buf[from.min(self.pos)..self.pos]
    }

    pub(crate) fn peek_field_id(&self) -> Result<u16, CodecError> {
        Reader::new(self.buf, self.pos).field_id()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(CodecError::Truncated(self.pos))?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(CodecError::Truncated(self.buf.len()))?;
        self.pos = end;
        Ok(bytes)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, CodecError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..MAX_VARINT_BYTES {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or(CodecError::Truncated(self.buf.len()))?;
            self.pos += 1;
            if i == MAX_VARINT_BYTES - 1 && byte > 1 {
                return Err(CodecError::Malformed {
                    at: start,
                    what: "varint overflows 64 bits",
                });
            }
            value |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Malformed {
            at: start,
            what: "varint longer than 10 bytes",
        })
    }

    /// A signed LEB128 value; only its extent matters to the codec.
    pub(crate) fn signed_varint(&mut self) -> Result<(), CodecError> {
        let start = self.pos;
        for _ in 0..MAX_VARINT_BYTES {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or(CodecError::Truncated(self.buf.len()))?;
            self.pos += 1;
            if byte & 0x80 == 0 {
                return Ok(());
            }
        }
        Err(CodecError::Malformed {
            at: start,
            what: "signed varint longer than 10 bytes",
        })
    }

    /// The byte range of a string's bytes.
    pub(crate) fn string(&mut self) -> Result<Range<usize>, CodecError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| CodecError::Malformed {
            at: self.pos,
            what: "string length too large",
        })?;
        let start = self.pos;
        self.take(len)?;
        Ok(start..self.pos)
    }

    pub(crate) fn end_of_object(&mut self) -> Result<(), CodecError> {
        let at = self.pos;
        if self.field_id()? != END {
            return Err(CodecError::Malformed {
                at,
                what: "unexpected field",
            });
        }
        Ok(())
    }

    pub(crate) fn end_of_message(&mut self) -> Result<(), CodecError> {
        self.end_of_object()?;
        if self.pos != self.buf.len() {
            return Err(CodecError::Malformed {
                at: self.pos,
                what: "bytes after the end of the message",
            });
        }
        Ok(())
    }
}

/// A signed LEB128 value as DuckDB 1.5.5 decodes an `int64_t` (`DecodeSignedLEB128`): bits
/// past the 64th are dropped, and a tenth byte's sign bit extends nothing.
pub(crate) fn sleb128(bytes: &[u8]) -> Result<i64, CodecError> {
    let mut value: u64 = 0;
    let mut shift = 0u32;
    let mut last = 0u8;
    for &byte in bytes {
        if shift >= 64 {
            return Err(CodecError::Malformed {
                at: 0,
                what: "signed varint longer than 64 bits",
            });
        }
        value |= u64::from(byte & 0x7F) << shift;
        shift += 7;
        last = byte;
    }
    if shift < 64 && last & 0x40 != 0 {
        value |= u64::MAX << shift;
    }
    Ok(value as i64)
}

/// A v1 header object: field 1 `msg_type`, field 2 the connection id unless `None`, field 3
/// `query_id`, then `FF FF`.
pub(crate) fn put_header(out: &mut BytesMut, msg_type: u64, id: Option<&[u8]>, query_id: u64) {
    out.put_u16_le(1);
    put_varint(out, msg_type);
    if let Some(id) = id {
        put_string_field(out, 2, id);
    }
    out.put_u16_le(3);
    put_varint(out, query_id);
    out.put_u16_le(END);
}

pub(crate) fn put_string_field(out: &mut BytesMut, field: u16, value: &[u8]) {
    out.put_u16_le(field);
    put_varint(out, value.len() as u64);
    out.put_slice(value);
}

pub(crate) fn put_varint_field(out: &mut BytesMut, field: u16, value: u64) {
    out.put_u16_le(field);
    put_varint(out, value);
}

pub(crate) fn put_varint(out: &mut BytesMut, mut value: u64) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}
