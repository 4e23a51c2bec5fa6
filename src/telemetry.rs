//! Log setup: `tracing` events to stderr, filtered by `RUST_LOG` or the config's `log.filter`,
//! as text for people or as JSON lines for log collectors (Azure Log Analytics parses them into
//! columns): one object per event with `timestamp`, `level`, `target`, `fields.message` (a
//! constant sentence) and the event's other fields.
//!
//! stdout is reserved for the one machine-readable `QUACKGATE READY` line, so scripts and tests
//! can read it without parsing logs. Tokens and SQL are never logged above debug.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter when neither `log.filter` nor `RUST_LOG` says otherwise.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `text` or `json`.
    pub fn parse(name: &str) -> Option<LogFormat> {
        match name {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `filter`.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a person at a terminal, never in files and log collectors.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}
