//! The environment a worker process starts with: only what DuckDB, its extensions and the
//! Azure SDK inside them read. Client SQL runs in the worker, so nothing else of the gateway's
//! environment goes there: not its `QUACKGATE__*` overrides (which may name or hold secrets),
//! and nothing a platform or an operator put there for the gateway alone.

use std::ffi::{OsStr, OsString};

/// Passed on by exact name.
const NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "TZ",
    "LANG",
    "RUST_BACKTRACE",
    // Proxies and CA bundles, for httpfs, quack and azure.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "CURL_CA_INFO",
    "CURL_CA_PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    // Managed identity endpoints (App Service, Container Apps, Arc): the azure extension's
    // credential chain asks them for Blob storage tokens.
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
];

/// Passed on by prefix: the Azure SDK's settings and the locale.
const PREFIXES: &[&str] = &["AZURE_", "LC_"];

pub fn passes(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The variables of this process that a worker gets.
pub fn for_worker() -> Vec<(OsString, OsString)> {
    std::env::vars_os().filter(|(k, _)| passes(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_duckdb_and_azure_read_passes() {
        for kept in [
            "PATH",
            "TMPDIR",
            "AZURE_CLIENT_ID",
            "IDENTITY_HEADER",
            "LC_ALL",
        ] {
            assert!(passes(OsStr::new(kept)), "{kept}");
        }
        for dropped in [
            "QUACKGATE__GATEWAY__ID_SECRET_FILE",
            "QUACKGATE__TLS__KEY",
            "QUACKGATE_DUCKDB_HOME",
            "QUACK_TOKEN",
            "KUBERNETES_SERVICE_HOST",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(!passes(OsStr::new(dropped)), "{dropped}");
        }
    }
}
