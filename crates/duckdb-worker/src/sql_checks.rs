//! The two checks on SQL text the catalog's authorization hook runs (`session_roles`):
//! [`is_read_only_sql`] for read-only sessions, [`is_worker_sql`] for the workers' own
//! read-write metadata sessions.
//!
//! A file of its own because it is pure text scanning with no DuckDB in it: the gateway tests
//! it, and builds it with the `engine` feature off (the fuzz crate), without linking DuckDB.

/// Functions over DuckDB's logs and profiling, which every connection of a process shares:
/// switched on in the catalog, its log holds every worker's metadata SQL, other principals'
/// inlined rows among it. `duckdb_logs_parsed` is a macro over `duckdb_logs`.
pub(crate) const LOGS_AND_PROFILING: &[&str] = &[
    "enable_logging",
    "disable_logging",
    "truncate_duckdb_logs",
    "write_log",
    "duckdb_logs",
    "duckdb_logs_parsed",
    "duckdb_log_contexts",
    "enable_profiling",
    "disable_profiling",
];

/// The views over the logs (`FROM duckdb_logs` reads them with no call).
pub(crate) const LOG_VIEWS: &[&str] = &["duckdb_logs", "duckdb_log_contexts"];

/// Whether a catalog session may not name `name` as it does: a call of what runs SQL built at
/// run time, changes sequences, checkpoints or reaches the process's logs, or a log view.
fn refused_name(name: &Name) -> bool {
    let lower = name.text.to_ascii_lowercase();
    (name.called && refused_call(&lower)) || LOG_VIEWS.contains(&lower.as_str())
}

fn refused_call(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("quack")
        || name.contains("execute_serialized")
        || [
            "query",
            "query_table",
            "nextval",
            "setval",
            "force_checkpoint",
        ]
        .contains(&name.as_str())
        || LOGS_AND_PROFILING.contains(&name.as_str())
}

/// Whether `sql` is one statement that only reads.
///
/// Strict, because this scanner and DuckDB's lexer must never disagree on what is code: it
/// refuses comments (`--`, `/*`; DuckDB nests block comments and ends line comments at `\r`),
/// dollar quotes, backslashes (escape strings), `U&` (Unicode escapes in names), NUL, and any
/// `;` before the end. Outside quotes, the first word must be SELECT, FROM, WITH, VALUES,
/// TABLE, DESCRIBE, SHOW or SUMMARIZE, and no word may be a command that writes. Functions
/// with a side effect ([`refused_call`]) are refused where they are called; `quack` is refused
/// anywhere but in a name that is not called (a string could become a name at run time), since
/// DuckLake writes a user's column bare when its name is not one of DuckDB's keywords, and a
/// column may be called `query` or `quack_count`.
pub fn is_read_only_sql(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    if ["--", "/*", "*/", "$", "\\", "u&", "\0"]
        .iter()
        .any(|bad| lower.contains(bad))
    {
        return false;
    }
    let Some(names) = names_outside_literals(sql) else {
        return false;
    };
    let mut uncalled_names_blanked = lower.into_bytes();
    for name in names.iter().filter(|n| !n.called) {
        uncalled_names_blanked[name.span.clone()].fill(b' ');
    }
    if uncalled_names_blanked.windows(5).any(|w| w == b"quack") || names.iter().any(refused_name) {
        return false;
    }
    let Some(words) = words(sql) else {
        return false;
    };
    let Some(first) = words.first() else {
        return false;
    };
    const READS: &[&str] = &[
        "SELECT",
        "FROM",
        "WITH",
        "VALUES",
        "TABLE",
        "DESCRIBE",
        "SHOW",
        "SUMMARIZE",
    ];
    const REFUSED: &[&str] = &[
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "COPY",
        "CREATE",
        "DROP",
        "ALTER",
        "TRUNCATE",
        "ATTACH",
        "DETACH",
        "INSTALL",
        "LOAD",
        "SET",
        "RESET",
        "CALL",
        "PRAGMA",
        "EXPORT",
        "IMPORT",
        "VACUUM",
        "CHECKPOINT",
        "USE",
        "INTO",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "ABORT",
        "END",
        "PREPARE",
        "EXECUTE",
        "DEALLOCATE",
    ];
    READS.contains(&first.as_str())
        && !words.iter().any(|w| REFUSED.contains(&w.as_str()))
        && ducklake_names_as_ducklake_writes_them(sql, &names, false)
}

