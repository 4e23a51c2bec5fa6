//! JWT keys fetched from an identity provider's JWKS endpoint (`auth.jwt.jwks_url`).
//!
//! The document is fetched once before the gateway reports ready, then every
//! `jwks_refresh_secs`. A failed fetch keeps the keys in force, but only for `jwks_stale_secs`
//! after the last good one: past that, every JWT is refused, so keys the provider has revoked
//! cannot stay valid forever behind an outage. A document with no usable key revokes them all
//! at once, as an emptied JWKS file does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::keys::{JwksError, KeySet, KeyStore};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Time one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before retrying a failed fetch, when shorter than the refresh period.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Least time between two fetches that tokens with an unknown `kid` trigger, so that a
/// stream of forged kids cannot turn the gateway against the provider.
const MIN_EARLY_FETCH_INTERVAL: Duration = Duration::from_secs(5);

/// `jwks_url` and its timing.
#[derive(Debug, Clone)]
pub struct JwksUrl {
    /// `https://...` (plain `http://` only to a loopback host).
    pub url: http::Uri,
    /// Time between fetches.
    pub refresh: Duration,
    /// How long the last good keys stay in force while fetches fail.
    pub stale: Duration,
    /// PEM CA certificates to trust instead of the public web roots.
    pub ca_file: Option<PathBuf>,
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

impl JwksUrl {
    /// The TLS client a JWKS URL is fetched with.
    ///
    /// # Errors
    /// When `jwks_ca_file` holds no usable certificate (checked with the config).
    pub fn tls(&self) -> Result<rustls::ClientConfig, String> {
        crate::tls::client_config(self.ca_file.as_deref())
    }

    fn client(&self) -> Result<HttpsClient, String> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls()?)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Client::builder(TokioExecutor::new()).build(connector))
    }

    async fn fetch(&self, client: &HttpsClient) -> Result<KeySet, String> {
        let exchange = async {
            let response = client
                .get(self.url.clone())
                .await
                .map_err(|e| format!("fetching: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map(|body| body.to_bytes())
                .map_err(|e| format!("reading the body: {e}"))
        };
        let body = tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer in {} s", FETCH_TIMEOUT.as_secs()))??;
        // A published document must not hold HMAC secrets: anyone could sign with them.
        KeySet::parse_public(&body, &self.shown()).or_else(|e| match e {
            // A provider that lists no usable key has revoked them.
            JwksError::NoUsableKey { .. } => {
                warn!(jwks = %self.shown(), error = %e, "the JWKS has no usable key: every JWT is refused");
                Ok(KeySet::empty())
            }
            other => Err(other.to_string()),
        })
    }

    /// The URL without its query or user info, which may carry credentials: for logs.
    fn shown(&self) -> String {
        format!(
            "{}://{}{}",
            self.url.scheme_str().unwrap_or("https"),
            self.url.host().unwrap_or(""),
            self.url.path()
        )
    }

    /// Fetches the keys once and puts them in force: before the gateway reports ready.
    /// Returns whether it succeeded.
    pub async fn load(&self, keys: &KeyStore) -> bool {
        let store = keys;
        let result = match self.client() {
            Ok(client) => self.fetch(&client).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(keys) => {
                info!(jwks = %self.shown(), kids = ?keys.kids(), "JWKS fetched");
                store.replace(keys);
                true
            }
            Err(e) => {
                warn!(jwks = %self.shown(), error = %e, "fetching the JWKS failed: JWTs are refused until a fetch succeeds");
                false
            }
        }
    }

    /// Fetches every refresh period until `stop`; the first fetch was [`JwksUrl::load`], and
    /// after a failed one the next comes soon.
    pub async fn watch(self, keys: Arc<KeyStore>, loaded: bool, stop: CancellationToken) {
        let client = match self.client() {
            Ok(client) => client,
            Err(e) => {
                warn!(error = %e, "no JWKS refreshes: cannot build the HTTPS client");
                return;
            }
        };
        let mut last_good = loaded.then(Instant::now);
        let mut wait = if loaded {
            self.refresh
        } else {
            self.refresh.min(RETRY_AFTER)
        };
        let mut last_fetch = Instant::now();
        loop {
            let early = last_fetch + MIN_EARLY_FETCH_INTERVAL;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // A token named a key we do not know: the provider may have rotated. Waits
                // out the minimum interval since the last fetch first.
                _ = async {
                    keys.unknown_kid().await;
                    tokio::time::sleep_until(early.into()).await;
                } => {}
                _ = stop.cancelled() => return,
            }
            last_fetch = Instant::now();
            match self.fetch(&client).await {
                Ok(new) => {
                    let kids = new.kids().iter().map(|k| k.to_string()).collect::<Vec<_>>();
                    if keys.replace_if_changed(new) {
                        info!(jwks = %self.shown(), kids = ?kids, "JWKS changed");
                    }
                    last_good = Some(Instant::now());
                    wait = self.refresh;
                }
                Err(e) => {
                    wait = self.refresh.min(RETRY_AFTER);
                    let stale = last_good.is_none_or(|t| t.elapsed() > self.stale);
                    if stale {
                        if last_good.take().is_some() {
                            warn!(jwks = %self.shown(), error = %e, stale_secs = self.stale.as_secs(), "the JWKS could not be fetched for longer than jwks_stale_secs: every JWT is refused until a fetch succeeds");
                        }
                        keys.replace(KeySet::empty());
                    } else {
                        warn!(jwks = %self.shown(), error = %e, "fetching the JWKS failed; the keys stay in force");
                    }
                }
            }
        }
    }
}
