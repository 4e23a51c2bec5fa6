//! Who a Quack client is and what it may do: the token in its CONNECTION_REQUEST, checked
//! before anything reaches a worker.
//!
//! A token is either a static one or a JWT (`jwt`). Static tokens are stored as SHA-256
//! digests, so the config file never holds a usable credential. The presented token is hashed
//! and compared with every configured digest in constant time, without stopping at the first
//! match, so timing tells nothing about which bytes or which token matched. The outcome is a
//! [`Principal`]: a name for logs and limits, an [`Access`] that decides which workers may
//! serve it, and, for a JWT, when it expires.

pub mod access;
pub mod jwks_url;
pub mod jwt;
pub mod keys;
pub mod mint;
pub mod refresh;
pub mod static_tokens;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::auth::access::{principal_tag, Access, Principal};
use crate::auth::jwt::{JwtRejection, JwtVerifier};
pub use crate::auth::static_tokens::StaticToken;
use crate::auth::static_tokens::StaticTokens;

/// Why a client is not let in. The client sees `Authentication failed`, with the reason for
/// a JWT (its holder can read the token's claims anyway).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The CONNECTION_REQUEST carried no token.
    #[error("no token")]
    Missing,
    /// The token matches no configured credential.
    #[error("unknown token")]
    Unknown,
    /// A JWT that does not pass.
    #[error("JWT refused: {0}")]
    Jwt(#[from] JwtRejection),
}

impl AuthError {
    /// A bounded label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Unknown => "unknown",
            AuthError::Jwt(r) => r.reason(),
        }
    }
}

/// The configured credentials.
#[derive(Debug, Clone)]
pub struct Authenticator {
    static_tokens: Arc<StaticTokens>,
    jwt: Option<Arc<JwtVerifier>>,
}

impl Authenticator {
    /// Credentials from config.
    pub fn new(static_tokens: Arc<StaticTokens>, jwt: Option<Arc<JwtVerifier>>) -> Self {
        Authenticator { static_tokens, jwt }
    }

    /// The static tokens, for their reload task and for revocation checks.
    pub fn static_tokens(&self) -> &Arc<StaticTokens> {
        &self.static_tokens
    }

    /// The JWT verifier, when `[auth.jwt]` is set.
    pub fn jwt(&self) -> Option<&Arc<JwtVerifier>> {
        self.jwt.as_ref()
    }

    /// The principal a presented token (CONNECTION_REQUEST body field 1) belongs to.
    ///
    /// # Errors
    /// [`AuthError`] when the token is absent, matches nothing, or is a JWT that fails.
    pub fn authenticate(&self, token: Option<&[u8]>) -> Result<Principal, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(token).into();
        let in_force = self.static_tokens.current();
        let mut found: Option<&StaticToken> = None;
        for candidate in &in_force.tokens {
            // Every candidate is compared; the branch only records a match already made.
            if bool::from(candidate.sha256.ct_eq(&digest)) {
                found = Some(candidate);
            }
        }
        if let Some(t) = found {
            return Ok(Principal {
                name: t.name.clone(),
                access: t.access,
                expires_at: None,
                tag: principal_tag(&t.name, Some(&t.sha256)),
            });
        }
        match &self.jwt {
            Some(verifier) if crate::auth::jwt::looks_like_jwt(token) => {
                let verified = verifier.verify(token)?;
                let name: Arc<str> = format!("jwt:{}", verified.subject).into();
                Ok(Principal {
                    tag: principal_tag(&name, None),
                    name,
                    access: verified.access,
                    expires_at: Some(verified.expires_at),
                })
            }
            _ => Err(AuthError::Unknown),
        }
    }
}

/// The token workers accept, made fresh at every gateway start and swapped in for the client's.
/// It never leaves the gateway and its workers; `Debug` never shows it.
#[derive(Clone)]
pub struct WorkerToken(String);

impl std::fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerToken(<redacted>)")
    }
}

impl WorkerToken {
    /// 32 random bytes as hex.
    ///
    /// # Errors
    /// If the system random source fails.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(WorkerToken(hex::encode(bytes)))
    }

    /// A token chosen by the operator (`workers.token_file`).
    pub fn fixed(token: String) -> Self {
        WorkerToken(token)
    }

    /// The token itself, for the CONNECTION_REQUEST and the worker's spec.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The hex SHA-256 of a token, as `auth.static_tokens[].sha256` wants it.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        let entry = |name: &str, token: &str| {
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(hash_token(token), &mut sha256).unwrap();
            StaticToken {
                name: name.into(),
                sha256,
                access: Access::ReadWrite,
            }
        };
        Authenticator::new(
            Arc::new(StaticTokens::new(
                vec![entry("alice", "alice-token-1"), entry("bob", "bob-token-2")],
                None,
                Vec::new(),
            )),
            None,
        )
    }

    #[test]
    fn a_configured_token_yields_its_principal() {
        assert_eq!(
            &*auth().authenticate(Some(b"bob-token-2")).unwrap().name,
            "bob"
        );
        assert_eq!(
            &*auth().authenticate(Some(b"alice-token-1")).unwrap().name,
            "alice"
        );
    }

    #[test]
    fn a_token_with_one_character_changed_is_refused() {
        assert_eq!(
            auth().authenticate(Some(b"bob-token-3")),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            auth().authenticate(Some(b"bob-token-2 ")),
            Err(AuthError::Unknown)
        );
    }

    #[test]
    fn a_missing_or_empty_token_is_refused() {
        assert_eq!(auth().authenticate(None), Err(AuthError::Missing));
        assert_eq!(auth().authenticate(Some(b"")), Err(AuthError::Missing));
    }

    #[test]
    fn hash_token_is_hex_sha256() {
        assert_eq!(
            hash_token("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
