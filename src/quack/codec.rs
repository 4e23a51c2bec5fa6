//! Bounds-checked decoding and encoding of the parts of a Quack message the gateway touches.
//!
//! A message is DuckDB's BinarySerializer format: a header object then a body object. An object
//! is a run of `u16 LE field id` + value, ended by `FF FF`; integers are LEB128 and strings are
//! a LEB128 length and the bytes. Default values are omitted.
//!
//! The DuckDB 1.5.5 server reads past the end of a truncated body, so the gateway answers
//! malformed input itself: the header is always checked, and the bodies of the small request
//! types whose layout is known (CONNECTION_REQUEST, PREPARE, FETCH, DISCONNECT) are checked in
//! full. Nothing here panics on any input; every read is bounds-checked. Pure, no I/O.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::msg_type;

/// End-of-object marker.
const END: u16 = 0xFFFF;
/// Longest LEB128 encoding of a 64-bit value.
const MAX_VARINT_BYTES: usize = 10;
/// `client_query_id` of responses: an unset `optional_idx`.
const NO_QUERY_ID: u64 = u64::MAX;

/// Why bytes are not a Quack message the gateway can handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes end before the structure does. For a prefix, reading more may help.
    #[error("message truncated at byte {0}")]
    Truncated(usize),
    /// The bytes cannot be a Quack message.
    #[error("malformed message at byte {at}: {what}")]
    Malformed {
        /// Byte offset of the problem.
        at: usize,
        /// What was wrong.
        what: &'static str,
    },
}

/// The decoded message header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header field 1.
    pub msg_type: u64,
    /// Byte range of the connection id's text, if field 2 is present.
    pub connection_id: Option<Range<usize>>,
    /// Byte range of the whole field 2 (id, length and value), for rewriting.
    connection_id_field: Option<Range<usize>>,
    /// Length of the header object in bytes, `FF FF` included; the body starts here.
    pub len: usize,
}

impl Header {
    /// The connection id's bytes in `buf`, the buffer this header was decoded from.
    pub fn connection_id<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        self.connection_id.clone().and_then(|r| buf.get(r))
    }
}

/// A cursor over a byte slice whose every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    fn field_id(&mut self) -> Result<u16, CodecError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn peek_field_id(&self) -> Result<u16, CodecError> {
        Reader::new(self.buf, self.pos).field_id()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
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

    fn varint(&mut self) -> Result<u64, CodecError> {
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

    /// A signed LEB128 value; only its extent matters to the gateway.
    fn signed_varint(&mut self) -> Result<(), CodecError> {
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

    fn string(&mut self) -> Result<Range<usize>, CodecError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| CodecError::Malformed {
            at: self.pos,
            what: "string length too large",
        })?;
        let start = self.pos;
        self.take(len)?;
        Ok(start..self.pos)
    }

    fn end_of_object(&mut self) -> Result<(), CodecError> {
        let at = self.pos;
        if self.field_id()? != END {
            return Err(CodecError::Malformed {
                at,
                what: "unexpected field",
            });
        }
        Ok(())
    }

    fn end_of_message(&mut self) -> Result<(), CodecError> {
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

/// Decodes the header at the start of `buf`.
///
/// The v1 header is field 1 (type), optional field 2 (connection id) and field 3
/// (client_query_id, which the server requires), then `FF FF`. `Truncated` means `buf` is a
/// prefix that ends inside the header.
pub fn decode_header(buf: &[u8]) -> Result<Header, CodecError> {
    let mut r = Reader::new(buf, 0);
    if r.field_id()? != 1 {
        return Err(CodecError::Malformed {
            at: 0,
            what: "message does not start with header field 1",
        });
    }
    let msg_type = r.varint()?;
    let mut connection_id = None;
    let mut connection_id_field = None;
    let mut field = r.field_id()?;
    if field == 2 {
        let field_start = r.pos - 2;
        connection_id = Some(r.string()?);
        connection_id_field = Some(field_start..r.pos);
        field = r.field_id()?;
    }
    if field != 3 {
        return Err(CodecError::Malformed {
            at: r.pos - 2,
            what: "header lacks client_query_id (field 3)",
        });
    }
    r.varint()?;
    r.end_of_object()?;
    Ok(Header {
        msg_type,
        connection_id,
        connection_id_field,
        len: r.pos,
    })
}

/// A CONNECTION_REQUEST, as far as the gateway reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRequest {
    /// Byte range of the token (body field 1); `None` when the client sent an empty token.
    pub token: Option<Range<usize>>,
    /// Byte range of everything after field 1, copied unchanged when the token is swapped.
    rest: Range<usize>,
}

