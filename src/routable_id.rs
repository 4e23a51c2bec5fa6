//! Signed, routable connection ids: any gateway replica that holds the id secret can tell which
//! node and worker own a Quack session from the id alone, with no shared state and no cookies
//! (the QUIC-LB idea).
//!
//! The DuckDB client treats the connection id as an opaque string of any length, so the gateway
//! replaces the worker's id in the CONNECTION_RESPONSE with
//!
//! ```text
//! q1.<node>.<worker>.<mac>.<worker's id>
//! ```
//!
//! and strips it back before forwarding. `q1` versions the format; `<mac>` is HMAC-SHA256 over
//! everything else, truncated to 128 bits, hex. A forged or tampered id fails the MAC and is
//! never forwarded, so a client cannot steer its requests into another worker or another
//! client's session by editing the id.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Version tag of the current format.
const VERSION: &str = "q1";
/// Bytes of HMAC-SHA256 kept in the id.
const MAC_BYTES: usize = 16;
/// Length of the shared secret.
pub const SECRET_BYTES: usize = 32;
/// Longest node id: keeps the whole id under 128 bytes, a one-byte length on the wire.
pub const MAX_NODE_ID_LEN: usize = 24;

/// Why an id does not route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not in the `q1.` format.
    #[error("connection id is not a quackgate id")]
    Format,
    /// The MAC does not match: forged, tampered, or minted under another secret.
    #[error("connection id signature does not verify")]
    Signature,
}

/// Where a session lives, as named by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// The gateway node whose worker holds the session.
    pub node: &'a str,
    /// The worker's index on that node.
    pub worker: u16,
    /// The id the worker itself issued.
    pub inner_id: &'a [u8],
}

/// Mints and verifies ids under one secret. Cheap to clone; shared by every request.
#[derive(Clone)]
pub struct IdSigner {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for IdSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdSigner(<secret>)")
    }
}

impl IdSigner {
    /// A signer over `secret`, which every replica of one cluster shares.
    pub fn new(secret: &[u8; SECRET_BYTES]) -> Self {
        IdSigner {
            mac: Hmac::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        }
    }

    /// The routable id for a session that `worker` on `node` issued as `inner_id`.
    pub fn mint(&self, node: &str, worker: u16, inner_id: &[u8]) -> Vec<u8> {
        let prefix = format!("{VERSION}.{node}.{worker}.");
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
        let mut parts = id.splitn(5, |b| *b == b'.');
        let (Some(version), Some(node), Some(worker_raw), Some(mac_hex), Some(inner_id)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(IdError::Format);
        };
        if version != VERSION.as_bytes() || node.is_empty() || inner_id.is_empty() {
            return Err(IdError::Format);
        }
        let node = std::str::from_utf8(node).map_err(|_| IdError::Format)?;
        let worker: u16 = std::str::from_utf8(worker_raw)
            .ok()
            .filter(|w| !w.starts_with('+'))
            .and_then(|w| w.parse().ok())
            .ok_or(IdError::Format)?;
        // Only the lowercase spelling is valid, so every character of an id is significant.
        if mac_hex.iter().any(u8::is_ascii_uppercase) {
            return Err(IdError::Format);
        }
        let mut claimed = [0u8; MAC_BYTES];
        hex::decode_to_slice(mac_hex, &mut claimed).map_err(|_| IdError::Format)?;
        // The MAC covers the prefix exactly as sent, so any edit to node or worker fails.
        let prefix_len = version.len() + node.len() + worker_raw.len() + 3;
        let prefix = id.get(..prefix_len).ok_or(IdError::Format)?;
        let mut mac = self.mac.clone();
        mac.update(prefix);
        mac.update(inner_id);
        mac.verify_truncated_left(&claimed)
            .map_err(|_| IdError::Signature)?;
        Ok(Route {
            node,
            worker,
            inner_id,
        })
    }

    fn tag(&self, prefix: &[u8], inner_id: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(prefix);
        mac.update(inner_id);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INNER: &[u8] = b"A424FCD8ACB5D3BB949C46D82A8E0530";

    fn signer(byte: u8) -> IdSigner {
        IdSigner::new(&[byte; SECRET_BYTES])
    }

    #[test]
    fn a_minted_id_routes_back_to_its_node_worker_and_inner_id() {
        let id = signer(1).mint("n0", 3, INNER);
        assert!(id.len() < 128, "id must keep a one-byte wire length");
        let route = signer(1).verify(&id).unwrap();
        assert_eq!(
            route,
            Route {
                node: "n0",
                worker: 3,
                inner_id: INNER
            }
        );
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let id = signer(1).mint("n0", 1, INNER);
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
        let id = signer(1).mint("n0", 0, INNER);
        assert_eq!(signer(2).verify(&id), Err(IdError::Signature));
    }

    #[test]
    fn plain_worker_ids_and_garbage_are_format_errors() {
        for bad in [
            INNER,
            b"",
            b"q1",
            b"q1.n0.0.deadbeef.",
            b"q2.n0.0.00000000000000000000000000000000.X",
            b"q1.n0.+1.00000000000000000000000000000000.X",
            b"q1.n0.99999.00000000000000000000000000000000.X",
        ] {
            assert_eq!(signer(1).verify(bad), Err(IdError::Format), "{bad:?}");
        }
    }
}
