//! Any bytes as a Quack message, through every decoder the gateway runs on a client's body and
//! a worker's answer: the header, the full checks of the small request types, the text of an
//! ERROR_RESPONSE, the client-side readers of the bench, and the connection-id rewrite that
//! pins a session's messages to their worker (and the mint of a CONNECTION_RESPONSE), and the
//! audit's row counter, which also checks an APPEND whole. Nothing may panic, a rewritten
//! header must decode to what was written, and the row counter must count the same however the
//! answer is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quack_codec as codec;

/// Ids the rewrite puts in: none (stripped), a worker's, and one that needs a 2-byte length.
const IDS: [&[u8]; 3] = [b"", b"A424FCD8ACB5D3BB949C46D82A8E0530", &[b'Z'; 200]];

fuzz_target!(|data: &[u8]| {
    let _ = codec::error_message(data);
    let mut whole = codec::RowCounter::new();
    whole.feed(data);
    let mut cut = codec::RowCounter::new();
    let at = data
        .first()
        .map_or(0, |b| usize::from(*b) % (data.len() + 1));
    data[..at].chunks(3).for_each(|p| cut.feed(p));
    cut.feed(&data[at..]);
    let whole = whole.finish();
    assert_eq!(
        whole,
        cut.finish(),
        "the count depends on how the answer is cut"
    );
    // An APPEND passes the gateway's check exactly when the walk counts it.
    if let Ok(rows) = codec::check_append(data.to_vec()) {
        assert_eq!(whole.map(|w| w.rows), Some(rows));
        // What a worker is sent for it is an APPEND of the same rows with nothing left to
        // rewrite, however it arrived.
        let flat = codec::flatten_append(data.to_vec().into()).expect("a checked APPEND rewrites");
        assert_eq!(codec::check_append(flat.clone()), Ok(rows));
        assert_eq!(codec::flatten_append(flat.clone()).as_ref(), Ok(&flat));
        let mut streamed = codec::FlatAppend::new();
        let mut out = Vec::new();
        let mut drain = |streamed: &mut codec::FlatAppend| {
            while let Some(piece) = streamed.next_out().expect("a checked APPEND's rows") {
                out.extend_from_slice(&piece);
            }
        };
        for p in data[..at].chunks(3).chain([&data[at..]]) {
            streamed
                .push(p.to_vec().into())
                .expect("a checked APPEND streams");
            drain(&mut streamed);
        }
        let streamed_rows = streamed.finish().expect("a checked APPEND ends whole");
        drain(&mut streamed);
        assert_eq!((out.as_slice(), streamed_rows), (&flat[..], rows));
    } else {
        assert!(codec::flatten_append(data.to_vec().into()).is_err());
    }
    let Ok(header) = codec::decode_header(data) else {
        return;
    };
    assert!(header.len <= data.len());
    let valid = codec::validate_request(data, &header).is_ok();
    let _ = codec::parse_prepare_response(data, &header);
    let _ = codec::fetch_is_last(data, &header);
    let _ = codec::msg_type::name(header.msg_type);
    for id in IDS {
        let rewritten = codec::rewrite_header(data, &header, id);
        let back = codec::decode_header(&rewritten).expect("a rewritten header decodes");
        assert_eq!(back.len, rewritten.len());
        assert_eq!(back.msg_type, header.msg_type);
        let expected = (!id.is_empty()).then_some(id);
        assert_eq!(back.connection_id(&rewritten), expected);
        // The message as the worker gets it: the new header and the client's body.
        let mut whole = rewritten.to_vec();
        whole.extend_from_slice(&data[header.len..]);
        let whole_header = codec::decode_header(&whole).expect("the rewritten message decodes");
        assert_eq!(
            codec::validate_request(&whole, &whole_header).is_ok(),
            valid,
            "the id rewrite changed whether the body is valid"
        );
    }
});
