//! The peer leg's credentials: every request between quackgate processes of one cluster, and
//! every answer to one, is signed with a key derived from the shared id secret.
//!
//! A request's MAC covers who sends it, to which node, when, a nonce, the path, the Quack
//! message type, a grant when it opens a session, and a SHA-256 of the whole body; the
//! receiver refuses a nonce it has seen, so a captured request cannot be replayed or edited. An
//! answer's MAC covers the request's nonce, the node that answers, the status and a digest of
//! the body, so an answer cannot be forged, edited, or passed off as another request's (which
//! also makes the node's answer to a status request a proof of identity bound to that
//! request). The body's digest travels in a header the MAC covers, so a receiver refuses an
//! unsigned request before reading its body; bodies are read whole on both sides of the peer
//! leg, within `gateway.max_body_bytes`, and checked against the digest. A client token is never a peer credential.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::{Digest, Sha256};

use crate::keyring::KeyRing;
use crate::routable_id::SECRET_BYTES;

/// Header carrying the credential of a request on the peer leg.
pub const PEER_HEADER: &str = "quackgate-peer";
/// Header carrying the MAC of an answer on the peer leg.
pub const ANSWER_HEADER: &str = "quackgate-peer-answer";
/// Header carrying the SHA-256 of a peer request's body, which the MAC covers: the receiver
/// checks the credential before it reads the body, then the body against it.
pub const DIGEST_HEADER: &str = "quackgate-peer-digest";
/// Header carrying the grant of a session placed on a node (see [`crate::auth::Grant`]).
pub const GRANT_HEADER: &str = "quackgate-grant";
/// How old a request credential may be.
const MAX_AGE_SECS: u64 = 30;
/// How far ahead of ours a peer's clock may be.
const MAX_FUTURE_SECS: u64 = 5;
/// A nonce is remembered at least this long: past it, its credential is stale anyway (a
/// credential from a clock 5 s ahead stays fresh for 35 s, and times are whole seconds).
const REPLAY_WINDOW: Duration = Duration::from_secs(MAX_AGE_SECS + MAX_FUTURE_SECS + 2);
/// Bytes of a nonce.
const NONCE_BYTES: usize = 16;

/// Why a peer request, or a peer's answer, is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerAuthError {
    /// No or unparsable credential.
    #[error("missing or malformed peer credential")]
    Malformed,
    /// Too old or from the future.
    #[error("peer credential outside the allowed clock skew")]
    Stale,
    /// The MAC does not verify.
    #[error("peer credential does not verify")]
    Signature,
    /// The nonce was seen before.
    #[error("peer credential replayed")]
    Replayed,
}

/// A request's nonce, which its answer is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce([u8; NONCE_BYTES]);

/// What a request's MAC covers besides sender, time and nonce.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The node the request is for (or `cluster::ANY_NODE`): a request signed for one node
    /// does not verify on another.
    pub target: &'a str,
    /// The HTTP path.
    pub path: &'a str,
    /// The Quack message type, 0 for a request that is not a Quack message.
    pub msg_type: u64,
    /// SHA-256 of the whole body.
    pub body_sha256: [u8; 32],
    /// The grant header of a session being placed.
    pub grant: Option<&'a [u8]>,
}

/// The digest [`RequestFacts::body_sha256`] wants.
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// A request credential that verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The process that sent it.
    pub sender: String,
    pub nonce: Nonce,
}

/// Signs and verifies the peer leg. One per process.
#[derive(Debug)]
pub struct PeerKey {
    /// Signs with the current secret's key; a rotation's other secrets' keys only verify.
    keys: KeyRing,
    /// Random per process; a counter follows it, so nonces never repeat.
    nonce_prefix: [u8; 8],
    counter: AtomicU64,
    seen: Mutex<ReplayWindow>,
    /// The second this key was made: the nonces of credentials from earlier seconds were never
    /// seen by this process, so they are refused rather than replayable after a restart (what
    /// was captured in the very second of a restart stays open to a replay).
    born: u64,
}

#[derive(Debug)]
struct ReplayWindow {
    current: HashSet<Nonce>,
    previous: HashSet<Nonce>,
    since: Instant,
}