/// Decodes and fully validates a CONNECTION_REQUEST whose header is `header`.
pub fn decode_connection_request(
    buf: &[u8],
    header: &Header,
) -> Result<ConnectionRequest, CodecError> {
    let mut r = Reader::new(buf, header.len);
    let mut token = None;
    if r.peek_field_id()? == 1 {
        r.field_id()?;
        token = Some(r.string()?);
    }
    let rest_start = r.pos;
    // 2 client version, 3 platform: strings; 4, 5 min/max quack version: varints. Each may be
    // omitted, but they come in order.
    let mut last = 1;
    loop {
        let at = r.pos;
        let field = r.field_id()?;
        match field {
            END => break,
            f if f <= last => {
                return Err(CodecError::Malformed {
                    at,
                    what: "fields out of order",
                })
            }
            2 | 3 => {
                r.string()?;
            }
            4 | 5 => {
                r.varint()?;
            }
            _ => {
                return Err(CodecError::Malformed {
                    at,
                    what: "unknown CONNECTION_REQUEST field",
                })
            }
        }
        last = field;
    }
    if r.pos != buf.len() {
        return Err(CodecError::Malformed {
            at: r.pos,
            what: "bytes after the end of the message",
        });
    }
    Ok(ConnectionRequest {
        token,
        rest: rest_start..buf.len(),
    })
}

/// Checks the whole body of the request types whose layout is known and small. Other types
/// (APPEND, and types newer than this gateway) are streamed; only their header is checked.
pub fn validate_request(buf: &[u8], header: &Header) -> Result<(), CodecError> {
    let mut r = Reader::new(buf, header.len);
    match header.msg_type {
        msg_type::CONNECTION_REQUEST => decode_connection_request(buf, header).map(|_| ()),
        msg_type::PREPARE_REQUEST => {
            if r.peek_field_id()? == 1 {
                r.field_id()?;
                r.string()?;
            }
            r.end_of_message()
        }
        msg_type::FETCH_REQUEST => {
            // field 1: result uuid, a hugeint written as signed upper + unsigned lower.
            if r.peek_field_id()? == 1 {
                r.field_id()?;
                r.signed_varint()?;
                r.varint()?;
            }
            r.end_of_message()
        }
        msg_type::DISCONNECT => r.end_of_message(),
        _ => Ok(()),
    }
}

/// The CONNECTION_REQUEST `buf` with its token replaced by `token`.
pub fn replace_token(buf: &[u8], header: &Header, req: &ConnectionRequest, token: &[u8]) -> Bytes {
    let rest = &buf[req.rest.clone()];
    let mut out = BytesMut::with_capacity(header.len + token.len() + rest.len() + 12);
    out.put_slice(&buf[..header.len]);
    put_string_field(&mut out, 1, token);
    out.put_slice(rest);
    out.freeze()
}

/// The header of `buf` with its connection id replaced by `id` (or removed when `id` is
/// empty, as the serializer omits empty strings). The body is not included.
pub fn rewrite_header(buf: &[u8], header: &Header, id: &[u8]) -> Bytes {
    let (before, after) = match &header.connection_id_field {
        Some(field) => (field.start, field.end),
        // No field 2: it goes right after field 1, where the serializer would put it.
        None => {
            let mut r = Reader::new(buf, 2);
            let end_of_type = r.varint().map(|_| r.pos).unwrap_or(header.len);
            (end_of_type, end_of_type)
        }
    };
    let mut out = BytesMut::with_capacity(header.len + id.len() + 4);
    out.put_slice(&buf[..before]);
    if !id.is_empty() {
        put_string_field(&mut out, 2, id);
    }
    out.put_slice(&buf[after..header.len]);
    out.freeze()
}

