//! `[auth]` and `[limits]`: who may connect, with what, and how much. Validated with the rest
//! of the config, before anything binds; a JWKS file is read and parsed here too.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::jwks_url::JwksUrl;
use crate::auth::jwt::{JwksSource, JwtConfig, SessionExpiry};
use crate::auth::keys::KeySet;
use crate::auth::static_tokens::{self, TokenEntry};
use crate::auth::StaticToken;
use crate::config::file::{FileAuth, FileLimits};
use crate::config::problems::Problems;
use crate::limits::LimitsConfig;

/// Default clock skew allowed on a JWT's `exp` and `nbf`.
pub const DEFAULT_JWT_LEEWAY_SECS: u64 = 30;
/// Default time between fetches of `auth.jwt.jwks_url`.
pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 300;
/// Default time the last fetched keys stay in force while fetches fail.
pub const DEFAULT_JWKS_STALE_SECS: u64 = 86_400;
/// Most clock skew `auth.jwt.leeway_secs` may allow.
pub const MAX_JWT_LEEWAY_SECS: u64 = 300;
/// Longest failed-authentication window or backoff.
const MAX_LIMIT_DURATION: Duration = Duration::from_secs(86_400);

/// What `[auth]` and `[limits]` say, validated.
pub(super) struct AuthSection {
    pub(super) static_tokens: Vec<StaticToken>,
    /// `auth.static_tokens_file` and the tokens it held at load.
    pub(super) static_tokens_file: Option<(PathBuf, Vec<StaticToken>)>,
    /// The JWT settings with their first keys.
    pub(super) jwt: Option<(JwtConfig, Arc<KeySet>)>,
    pub(super) limits: LimitsConfig,
}

