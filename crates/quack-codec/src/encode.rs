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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_connection_request, decode_header, validate_request};
    use crate::fixtures::{fixture, CID};

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