/// A DISCONNECT for connection `id`, byte for byte as the DuckDB client writes it.
pub fn encode_disconnect(id: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(id.len() + 24);
    out.put_u16_le(1);
    put_varint(&mut out, msg_type::DISCONNECT);
    put_string_field(&mut out, 2, id);
    out.put_u16_le(3);
    put_varint(&mut out, NO_QUERY_ID);
    out.put_u16_le(END);
    out.put_u16_le(END);
    out.freeze()
}

/// An ERROR_RESPONSE carrying `message`, byte for byte as the DuckDB server writes it.
pub fn encode_error_response(message: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 32);
    out.put_u16_le(1);
    put_varint(&mut out, msg_type::ERROR_RESPONSE);
    out.put_u16_le(3);
    put_varint(&mut out, NO_QUERY_ID);
    out.put_u16_le(END);
    put_string_field(&mut out, 1, message.as_bytes());
    out.put_u16_le(END);
    out.freeze()
}

/// The message text of an ERROR_RESPONSE, if `buf` is one.
pub fn error_message(buf: &[u8]) -> Option<&[u8]> {
    let header = decode_header(buf).ok()?;
    if header.msg_type != msg_type::ERROR_RESPONSE {
        return None;
    }
    let mut r = Reader::new(buf, header.len);
    if r.field_id().ok()? != 1 {
        return None;
    }
    let text = r.string().ok()?;
    buf.get(text)
}

