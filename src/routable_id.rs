//! Signed, routable connection ids: any gateway replica that holds the id secret can tell which
//! node and worker own a Quack session, and what the session may do, from the id alone, with
//! no shared state and no cookies (the QUIC-LB idea).
//!
//! The DuckDB client treats the connection id as an opaque string of any length, so the gateway
//! replaces the worker's id in the CONNECTION_RESPONSE with
//!
//! ```text
//! q2.<node>.<worker>.<access>.<exp>.<principal>.<mac>.<worker's id>
//! ```
//!
//! and strips it back before forwarding. `q2` versions the format. `<access>` is `rw` or `ro`,
//! `<exp>` the hex expiry of the credential the session was opened with (`0`: none), and
//! `<principal>` 32 bits of SHA-256 of the principal's name: the session's grant travels with
//! it, so every node enforces it. `<mac>` is HMAC-SHA256 over everything else, truncated to
//! 128 bits, hex. A forged or edited id fails the MAC and is never forwarded, so a client can
//! neither steer its requests into another worker or another client's session, nor lift its
//! own session to read-write or past its expiry.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::auth::access::Access;
use crate::keyring::{Key, KeyRing};

/// Version tag of the current format.
const VERSION: &str = "q2";
/// Bytes of HMAC-SHA256 kept in the id.
const MAC_BYTES: usize = 16;
/// Length of the shared secret.
pub const SECRET_BYTES: usize = 32;
/// Longest node id: with the worker's 32-character id the whole id stays under 128 bytes, a
/// one-byte length on the wire.
pub const MAX_NODE_ID_LEN: usize = 24;

/// The secret that signs connection ids, shared by every node of one cluster. `Debug` never
/// shows it.
#[derive(Clone)]
pub struct IdSecret([u8; SECRET_BYTES]);

impl fmt::Debug for IdSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdSecret(<redacted>)")
    }
}

impl IdSecret {
    /// A secret read from `gateway.id_secret_file`.
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> Self {
        IdSecret(bytes)
    }

    /// A secret from its file's text: 64 hex characters (`openssl rand -hex 32`), white space
    /// around them ignored.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut secret = [0u8; SECRET_BYTES];
        hex::decode_to_slice(text.trim(), &mut secret).ok()?;
        Some(IdSecret(secret))
    }

    /// A secret for this process alone, when none is configured.
    ///
    /// # Errors
    /// If the system random source fails.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(IdSecret(bytes))
    }

    /// The bytes, for the signers.
    pub fn expose(&self) -> &[u8; SECRET_BYTES] {
        &self.0
    }
}

/// Why an id does not route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not in the `q2.` format.
    #[error("connection id is not a quackgate id")]
    Format,
    /// The MAC does not match: forged, tampered, or minted under another secret.
    #[error("connection id signature does not verify")]
    Signature,
}

/// What a session may do, sealed into its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Read-write or read-only.
    pub access: Access,
    /// When the credential the session was opened with expires, in seconds since the epoch.
    pub expires_at: Option<u64>,
    /// The first 32 bits of SHA-256 of the principal's name.
    pub principal_tag: u32,
}

impl Grant {
    /// The grant of a session opened by principal `name`.
    pub fn new(access: Access, expires_at: Option<u64>, name: &str) -> Self {
        let digest = Sha256::digest(name.as_bytes());
        Grant {
            access,
            expires_at,
            principal_tag: u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]),
        }
    }
}

/// Where a session lives and what it may do, as named by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// The gateway node whose worker holds the session.
    pub node: &'a str,
    /// The worker's index on that node.
    pub worker: u16,
    /// What the session may do.
    pub grant: Grant,
    /// The id the worker itself issued.
    pub inner_id: &'a [u8],
}

/// Mints and verifies ids under one secret, and under a rotation's other secrets for
/// verifying only. Cheap to clone; clones share the keys, which [`IdSigner::rotate`] replaces.
#[derive(Clone)]
pub struct IdSigner {
    keys: Arc<KeyRing>,
}

impl fmt::Debug for IdSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdSigner(<secret>)")
    }
}

impl IdSigner {
    /// A signer over `secret`, which every replica of one cluster shares.
    pub fn new(secret: &[u8; SECRET_BYTES]) -> Self {
        Self::with_keys(secret, &[])
    }

