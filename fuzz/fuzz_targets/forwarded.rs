//! Any bytes as the `X-Forwarded-For` lines of a request, through the parser that picks the
//! address the failed-authentication backoff keys on (`TrustedProxies::client_ip`). The input
//! is one byte choosing the TCP peer, then header lines separated by `\n`. Nothing may panic,
//! and an untrusted peer is always judged by its own address.
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use quackgate::forwarded::{parse_net, TrustedProxies};

static TRUSTED: LazyLock<TrustedProxies> = LazyLock::new(|| {
    let nets = ["10.0.0.0/8", "192.168.1.1", "fd00::/8", "::1"];
    TrustedProxies::new(nets.iter().map(|n| parse_net(n).unwrap()).collect())
});

/// TCP peers: trusted (v4, v6, IPv4-mapped v6) and not.
static PEERS: LazyLock<Vec<IpAddr>> = LazyLock::new(|| {
    [
        "10.1.2.3",
        "fd00::5",
        "::ffff:10.9.9.9",
        "::1",
        "203.0.113.7",
        "2001:db8::1",
    ]
    .iter()
    .map(|p| p.parse().unwrap())
    .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let peer = PEERS[usize::from(pick) % PEERS.len()];
    let mut headers = HeaderMap::new();
    for line in rest.split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", value);
        }
    }
    let client = TRUSTED.client_ip(peer, &headers);
    if !TRUSTED.trusts(peer) {
        assert_eq!(
            client,
            peer.to_canonical(),
            "an untrusted peer chose its address"
        );
    }
});
