//! Keeps the JWT keys current while the gateway runs: a JWKS file re-read every
//! [`JWKS_RELOAD_INTERVAL`], or a JWKS URL fetched on its schedule (`jwks_url`).
//!
//! A file that is not JSON (say, caught half-written) or cannot be read keeps the previous keys
//! in force; a file that is gone, or holds no usable key, revokes them all: removing keys is
//! how an operator reacts to a leaked one, and that must not need a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::jwt::JwksSource;
use crate::auth::keys::{JwksError, KeySet, KeyStore};

/// How often the JWKS file is checked for changes.
pub const JWKS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Loads the keys a JWKS URL serves, before the gateway reports ready (a file's were read with
/// the config). Says whether keys are in force.
pub async fn first_load(source: &JwksSource, keys: &KeyStore) -> bool {
    match source {
        JwksSource::Url(url) => url.load(keys).await,
        JwksSource::File(_) => true,
    }
}

/// Refreshes `keys` from `source` until `stop`; `loaded` is what [`first_load`] said.
pub async fn run(source: JwksSource, keys: Arc<KeyStore>, loaded: bool, stop: CancellationToken) {
    match source {
        JwksSource::File(path) => watch_file(&path, &keys, stop).await,
        JwksSource::Url(url) => url.watch(keys, loaded, stop).await,
    }
}

async fn watch_file(path: &Path, keys: &KeyStore, stop: CancellationToken) {
    let mut tick = tokio::time::interval(JWKS_RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        // A small local file: reading it inline costs less than a blocking-pool hop.
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !keys.current().is_empty() {
                    warn!(jwks = %path.display(), "the JWKS file is gone: every JWT is refused until it is back");
                    keys.replace(KeySet::empty());
                }
                continue;
            }
            Err(e) => {
                let message = e.to_string();
                if last_error.as_ref() != Some(&message) {
                    warn!(jwks = %path.display(), error = %message, "cannot read the JWKS file; keeping the keys in force");
                    last_error = Some(message);
                }
                continue;
            }
        };
        if keys.current().is_from(&bytes) {
            continue;
        }
        match KeySet::parse(&bytes, &path.display().to_string()) {
            Ok(new) => {
                info!(jwks = %path.display(), kids = ?new.kids(), "JWKS reloaded");
                keys.replace(new);
                last_error = None;
            }
            Err(JwksError::NoUsableKey { skipped, .. }) => {
                warn!(jwks = %path.display(), skipped = %skipped, "the JWKS file has no usable key: every JWT is refused");
                keys.replace(KeySet::empty_from(&bytes));
            }
            Err(e) => {
                let message = e.to_string();
                if last_error.as_ref() != Some(&message) {
                    warn!(error = %message, "JWKS file changed but cannot be used; keeping the keys in force");
                    last_error = Some(message);
                }
            }
        }
    }
}
