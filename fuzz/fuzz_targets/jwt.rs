//! Any bytes as a JWT presented as a Quack token, through the verifier's front: the size cap,
//! the header parse, key selection by `kid` among five keys (two HS256, RS256, ES256, EdDSA;
//! `seeds/jwt-jwks.json`), the algorithm pin, `typ`, then the signature and claims. Nothing may
//! panic, and an accepted token must name a subject and an expiry still in force.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use quackgate::auth::jwt::{JwksSource, JwtConfig, JwtVerifier, SessionExpiry};
use quackgate::auth::keys::KeySet;

/// The keys the seed tokens in `corpus/jwt` are signed with (`seeds/make_jwt_seeds.py`).
const JWKS: &str = include_str!("../seeds/jwt-jwks.json");

static VERIFIER: LazyLock<JwtVerifier> = LazyLock::new(|| {
    let keys = KeySet::parse(JWKS.as_bytes(), "fuzz.jwks").expect("the fuzz JWKS parses");
    for kid in ["hs1", "hs2", "rs1", "es1", "ed1"] {
        assert!(keys.select(Some(kid)).is_some(), "key {kid} missing");
    }
    JwtVerifier::new(
        JwtConfig {
            source: JwksSource::File("fuzz.jwks".into()),
            issuer: "iss-1".into(),
            audience: "aud-1".into(),
            leeway: Duration::from_secs(5),
            role_claim: "role".into(),
            session_expiry: SessionExpiry::End,
            // The seeds are valid until 2100; this still runs the lifetime check.
            max_lifetime: Some(Duration::from_secs(200 * 365 * 86_400)),
        },
        Arc::new(keys),
    )
});

fuzz_target!(|data: &[u8]| {
    if let Ok(verified) = VERIFIER.verify(data) {
        assert!(!verified.subject.is_empty(), "accepted without a subject");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            verified.expires_at.saturating_add(5) >= now,
            "accepted an expired token"
        );
    }
});
