//! The client's side, for the bench's load generator: the requests that open a session and
//! run a query, and just enough of the responses to know whether to FETCH more and which
//! result to fetch. Results are never decoded; the bench controls the SQL.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::decode::Header;
use crate::error::CodecError;
use crate::msg_type;
use crate::wire::{put_header, put_string_field, put_varint, put_varint_field, Reader, END};

/// A CONNECTION_REQUEST as the 1.5.5 CLI on linux_amd64 sends it: the token in clear, the
/// client version and platform, and Quack protocol versions 1..1.
pub fn connection_request(token: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(token.len() + 48);
    put_header(&mut out, msg_type::CONNECTION_REQUEST, None, 1);
    put_string_field(&mut out, 1, token.as_bytes());
    put_string_field(&mut out, 2, b"v1.5.5");
    put_string_field(&mut out, 3, b"linux_amd64");
    put_varint_field(&mut out, 4, 1);
    put_varint_field(&mut out, 5, 1);
    out.put_u16_le(END);
    out.freeze()
}

pub fn prepare_request(id: &[u8], query_id: u64, sql: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(id.len() + sql.len() + 32);
    put_header(&mut out, msg_type::PREPARE_REQUEST, Some(id), query_id);
    put_string_field(&mut out, 1, sql.as_bytes());
    out.put_u16_le(END);
    out.freeze()
}

/// `uuid` is the result uuid exactly as the PREPARE_RESPONSE encoded it (see [`Prepared`]),
/// copied back without being decoded.
pub fn fetch_request(id: &[u8], query_id: u64, uuid: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(id.len() + uuid.len() + 32);
    put_header(&mut out, msg_type::FETCH_REQUEST, Some(id), query_id);
    out.put_u16_le(1);
    out.put_slice(uuid);
    out.put_u16_le(END);
    out.freeze()
}

/// One column of an APPEND chunk, all rows non-null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendColumn {
    Integer(Vec<i32>),
    BigInt(Vec<i64>),
    Varchar(Vec<String>),
}

impl AppendColumn {
    fn rows(&self) -> usize {
        match self {
            AppendColumn::Integer(v) => v.len(),
            AppendColumn::BigInt(v) => v.len(),
            AppendColumn::Varchar(v) => v.len(),
        }
    }
}

/// An APPEND_REQUEST as `INSERT INTO r.<table> ...` sends it, for one chunk: body field 1 the
/// schema, 2 the table, 3 the (present) chunk holder whose field 300 is the DataChunk (100 row
/// count, 101 the logical types, 102 the vectors: validity flag, then the flat data). Checked
/// byte for byte against the captured CLI message. Columns must have equal lengths.
pub fn append_request(
    id: &[u8],
    query_id: u64,
    schema: &str,
    table: &str,
    columns: &[AppendColumn],
) -> Bytes {
    let rows = columns.first().map_or(0, AppendColumn::rows);
    let mut out = BytesMut::with_capacity(id.len() + 64 + rows * 16 * columns.len());
    put_header(&mut out, msg_type::APPEND_REQUEST, Some(id), query_id);
    put_string_field(&mut out, 1, schema.as_bytes());
    put_string_field(&mut out, 2, table.as_bytes());
    out.put_u16_le(3);
    out.put_u8(1); // present
    out.put_u16_le(300);
    put_varint_field(&mut out, 100, rows as u64);
    put_varint_field(&mut out, 101, columns.len() as u64);
    for column in columns {
        let type_id = match column {
            AppendColumn::Integer(_) => 13,
            AppendColumn::BigInt(_) => 14,
            AppendColumn::Varchar(_) => 25,
        };
        put_varint_field(&mut out, 100, type_id);
        out.put_u16_le(END);
    }
    put_varint_field(&mut out, 102, columns.len() as u64);
    for column in columns {
        put_varint_field(&mut out, 100, 0); // no validity mask: every row is valid
        out.put_u16_le(102);
        match column {
            AppendColumn::Integer(v) => {
                put_varint(&mut out, (v.len() * 4) as u64);
                v.iter().for_each(|x| out.put_i32_le(*x));
            }
            AppendColumn::BigInt(v) => {
                put_varint(&mut out, (v.len() * 8) as u64);
                v.iter().for_each(|x| out.put_i64_le(*x));
            }
            AppendColumn::Varchar(v) => {
                put_varint(&mut out, v.len() as u64);
                for s in v {
                    put_varint(&mut out, s.len() as u64);
                    out.put_slice(s.as_bytes());
                }
            }
        }
        out.put_u16_le(END);
    }
    out.put_u16_le(END); // the DataChunk
    out.put_u16_le(END); // the chunk holder
    out.put_u16_le(END); // the body
    out.freeze()
}

/// What a client needs from a PREPARE_RESPONSE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub needs_more_fetch: bool,
    /// Byte range of the encoded result uuid (field 5, a hugeint: signed varint upper, varint
    /// lower), to be echoed in FETCH requests.
    pub uuid: Option<Range<usize>>,
}

