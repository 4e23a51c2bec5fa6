//! JWTs as Quack tokens: the `[auth.jwt]` settings and the verifier. The keys it checks against
//! are in `keys`, replaced while the gateway runs by `refresh`, so keys rotate without a restart.
//!
//! Each key is pinned to exactly one algorithm, derived from the key itself (RSA: RS256,
//! EC P-256: ES256, OKP Ed25519: EdDSA, oct: HS256) and never from the token. A token whose
//! header names another algorithm is refused before any signature check, which closes the
//! classic confusions (`alg: none`, or HS256 "signed" with an RSA public key). `exp`, `iss` and
//! `aud` are required; `nbf` is checked when present; both with the configured leeway.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{errors::ErrorKind, Validation};

use crate::auth::access::Access;
use crate::auth::jwks_url::JwksUrl;
use crate::auth::keys::{KeySet, KeyStore};

/// Tokens longer than this are refused unparsed; real ones are well under 4 KiB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What happens to an open session when the JWT it was opened with expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionExpiry {
    /// Requests after `exp` (plus leeway) are refused; the client attaches again with a new
    /// token. The default.
    End,
    /// The session lives on until DISCONNECT or idle expiry; `exp` only gates new connections.
    Keep,
}

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// A local file, re-read every 2 s.
    File(PathBuf),
    /// An identity provider's JWKS endpoint (`jwks_url`).
    Url(JwksUrl),
}

/// `[auth.jwt]`.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Where the keys come from.
    pub source: JwksSource,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of the token's audiences).
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Claim that names the role.
    pub role_claim: String,
    /// What `exp` means for open sessions.
    pub session_expiry: SessionExpiry,
    /// Longest validity a token may have (`exp` minus `iat`, or minus now without `iat`).
    /// Default none.
    pub max_lifetime: Option<Duration>,
}

