//! The JWT signing keys: one version of a JWKS, parsed with each key pinned to the one
//! algorithm its type implies, and the store that holds the version in force. A leaf, shared by
//! the verifier that reads the store and the refreshers that replace what it holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tracing::warn;

/// Shortest HS256 secret accepted: RFC 7518 wants a key at least as long as the hash.
const MIN_HMAC_KEY_BYTES: usize = 32;

/// Why a JWKS cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The document is not a JWKS.
    #[error("{origin} is not a JWKS (a JSON object with a \"keys\" array): {message}")]
    Parse { origin: String, message: String },
    /// Not one key in the document can verify tokens.
    #[error("{origin} has no usable signing key (supported: RSA RS256, EC P-256 ES256, OKP Ed25519 EdDSA, oct HS256); skipped: {skipped}")]
    NoUsableKey {
        origin: String,
        /// Why each key was skipped.
        skipped: String,
    },
}

/// A verification key and the one algorithm it is used with.
pub struct Key {
    pub(super) algorithm: Algorithm,
    pub(super) key: DecodingKey,
}

/// The keys of one version of the JWKS file, by `kid`.
pub struct KeySet {
    keys: HashMap<String, Key>,
    /// SHA-256 of the document the keys came from: an unchanged document changes nothing.
    digest: [u8; 32],
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<_> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Reads and parses a JWKS file. Keys that cannot sign tokens here (encryption keys,
    /// other curves) are skipped; a file with none left is an error.
    ///
    /// # Errors
    /// [`JwksError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<KeySet, JwksError> {
        let bytes = std::fs::read(path).map_err(|source| JwksError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes, &path.display().to_string())
    }

    /// Parses a JWKS document; `origin` (a file or URL) is for messages.
    ///
    /// # Errors
    /// [`JwksError`] when it is not a JWKS or holds no usable key.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<KeySet, JwksError> {
        Self::parse_with(bytes, origin, true)
    }

    /// Like [`KeySet::parse`], for a document anyone can read: HMAC (`oct`) keys are
    /// skipped, since a published secret lets anyone sign.
    ///
    /// # Errors
    /// As [`KeySet::parse`].
    pub fn parse_public(bytes: &[u8], origin: &str) -> Result<KeySet, JwksError> {
        Self::parse_with(bytes, origin, false)
    }

    fn parse_with(bytes: &[u8], origin: &str, allow_hmac: bool) -> Result<KeySet, JwksError> {
        let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| JwksError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let mut keys = HashMap::new();
        let mut skipped = Vec::new();
        let only_one = set.keys.len() == 1;
        for (i, jwk) in set.keys.iter().enumerate() {
            let kid = match (&jwk.common.key_id, only_one) {
                (Some(kid), _) => kid.clone(),
                (None, true) => String::new(),
                (None, false) => {
                    skipped.push(format!(
                        "keys[{i}]: no kid (required when there are several keys)"
                    ));
                    continue;
                }
            };
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                skipped.push(format!("{kid:?}: an encryption key (use=enc)"));
                continue;
            }
            let pinned = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                    if p.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                (AlgorithmParameters::OctetKeyPair(p), None | Some(KeyAlgorithm::EdDSA))
                    if p.curve == EllipticCurve::Ed25519 =>
                {
                    Algorithm::EdDSA
                }
                (AlgorithmParameters::OctetKey(_), _) if !allow_hmac => {
                    skipped.push(format!("{kid:?}: an HMAC secret in a published JWKS"));
                    continue;
                }
                (AlgorithmParameters::OctetKey(p), None | Some(KeyAlgorithm::HS256)) => {
                    use base64::Engine;
                    let len = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(p.value.trim_end_matches('='))
                        .map_or(0, |k| k.len());
                    if len < MIN_HMAC_KEY_BYTES {
                        skipped.push(format!(
                            "{kid:?}: an HS256 key of {len} bytes (at least {MIN_HMAC_KEY_BYTES})"
                        ));
                        continue;
                    }
                    Algorithm::HS256
                }
                (_, alg) => {
                    skipped.push(format!("{kid:?}: unsupported key type or alg {alg:?}"));
                    continue;
                }
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    if keys
                        .insert(
                            kid.clone(),
                            Key {
                                algorithm: pinned,
                                key,
                            },
                        )
                        .is_some()
                    {
                        skipped.push(format!("{kid:?}: duplicate kid, the last one wins"));
                    }
                }
                Err(e) => skipped.push(format!("{kid:?}: {e}")),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey {
                origin: origin.to_string(),
                skipped: skipped.join("; "),
            });
        }
        for why in &skipped {
            warn!(jwks = %origin, key = %why, "JWKS key skipped");
        }
        Ok(KeySet {
            keys,
            digest: Sha256::digest(bytes).into(),
        })
    }

    /// No keys: every JWT is refused.
    pub fn empty() -> KeySet {
        KeySet {
            keys: HashMap::new(),
            digest: [0; 32],
        }
    }

    /// The key a token's `kid` names; without a `kid`, the only key if there is one.
    pub fn select(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.get(kid),
            None if self.keys.len() == 1 => self.keys.values().next(),
            None => None,
        }
    }

    /// Whether no key is in the set: every JWT is then refused.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Like [`KeySet::empty`], but remembering the document it came from, so that the same
    /// unusable document is not parsed again.
    pub fn empty_from(bytes: &[u8]) -> KeySet {
        KeySet {
            digest: Sha256::digest(bytes).into(),
            ..KeySet::empty()
        }
    }

    /// Whether `bytes` is the document these keys came from.
    pub fn is_from(&self, bytes: &[u8]) -> bool {
        self.digest == <[u8; 32]>::from(Sha256::digest(bytes))
    }

    /// The key ids, sorted.
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

