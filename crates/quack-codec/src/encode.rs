//! The messages the gateway writes: a CONNECTION_REQUEST with the token swapped, a header with
//! the connection id rewritten, and the DISCONNECT and ERROR_RESPONSE it sends on its own,
//! byte for byte as DuckDB writes them.

use bytes::{BufMut, Bytes, BytesMut};

use crate::decode::{ConnectionRequest, Header};
use crate::msg_type;
use crate::wire::{put_header, put_string_field, Reader, END, NO_QUERY_ID};

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
    put_header(&mut out, msg_type::DISCONNECT, Some(id), NO_QUERY_ID);
    out.put_u16_le(END);
    out.freeze()
}

/// An ERROR_RESPONSE carrying `message`, byte for byte as the DuckDB server writes it.
pub fn encode_error_response(message: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 32);
    put_header(&mut out, msg_type::ERROR_RESPONSE, None, NO_QUERY_ID);
    put_string_field(&mut out, 1, message.as_bytes());
    out.put_u16_le(END);
    out.freeze()
}

/// Where DuckDB 1.5.5 appends a stack trace to an internal error's text.
const STACK_TRACE: &str = "\n\nStack Trace:\n";
/// What DuckDB writes after the trace, when it writes anything.
const AFTER_STACK_TRACE: &str = "\nThis error signals";

/// The ERROR_RESPONSE `buf` without the stack trace DuckDB puts in an internal error's text:
/// the worker binary's path and load address are no client's business, and help whoever
/// turns a crash into more. `None` when `buf` is not an ERROR_RESPONSE or has no trace.
pub fn without_stack_trace(buf: &[u8]) -> Option<Bytes> {
    let (header_len, text) = crate::decode::error_text(buf)?;
    let message = std::str::from_utf8(&buf[text.clone()]).ok()?;
    if !message.contains(STACK_TRACE) {
        return None;
    }
    let mut kept = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(STACK_TRACE) {
        kept.push_str(&rest[..at]);
        let trace = &rest[at + STACK_TRACE.len()..];
        rest = trace
            .find(AFTER_STACK_TRACE)
            .map_or("", |end| &trace[end..]);
    }
    kept.push_str(rest);
    kept.push_str("\n(quackgate: the stack trace was removed; it is in no log either)");
    let mut out = BytesMut::with_capacity(buf.len());
    out.put_slice(&buf[..header_len]);
    put_string_field(&mut out, 1, kept.as_bytes());
    out.put_slice(&buf[text.end..]);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_connection_request, decode_header, validate_request};
    use crate::fixtures::{fixture, CID};

    #[test]
    fn an_internal_errors_stack_trace_is_cut_and_the_rest_kept() {
        let trace = "/opt/quackgate(+0x14fbdab) [0x55de884b2dab]\n/lib/libc.so.6(+0x29d90) [0x7f0]";
        let text = format!(
            "INTERNAL Error: Failed to append: index 1\n\nStack Trace:\n{trace}\nThis error signals an assertion failure within DuckDB.\n\nStack Trace:\n{trace}"
        );
        let mut answer = encode_error_response(&text).to_vec();
        // Whatever follows the message stays as it was.
        answer.truncate(answer.len() - 2);
        answer.extend_from_slice(&[2, 0, 0, 0xff, 0xff]);
        let cut = without_stack_trace(&answer).unwrap();
        let said = std::str::from_utf8(crate::error_message(&cut).unwrap()).unwrap();
        assert_eq!(
            said,
            "INTERNAL Error: Failed to append: index 1\nThis error signals an assertion failure within DuckDB.\n(quackgate: the stack trace was removed; it is in no log either)"
        );
        assert!(cut.ends_with(&[2, 0, 0, 0xff, 0xff]));
        assert_eq!(&cut[..3], &answer[..3]);
        assert_eq!(
            without_stack_trace(&encode_error_response("Invalid connection id")),
            None
        );
        assert_eq!(
            without_stack_trace(&fixture("prepare_response_select42.bin")),
            None
        );
        assert_eq!(
            without_stack_trace(&answer[..answer.len() - 20]),
            None,
            "cut short"
        );
    }

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
    fn error_responses_are_byte_identical_to_the_servers() {
        assert_eq!(
            encode_error_response("Invalid connection id").as_ref(),
            fixture("error_invalid_connection_id.bin")
        );
        assert_eq!(
            encode_error_response("Authentication failed").as_ref(),
            fixture("error_authentication_failed.bin")
        );
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
