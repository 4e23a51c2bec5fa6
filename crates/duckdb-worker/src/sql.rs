//! Quoting values into SQL text, in a leaf file shared by the worker and the DuckLake setup.

/// Quotes a string as a SQL literal.
pub(crate) fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
