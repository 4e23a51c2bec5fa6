//! The check a lake worker's authorization hook runs on its clients' statements: client SQL
//! must not reach the lake's metadata database, nor Quack's functions.
//!
//! A lake worker attaches the lake's metadata as a database of its own
//! (`__ducklake_metadata_<lake>`, served by the catalog over Quack), and every connection of the
//! worker sees it: client SQL could read and rewrite the lake's snapshots and file lists there,
//! or send the catalog any text through its `.query()`. DuckDB 1.5.5 has no per-connection
//! catalog rights, so the hook refuses, on the text as sent, every way a statement can name a
//! database or a function:
//!
//! - in the text itself: the name is refused wherever it appears, in code, in a literal or in
//!   a comment, so this check never has to agree with DuckDB's lexer on what is code, and
//!   `U&` (names spelt with Unicode escapes) is refused wherever it appears;
//! - from a string computed at run time: only SQL run from a string (`query`, `query_table`,
//!   `json_execute_serialized_sql`), the search path and the default schema turn a string into
//!   a name that is looked up. The first are refused as calls, whatever their arguments; the
//!   search path and schema may be set only to plain names or literals;
//! - from SQL read at run time rather than sent: `IMPORT DATABASE` runs the SQL files of a
//!   folder, so it is refused.
//!
//! Quack's functions (`quack_stop`, `quack_active_connections`, `quack_query_by_name`, ...) are
//! refused as calls on the same grounds: with no SQL run from strings, their names must appear
//! in the text. Judging calls needs no lexer either: a word is a call when a `(` follows it past
//! spaces, quotes and comments, read generously, so a word in a literal may be refused but no
//! call can be missed. Statements that stored SQL runs later (views, macros) passed this check
//! when they were created.

/// Why a client statement is refused; the text is what the client reads after
/// `quackgate: this statement was refused: `.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // each variant's `#[error]` text is its documentation
pub enum ClientSqlRefusal {
    #[error("it names the lake's metadata database (__ducklake_metadata_...)")]
    MetadataDatabase,
    #[error("it spells a name with Unicode escapes (U&)")]
    UnicodeEscape,
    #[error("it runs SQL from a string (query, query_table, json_execute_serialized_sql)")]
    SqlFromString,
    #[error("it calls one of Quack's functions, which are the gateway's")]
    QuackFunction,
    #[error("IMPORT DATABASE runs SQL read from files")]
    Import,
    #[error(
        "the search path and schema may be set only to plain names or literals \
         (SET search_path = 'a,b.c')"
    )]
    ComputedSearchPath,
}

const METADATA_DATABASE: &str = "__ducklake_metadata";

/// Whether a client may run `sql` on a lake worker.
pub fn check_client_sql(sql: &str) -> Result<(), ClientSqlRefusal> {
    let lower = sql.to_ascii_lowercase();
    if lower.contains(METADATA_DATABASE) {
        return Err(ClientSqlRefusal::MetadataDatabase);
    }
    if lower.contains("u&") {
        return Err(ClientSqlRefusal::UnicodeEscape);
    }
    let bytes = lower.as_bytes();
    let words = words(bytes);
    let has = |w: &str| words.iter().any(|&(s, e)| &lower[s..e] == w);
    for &(start, end) in &words {
        let word = &lower[start..end];
        if matches!(word, "query_table" | "json_execute_serialized_sql")
            || (word == "query" && called(bytes, end))
        {
            return Err(ClientSqlRefusal::SqlFromString);
        }
        if word.starts_with("quack") && called(bytes, end) {
            return Err(ClientSqlRefusal::QuackFunction);
        }
        if word == "import_database"
            || (word == "import" && next_word(bytes, end).is_some_and(|w| w == b"database"))
        {
            return Err(ClientSqlRefusal::Import);
        }
    }
    if (has("search_path") || has("schema"))
        && (has("set") || has("reset") || has("pragma"))
        && !is_plain_search_path_setting(&lower)
    {
        return Err(ClientSqlRefusal::ComputedSearchPath);
    }
    Ok(())
}