/// Whether `sql`, from a read-write session (a worker's metadata connection), calls nothing it
/// must not ([`refused_call`]: every Quack function, bare or quoted, such as `quack_stop`,
/// `quack_serve`, `quack_query`, `quack_server_list`; what runs SQL from a string, `query`,
/// `query_table`, `json_execute_serialized_sql`; the process's logs), no PREPARE or
/// EXECUTE, and no view, macro or function made in the catalog (DuckLake keeps its own as
/// rows; a stored object could call what is refused here), no `DROP` or `ALTER` of a table
/// but DuckLake's inlined-data ones (it drops those once flushed; it drops and alters its
/// own tables only when it migrates a lake to a newer format, which the catalog's own
/// DuckLake does when it attaches the lake), no `CREATE TABLE` of a name not DuckLake's, and
/// DuckLake's tables and functions only as DuckLake writes them
/// ([`ducklake_names_as_ducklake_writes_them`]). Other names are judged in call position only,
/// since DuckLake writes users' column names bare (a column may be called `query`).
/// String literals are skipped, since DuckLake writes users' values in them; what could make
/// this scanner and DuckDB's lexer disagree on where a literal ends (an unterminated quote,
/// escape strings, comments, dollar quotes, `U&` names) refuses the statement.
pub fn is_worker_sql(sql: &str) -> bool {
    let Some(names) = names_outside_literals(sql) else {
        return false;
    };
    if !ducklake_names_as_ducklake_writes_them(sql, &names, true) {
        return false;
    }
    let word = |i: usize| names.get(i).map(|n| n.text.to_ascii_uppercase());
    // Settings: DuckLake sends none, and a global one would reach the catalog's own
    // connections (its hooks included).
    if matches!(
        word(0).as_deref(),
        Some("PREPARE" | "EXECUTE" | "SET" | "RESET" | "PRAGMA" | "USE")
    ) {
        return false;
    }
    if word(0).as_deref() == Some("CREATE")
        && (1..6).any(|i| matches!(word(i).as_deref(), Some("VIEW" | "MACRO" | "FUNCTION")))
    {
        return false;
    }
    // DuckLake's statements name the metadata catalog before the table: skip the kind, `IF
    // EXISTS` and every part that is not a `ducklake_` table.
    let drops_its_own_table = names.iter().enumerate().any(|(i, name)| {
        matches!(name.text.to_ascii_uppercase().as_str(), "DROP" | "ALTER")
            && !names[i + 1..]
                .iter()
                .map(|n| n.text.to_ascii_lowercase())
                .find(|n| {
                    !matches!(n.as_str(), "table" | "if" | "exists" | "main")
                        && !n.starts_with("__ducklake_metadata")
                })
                .is_some_and(|n| n.starts_with("ducklake_inlined_"))
    });
    let creates_a_foreign_table = names.iter().enumerate().any(|(i, name)| {
        let mut rest = names[i + 1..]
            .iter()
            .map(|n| n.text.to_ascii_lowercase())
            .filter(|n| {
                !matches!(n.as_str(), "if" | "not" | "exists" | "main")
                    && !n.starts_with("__ducklake_metadata")
            });
        // DuckLake's staging tables are its sessions' own: TEMPORARY.
        name.text.eq_ignore_ascii_case("CREATE")
            && rest.next().as_deref() == Some("table")
            && !rest
                .next()
                .is_some_and(|n| n.starts_with("ducklake_") && !n.starts_with(STAGED))
    });
    if drops_its_own_table || creates_a_foreign_table {
        return false;
    }
    !names.iter().any(refused_name)
}

/// What DuckLake's staging tables start with: its commits fill them in the session's own
/// `TEMPORARY` tables, then call `ducklake_commit(...)`, which reads them.
const STAGED: &str = "ducklake_staged_";

/// Whether every name of DuckLake's in `sql` is written as DuckLake 1.5.5 writes it to its
/// catalog: a table as `"main".ducklake_...`; a staging table (read-write sessions only) bare;
/// `ducklake_commit(...)` (read-write only) as a call; and otherwise a bare `ducklake_...`
/// only where a table cannot stand (a column's qualifier, `ducklake_tag.key`, or a user's
/// column of that name).
///
/// The Quack client writes the same tables its own way when a worker's SQL names the attached
/// metadata database as a database: a scan is `SELECT #2 FROM ducklake_data_file`, an APPEND
/// is authorized as `INSERT INTO main.ducklake_tag VALUES (NULL)`, DDL is `DROP TABLE
/// ducklake_tag;`. DuckLake sends none of those, so refusing them keeps the metadata rows from
/// client SQL that got past the worker's check on names, unless it also got a string of its
/// own to the catalog as SQL (the metadata database's `.query(...)`), which the worker's check
/// refuses apart from names. Every statement DuckLake sent the catalog in a recorded workload
/// passes (`tests/data/ducklake/catalog_statements.jsonl`), and what the Quack client sent
/// for such SQL does not (`quack_client_statements.jsonl` there).
fn ducklake_names_as_ducklake_writes_them(sql: &str, names: &[Name], read_write: bool) -> bool {
    names.iter().enumerate().all(|(i, name)| {
        let lower = name.text.to_ascii_lowercase();
        if !lower.starts_with("ducklake_") {
            return true;
        }
        let before = &sql[..name.span.start];
        // The name `back` places before this one.
        let previous = |back: usize| {
            i.checked_sub(back)
                .map(|prev| names[prev].text.to_ascii_lowercase())
        };
        if before.ends_with("\"main\".") {
            // A `(` after it opens a column list (`CREATE TABLE "main".t (`, `INSERT INTO
            // "main".t (`), never a call: a nineteenth review called `"main".ducklake_commit(`.
            let column_list = matches!(previous(2).as_deref(), Some("table" | "exists" | "into"));
            return !lower.starts_with(STAGED) && (!name.called || column_list);
        }
        if before.trim_end().ends_with('.') {
            return false;
        }
        let staged = read_write && lower.starts_with(STAGED);
        if name.called {
            return staged || (read_write && lower == "ducklake_commit");
        }
        // Where a table stands; elsewhere a bare name is a column (a user's column may be
        // called `ducklake_x`) or a column's qualifier (`ducklake_tag.key`).
        let table_position = matches!(
            previous(1).as_deref(),
            Some("from" | "join" | "into" | "table" | "update" | "exists" | "truncate" | "call")
        );
        !table_position || staged
    })
}

