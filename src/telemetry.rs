//! Log setup: `tracing` events to stderr, filtered by `RUST_LOG` or the config's `log.filter`.
//!
//! stdout is reserved for the one machine-readable `QUACKGATE READY` line, so scripts and tests
//! can read it without parsing logs. Tokens and SQL are never logged above debug.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter when neither `log.filter` nor `RUST_LOG` says otherwise.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `filter`.
pub fn init(filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in files and log collectors.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