impl PeerKey {
    /// The key of the cluster whose id secret is `id_secret`.
    ///
    /// # Errors
    /// When the system random source fails.
    pub fn new(id_secret: &[u8; SECRET_BYTES]) -> Result<Self, getrandom::Error> {
        let key = derive(id_secret);
        let mut nonce_prefix = [0u8; 8];
        getrandom::fill(&mut nonce_prefix)?;
        Ok(PeerKey {
            keys: KeyRing::new(key, Vec::new()),
            nonce_prefix,
            counter: AtomicU64::new(0),
            seen: Mutex::new(ReplayWindow {
                current: HashSet::new(),
                previous: HashSet::new(),
                since: Instant::now(),
            }),
            born: unix_now(),
        })
    }

    /// Also verifies what peers sign under `previous` secrets (a rotation).
    pub fn with_previous(self, previous: &[&[u8; SECRET_BYTES]]) -> Self {
        self.keys.replace(
            self.keys.get().current.clone(),
            previous.iter().map(|s| derive(s)).collect(),
        );
        self
    }

    /// Puts new secrets in force; the nonces seen so far stay remembered.
    pub fn rotate(&self, id_secret: &[u8; SECRET_BYTES], previous: &[&[u8; SECRET_BYTES]]) {
        self.keys.replace(
            derive(id_secret),
            previous.iter().map(|s| derive(s)).collect(),
        );
    }

    /// The credential for a request from `sender`: `<sender>.<time>.<nonce>.<mac>`.
    pub fn sign_request(&self, sender: &str, facts: &RequestFacts<'_>) -> (HeaderValue, Nonce) {
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..8].copy_from_slice(&self.nonce_prefix);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        nonce[8..].copy_from_slice(&n.to_be_bytes());
        let nonce = Nonce(nonce);
        let ts = unix_now();
        let mac = request_mac(&self.keys.get().current, sender, ts, &nonce, facts);
        let value = format!(
            "{sender}.{ts}.{}.{}",
            hex::encode(nonce.0),
            hex::encode(mac.finalize().into_bytes())
        );
        (
            HeaderValue::from_str(&value).expect("node ids and hex are valid header text"),
            nonce,
        )
    }

    /// Checks a request's credential against what arrived (with this node as `target`), in
    /// constant time with respect to the MAC, and remembers its nonce.
    ///
    /// # Errors
    /// [`PeerAuthError`] when it is missing, stale, forged (or edited, or for another node) or
    /// replayed.
    pub fn verify_request(
        &self,
        credential: Option<&HeaderValue>,
        facts: &RequestFacts<'_>,
    ) -> Result<Verified, PeerAuthError> {
        let text = credential
            .and_then(|v| v.to_str().ok())
            .ok_or(PeerAuthError::Malformed)?;
        let mut parts = text.splitn(4, '.');
        let (Some(sender), Some(ts), Some(nonce_hex), Some(mac_hex)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PeerAuthError::Malformed);
        };
        let ts: u64 = ts.parse().map_err(|_| PeerAuthError::Malformed)?;
        let mut nonce = [0u8; NONCE_BYTES];
        hex::decode_to_slice(nonce_hex, &mut nonce).map_err(|_| PeerAuthError::Malformed)?;
        let nonce = Nonce(nonce);
        let claimed = hex::decode(mac_hex).map_err(|_| PeerAuthError::Malformed)?;
        let now = unix_now();
        if ts > now + MAX_FUTURE_SECS || now.saturating_sub(ts) > MAX_AGE_SECS || ts < self.born {
            return Err(PeerAuthError::Stale);
        }
        let verifies = |key: &Hmac<Sha256>| {
            request_mac(key, sender, ts, &nonce, facts)
                .verify_slice(&claimed)
                .is_ok()
        };
        if !self.keys.get().any(verifies) {
            return Err(PeerAuthError::Signature);
        }
        // Only after the MAC: nobody without the key can fill the window.
        self.first_sight(nonce)?;
        Ok(Verified {
            sender: sender.to_string(),
            nonce,
        })
    }

    /// The MAC header of node `me`'s answer to the request with `nonce`.
    pub fn sign_answer(&self, nonce: &Nonce, me: &str, status: u16, body: &[u8]) -> HeaderValue {
        let mac = answer_mac(&self.keys.get().current, nonce, me, status, body);
        HeaderValue::from_str(&hex::encode(mac.finalize().into_bytes()))
            .expect("hex is valid header text")
    }

    /// Checks that an answer came from node `from`, to the request with `nonce`, unchanged.
    ///
    /// # Errors
    /// [`PeerAuthError::Malformed`] without a MAC, [`PeerAuthError::Signature`] when it does
    /// not verify.
    pub fn verify_answer(
        &self,
        nonce: &Nonce,
        from: &str,
        status: u16,
        body: &[u8],
        mac: Option<&HeaderValue>,
    ) -> Result<(), PeerAuthError> {
        let claimed = mac
            .and_then(|v| v.to_str().ok())
            .and_then(|text| hex::decode(text).ok())
            .ok_or(PeerAuthError::Malformed)?;
        let verifies = |key: &Hmac<Sha256>| {
            answer_mac(key, nonce, from, status, body)
                .verify_slice(&claimed)
                .is_ok()
        };
        if self.keys.get().any(verifies) {
            Ok(())
        } else {
            Err(PeerAuthError::Signature)
        }
    }

    fn first_sight(&self, nonce: Nonce) -> Result<(), PeerAuthError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.since.elapsed() >= REPLAY_WINDOW {
            let current = std::mem::take(&mut seen.current);
            seen.previous = current;
            seen.since = Instant::now();
        }
        if seen.previous.contains(&nonce) || !seen.current.insert(nonce) {
            return Err(PeerAuthError::Replayed);
        }
        Ok(())
    }
}

