//! Log setup: `tracing` events to stderr, filtered by `RUST_LOG` or the config's `log.filter`,
//! as text for people or as JSON lines for log collectors (Azure Log Analytics parses them into
//! columns): one object per event with `timestamp`, `level`, `target`, `fields.message` (a
//! constant sentence) and the event's other fields.
//!
//! stdout is reserved for the one machine-readable `QUACKGATE READY` line, so scripts and tests
//! can read it without parsing logs. Tokens and SQL are never logged above debug.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing::Level;
use tracing_subscriber::filter::{ParseError, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::audit;

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

/// Parses a filter (`log.filter`, `RUST_LOG`), each comma-separated directive trimmed first.
///
/// tracing-subscriber 0.3.23 walks the characters of a trimmed directive but slices the
/// untrimmed text with their indices, so a directive with white space before it and a
/// multi-byte character in it (`info, é=debug`) panicked inside `EnvFilter::try_new`. Found
/// by fuzzing the config loader (fuzz/RESULTS.md). Trimmed, both agree.
///
/// Field values (`[span{field=value}]`) match as plain text, not as regular expressions: the
/// library compiles a value into an automaton, and a 412-byte filter the fuzzer found
/// (`tests/data/fuzz/config-log-filter-regex-timeout.toml`) took more than two minutes and a
/// growing quarter of a gigabyte to compile, hanging the config check and the start.
///
/// # Errors
/// The library's reason when a directive is not valid.
pub fn parse_filter(text: &str) -> Result<EnvFilter, ParseError> {
    let directives: Vec<&str> = text.split(',').map(str::trim).collect();
    EnvFilter::builder()
        .with_regex(false)
        .parse(directives.join(","))
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `filter`. With
/// `audit_file`, audit records go there as JSON lines, appended, and not to stderr; without
/// it they are off unless the filter names their target (`audit=info`), so a busy gateway
/// does not log a line per statement by default.
///
/// # Errors
/// When `audit_file` cannot be opened for appending.
pub fn init(filter: &str, format: LogFormat, audit_file: Option<&Path>) -> std::io::Result<()> {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    let names_audit = directives.contains(audit::TARGET);
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .and_then(|text| parse_filter(&text).ok());
    let mut filter = from_env
        .or_else(|| parse_filter(filter).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_FILTER));
    if audit_file.is_none() && !names_audit {
        filter = filter.add_directive(
            format!("{}=off", audit::TARGET)
                .parse()
                .expect("a valid directive"),
        );
    }
    let Some(path) = audit_file else {
        // One global filter, as without an audit file nothing needs a layer of its own.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match format {
            // Colour codes only for a person at a terminal, never in files and log collectors.
            LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
            LogFormat::Json => builder.json().with_current_span(false).init(),
        }
        return Ok(());
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    filter = filter.add_directive(
        format!("{}=off", audit::TARGET)
            .parse()
            .expect("a valid directive"),
    );
    let audit_layer = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        .with_writer(Mutex::new(file))
        .with_filter(Targets::new().with_target(audit::TARGET, Level::INFO));
    let main: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(main.with_filter(filter))
        .with(audit_layer)
        .init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directive_with_space_before_a_multibyte_character_is_parsed_not_a_panic() {
        // Each of these panicked in EnvFilter::try_new (tracing-subscriber 0.3.23).
        for text in ["info, é=debug", " é=debug", "info,\té[span]=trace", "  ö"] {
            assert!(parse_filter(text).is_ok(), "{text:?}");
        }
        // What the library refuses stays refused, with its reason.
        assert!(parse_filter("info, =debug").is_err());
        assert!(parse_filter("quackgate=loud").is_err());
    }

    #[test]
    fn trimming_keeps_the_meaning_of_a_filter() {
        let spaced = parse_filter(" quackgate=debug , hyper=warn ").unwrap();
        let plain = parse_filter("quackgate=debug,hyper=warn").unwrap();
        assert_eq!(spaced.to_string(), plain.to_string());
    }
}
