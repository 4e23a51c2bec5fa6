//! Any bytes as a connection id, through the parser and verifier every session message goes
//! through (`IdSigner::verify`), under a signer in mid-rotation (a current and a previous
//! secret). Nothing may panic; an id that verifies must re-mint to itself under the secret that
//! signed it. The same bytes also drive a mint of their own (node, worker, grant, worker id),
//! which must verify back to exactly what was minted.
#![no_main]

use std::sync::LazyLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use quackgate::auth::Access;
use quackgate::routable_id::{Grant, IdSigner, MAX_NODE_ID_LEN, SECRET_BYTES};

/// The secrets the seed ids in `corpus/routable_id` were minted under.
const CURRENT: [u8; SECRET_BYTES] = [7; SECRET_BYTES];
const PREVIOUS: [u8; SECRET_BYTES] = [9; SECRET_BYTES];

static ROTATING: LazyLock<IdSigner> = LazyLock::new(|| IdSigner::with_keys(&CURRENT, &[&PREVIOUS]));
static ONLY_CURRENT: LazyLock<IdSigner> = LazyLock::new(|| IdSigner::new(&CURRENT));
static ONLY_PREVIOUS: LazyLock<IdSigner> = LazyLock::new(|| IdSigner::new(&PREVIOUS));

/// What a node mints an id from.
#[derive(Arbitrary, Debug)]
struct Minted {
    node: String,
    worker: u16,
    read_only: bool,
    expires_at: Option<u64>,
    principal: String,
    inner_id: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    if let Ok(route) = ROTATING.verify(data) {
        // Only an id minted under one of the two secrets verifies, byte for byte.
        let again =
            |signer: &IdSigner| signer.mint(route.node, route.worker, &route.grant, route.inner_id);
        assert!(
            again(&ONLY_CURRENT) == data || again(&ONLY_PREVIOUS) == data,
            "an id verified that neither secret mints"
        );
    }

    let Ok(m) = Minted::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    // What config validation admits as a node id, and what a worker issues (never empty).
    let node_ok = !m.node.is_empty()
        && m.node.len() <= MAX_NODE_ID_LEN
        && m.node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !node_ok || m.inner_id.is_empty() {
        return;
    }
    let access = if m.read_only {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let grant = Grant::new(access, m.expires_at.filter(|e| *e != 0), &m.principal);
    let id = ROTATING.mint(&m.node, m.worker, &grant, &m.inner_id);
    let route = ROTATING.verify(&id).expect("a minted id verifies");
    assert_eq!(route.node, m.node);
    assert_eq!(route.worker, m.worker);
    assert_eq!(route.grant, grant);
    assert_eq!(route.inner_id, &m.inner_id[..]);
    assert!(
        ONLY_PREVIOUS.verify(&id).is_err(),
        "the previous secret verified a new id"
    );
});