/// The peer key of an id secret: a key of its own, derived so the cluster shares one secret,
/// not two.
fn derive(id_secret: &[u8; SECRET_BYTES]) -> Hmac<Sha256> {
    let mut derive = Hmac::<Sha256>::new_from_slice(id_secret).expect("any key length");
    derive.update(b"quackgate peer v2");
    Hmac::new_from_slice(&derive.finalize().into_bytes()).expect("any key length")
}

fn request_mac(
    key: &Hmac<Sha256>,
    sender: &str,
    ts: u64,
    nonce: &Nonce,
    facts: &RequestFacts<'_>,
) -> Hmac<Sha256> {
    let mut mac = key.clone();
    mac.update(b"request\0");
    for field in [
        sender.as_bytes(),
        ts.to_string().as_bytes(),
        &nonce.0,
        facts.target.as_bytes(),
        facts.path.as_bytes(),
        facts.msg_type.to_string().as_bytes(),
        // A tag byte, so that no grant and any grant never feed the MAC the same bytes.
        &[u8::from(facts.grant.is_some())],
        facts.grant.unwrap_or(b""),
    ] {
        framed(&mut mac, field);
    }
    mac.update(&facts.body_sha256);
    mac
}

fn answer_mac(
    key: &Hmac<Sha256>,
    nonce: &Nonce,
    node: &str,
    status: u16,
    body: &[u8],
) -> Hmac<Sha256> {
    let mut mac = key.clone();
    mac.update(b"answer\0");
    for field in [&nonce.0[..], node.as_bytes(), &status.to_be_bytes()] {
        framed(&mut mac, field);
    }
    mac.update(&Sha256::digest(body));
    mac
}