/// Why a JWT is refused. The client sees `Authentication failed: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtRejection {
    /// Not three base64url parts with a JSON header.
    #[error("malformed token")]
    Malformed,
    /// `alg` is none, unknown, or not the one the key is pinned to.
    #[error("algorithm not allowed for this key")]
    Algorithm,
    /// No key with the token's `kid` (or no `kid` while several keys exist).
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid signature")]
    Signature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` does not name the configured audience.
    #[error("wrong audience")]
    Audience,
    /// A required claim (`exp`, `iss`, `aud`, `sub`, role) is absent or of the wrong type.
    #[error("missing claim")]
    MissingClaim,
    /// The role claim names no known role.
    #[error("unknown role")]
    UnknownRole,
    /// The header's `typ` names something other than a JWT.
    #[error("not a JWT (typ)")]
    Type,
    /// Valid for longer than `auth.jwt.max_lifetime_secs`.
    #[error("lifetime too long")]
    Lifetime,
}

impl JwtRejection {
    /// A bounded label for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtRejection::Malformed => "jwt_malformed",
            JwtRejection::Algorithm => "jwt_algorithm",
            JwtRejection::UnknownKey => "jwt_unknown_key",
            JwtRejection::Signature => "jwt_signature",
            JwtRejection::Expired => "jwt_expired",
            JwtRejection::NotYetValid => "jwt_not_yet_valid",
            JwtRejection::Issuer => "jwt_issuer",
            JwtRejection::Audience => "jwt_audience",
            JwtRejection::MissingClaim => "jwt_missing_claim",
            JwtRejection::UnknownRole => "jwt_unknown_role",
            JwtRejection::Type => "jwt_type",
            JwtRejection::Lifetime => "jwt_lifetime",
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `sub`.
    pub subject: String,
    /// The role claim.
    pub access: Access,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// Verifies JWTs against the current version of the JWKS file.
#[derive(Debug)]
pub struct JwtVerifier {
    config: JwtConfig,
    keys: Arc<KeyStore>,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    /// Read here too: jsonwebtoken 9 treats an `nbf` that is not a number as absent
    /// (CVE-2026-25537), so such a token is refused here before that could matter.
    nbf: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
    #[serde(flatten)]
    other: HashMap<String, serde_json::Value>,
}

impl JwtVerifier {
    /// A verifier over `keys`: a JWKS file's, loaded during config validation, or none yet for
    /// a JWKS URL.
    pub fn new(config: JwtConfig, keys: Arc<KeySet>) -> Self {
        JwtVerifier {
            config,
            keys: Arc::new(KeyStore::new(keys)),
        }
    }

    /// Checks a token completely: header, key, algorithm, signature, time and claims.
    ///
    /// # Errors
    /// [`JwtRejection`] saying what is wrong.
    pub fn verify(&self, token: &[u8]) -> Result<Verified, JwtRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtRejection::Malformed);
        }
        let token = std::str::from_utf8(token).map_err(|_| JwtRejection::Malformed)?;
        // Unknown algorithms, `none` among them, fail here: the library has no such variant.
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_)
            | ErrorKind::Base64(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::InvalidToken => {
                if header_names_algorithm(token) {
                    JwtRejection::Algorithm
                } else {
                    JwtRejection::Malformed
                }
            }
            _ => JwtRejection::Algorithm,
        })?;
        let keys = self.keys.current();
        let key = keys.select(header.kid.as_deref()).ok_or_else(|| {
            // The provider may have rotated already: fetch soon rather than at the next period.
            if matches!(self.config.source, JwksSource::Url(_)) {
                self.keys.unknown_kid_seen();
            }
            JwtRejection::UnknownKey
        })?;
        if header.alg != key.algorithm {
            return Err(JwtRejection::Algorithm);
        }
        // RFC 7519 5.1: `typ`, when present, says what the token is; only JWTs (and OAuth
        // access-token JWTs, RFC 9068) are accepted, so that a signed object of another kind
        // from the same issuer cannot pass as one.
        if let Some(typ) = &header.typ {
            let typ = typ.to_ascii_lowercase();
            let typ = typ.strip_prefix("application/").unwrap_or(&typ);
            if typ != "jwt" && typ != "at+jwt" {
                return Err(JwtRejection::Type);
            }
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => JwtRejection::Signature,
                    ErrorKind::ExpiredSignature => JwtRejection::Expired,
                    ErrorKind::ImmatureSignature => JwtRejection::NotYetValid,
                    ErrorKind::InvalidIssuer => JwtRejection::Issuer,
                    ErrorKind::InvalidAudience => JwtRejection::Audience,
                    ErrorKind::MissingRequiredClaim(_) => JwtRejection::MissingClaim,
                    ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                        JwtRejection::Algorithm
                    }
                    ErrorKind::Json(_) => JwtRejection::MissingClaim,
                    _ => JwtRejection::Malformed,
                }
            })?;
        let claims = data.claims;
        let subject = match claims.sub {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s,
            _ => return Err(JwtRejection::MissingClaim),
        };
        let expires_at = claims
            .exp
            .as_ref()
            .and_then(numeric_date)
            .ok_or(JwtRejection::MissingClaim)?;
        // Time claims that are present must be NumericDates, or the checks on them are void.
        let issued_at = match &claims.iat {
            Some(iat) => Some(numeric_date(iat).ok_or(JwtRejection::Malformed)?),
            None => None,
        };
        if claims
            .nbf
            .as_ref()
            .is_some_and(|nbf| numeric_date(nbf).is_none())
        {
            return Err(JwtRejection::Malformed);
        }
        if let Some(max) = self.config.max_lifetime {
            // From `iat` when the token says when it was issued, else from now: either way a
            // token valid for longer than the limit is refused.
            let from = issued_at.unwrap_or_else(jsonwebtoken::get_current_timestamp);
            if expires_at.saturating_sub(from) > max.as_secs() {
                return Err(JwtRejection::Lifetime);
            }
        }
        let access = match claims.other.get(&self.config.role_claim) {
            Some(serde_json::Value::String(role)) => {
                Access::parse(role).ok_or(JwtRejection::UnknownRole)?
            }
            Some(_) => return Err(JwtRejection::UnknownRole),
            None => return Err(JwtRejection::MissingClaim),
        };
        Ok(Verified {
            subject,
            access,
            expires_at,
        })
    }

    /// Where the keys come from.
    pub fn source(&self) -> &JwksSource {
        &self.config.source
    }

    /// The store the refreshers put new keys in.
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }
}

/// A NumericDate: seconds since the epoch, perhaps with a fraction.
fn numeric_date(value: &serde_json::Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Whether the token's header parses as JSON with an `alg` the library does not know: such a
/// token is refused for its algorithm, not as garbage, which is the clearer answer.
fn header_names_algorithm(token: &str) -> bool {
    use base64::Engine;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&json)
        .ok()
        .and_then(|v| v.get("alg").cloned())
        .is_some()
}

/// Whether a presented token is shaped like a JWT (three base64url parts, JSON header).
pub fn looks_like_jwt(token: &[u8]) -> bool {
    token.starts_with(b"eyJ") && token.iter().filter(|b| **b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn verifier(jwks: &str) -> JwtVerifier {
        let keys = KeySet::parse(jwks.as_bytes(), "test.jwks").unwrap();
        JwtVerifier::new(
            JwtConfig {
                source: JwksSource::File("test.jwks".into()),
                issuer: "iss-1".into(),
                audience: "aud-1".into(),
                leeway: Duration::from_secs(5),
                role_claim: "role".into(),
                session_expiry: SessionExpiry::End,
                max_lifetime: Some(Duration::from_secs(3600)),
            },
            Arc::new(keys),
        )
    }

    fn hs_jwks() -> String {
        format!(
            r#"{{"keys":[{{"kty":"oct","kid":"h1","k":"{}"}}]}}"#,
            b64(SECRET)
        )
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn sign(claims: serde_json::Value, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn good_claims() -> serde_json::Value {
        serde_json::json!({"sub":"alice","iss":"iss-1","aud":"aud-1","exp":now()+600,"role":"read_only"})
    }

    #[test]
    fn a_valid_token_yields_subject_role_and_expiry() {
        let v = verifier(&hs_jwks());
        let got = v
            .verify(sign(good_claims(), Some("h1")).as_bytes())
            .unwrap();
        assert_eq!(got.subject, "alice");
        assert_eq!(got.access, Access::ReadOnly);
        assert!(got.expires_at > now());
    }

    #[test]
    fn each_bad_claim_has_its_own_reason() {
        let v = verifier(&hs_jwks());
        let with = |k: &str, val: serde_json::Value| {
            let mut c = good_claims();
            c[k] = val;
            v.verify(sign(c, Some("h1")).as_bytes())
        };
        assert_eq!(with("exp", (now() - 60).into()), Err(JwtRejection::Expired));
        assert_eq!(
            with("nbf", (now() + 60).into()),
            Err(JwtRejection::NotYetValid)
        );
        assert_eq!(with("iss", "other".into()), Err(JwtRejection::Issuer));
        assert_eq!(with("aud", "other".into()), Err(JwtRejection::Audience));
        assert_eq!(with("role", "admin".into()), Err(JwtRejection::UnknownRole));
        let mut no_role = good_claims();
        no_role.as_object_mut().unwrap().remove("role");
        assert_eq!(
            v.verify(sign(no_role, Some("h1")).as_bytes()),
            Err(JwtRejection::MissingClaim)
        );
        let mut no_exp = good_claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            v.verify(sign(no_exp, Some("h1")).as_bytes()),
            Err(JwtRejection::MissingClaim)
        );
    }

    #[test]
    fn time_claims_that_are_not_numbers_make_the_token_malformed() {
        // CVE-2026-25537: jsonwebtoken 9 skips an `nbf` it cannot read as a number.
        let v = verifier(&hs_jwks());
        for (claim, value) in [
            ("nbf", serde_json::json!((now() + 600).to_string())),
            ("iat", serde_json::json!("yesterday")),
        ] {
            let mut c = good_claims();
            c[claim] = value;
            assert_eq!(
                v.verify(sign(c, Some("h1")).as_bytes()),
                Err(JwtRejection::Malformed),
                "{claim}"
            );
        }
    }

    #[test]
    fn a_token_valid_for_longer_than_the_maximum_lifetime_is_refused() {
        let v = verifier(&hs_jwks());
        let mut long = good_claims();
        long["exp"] = (now() + 7200).into();
        assert_eq!(
            v.verify(sign(long.clone(), Some("h1")).as_bytes()),
            Err(JwtRejection::Lifetime)
        );
        // With `iat`, the lifetime counts from it: issued 3 h ago, expiring in 30 min.
        long["iat"] = (now() - 3 * 3600).into();
        long["exp"] = (now() + 1800).into();
        assert_eq!(
            v.verify(sign(long, Some("h1")).as_bytes()),
            Err(JwtRejection::Lifetime)
        );
        let mut ok = good_claims();
        ok["iat"] = (now() - 60).into();
        assert!(v.verify(sign(ok, Some("h1")).as_bytes()).is_ok());
    }

    #[test]
    fn a_typ_other_than_jwt_is_refused() {
        let v = verifier(&hs_jwks());
        for (typ, accepted) in [
            ("JWT", true),
            ("at+jwt", true),
            ("application/at+JWT", true),
            ("dpop+jwt", false),
            ("JOSE", false),
        ] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("h1".into());
            header.typ = Some(typ.into());
            let token =
                jsonwebtoken::encode(&header, &good_claims(), &EncodingKey::from_secret(SECRET))
                    .unwrap();
            let got = v.verify(token.as_bytes());
            assert_eq!(got.is_ok(), accepted, "{typ}: {got:?}");
            if !accepted {
                assert_eq!(got, Err(JwtRejection::Type));
            }
        }
    }

    #[test]
    fn leeway_covers_small_clock_skew() {
        let v = verifier(&hs_jwks());
        let mut c = good_claims();
        c["exp"] = (now() - 2).into();
        assert!(v.verify(sign(c, Some("h1")).as_bytes()).is_ok());
    }

    #[test]
    fn unknown_kid_alg_none_and_garbage_are_refused() {
        let v = verifier(&hs_jwks());
        assert_eq!(
            v.verify(sign(good_claims(), Some("h2")).as_bytes()),
            Err(JwtRejection::UnknownKey)
        );
        let payload = b64(good_claims().to_string().as_bytes());
        let none = format!(
            "{}.{payload}.",
            b64(br#"{"alg":"none","typ":"JWT","kid":"h1"}"#)
        );
        assert_eq!(v.verify(none.as_bytes()), Err(JwtRejection::Algorithm));
        assert_eq!(
            v.verify(b"eyJhbGciOi.garbage.x"),
            Err(JwtRejection::Malformed)
        );
        let token = sign(good_claims(), Some("h1"));
        assert_eq!(
            v.verify(&token.as_bytes()[..token.len() - 10]),
            Err(JwtRejection::Signature)
        );
        assert_eq!(
            v.verify(&token.as_bytes()[..40]),
            Err(JwtRejection::Malformed)
        );
    }

    #[test]
    fn a_token_must_use_the_algorithm_its_key_is_pinned_to() {
        // An EC key: an HS256 token naming it is refused before any verification.
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        let jwks = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"e1","x":"{}","y":"{}"}}]}}"#,
            b64(&raw[1..33]),
            b64(&raw[33..])
        );
        let v = verifier(&jwks);
        assert_eq!(
            v.verify(sign(good_claims(), Some("e1")).as_bytes()),
            Err(JwtRejection::Algorithm)
        );
        let es = jsonwebtoken::encode(
            &Header {
                kid: Some("e1".into()),
                ..Header::new(Algorithm::ES256)
            },
            &good_claims(),
            &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(es.as_bytes()).unwrap().subject, "alice");
    }

    #[test]
    fn jwt_shape_is_recognised() {
        assert!(looks_like_jwt(sign(good_claims(), None).as_bytes()));
        assert!(!looks_like_jwt(b"static-token-1"));
    }
}
