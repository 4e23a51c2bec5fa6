//! Bounds-checked decoding of the parts of a message the gateway touches: the header, the
//! token of a CONNECTION_REQUEST, the text of an ERROR_RESPONSE.
//!
//! The DuckDB 1.5.5 server reads past the end of a truncated body, so the gateway answers
//! malformed input itself: the header is always checked, and the bodies of the small request
//! types whose layout is known (CONNECTION_REQUEST, PREPARE, FETCH, DISCONNECT) are checked in
//! full. Nothing here panics on any input. Pure, no I/O.

use std::ops::Range;

use crate::error::CodecError;
use crate::msg_type;
use crate::wire::{Reader, END};

/// The decoded message header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header field 1.
    pub msg_type: u64,
    /// Byte range of the connection id's text, if field 2 is present.
    pub connection_id: Option<Range<usize>>,
    /// Byte range of the whole field 2 (id, length and value), for rewriting.
    pub(crate) connection_id_field: Option<Range<usize>>,
    /// Length of the header object in bytes, `FF FF` included; the body starts here.
    pub len: usize,
}

impl Header {
    /// The connection id's bytes in `buf`, the buffer this header was decoded from.
    pub fn connection_id<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        self.connection_id.clone().and_then(|r| buf.get(r))
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
    let at = r.pos;
    let msg_type = r.varint()?;
    // DuckDB reads the type into one byte and drops the rest: 265 would be an APPEND (9) to
    // the worker and something else to every check here.
    if msg_type > u64::from(u8::MAX) {
        return Err(CodecError::Malformed {
            at,
            what: "message type past one byte",
        });
    }
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
    pub(crate) rest: Range<usize>,
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
/// are streamed: APPEND is walked as it goes ([`crate::RowCounter`]), and of types newer than
/// this codec only the header is checked.
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

/// The SQL text of a PREPARE_REQUEST (its field 1), if it has one.
pub fn prepare_sql<'a>(buf: &'a [u8], header: &Header) -> Option<&'a [u8]> {
    if header.msg_type != msg_type::PREPARE_REQUEST {
        return None;
    }
    let mut r = Reader::new(buf, header.len);
    if r.peek_field_id().ok()? != 1 {
        return None;
    }
    r.field_id().ok()?;
    buf.get(r.string().ok()?)
}

/// The result uuid a FETCH_REQUEST names (its field 1, as encoded), if it names one.
pub fn fetch_result<'a>(buf: &'a [u8], header: &Header) -> Option<&'a [u8]> {
    if header.msg_type != msg_type::FETCH_REQUEST {
        return None;
    }
    let mut r = Reader::new(buf, header.len);
    if r.field_id().ok()? != 1 {
        return None;
    }
    let from = r.pos;
    r.signed_varint().ok()?;
    r.varint().ok()?;
    Some(r.consumed_since(from))
}

/// The message text of an ERROR_RESPONSE, if `buf` is one.
pub fn error_message(buf: &[u8]) -> Option<&[u8]> {
    buf.get(error_text(buf)?.1)
}

/// Where an ERROR_RESPONSE's header ends and its message text lies, if `buf` is one.
pub(crate) fn error_text(buf: &[u8]) -> Option<(usize, Range<usize>)> {
    let header = decode_header(buf).ok()?;
    if header.msg_type != msg_type::ERROR_RESPONSE {
        return None;
    }
    let mut r = Reader::new(buf, header.len);
    if r.field_id().ok()? != 1 {
        return None;
    }
    Some((header.len, r.string().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{fixture, CID};

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
    fn a_prepares_sql_is_read_from_the_captured_message() {
        let buf = fixture("prepare_request_select42.bin");
        let header = decode_header(&buf).unwrap();
        assert_eq!(prepare_sql(&buf, &header), Some(&b"SELECT 42"[..]));
        let fetch = fixture("fetch_request.bin");
        assert_eq!(prepare_sql(&fetch, &decode_header(&fetch).unwrap()), None);
        assert_eq!(prepare_sql(&buf[..buf.len() - 4], &header), None);
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
                let _ = crate::encode::rewrite_header(&buf, &header, b"x");
                let _ = crate::client::parse_prepare_response(&buf, &header);
                let _ = crate::client::fetch_is_last(&buf, &header);
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
    fn the_text_of_an_error_response_is_found() {
        assert_eq!(
            error_message(&fixture("error_authentication_failed.bin")),
            Some(&b"Authentication failed"[..])
        );
        assert_eq!(error_message(&fixture("success_response.bin")), None);
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
    fn a_message_type_past_one_byte_is_malformed() {
        // 0x89 0x02 is 265, which DuckDB reads as 9 (APPEND).
        let disguised = [1, 0, 0x89, 0x02, 3, 0, 0, 0xff, 0xff];
        assert!(matches!(
            decode_header(&disguised),
            Err(CodecError::Malformed { .. })
        ));
        let two_byte_but_small = [1, 0, 0x89, 0x00, 3, 0, 0, 0xff, 0xff];
        assert_eq!(
            decode_header(&two_byte_but_small).map(|h| h.msg_type),
            Ok(9)
        );
    }
}