/// The key set in force, swapped whole by a refresher, read by every verification.
#[derive(Debug)]
pub struct KeyStore {
    current: RwLock<Arc<KeySet>>,
    /// Wakes a JWKS URL's refresher early: a token named a key not (yet) known.
    unknown_kid: Notify,
}

impl KeyStore {
    /// A store holding `keys`.
    pub fn new(keys: Arc<KeySet>) -> Self {
        KeyStore {
            current: RwLock::new(keys),
            unknown_kid: Notify::new(),
        }
    }

    /// The keys in force.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `keys` in force.
    pub fn replace(&self, keys: KeySet) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
    }

    /// Puts `keys` in force unless they are the ones in force; says whether it did.
    pub fn replace_if_changed(&self, keys: KeySet) -> bool {
        if self.current().digest == keys.digest {
            return false;
        }
        self.replace(keys);
        true
    }

    /// Tells the refresher that a token named a key that is not in force.
    pub fn unknown_kid_seen(&self) {
        self.unknown_kid.notify_one();
    }

    /// Resolves when a token named an unknown key since the last call.
    pub async fn unknown_kid(&self) {
        self.unknown_kid.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn hs_jwks() -> String {
        format!(
            r#"{{"keys":[{{"kty":"oct","kid":"h1","k":"{}"}}]}}"#,
            b64(SECRET)
        )
    }

    #[test]
    fn unusable_keys_are_skipped_and_an_empty_set_is_an_error() {
        let jwks = format!(
            r#"{{"keys":[{{"kty":"oct","kid":"h1","k":"{}"}},{{"kty":"oct","kid":"h5","alg":"HS512","k":"{}"}}]}}"#,
            b64(SECRET),
            b64(SECRET)
        );
        let keys = KeySet::parse(jwks.as_bytes(), "x").unwrap();
        assert_eq!(keys.kids(), vec!["h1"]);
        assert!(matches!(
            KeySet::parse(br#"{"keys":[]}"#, "x"),
            Err(JwksError::NoUsableKey { .. })
        ));
        assert!(matches!(
            KeySet::parse(b"nope", "x"),
            Err(JwksError::Parse { .. })
        ));
    }

    #[test]
    fn a_published_jwks_may_not_carry_hmac_secrets() {
        assert!(KeySet::parse(hs_jwks().as_bytes(), "file").is_ok());
        assert!(matches!(
            KeySet::parse_public(hs_jwks().as_bytes(), "https://idp"),
            Err(JwksError::NoUsableKey { .. })
        ));
    }
}