    /// Also accepts ids minted under `previous` secrets (a rotation: the new secret mints while
    /// the old one still verifies the sessions it signed). An id that matches no key costs one
    /// MAC per key.
    pub fn with_keys(secret: &[u8; SECRET_BYTES], previous: &[&[u8; SECRET_BYTES]]) -> Self {
        IdSigner {
            keys: Arc::new(KeyRing::new(
                key(secret),
                previous.iter().map(|s| key(s)).collect(),
            )),
        }
    }

    /// Puts new secrets in force for this signer and all its clones.
    pub fn rotate(&self, secret: &[u8; SECRET_BYTES], previous: &[&[u8; SECRET_BYTES]]) {
        self.keys
            .replace(key(secret), previous.iter().map(|s| key(s)).collect());
    }

    /// The routable id for a session that `worker` on `node` issued as `inner_id`.
    pub fn mint(&self, node: &str, worker: u16, grant: &Grant, inner_id: &[u8]) -> Vec<u8> {
        let access = match grant.access {
            Access::ReadWrite => "rw",
            Access::ReadOnly => "ro",
        };
        let prefix = format!(
            "{VERSION}.{node}.{worker}.{access}.{:x}.{:08x}.",
            grant.expires_at.unwrap_or(0),
            grant.principal_tag
        );
        let tag = self.tag(prefix.as_bytes(), inner_id);
        let mut id = Vec::with_capacity(prefix.len() + MAC_BYTES * 2 + 1 + inner_id.len());
        id.extend_from_slice(prefix.as_bytes());
        id.extend_from_slice(hex::encode(&tag[..MAC_BYTES]).as_bytes());
        id.push(b'.');
        id.extend_from_slice(inner_id);
        id
    }

    /// Parses and verifies an id, in constant time with respect to the MAC.
    pub fn verify<'a>(&self, id: &'a [u8]) -> Result<Route<'a>, IdError> {
        let mut parts = id.splitn(8, |b| *b == b'.');
        let mut next = || parts.next().ok_or(IdError::Format);
        let (version, node, worker_raw, access_raw, exp_raw, principal_raw, mac_hex, inner_id) = (
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
        );
        if version != VERSION.as_bytes() || node.is_empty() || inner_id.is_empty() {
            return Err(IdError::Format);
        }
        let node = std::str::from_utf8(node).map_err(|_| IdError::Format)?;
        let worker: u16 = decimal(worker_raw).ok_or(IdError::Format)?;
        let access = match access_raw {
            b"rw" => Access::ReadWrite,
            b"ro" => Access::ReadOnly,
            _ => return Err(IdError::Format),
        };
        let expires_at = match lower_hex(exp_raw, 16).ok_or(IdError::Format)? {
            0 => None,
            exp => Some(exp),
        };
        if principal_raw.len() != 8 {
            return Err(IdError::Format);
        }
        let principal_tag = u32::try_from(lower_hex(principal_raw, 8).ok_or(IdError::Format)?)
            .map_err(|_| IdError::Format)?;
        // Only the lowercase spelling is valid, so every character of an id is significant.
        if mac_hex.iter().any(u8::is_ascii_uppercase) {
            return Err(IdError::Format);
        }
        let mut claimed = [0u8; MAC_BYTES];
        hex::decode_to_slice(mac_hex, &mut claimed).map_err(|_| IdError::Format)?;
        // The MAC covers the prefix exactly as sent, so any edit to it fails.
        let prefix_len = id.len() - inner_id.len() - mac_hex.len() - 1;
        let prefix = id.get(..prefix_len).ok_or(IdError::Format)?;
        let verifies = |key: &Hmac<Sha256>| {
            let mut mac = key.clone();
            mac.update(prefix);
            mac.update(inner_id);
            mac.verify_truncated_left(&claimed).is_ok()
        };
        if !self.keys.get().any(verifies) {
            return Err(IdError::Signature);
        }
        Ok(Route {
            node,
            worker,
            grant: Grant {
                access,
                expires_at,
                principal_tag,
            },
            inner_id,
        })
    }

    fn tag(&self, prefix: &[u8], inner_id: &[u8]) -> [u8; 32] {
        let mut mac = self.keys.get().current.clone();
        mac.update(prefix);
        mac.update(inner_id);
        mac.finalize().into_bytes().into()
    }
}

