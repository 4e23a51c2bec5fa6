//! `quackgate token`: signs a JWT from a local key, for tests and small deployments that have
//! no identity provider. The gateway verifies it like any other JWT, against the JWKS file.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::auth::access::Access;

/// Why a token cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The key file cannot be read.
    #[error("reading the key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The key does not fit the algorithm.
    #[error("the key in {path} is not a {alg:?} key: {message}")]
    Key {
        path: String,
        /// The algorithm asked for.
        alg: Algorithm,
        /// The library's message.
        message: String,
    },
    /// An algorithm quackgate does not verify.
    #[error("algorithm {0} is not supported; use HS256, RS256, ES256 or EdDSA")]
    Algorithm(String),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(String),
}

/// What goes into a token.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    /// PEM private key (RS256, ES256, EdDSA) or a file holding the HS256 secret.
    pub key_file: &'a Path,
    pub algorithm: Algorithm,
    /// `kid` in the header, naming the key in the JWKS.
    pub kid: Option<&'a str>,
    /// `iss`.
    pub issuer: &'a str,
    /// `aud`.
    pub audience: &'a str,
    /// `sub`: the principal.
    pub subject: &'a str,
    pub access: Access,
    /// The claim that carries the role.
    pub role_claim: &'a str,
    /// Lifetime from now.
    pub ttl: Duration,
}

/// One of the algorithms quackgate verifies, by name.
///
/// # Errors
/// [`MintError::Algorithm`] for any other name.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, MintError> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(MintError::Algorithm(other.to_string())),
    }
}

/// A signed token and its expiry (seconds since the epoch).
///
/// # Errors
/// [`MintError`] when the key cannot be read or does not fit the algorithm.
pub fn mint(req: &TokenRequest<'_>) -> Result<(String, u64), MintError> {
    let path = req.key_file.display().to_string();
    let bytes = std::fs::read(req.key_file).map_err(|source| MintError::Read {
        path: path.clone(),
        source,
    })?;
    let key_error = |e: jsonwebtoken::errors::Error| MintError::Key {
        path: path.clone(),
        alg: req.algorithm,
        message: e.to_string(),
    };
    let key = match req.algorithm {
        Algorithm::HS256 => EncodingKey::from_secret(bytes.trim_ascii()),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&bytes).map_err(key_error)?,
        Algorithm::ES256 => EncodingKey::from_ec_pem(&bytes).map_err(key_error)?,
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&bytes).map_err(key_error)?,
        other => return Err(MintError::Algorithm(format!("{other:?}"))),
    };
    let now = jsonwebtoken::get_current_timestamp();
    let exp = now.saturating_add(req.ttl.as_secs());
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), req.issuer.into());
    claims.insert("aud".into(), req.audience.into());
    claims.insert("sub".into(), req.subject.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), exp.into());
    claims.insert(req.role_claim.into(), req.access.as_str().into());
    let header = Header {
        kid: req.kid.map(str::to_string),
        ..Header::new(req.algorithm)
    };
    let token =
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| MintError::Sign(e.to_string()))?;
    Ok((token, exp))
}

/// Parses `90`, `90s`, `15m`, `12h` or `7d`.
pub fn parse_ttl(text: &str) -> Option<Duration> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_ttl("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_ttl("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("0"), None);
        assert_eq!(parse_ttl("1w"), None);
        assert_eq!(parse_ttl(""), None);
    }

    #[test]
    fn only_the_verified_algorithms_are_offered() {
        assert!(parse_algorithm("ES256").is_ok());
        assert!(parse_algorithm("none").is_err());
        assert!(parse_algorithm("HS512").is_err());
    }
}