/// Reads fields 1 (result types), 2 (names) and 3 (needs_more_fetch) of the PREPARE_RESPONSE
/// `buf`; field 4 (the chunks) is skipped by reading the uuid, the last field, from the end.
/// Only flat result types are understood.
pub fn parse_prepare_response(buf: &[u8], header: &Header) -> Result<Prepared, CodecError> {
    let mut r = Reader::new(buf, header.len);
    if r.peek_field_id()? == 1 {
        r.field_id()?;
        for _ in 0..r.varint()? {
            // LogicalType object: field 100 = type id; flat types have nothing else.
            loop {
                let at = r.pos;
                match r.field_id()? {
                    100 => {
                        r.varint()?;
                    }
                    END => break,
                    _ => {
                        return Err(CodecError::Malformed {
                            at,
                            what: "result type is not flat",
                        })
                    }
                }
            }
        }
    }
    if r.peek_field_id()? == 2 {
        r.field_id()?;
        for _ in 0..r.varint()? {
            r.string()?;
        }
    }
    let mut needs_more_fetch = false;
    if r.peek_field_id()? == 3 {
        r.field_id()?;
        needs_more_fetch = r.take(1)?[0] != 0;
    }
    Ok(Prepared {
        needs_more_fetch,
        uuid: uuid_from_end(buf),
    })
}

/// The body ends `05 00 <signed varint> <varint> FF FF`. A varint's last byte is the only one
/// with the high bit clear, so both varints can be found walking backwards.
fn uuid_from_end(buf: &[u8]) -> Option<Range<usize>> {
    let end = buf.len().checked_sub(2)?;
    if buf[end..] != END.to_le_bytes() {
        return None;
    }
    let varint_start = |last: usize| -> Option<usize> {
        if buf.get(last)? & 0x80 != 0 {
            return None;
        }
        let mut start = last;
        while start > 0 && buf[start - 1] & 0x80 != 0 {
            start -= 1;
        }
        Some(start)
    };
    let lower = varint_start(end.checked_sub(1)?)?;
    let upper = varint_start(lower.checked_sub(1)?)?;
    (upper >= 2 && buf[upper - 2..upper] == [5, 0]).then_some(upper..end)
}

/// Whether the FETCH_RESPONSE `buf` is the last: it has no results (field 1).
pub fn fetch_is_last(buf: &[u8], header: &Header) -> bool {
    Reader::new(buf, header.len).peek_field_id() != Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_connection_request, decode_header};
    use crate::encode::encode_disconnect;
    use crate::fixtures::{fixture, CID};

    #[test]
    fn requests_match_the_captured_cli_bytes() {
        assert_eq!(
            prepare_request(CID, 7, "SELECT 42"),
            fixture("prepare_request_select42.bin")
        );
        assert_eq!(encode_disconnect(CID), fixture("disconnect_request.bin"));
        assert_eq!(
            append_request(
                CID,
                10,
                "main",
                "t",
                &[
                    AppendColumn::Integer(vec![1, 2]),
                    AppendColumn::Varchar(vec!["a".into(), "b".into()]),
                ]
            ),
            fixture("append_request.bin")
        );
        // The captured FETCH carries its own result's uuid: rebuild it from that uuid.
        let captured = fixture("fetch_request.bin");
        // Header (43 bytes), then field 1 (`01 00`), the uuid, and `FF FF`.
        let uuid = &captured[45..captured.len() - 2];
        assert_eq!(fetch_request(CID, 14, uuid), captured);
    }

    #[test]
    fn a_connection_request_has_the_clis_body() {
        // The captured one differs only in its client_query_id.
        let captured = fixture("connection_request.bin");
        let mine = connection_request("secret1");
        let h1 = decode_header(&captured).unwrap();
        let h2 = decode_header(&mine).unwrap();
        assert_eq!(h2.msg_type, msg_type::CONNECTION_REQUEST);
        assert_eq!(&mine[h2.len..], &captured[h1.len..]);
        let req = decode_connection_request(&mine, &h2).unwrap();
        assert_eq!(&mine[req.token.unwrap()], b"secret1");
    }

    #[test]
    fn parses_responses() {
        let resp = fixture("prepare_response_needs_fetch_12chunks.bin");
        let h = decode_header(&resp).unwrap();
        assert_eq!(h.msg_type, msg_type::PREPARE_RESPONSE);
        let p = parse_prepare_response(&resp, &h).unwrap();
        assert!(p.needs_more_fetch);
        assert!(p.uuid.is_some());

        let resp = fixture("prepare_response_select42.bin");
        let h = decode_header(&resp).unwrap();
        let p = parse_prepare_response(&resp, &h).unwrap();
        assert!(!p.needs_more_fetch);
        // Two 10-byte varints: this uuid's upper and lower halves both use the full width.
        assert_eq!(p.uuid.unwrap().len(), 20);

        let resp = fixture("connection_response.bin");
        let h = decode_header(&resp).unwrap();
        assert_eq!(h.msg_type, msg_type::CONNECTION_RESPONSE);
        assert_eq!(h.connection_id(&resp), Some(CID));

        let resp = fixture("fetch_response_last_empty.bin");
        assert!(fetch_is_last(&resp, &decode_header(&resp).unwrap()));
    }
}