/// Length-prefixed, so that no two field lists feed the MAC the same bytes.
fn framed(mac: &mut Hmac<Sha256>, field: &[u8]) {
    mac.update(&(field.len() as u64).to_be_bytes());
    mac.update(field);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key as if made a minute ago, so credentials signed now are younger than it.
    fn key(secret: u8) -> PeerKey {
        let mut key = PeerKey::new(&[secret; SECRET_BYTES]).unwrap();
        key.born -= 60;
        key
    }

    #[test]
    fn credentials_older_than_the_process_are_refused_after_a_restart() {
        let edge = key(1);
        let (cred, _) = edge.sign_request("edge-a", &facts("n1", b"x"));
        let mut restarted = PeerKey::new(&[1; SECRET_BYTES]).unwrap();
        restarted.born += 1;
        assert_eq!(
            restarted
                .verify_request(Some(&cred), &facts("n1", b"x"))
                .unwrap_err(),
            PeerAuthError::Stale
        );
    }

    fn facts<'a>(target: &'a str, body: &'a [u8]) -> RequestFacts<'a> {
        RequestFacts {
            target,
            path: "/quack",
            msg_type: 3,
            body_sha256: body_digest(body),
            grant: None,
        }
    }

    #[test]
    fn a_request_verifies_once_on_the_node_it_is_for() {
        let (edge, node) = (key(1), key(1));
        let (cred, nonce) = edge.sign_request("edge-a", &facts("n1", b"PREPARE"));
        let ok = node
            .verify_request(Some(&cred), &facts("n1", b"PREPARE"))
            .unwrap();
        assert_eq!((ok.sender.as_str(), ok.nonce), ("edge-a", nonce));
        assert_eq!(
            node.verify_request(Some(&cred), &facts("n1", b"PREPARE"))
                .unwrap_err(),
            PeerAuthError::Replayed
        );
    }

    #[test]
    fn edited_foreign_misdirected_or_stale_requests_are_refused() {
        let edge = key(1);
        let node = key(1);
        let (cred, _) = edge.sign_request("edge-a", &facts("n1", b"SELECT 1"));
        let cases = [
            (
                node.verify_request(Some(&cred), &facts("n1", b"SELECT 2")),
                PeerAuthError::Signature,
            ),
            (
                key(2).verify_request(Some(&cred), &facts("n1", b"SELECT 1")),
                PeerAuthError::Signature,
            ),
            // Signed for n1, arriving at n2.
            (
                node.verify_request(Some(&cred), &facts("n2", b"SELECT 1")),
                PeerAuthError::Signature,
            ),
            (
                node.verify_request(None, &facts("n1", b"SELECT 1")),
                PeerAuthError::Malformed,
            ),
            (
                node.verify_request(
                    Some(&HeaderValue::from_static("the-client-token")),
                    &facts("n1", b"SELECT 1"),
                ),
                PeerAuthError::Malformed,
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got.unwrap_err(), want);
        }
        // A grant cannot be added to, or lifted from, a signed request.
        let granted = RequestFacts {
            grant: Some(b"rw.0.74657374"),
            ..facts("n1", b"x")
        };
        let (cred, _) = edge.sign_request("edge-a", &granted);
        let lifted = RequestFacts {
            grant: Some(b"rw.0.61646d696e"),
            ..granted
        };
        assert_eq!(
            node.verify_request(Some(&cred), &lifted).unwrap_err(),
            PeerAuthError::Signature
        );
        for ts in [unix_now() - 3600, unix_now() + 600] {
            let stale =
                HeaderValue::from_str(&format!("edge-a.{ts}.{}.00", "ab".repeat(16))).unwrap();
            assert_eq!(
                node.verify_request(Some(&stale), &facts("n1", b""))
                    .unwrap_err(),
                PeerAuthError::Stale
            );
        }
    }

    #[test]
    fn an_answer_verifies_only_for_its_request_node_status_and_body() {
        let (edge, node) = (key(1), key(1));
        let (_, nonce) = edge.sign_request("edge-a", &facts("n1", b"q"));
        let (_, other_nonce) = edge.sign_request("edge-a", &facts("n1", b"q"));
        let mac = node.sign_answer(&nonce, "n1", 200, b"answer");
        assert_eq!(
            edge.verify_answer(&nonce, "n1", 200, b"answer", Some(&mac)),
            Ok(())
        );
        for (n, from, status, body) in [
            (&other_nonce, "n1", 200, &b"answer"[..]),
            (&nonce, "n2", 200, b"answer"),
            (&nonce, "n1", 500, b"answer"),
            (&nonce, "n1", 200, b"answe"),
        ] {
            assert_eq!(
                edge.verify_answer(n, from, status, body, Some(&mac)),
                Err(PeerAuthError::Signature)
            );
        }
        assert_eq!(
            edge.verify_answer(&nonce, "n1", 200, b"answer", None),
            Err(PeerAuthError::Malformed)
        );
    }

    #[test]
    fn during_a_rotation_both_secrets_verify_and_the_new_one_signs() {
        let old = key(1);
        let rotated = key(2).with_previous(&[&[1; SECRET_BYTES]]);
        let (cred, nonce) = old.sign_request("edge-a", &facts("n1", b"x"));
        assert!(rotated
            .verify_request(Some(&cred), &facts("n1", b"x"))
            .is_ok());
        let mac = rotated.sign_answer(&nonce, "n1", 200, b"a");
        assert_eq!(
            old.verify_answer(&nonce, "n1", 200, b"a", Some(&mac)),
            Err(PeerAuthError::Signature),
            "signed with the new secret, which the old key does not know"
        );
        let back = key(1).with_previous(&[&[2; SECRET_BYTES]]);
        assert_eq!(
            back.verify_answer(&nonce, "n1", 200, b"a", Some(&mac)),
            Ok(())
        );
    }

    #[test]
    fn nonces_are_remembered_across_one_rotation() {
        let node = key(1);
        let nonce = Nonce([7; NONCE_BYTES]);
        node.first_sight(nonce).unwrap();
        node.seen.lock().unwrap().since -= REPLAY_WINDOW;
        assert_eq!(node.first_sight(nonce), Err(PeerAuthError::Replayed));
    }
}