/// Validates `[auth]` and `[limits]`; problems go to `problems`, each naming its key.
/// `serves_clients`: whether this process authenticates clients (a node does not: edges
/// vouch for its sessions).
pub(super) fn validate(
    auth: FileAuth,
    serves_clients: bool,
    l: FileLimits,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    problems: &mut Problems,
) -> AuthSection {
    let mut static_tokens = Vec::new();
    for (i, t) in auth.static_tokens.into_iter().enumerate() {
        let entry = TokenEntry {
            name: t.name,
            sha256: t.sha256,
            role: t.role,
        };
        match entry.check() {
            Ok(token) => static_tokens.push(token),
            Err(e) => problems.push(format!("auth.static_tokens[{i}].{e}")),
        }
    }
    let static_tokens_file = auth.static_tokens_file.map(resolve).and_then(|path| {
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| static_tokens::parse_file(&text))
        {
            Ok(tokens) => Some((path, tokens)),
            Err(e) => {
                problems.push(format!("auth.static_tokens_file: {}: {e}", path.display()));
                None
            }
        }
    });
    let jwt = auth.jwt.and_then(|j| {
        let session_expiry = match j.session_expiry.as_deref().unwrap_or("end") {
            "end" => SessionExpiry::End,
            "keep" => SessionExpiry::Keep,
            other => {
                problems.push(format!(
                    "auth.jwt.session_expiry: must be \"end\" (a session ends when its token expires) or \"keep\", got {other:?}"
                ));
                SessionExpiry::End
            }
        };
        let leeway_secs = j.leeway_secs.unwrap_or(DEFAULT_JWT_LEEWAY_SECS);
        if leeway_secs > MAX_JWT_LEEWAY_SECS {
            problems.push(format!(
                "auth.jwt.leeway_secs: at most {MAX_JWT_LEEWAY_SECS} (clock skew, not a lifetime), got {leeway_secs}"
            ));
        }
        if let Some(max) = j.max_lifetime_secs {
            problems.positive("auth.jwt.max_lifetime_secs", max);
        }
        let role_claim = j.role_claim.unwrap_or_else(|| "role".into());
        if ["sub", "exp", "iss", "aud", "nbf", "iat", "jti", ""].contains(&role_claim.as_str()) {
            problems.push(format!(
                "auth.jwt.role_claim: must name a claim of its own, not a registered one, got {role_claim:?}"
            ));
        }
        for (key, value) in [("auth.jwt.issuer", &j.issuer), ("auth.jwt.audience", &j.audience)] {
            if value.is_empty() {
                problems.push(format!("{key}: must not be empty"));
            }
        }
        let (source, keys) = match (j.jwks_file, j.jwks_url) {
            (Some(path), None) => {
                let path = resolve(path);
                match KeySet::load(&path) {
                    Ok(keys) => (JwksSource::File(path), keys),
                    Err(e) => {
                        problems.push(format!("auth.jwt.jwks_file: {e}"));
                        return None;
                    }
                }
            }
            (None, Some(url)) => {
                let uri = match url.parse::<http::Uri>() {
                    Ok(uri) => uri,
                    Err(e) => {
                        problems.push(format!("auth.jwt.jwks_url: {e}, got {url:?}"));
                        return None;
                    }
                };
                let loopback = matches!(uri.host(), Some("localhost" | "127.0.0.1" | "[::1]"));
                match uri.scheme_str() {
                    Some("https") => {}
                    Some("http") if loopback => {}
                    _ => problems.push(format!(
                        "auth.jwt.jwks_url: must be https:// (http:// only to a loopback host), got {url:?}"
                    )),
                }
                let refresh = j.jwks_refresh_secs.unwrap_or(DEFAULT_JWKS_REFRESH_SECS);
                problems.positive("auth.jwt.jwks_refresh_secs", refresh);
                let stale = j.jwks_stale_secs.unwrap_or(DEFAULT_JWKS_STALE_SECS);
                if stale < refresh.saturating_mul(2) {
                    problems.push(format!(
                        "auth.jwt.jwks_stale_secs: must be at least twice jwks_refresh_secs ({refresh}), so that one failed fetch does not drop the keys, got {stale}"
                    ));
                }
                let ca_file = j.jwks_ca_file.map(resolve);
                if let Some(ca) = &ca_file {
                    if !ca.is_file() {
                        problems.push(format!("auth.jwt.jwks_ca_file: no such file {}", ca.display()));
                    }
                }
                let url = JwksUrl {
                    url: uri,
                    refresh: Duration::from_secs(refresh),
                    stale: Duration::from_secs(stale),
                    ca_file,
                };
                if url.ca_file.as_ref().is_some_and(|ca| ca.is_file()) {
                    if let Err(e) = url.tls() {
                        problems.push(format!("auth.jwt.jwks_ca_file: {e}"));
                    }
                }
                // Fetched when the gateway starts, before it reports ready.
                (JwksSource::Url(url), KeySet::empty())
            }
            _ => {
                problems.push(
                    "auth.jwt: set exactly one of jwks_file and jwks_url".into(),
                );
                return None;
            }
        };
        Some((
            JwtConfig {
                source,
                issuer: j.issuer,
                audience: j.audience,
                leeway: Duration::from_secs(leeway_secs),
                role_claim,
                session_expiry,
                max_lifetime: j.max_lifetime_secs.map(Duration::from_secs),
            },
            Arc::new(keys),
        ))
    });
    if serves_clients
        && static_tokens.is_empty()
        && static_tokens_file.is_none()
        && jwt.is_none()
        && problems.is_empty()
    {
        problems
            .push("auth: set auth.static_tokens or [auth.jwt], or no client can connect".into());
    }
    let defaults = LimitsConfig::default();
    // 0 is no limit.
    let deadline = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
    let statement_timeout = l
        .statement_timeout_secs
        .map_or(defaults.statement_timeout, deadline);
    let held = l
        .max_held_append_bytes
        .unwrap_or(defaults.max_held_append_bytes);
    let spill_dir = l
        .append_spill_dir
        .map_or(defaults.append_spill_dir, resolve);
    // Made once here, so that a folder the gateway cannot write to stops it at start, not at
    // the first large APPEND.
    if let Err(e) = quackgate_spill::Spill::new_in(&spill_dir) {
        problems.push(format!(
            "limits.append_spill_dir: cannot hold APPENDs in {}: {e}",
            spill_dir.display()
        ));
    }
    let spilled = match l.max_spilled_append_bytes {
        Some(bytes) => bytes,
        None => crate::limits::default_spilled_append_bytes(&spill_dir).unwrap_or(0),
    };
    let limits = LimitsConfig {
        max_sessions: l.max_sessions.unwrap_or(defaults.max_sessions),
        max_sessions_per_principal: l
            .max_sessions_per_principal
            .unwrap_or(defaults.max_sessions_per_principal),
        max_connections_per_address: l
            .max_connections_per_address
            .unwrap_or(defaults.max_connections_per_address),
        max_requests_per_principal: l
            .max_requests_per_principal
            .unwrap_or(defaults.max_requests_per_principal),
        failed_auth_burst: l.failed_auth_burst.unwrap_or(defaults.failed_auth_burst),
        failed_auth_window: l
            .failed_auth_window_secs
            .map_or(defaults.failed_auth_window, Duration::from_secs),
        failed_auth_backoff: l
            .failed_auth_backoff_secs
            .map_or(defaults.failed_auth_backoff, Duration::from_secs),
        failed_auth_backoff_max: l
            .failed_auth_backoff_max_secs
            .map_or(defaults.failed_auth_backoff_max, Duration::from_secs),
        statement_timeout,
        read_only_statement_timeout: l
            .read_only_statement_timeout_secs
            .map_or(statement_timeout, deadline),
        max_held_append_bytes: held,
        max_held_append_bytes_per_principal: l
            .max_held_append_bytes_per_principal
            .unwrap_or(held / 2),
        append_memory_bytes: l
            .append_memory_bytes
            .unwrap_or(defaults.append_memory_bytes),
        append_spill_dir: spill_dir,
        max_spilled_append_bytes: spilled,
        max_spilled_append_bytes_per_principal: l
            .max_spilled_append_bytes_per_principal
            .unwrap_or(spilled / 4),
        min_append_rate: l.min_append_rate.unwrap_or(defaults.min_append_rate),
        append_rate_under_pressure: l
            .append_rate_under_pressure
            .unwrap_or(defaults.append_rate_under_pressure),
    };
    for (key, value) in [
        ("limits.max_sessions", limits.max_sessions as u64),
        (
            "limits.max_sessions_per_principal",
            limits.max_sessions_per_principal as u64,
        ),
        (
            "limits.max_connections_per_address",
            limits.max_connections_per_address as u64,
        ),
        (
            "limits.max_requests_per_principal",
            limits.max_requests_per_principal as u64,
        ),
        (
            "limits.failed_auth_burst",
            u64::from(limits.failed_auth_burst),
        ),
        ("limits.max_held_append_bytes", limits.max_held_append_bytes),
        ("limits.min_append_rate", limits.min_append_rate),
        ("limits.append_memory_bytes", limits.append_memory_bytes),
        (
            "limits.max_spilled_append_bytes",
            limits.max_spilled_append_bytes,
        ),
        (
            "limits.max_spilled_append_bytes_per_principal",
            limits.max_spilled_append_bytes_per_principal,
        ),
        (
            "limits.max_held_append_bytes_per_principal",
            limits.max_held_append_bytes_per_principal,
        ),
        (
            "limits.failed_auth_window_secs",
            limits.failed_auth_window.as_secs(),
        ),
        (
            "limits.failed_auth_backoff_secs",
            limits.failed_auth_backoff.as_secs(),
        ),
    ] {
        problems.positive(key, value);
    }
    if limits.append_rate_under_pressure < limits.min_append_rate {
        problems.push(format!(
            "limits.append_rate_under_pressure: at least limits.min_append_rate ({}), got {}",
            limits.min_append_rate, limits.append_rate_under_pressure
        ));
    }
    if limits.append_memory_bytes > limits.max_held_append_bytes_per_principal {
        problems.push(format!(
            "limits.append_memory_bytes: at most limits.max_held_append_bytes_per_principal ({}), or an APPEND held in memory could pass it, got {}",
            limits.max_held_append_bytes_per_principal, limits.append_memory_bytes
        ));
    }
    for (key, value) in [
        ("limits.failed_auth_window_secs", limits.failed_auth_window),
        (
            "limits.failed_auth_backoff_max_secs",
            limits.failed_auth_backoff_max,
        ),
    ] {
        if value > MAX_LIMIT_DURATION {
            problems.push(format!(
                "{key}: at most {} (a day), got {}",
                MAX_LIMIT_DURATION.as_secs(),
                value.as_secs()
            ));
        }
    }
    if limits.failed_auth_backoff_max < limits.failed_auth_backoff {
        problems.push(format!(
            "limits.failed_auth_backoff_max_secs: must be >= limits.failed_auth_backoff_secs ({}), got {}",
            limits.failed_auth_backoff.as_secs(),
            limits.failed_auth_backoff_max.as_secs()
        ));
    }

    AuthSection {
        static_tokens,
        static_tokens_file,
        jwt,
        limits,
    }
}