/// The spans of `bytes`' words: runs of ASCII letters, digits and `_`. Every other byte,
/// non-ASCII included, ends a word, so a word found here may be part of a longer name to
/// DuckDB, never the other way round.
fn words(bytes: &[u8]) -> Vec<(usize, usize)> {
    let ident = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if ident(&bytes[i]) {
            let start = i;
            while i < bytes.len() && ident(&bytes[i]) {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

/// Where the next token starts after `i`, past spaces (non-ASCII bytes included), double
/// quotes and comments; `None` when a block comment does not end (which DuckDB refuses, but
/// callers treat as the worst case).
fn skip_gap(bytes: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match bytes.get(i) {
            Some(c) if c.is_ascii_whitespace() || *c >= 0x80 || *c == b'"' => i += 1,
            Some(b'-') if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && !matches!(bytes[i], b'\n' | b'\r') {
                    i += 1;
                }
            }
            Some(b'/') if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                loop {
                    match (bytes.get(i), bytes.get(i + 1)) {
                        (None, _) => return None,
                        (Some(b'/'), Some(b'*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some(b'*'), Some(b'/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => i += 1,
                    }
                }
            }
            _ => return Some(i),
        }
    }
}

/// Whether the word ending at `end` is called: a `(` is next, past any gap.
fn called(bytes: &[u8], end: usize) -> bool {
    skip_gap(bytes, end).is_none_or(|i| bytes.get(i) == Some(&b'('))
}

/// The word after the one ending at `end`, past any gap.
fn next_word(bytes: &[u8], end: usize) -> Option<&[u8]> {
    let start = skip_gap(bytes, end)?;
    let len = bytes[start..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    (len > 0).then(|| &bytes[start..start + len])
}

/// Whether `lower` is exactly one `SET [SESSION|LOCAL] search_path|schema =|TO <value>` or
/// `RESET [SESSION|LOCAL] search_path|schema`, with a value that is one literal (no doubled
/// quotes) or one dotted name: nothing in it is computed.
fn is_plain_search_path_setting(lower: &str) -> bool {
    let text = lower.trim().trim_end_matches(';').trim_end();
    let mut tokens = text.split_ascii_whitespace().peekable();
    let reset = match tokens.next() {
        Some("set") => false,
        Some("reset") => true,
        _ => return false,
    };
    if matches!(tokens.peek(), Some(&"session" | &"local")) {
        tokens.next();
    }
    let rest: Vec<&str> = tokens.collect();
    let rest = rest.join(" ");
    let Some(rest) = rest
        .strip_prefix("search_path")
        .or_else(|| rest.strip_prefix("schema"))
    else {
        return false;
    };
    if reset {
        return rest.is_empty();
    }
    let rest = rest.trim_start();
    let Some(value) = rest
        .strip_prefix('=')
        .or_else(|| rest.strip_prefix("to "))
        .map(str::trim)
    else {
        return false;
    };
    let name = |s: &str| {
        s.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => !inner.contains('\''),
        None => name(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientSqlRefusal::*;

    #[test]
    fn ordinary_client_sql_passes() {
        for sql in [
            "SELECT 42",
            "FROM events WHERE id > 3",
            "SELECT query FROM log WHERE query = 'x'",
            "SELECT 'quack' AS duck, 'a query' AS s",
            "CREATE TABLE t AS SELECT range AS id FROM range(10)",
            "INSERT INTO main.t VALUES (NULL)",
            "INSERT INTO main.query VALUES (NULL)",
            "SET search_path = 'main'",
            "SET search_path TO main",
            "set session schema = 'main';",
            "SET schema = lake.main",
            "RESET search_path",
            "SET TimeZone = 'UTC'",
            "SET VARIABLE x = 1",
            "SELECT current_setting('search_path')",
            "CREATE SCHEMA s",
            "SELECT * FROM information_schema.tables",
            "-- a comment\nSELECT 1 /* and another */",
            "SELECT * FROM ducklake_snapshots('lake')",
            "USE main",
            "BEGIN TRANSACTION",
            "COMMIT",
            "SELECT 'école', naïve FROM t",
        ] {
            assert_eq!(check_client_sql(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn every_way_to_the_metadata_database_or_quacks_functions_is_refused() {
        for (sql, why) in [
            (
                "FROM __ducklake_metadata_lake.main.ducklake_snapshot",
                MetadataDatabase,
            ),
            (
                "FROM \"__DuckLake_Metadata_lake\".main.ducklake_snapshot",
                MetadataDatabase,
            ),
            (
                "SELECT * FROM \"__ducklake_metadata_lake\".query('DELETE FROM ducklake_snapshot')",
                MetadataDatabase,
            ),
            ("SELECT '__ducklake_metadata_lake'", MetadataDatabase),
            ("-- __ducklake_metadata_lake\nSELECT 1", MetadataDatabase),
            (
                "INSERT INTO main.__ducklake_metadata_x VALUES (NULL)",
                MetadataDatabase,
            ),
            (
                "FROM U&\"\\005f_ducklake_metadata_lake\".main.t",
                UnicodeEscape,
            ),
            ("SELECT u&'x'", UnicodeEscape),
            ("FROM query('SELECT 1')", SqlFromString),
            ("FROM QUERY ('SELECT 1')", SqlFromString),
            ("FROM \"query\"('SELECT 1')", SqlFromString),
            ("FROM query/* c */('x')", SqlFromString),
            ("FROM query -- c\n ('x')", SqlFromString),
            (
                "FROM query /* a /* nested */ comment */ ('x')",
                SqlFromString,
            ),
            ("FROM query /* never ends", SqlFromString),
            ("FROM main.query\u{a0}('x')", SqlFromString),
            ("FROM query_table('t')", SqlFromString),
            ("FROM query_table(getvariable('t'))", SqlFromString),
            ("SELECT json_execute_serialized_sql('{}')", SqlFromString),
            (
                "CREATE MACRO m(t) AS TABLE FROM query_table(t)",
                SqlFromString,
            ),
            ("CALL quack_stop('quack:127.0.0.1:1')", QuackFunction),
            ("FROM quack_active_connections()", QuackFunction),
            ("SELECT * FROM quack_server_list ()", QuackFunction),
            (
                "FROM quack_query_by_name('__duck' || 'x', 'SELECT 1')",
                QuackFunction,
            ),
            ("FROM \"QUACK_STOP\"('x')", QuackFunction),
            ("IMPORT DATABASE '/tmp/x'", Import),
            ("import /* x */ database 'x'", Import),
            ("PRAGMA import_database('/tmp/x')", Import),
            ("SET search_path = '__duck' || 'lake'", ComputedSearchPath),
            ("SET search_path = getvariable('p')", ComputedSearchPath),
            ("SET GLOBAL search_path = 'main'", ComputedSearchPath),
            ("SET schema = concat('a', 'b')", ComputedSearchPath),
            ("SET /**/ search_path = 'x'", ComputedSearchPath),
            ("PRAGMA search_path = 'x'", ComputedSearchPath),
            ("SET search_path = 'a'; SELECT 1", ComputedSearchPath),
            ("SET search_path = 'a''b'", ComputedSearchPath),
        ] {
            assert_eq!(check_client_sql(sql), Err(why), "{sql}");
        }
    }
}