/// One identifier of a statement, bare or double-quoted.
struct Name {
    /// Unquoted.
    text: String,
    /// Whether a `(` follows it, past spaces.
    called: bool,
    /// Where it stands in the statement, its quotes included.
    span: std::ops::Range<usize>,
}

/// Every identifier of `sql`, bare or double-quoted, outside string literals, with whether a
/// `(` follows it (a call). Literals are `'...'` with `''`. Bytes outside ASCII count as
/// separators (DuckDB reads Unicode spaces as spaces). `None` when a quote does not end, and
/// for comments, dollar quotes, escape strings (`E'...'`, whose backslashes and continuations
/// two lexers may read apart) and `U&` (Unicode-escaped names).
fn names_outside_literals(sql: &str) -> Option<Vec<Name>> {
    let bytes = sql.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    // Whether a `(` comes next, past spaces of any kind.
    let called = |mut j: usize| {
        while j < bytes.len() && (bytes[j].is_ascii_whitespace() || bytes[j] >= 0x80) {
            j += 1;
        }
        bytes.get(j) == Some(&b'(')
    };
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' => i = end_of_quote(bytes, i)?,
            b'e' | b'E' if bytes.get(i + 1) == Some(&b'\'') => return None,
            b'u' | b'U' if bytes.get(i + 1) == Some(&b'&') => return None,
            b'"' => {
                let end = end_of_quote(bytes, i)?;
                names.push(Name {
                    text: sql.get(i + 1..end - 1)?.replace("\"\"", "\""),
                    called: called(end),
                    span: i..end,
                });
                i = end;
            }
            // `$1` is a parameter; a dollar-quoted string is refused, as are comments: DuckLake
            // writes neither, and each is a place where two lexers can disagree.
            b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => i += 1,
            b'$' => return None,
            b'-' if bytes.get(i + 1) == Some(&b'-') => return None,
            b'/' if bytes.get(i + 1) == Some(&b'*') => return None,
            c if ident(c) => {
                let start = i;
                while i < bytes.len() && ident(bytes[i]) {
                    i += 1;
                }
                // `1e'...'`: DuckDB reads a number and an escape string.
                if matches!(bytes[i - 1], b'e' | b'E') && bytes.get(i) == Some(&b'\'') {
                    return None;
                }
                names.push(Name {
                    text: sql.get(start..i)?.to_string(),
                    called: called(i),
                    span: start..i,
                });
            }
            _ => i += 1,
        }
    }
    Some(names)
}

/// The index just past the quote that closes the one opening at `open`; a doubled quote is
/// one quote.
fn end_of_quote(bytes: &[u8], open: usize) -> Option<usize> {
    let q = bytes[open];
    let mut i = open + 1;
    loop {
        match bytes.get(i) {
            None => return None,
            Some(&c) if c == q && bytes.get(i + 1) == Some(&q) => i += 2,
            Some(&c) if c == q => return Some(i + 1),
            Some(_) => i += 1,
        }
    }
}

/// The words (runs of letters, digits and `_`, upper-cased) of `sql` outside quotes, or
/// `None` when it holds more than one statement or an unterminated quote. Quotes are `'` and
/// `"`, each escaped by doubling; comments were refused before.
fn words(sql: &str) -> Option<Vec<String>> {
    let bytes = sql.as_bytes();
    let mut words = Vec::new();
    let mut ended = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if ended && !b.is_ascii_whitespace() && b != b';' {
            return None;
        }
        match b {
            b'\'' | b'"' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return None,
                        Some(&c) if c == b && bytes.get(i + 1) == Some(&b) => i += 2,
                        Some(&c) if c == b => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
            }
            b';' => {
                ended = true;
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                words.push(sql[start..i].to_ascii_uppercase());
            }
            _ => i += 1,
        }
    }
    Some(words)
}
