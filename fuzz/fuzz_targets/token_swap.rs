//! Any bytes as a CONNECTION_REQUEST, through what the gateway does to one before a worker or
//! a node sees it: decode it, hand its token to authentication, swap the token for the
//! internal one (or none, towards a node) and strip any connection id the client chose
//! (`quackgate::proxy::connect::outgoing_request`). Nothing may panic, and what leaves must
//! decode with exactly the new token, no client id, and every other byte the client's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quack_codec as codec;
use quackgate::proxy::connect::outgoing_request;

/// The worker's internal token, none (towards a node), and one over 127 bytes.
const TOKENS: [&[u8]; 3] = [b"internal-worker-token", b"", &[b'x'; 300]];

fuzz_target!(|data: &[u8]| {
    let Ok(header) = codec::decode_header(data) else {
        return;
    };
    let Ok(request) = codec::decode_connection_request(data, &header) else {
        return;
    };
    // What authentication is given.
    let _token = request.token.clone().and_then(|range| data.get(range));
    // Everything after the client's token.
    let rest = &data[request.token.as_ref().map_or(header.len, |t| t.end)..];
    for token in TOKENS {
        let out = outgoing_request(data, &header, &request, token)
            .expect("a swapped CONNECTION_REQUEST decodes");
        let h = codec::decode_header(&out).expect("the swapped header decodes");
        assert_eq!(h.msg_type, header.msg_type);
        assert_eq!(
            h.connection_id, None,
            "a client's connection id went through"
        );
        let r = codec::decode_connection_request(&out, &h).expect("the swapped body decodes");
        let sent = r.token.map(|t| &out[t]);
        assert_eq!(sent, Some(token), "the token sent is not the swapped one");
        assert!(out.ends_with(rest), "bytes after the token changed");
    }
});