fn key(secret: &[u8; SECRET_BYTES]) -> Key {
    Key::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// A decimal number without sign or leading zeros.
fn decimal(raw: &[u8]) -> Option<u16> {
    if raw.is_empty() || (raw.len() > 1 && raw[0] == b'0') || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// Lowercase hex of at most `max` digits.
fn lower_hex(raw: &[u8], max: usize) -> Option<u64> {
    if raw.is_empty()
        || raw.len() > max
        || !raw
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(raw).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INNER: &[u8] = b"A424FCD8ACB5D3BB949C46D82A8E0530";

    fn signer(byte: u8) -> IdSigner {
        IdSigner::new(&[byte; SECRET_BYTES])
    }

    #[test]
    fn during_a_rotation_ids_of_the_previous_secret_still_route() {
        let g = Grant::new(Access::ReadWrite, None, "alice");
        let old_id = signer(1).mint("n0", 0, &g, b"inner");
        let rotated = IdSigner::with_keys(&[2; SECRET_BYTES], &[&[1; SECRET_BYTES]]);
        assert_eq!(rotated.verify(&old_id).unwrap().inner_id, b"inner");
        assert_eq!(signer(2).verify(&old_id), Err(IdError::Signature));
        // New ids are minted under the new secret only.
        let new_id = rotated.mint("n0", 0, &g, b"inner");
        assert!(signer(2).verify(&new_id).is_ok());
        assert_eq!(signer(1).verify(&new_id), Err(IdError::Signature));
    }

    fn grant() -> Grant {
        Grant::new(Access::ReadOnly, Some(1_900_000_000), "alice")
    }

    #[test]
    fn a_minted_id_routes_back_to_its_node_worker_and_inner_id() {
        let id = signer(1).mint("n0", 3, &grant(), INNER);
        assert!(id.len() < 128, "id must keep a one-byte wire length");
        let route = signer(1).verify(&id).unwrap();
        assert_eq!(
            route,
            Route {
                node: "n0",
                worker: 3,
                grant: grant(),
                inner_id: INNER
            }
        );
        let longest = signer(1).mint(
            &"n".repeat(MAX_NODE_ID_LEN),
            255,
            &Grant::new(Access::ReadWrite, Some(u64::from(u32::MAX)), "x"),
            INNER,
        );
        assert!(longest.len() < 128, "{}", longest.len());
    }

    #[test]
    fn no_expiry_and_read_write_round_trip() {
        let g = Grant::new(Access::ReadWrite, None, "bob");
        let id = signer(1).mint("n0", 0, &g, INNER);
        assert_eq!(signer(1).verify(&id).unwrap().grant, g);
        assert_ne!(g.principal_tag, grant().principal_tag);
    }

    #[test]
    fn a_read_only_id_cannot_be_relabelled_read_write_or_extended() {
        let id = signer(1).mint("n0", 0, &grant(), INNER);
        let text = String::from_utf8(id).unwrap();
        for (from, to) in [(".ro.", ".rw."), (".713fb300.", ".7fffffff.")] {
            assert!(text.contains(from), "{text}");
            let forged = text.replacen(from, to, 1);
            assert_eq!(signer(1).verify(forged.as_bytes()), Err(IdError::Signature));
        }
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let id = signer(1).mint("n0", 1, &grant(), INNER);
        for i in 0..id.len() {
            for replacement in [b'0', b'1', b'A', b'f', b'.', b'x'] {
                if id[i] == replacement {
                    continue;
                }
                let mut bad = id.clone();
                bad[i] = replacement;
                assert!(signer(1).verify(&bad).is_err(), "accepted edit at {i}");
            }
        }
    }

    #[test]
    fn an_id_from_another_secret_is_refused() {
        let id = signer(1).mint("n0", 0, &grant(), INNER);
        assert_eq!(signer(2).verify(&id), Err(IdError::Signature));
    }

    #[test]
    fn plain_worker_ids_and_garbage_are_format_errors() {
        for bad in [
            INNER,
            b"",
            b"q2",
            b"q2.n0.0.rw.0.00000000.deadbeef.",
            b"q1.n0.0.00000000000000000000000000000000.X",
            b"q2.n0.0.rx.0.00000000.00000000000000000000000000000000.X",
            b"q2.n0.0.rw.0.0000000.00000000000000000000000000000000.X",
            b"q2.n0.0.rw.G.00000000.00000000000000000000000000000000.X",
            b"q2.n0.+1.rw.0.00000000.00000000000000000000000000000000.X",
            b"q2.n0.01.rw.0.00000000.00000000000000000000000000000000.X",
            b"q2.n0.99999.rw.0.00000000.00000000000000000000000000000000.X",
        ] {
            assert_eq!(signer(1).verify(bad), Err(IdError::Format), "{bad:?}");
        }
    }
}