fn put_string_field(out: &mut BytesMut, field: u16, value: &[u8]) {
    out.put_u16_le(field);
    put_varint(out, value.len() as u64);
    out.put_slice(value);
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/quack/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    const CID: &[u8] = b"A424FCD8ACB5D3BB949C46D82A8E0530";

    #[test]
    fn a_disconnect_is_encoded_as_the_client_does() {
        let captured = fixture("disconnect_request.bin");
        let header = decode_header(&captured).unwrap();
        let id = header.connection_id(&captured).unwrap();
        assert_eq!(encode_disconnect(id).as_ref(), &captured[..]);
        let mine = encode_disconnect(b"q2.n0.0.rw.0.00000000.x.y");
        validate_request(&mine, &decode_header(&mine).unwrap()).unwrap();
    }

    #[test]
    fn every_request_fixture_decodes_with_its_type_and_id() {
        for (name, t, id) in [
            ("connection_request.bin", 1, None),
            ("connection_request_adbc.bin", 1, None),
            ("prepare_request_select42.bin", 3, Some(CID)),
            ("fetch_request.bin", 7, Some(CID)),
            ("append_request.bin", 9, Some(CID)),
            ("disconnect_request.bin", 11, Some(CID)),
        ] {
            let buf = fixture(name);
            let header = decode_header(&buf).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(header.msg_type, t, "{name}");
            assert_eq!(header.connection_id(&buf), id, "{name}");
            validate_request(&buf, &header).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn every_response_fixture_decodes() {
        for (name, t) in [
            ("connection_response.bin", 2),
            ("prepare_response_select42.bin", 4),
            ("prepare_response_needs_fetch_12chunks.bin", 4),
            ("fetch_response_last_empty.bin", 8),
            ("success_response.bin", 10),
            ("error_invalid_connection_id.bin", 100),
        ] {
            let buf = fixture(name);
            assert_eq!(decode_header(&buf).unwrap().msg_type, t, "{name}");
        }
    }

    #[test]
    fn every_strict_prefix_of_a_header_is_truncated_not_malformed() {
        let buf = fixture("prepare_request_select42.bin");
        let len = decode_header(&buf).unwrap().len;
        for cut in 0..len {
            assert!(
                matches!(decode_header(&buf[..cut]), Err(CodecError::Truncated(_))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_truncated_known_body_is_rejected() {
        for name in [
            "connection_request.bin",
            "prepare_request_select42.bin",
            "fetch_request.bin",
            "disconnect_request.bin",
        ] {
            let buf = fixture(name);
            let header = decode_header(&buf).unwrap();
            for cut in header.len..buf.len() {
                assert!(
                    validate_request(&buf[..cut], &header).is_err(),
                    "{name} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn a_prepare_whose_sql_length_runs_past_the_end_is_rejected() {
        let mut buf = fixture("prepare_request_select42.bin");
        let header = decode_header(&buf).unwrap();
        buf[header.len + 2] = 0x7F; // claims 127 bytes of SQL, has 9
        assert!(validate_request(&buf, &header).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed: u64 = 0x2545F4914F6CDD1D;
        for len in 0..300 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            if let Ok(header) = decode_header(&buf) {
                let _ = validate_request(&buf, &header);
                let _ = rewrite_header(&buf, &header, b"x");
            }
            let _ = error_message(&buf);
        }
        let mut overlong = vec![0x01, 0x00];
        overlong.extend([0xFF; 12]);
        assert!(matches!(
            decode_header(&overlong),
            Err(CodecError::Malformed { .. })
        ));
    }

    #[test]
    fn error_responses_are_byte_identical_to_the_servers() {
        assert_eq!(
            encode_error_response("Invalid connection id").as_ref(),
            fixture("error_invalid_connection_id.bin")
        );
        assert_eq!(
            encode_error_response("Authentication failed").as_ref(),
            fixture("error_authentication_failed.bin")
        );
        assert_eq!(
            error_message(&fixture("error_authentication_failed.bin")),
            Some(&b"Authentication failed"[..])
        );
        assert_eq!(error_message(&fixture("success_response.bin")), None);
    }

    #[test]
    fn the_token_is_found_and_replaced_keeping_every_other_field() {
        for name in ["connection_request.bin", "connection_request_adbc.bin"] {
            let buf = fixture(name);
            let header = decode_header(&buf).unwrap();
            let req = decode_connection_request(&buf, &header).unwrap();
            assert_eq!(&buf[req.token.clone().unwrap()], b"secret1");
            let swapped = replace_token(&buf, &header, &req, b"internal-worker-token");
            let h2 = decode_header(&swapped).unwrap();
            let req2 = decode_connection_request(&swapped, &h2).unwrap();
            assert_eq!(&swapped[req2.token.unwrap()], b"internal-worker-token");
            assert_eq!(&swapped[req2.rest], &buf[req.rest]);
        }
    }

    #[test]
    fn a_connection_request_without_a_token_decodes_with_none() {
        // The serializer omits an empty token; the gateway must still see "no token".
        let buf = fixture("connection_request.bin");
        let header = decode_header(&buf).unwrap();
        let mut no_token = buf[..header.len].to_vec();
        no_token.extend_from_slice(&buf[header.len + 2 + 1 + 7..]);
        let req = decode_connection_request(&no_token, &header).unwrap();
        assert_eq!(req.token, None);
    }

    #[test]
    fn rewriting_the_id_reproduces_the_proxy_tagged_fixture() {
        let buf = fixture("connection_response_tagged_by_proxy.bin");
        let header = decode_header(&buf).unwrap();
        let tagged = header.connection_id(&buf).unwrap();
        assert!(tagged.starts_with(b"backend-07."));
        let plain_header = rewrite_header(&buf, &header, &tagged[11..]);
        let back = decode_header(&plain_header).unwrap();
        assert_eq!(back.connection_id(&plain_header), Some(&tagged[11..]));
        assert_eq!(back.len, plain_header.len());
        let mut whole = rewrite_header(&plain_header, &back, tagged).to_vec();
        whole.extend_from_slice(&buf[header.len..]);
        assert_eq!(whole, buf);
    }

    #[test]
    fn an_id_can_be_removed_and_added_back() {
        let buf = fixture("prepare_request_select42.bin");
        let header = decode_header(&buf).unwrap();
        let none = rewrite_header(&buf, &header, b"");
        let h = decode_header(&none).unwrap();
        assert_eq!(h.connection_id, None);
        let again = rewrite_header(&none, &h, CID);
        assert_eq!(again.as_ref(), &buf[..header.len]);
    }

    #[test]
    fn ids_of_128_bytes_or_more_get_a_two_byte_length() {
        let buf = fixture("prepare_request_select42.bin");
        let header = decode_header(&buf).unwrap();
        let long = vec![b'Z'; 300];
        let out = rewrite_header(&buf, &header, &long);
        let h = decode_header(&out).unwrap();
        assert_eq!(h.connection_id(&out), Some(&long[..]));
    }
}
