//! The check a worker's authorization hook runs on its clients' statements: client SQL must
//! not reach the lake's metadata database, nor Quack's functions.
//!
//! A lake worker attaches the lake's metadata as a database of its own
//! (`__ducklake_metadata_<lake>`, served by the catalog over Quack), and every connection of the
//! worker sees it: client SQL could read and rewrite the lake's snapshots and file lists there,
//! or send the catalog any text through its `.query()`. DuckDB 1.5.5 has no per-connection
//! catalog rights, so the hook refuses, on the text as sent, every way a statement can name a
//! database or a function:
//!
//! - in the text itself: the name is refused wherever it appears, in code, in a literal or in
//!   a comment, so this check never has to agree with DuckDB's lexer on what is code; and
//!   `U&'` / `U&"` (strings and names spelt with Unicode escapes) wherever they appear;
//! - from a string computed at run time: SQL run from a string (`query`, `query_table`,
//!   `json_execute_serialized_sql`) and every built-in macro that calls one of them (DuckDB's
//!   `histogram_values` table macro runs `query_table` on its argument), found in the worker's
//!   own function list at start ([`RefusedCalls`]); a macro whose name is also an ordinary
//!   function (`histogram`, an aggregate too) only when called with more than one argument,
//!   which the aggregate's common form never is (judging the arguments themselves would not
//!   hold: a client's own macro can pass any expression in for a plain parameter name); and
//!   the search path and default schema, which may be set only to a plain name or literal;
//! - from SQL read at run time rather than sent: `IMPORT DATABASE` runs the SQL files of a
//!   folder, so it is refused; and DuckLake keeps a view, a macro or a sort key as DuckDB
//!   writes the parsed statement back out, with DuckLake's `{PLACEHOLDERS}` filled in, and
//!   parses that text again for every session that uses it. Writing it out drops comments and
//!   leaves a star's quoted qualifier bare, so such statements may hold only plain quoted
//!   names and no comments, and a word in braces is refused in any statement; a sort key
//!   may list only columns, since DuckLake binds it again in the catalog's maintenance and
//!   pastes it into SQL it runs on the catalog (a subquery there failed every maintenance
//!   run of the lake);
//! - `PRAGMA`s other than a list that only read: `PRAGMA disable_optimizer` and its kind change
//!   a session past DuckDB's configuration lock;
//! - the worker's logs and profiling, which every connection of the process shares and which
//!   DuckDB's configuration lock does not cover when they are switched by function:
//!   `CALL enable_logging(...)` then `duckdb_logs()` showed every statement of the worker,
//!   DuckLake's writes to the catalog and the worker's catalog session id among them;
//! - what changes the whole worker or the whole lake rather than the session: `ATTACH` and
//!   `DETACH` (a client detached the lake and attached a database of its own under its name,
//!   which later sessions then read and wrote), `SET GLOBAL` / `RESET GLOBAL`, secrets (shared
//!   by every connection), `CHECKPOINT` (which runs DuckLake's maintenance), and every
//!   `ducklake_*` function but those that only read or name the commit (deleting orphaned
//!   files removed the files of another session's open transaction; a lake option made every
//!   commit on every node fail). The lake's maintenance belongs to the catalog.
//!
//! Quack's functions (`quack_stop`, `quack_active_connections`, `quack_query_by_name`, ...) are
//! refused as calls on the same grounds: with no SQL run from strings, their names must appear
//! in the text. Judging calls needs no lexer either: a word is a call when a `(` follows it past
//! spaces, quotes and comments, read generously, so a word in a literal may be refused but no
//! call can be missed. Statements that stored SQL runs later (views, macros) passed this check
//! when they were created. Found by hostile reviews and closed: `histogram_values` with a
//! computed table name after `PRAGMA disable_optimizer`, and `histogram` inside a client's
//! macro whose parameters carried the computed name, read the metadata tables; the worker's
//! logs, switched on by a client, showed them and everyone's SQL.

use std::collections::{HashMap, HashSet};

use crate::sql_checks::{LOGS_AND_PROFILING, LOG_VIEWS};

/// Why a client statement is refused; the text is what the client reads after
/// `quackgate: this statement was refused: `.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // each variant's `#[error]` text is its documentation
pub enum ClientSqlRefusal {
    #[error("it names the lake's metadata database (__ducklake_metadata_...)")]
    MetadataDatabase,
    #[error(
        "it holds a word in braces ({{LIKE_THIS}}), which DuckLake 1.5.5 replaces in its \
         metadata SQL, names and values alike"
    )]
    Placeholder,
    #[error(
        "a view, macro or sort key the lake stores may use only plain quoted names (\"total\", \
         not \"total sales\") and no comments: DuckLake stores it as DuckDB writes it back \
         out, which leaves some quoted names unquoted, and runs that text for every session"
    )]
    StoredSqlName,
    #[error(
        "a macro may only be TEMP (CREATE TEMP MACRO): DuckLake parses every macro of the lake \
         whenever a session opens it, so one it cannot parse would lock every client out"
    )]
    LakeMacro,
    #[error(
        "TIME_NS is refused: DuckLake 1.5.5 cannot write it to Parquet, and the error ends the \
         DuckDB that tries (the lake's maintenance, for everyone); use TIME or TIMESTAMP_NS"
    )]
    TimeNs,
    #[error(
        "a sort key may list only columns (SET SORTED BY (a, b DESC NULLS LAST)): DuckLake \
         runs a sort key's expression in the lake's maintenance and in its SQL on the catalog, \
         where a subquery or a name of the lake failed every maintenance run for everyone"
    )]
    SortKey,
    #[error("it spells a string or a name with escapes (U&'...', or E'...' with a backslash)")]
    UnicodeEscape,
    #[error("USE takes plain names (USE lake.main), not a literal")]
    UseLiteral,
    #[error(
        "a column DEFAULT must be one constant (a number, a string, NULL, true or false): \
         the DuckDB 1.5.5 Quack client cannot attach a server that has a table whose default \
         is an expression, so one such table would lock every client out of the lake"
    )]
    ExpressionDefault,
    #[error(
        "DuckLake 1.5.5 puts a commit's author and message into its metadata SQL unescaped, \
         so they could run SQL on the lake's catalog"
    )]
    CommitMessage,
    #[error(
        "it joins two string literals across a line break, which spells one string in \
         pieces (write it as one literal)"
    )]
    JoinedLiterals,
    #[error(
        "it runs SQL from a string (query, query_table, json_execute_serialized_sql, or a \
         macro that calls one, such as histogram_values)"
    )]
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
    #[error("this PRAGMA could change the session past the configuration lock")]
    Pragma,
    #[error(
        "it reads or switches the worker's logs or profiling, which every session of the \
         worker shares"
    )]
    WorkerLogs,
    #[error("ATTACH and DETACH change the databases of every session of the worker")]
    AttachDetach,
    #[error("SET GLOBAL and RESET GLOBAL reach every session of the worker")]
    GlobalSetting,
    #[error("secrets are shared by every session of the worker")]
    Secrets,
    #[error(
        "the lake's maintenance and options are the catalog's (POST /lake/maintenance on its \
         admin listener)"
    )]
    LakeMaintenance,
    #[error("it names a table with a value computed at run time, not a literal")]
    ComputedTableName,
    #[error("COPY FROM DATABASE makes objects whose names this check does not see")]
    CopyDatabase,
    #[error(
        "COPY ... TO and EXPORT DATABASE write files on the worker, beside the lake's own \
         (read the result instead)"
    )]
    WritesFiles,
    #[error(
        "it names something of the lake like a built-in function, view, type or database, \
         which it would hide from every session (a macro's name must also be a plain name)"
    )]
    ShadowsBuiltin,
}

const METADATA_DATABASE: &str = "__ducklake_metadata";

/// Functions that run SQL from a string.
const SQL_FROM_STRING: &[&str] = &["query", "query_table", "json_execute_serialized_sql"];

/// The `ducklake_*` functions a client may call: each reads, or names its own commit.
const DUCKLAKE_READS: &[&str] = &[
    "ducklake_current_snapshot",
    "ducklake_last_committed_snapshot",
    "ducklake_list_files",
    "ducklake_options",
    "ducklake_scan",
    "ducklake_settings",
    "ducklake_snapshots",
    "ducklake_table_changes",
    "ducklake_table_deletions",
    "ducklake_table_info",
    "ducklake_table_insertions",
];

/// The `ducklake_*` functions that change the lake, by the names DuckLake also gives them in
/// the lake's own schema (`CALL set_option(...)` is `ducklake_set_option`).
const DUCKLAKE_ALTERS: &[&str] = &[
    "add_data_files",
    "cleanup_old_files",
    "delete_orphaned_files",
    "expire_snapshots",
    "flush_inlined_data",
    "merge_adjacent_files",
    "rewrite_data_files",
    "set_option",
];

/// Functions that look a table up by a string: with a literal only, which this check reads.
const TABLE_NAME_FUNCTIONS: &[&str] = &[
    "pragma_table_info",
    "pragma_show",
    "pragma_storage_info",
    "pragma_metadata_info",
    "duckdb_table_sample",
    "table_info",
    "show",
    "storage_info",
    "metadata_info",
];

/// PRAGMAs a client may run: each only reads, or changes nothing but its own session's
/// progress bar.
const PRAGMAS: &[&str] = &[
    "table_info",
    "show",
    "show_tables",
    "show_tables_expanded",
    "show_databases",
    "database_list",
    "database_size",
    "storage_info",
    "metadata_info",
    "functions",
    "collations",
    "version",
    "platform",
    "user_agent",
    "extension_versions",
    "enable_progress_bar",
    "disable_progress_bar",
];

/// The functions client SQL may not call, by lower-case name, with the reason.
#[derive(Debug, Clone, Default)]
pub struct RefusedCalls {
    names: HashMap<String, Refused>,
    /// Every built-in function's name: no client macro may take one.
    builtins: HashSet<String>,
    /// The system's views, types and attached databases: no table or view, type, or schema
    /// of the lake may take their names ([`RefusedCalls::hiding`]).
    views: HashSet<String>,
    types: HashSet<String>,
    databases: HashSet<String>,
    /// `COPY ... TO` and `EXPORT DATABASE` allowed: the worker runs with external access,
    /// whose risk the operator accepted ([`RefusedCalls::writing_files`]).
    file_writes: bool,
}

#[derive(Debug, Clone, Copy)]
struct Refused {
    why: ClientSqlRefusal,
    /// The name is also an ordinary function: refused only with more than one argument.
    shared: bool,
}

/// One row of DuckDB's `duckdb_functions()`: its name, its type (`macro`, `table_macro`,
/// `scalar`, ...) and a macro's definition.
pub struct FunctionRow<'a> {
    /// `function_name`.
    pub name: &'a str,
    /// `function_type`.
    pub kind: &'a str,
    /// `macro_definition`, for macros.
    pub definition: Option<&'a str>,
}

impl RefusedCalls {
    /// From the functions a worker's DuckDB offers: SQL run from strings, every function whose
    /// name starts with `quack`, and every macro whose definition calls a refused function
    /// (to a fixpoint, so macros that call such macros too).
    pub fn from_functions<'a>(functions: impl IntoIterator<Item = FunctionRow<'a>>) -> Self {
        let functions: Vec<FunctionRow> = functions.into_iter().collect();
        let lower = |s: &str| s.to_ascii_lowercase();
        let mut names: HashMap<String, Refused> = SQL_FROM_STRING
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Refused {
                        why: ClientSqlRefusal::SqlFromString,
                        shared: false,
                    },
                )
            })
            .collect();
        for (name, why) in [
            ("duckdb_secrets", ClientSqlRefusal::Secrets),
            ("which_secret", ClientSqlRefusal::Secrets),
            ("checkpoint", ClientSqlRefusal::LakeMaintenance),
            ("force_checkpoint", ClientSqlRefusal::LakeMaintenance),
        ] {
            names.insert(name.to_string(), Refused { why, shared: false });
        }
        // Macros over them follow from the function list (`duckdb_logs_parsed`).
        for name in LOGS_AND_PROFILING {
            names.insert(
                name.to_string(),
                Refused {
                    why: ClientSqlRefusal::WorkerLogs,
                    shared: false,
                },
            );
        }
        for f in &functions {
            let name = lower(f.name);
            if name.starts_with("ducklake_") && !DUCKLAKE_READS.contains(&name.as_str()) {
                names.insert(
                    name.clone(),
                    Refused {
                        why: ClientSqlRefusal::LakeMaintenance,
                        shared: false,
                    },
                );
            }
            if lower(f.name).starts_with("quack") {
                names.insert(
                    lower(f.name),
                    Refused {
                        why: ClientSqlRefusal::QuackFunction,
                        shared: false,
                    },
                );
            }
        }
        loop {
            let mut grew = false;
            for f in functions.iter().filter(|f| f.kind.contains("macro")) {
                let name = lower(f.name);
                if names.contains_key(&name) {
                    continue;
                }
                let definition = lower(f.definition.unwrap_or(""));
                let bytes = definition.as_bytes();
                let calls = words(bytes).into_iter().find_map(|(s, e)| {
                    names
                        .get(&definition[s..e])
                        .filter(|_| called(bytes, e))
                        .copied()
                });
                if let Some(callee) = calls {
                    let shared = functions
                        .iter()
                        .any(|g| lower(g.name) == name && !g.kind.contains("macro"));
                    names.insert(
                        name,
                        Refused {
                            why: callee.why,
                            shared,
                        },
                    );
                    grew = true;
                }
            }
            if !grew {
                let builtins = functions.iter().map(|f| lower(f.name)).collect();
                return RefusedCalls {
                    names,
                    builtins,
                    ..RefusedCalls::default()
                };
            }
        }
    }
}

impl RefusedCalls {
    /// Adds the names of the system's views, types and attached databases, which no object
    /// of the lake may take: an unqualified name finds the lake's first, so a lake view named
    /// `duckdb_tables`, or a schema named `quackgate`, would hide or break the system's for
    /// every session.
    pub fn hiding(
        mut self,
        views: impl IntoIterator<Item = String>,
        types: impl IntoIterator<Item = String>,
        databases: impl IntoIterator<Item = String>,
    ) -> Self {
        let lower = |s: String| s.to_ascii_lowercase();
        self.views = views.into_iter().map(lower).collect();
        self.types = types.into_iter().map(lower).collect();
        self.databases = databases.into_iter().map(lower).collect();
        self
    }
}

impl RefusedCalls {
    /// Lets `COPY ... TO` and `EXPORT DATABASE` through, for a worker with external access.
    pub fn writing_files(mut self, allowed: bool) -> Self {
        self.file_writes = allowed;
        self
    }
}

/// Whether a client may run `sql`, given the calls refused on its worker.
pub fn check_client_sql(sql: &str, refused: &RefusedCalls) -> Result<(), ClientSqlRefusal> {
    let lower = sql.to_ascii_lowercase();
    if lower.contains("u&'") || lower.contains("u&\"") || escape_string_with_backslash(&lower) {
        return Err(ClientSqlRefusal::UnicodeEscape);
    }
    if lower.contains(METADATA_DATABASE) {
        return Err(ClientSqlRefusal::MetadataDatabase);
    }
    if holds_placeholder(lower.as_bytes()) {
        return Err(ClientSqlRefusal::Placeholder);
    }
    if joins_literals(lower.as_bytes()) {
        return Err(ClientSqlRefusal::JoinedLiterals);
    }
    let bytes = lower.as_bytes();
    let words = words(bytes);
    let has_copy_to = words.iter().any(|&(s, e)| &lower[s..e] == "to");
    let has_create = words.iter().any(|&(s, e)| &lower[s..e] == "create");
    let has_create_or_alter = has_create || words.iter().any(|&(s, e)| &lower[s..e] == "alter");
    // Where a comment could stand between CREATE and what it makes, every such word counts.
    let has_comment = lower.contains("--") || lower.contains("/*");
    // DuckLake keeps a view's or a macro's SQL, and a sort key, as DuckDB writes the parsed
    // statement back out, and every session that uses it parses that text again. Writing it
    // out drops comments and leaves some quoted names bare: a star's qualifier
    // (`"x FROM t --".*` is stored as `x FROM t --.*`), so a name this check read as a name
    // was code there (the fourteenth review called Quack's functions so).
    let stores_sql = has_create_or_alter
        && words
            .iter()
            .any(|&(s, e)| matches!(&lower[s..e], "view" | "macro" | "function" | "sorted"));
    // Where the last CREATE ended: a word is what it makes when only words and spaces stand
    // between them (`CREATE OR REPLACE TEMP VIEW`, `CREATE RECURSIVE VIEW`), not a column's
    // type after a `(`.
    let mut create_end: Option<usize> = None;
    for (start, end) in words {
        let word = &lower[start..end];
        let after_create = has_comment
            || create_end.is_some_and(|from| {
                lower[from..start]
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c.is_ascii_whitespace())
            });
        if word == "create" {
            create_end = Some(end);
        }
        if TABLE_NAME_FUNCTIONS.contains(&word)
            && called(bytes, end)
            && !literal_argument(bytes, end)
        {
            return Err(ClientSqlRefusal::ComputedTableName);
        }
        if word == "copy"
            && next_word(bytes, end) == Some(b"from")
            && skip_gap(bytes, end)
                .and_then(|at| next_word(bytes, at + 4))
                .is_some_and(|w| w == b"database")
        {
            return Err(ClientSqlRefusal::CopyDatabase);
        }
        if word == "default" && has_create_or_alter && !constant_default(bytes, end) {
            return Err(ClientSqlRefusal::ExpressionDefault);
        }
        // Anywhere: a value made in one statement keeps its type in the next
        // (`SET VARIABLE v = ...::TIME_NS`, then `CREATE TABLE t AS SELECT getvariable('v')`,
        // found by a seventeenth review), and no function returns one.
        if word == "time_ns" {
            return Err(ClientSqlRefusal::TimeNs);
        }
        if word == "sorted" && has_create_or_alter && !columns_only_sort_key(bytes, end) {
            return Err(ClientSqlRefusal::SortKey);
        }
        if matches!(word, "ducklake_set_commit_message" | "set_commit_message")
            && called(bytes, end)
        {
            return Err(ClientSqlRefusal::CommitMessage);
        }
        if DUCKLAKE_ALTERS.contains(&word) && called(bytes, end) {
            return Err(ClientSqlRefusal::LakeMaintenance);
        }
        if (has_create && after_create) || word == "rename" {
            if let Some(name) = created_name(bytes, end, word) {
                // A name this scanner cannot read (a comment, a literal) counts as hiding.
                let hides = name.is_empty()
                    || match word {
                        // Operators are functions too (`"+"`, `"~~"` for LIKE): a macro's name must
                        // be a plain one.
                        "macro" | "function" => {
                            !is_plain_name(&name) || refused.builtins.contains(&name)
                        }
                        "table" | "view" | "rename" => refused.views.contains(&name),
                        "type" => refused.types.contains(&name),
                        "schema" => refused.databases.contains(&name),
                        _ => false,
                    };
                if hides {
                    return Err(ClientSqlRefusal::ShadowsBuiltin);
                }
            }
        }
        if matches!(word, "macro" | "function") && has_create && after_create {
            let made_by = create_end.map_or("", |from| &lower[from..start]);
            if !made_by
                .split_ascii_whitespace()
                .any(|w| matches!(w, "temp" | "temporary"))
            {
                return Err(ClientSqlRefusal::LakeMacro);
            }
        }
        if let Some(r) = refused.names.get(word) {
            if called(bytes, end) && !(r.shared && single_argument(bytes, end)) {
                return Err(r.why);
            }
        }
        match word {
            "attach" | "detach" => return Err(ClientSqlRefusal::AttachDetach),
            // Views, read with no call (a nineteenth review's `FROM duckdb_logs`).
            w if LOG_VIEWS.contains(&w) => return Err(ClientSqlRefusal::WorkerLogs),
            "checkpoint" => return Err(ClientSqlRefusal::LakeMaintenance),
            "secret" if has_create && after_create => return Err(ClientSqlRefusal::Secrets),
            "drop"
                if next_word(bytes, end)
                    .is_some_and(|w| matches!(w, b"secret" | b"persistent" | b"temporary")) =>
            {
                return Err(ClientSqlRefusal::Secrets)
            }
            // Writing files: the worker may write into the lake's data folder (its Parquet
            // files: a COPY over one destroyed a table at every snapshot) and its own spill
            // folder (a read-only session could fill the disk).
            "copy" if has_copy_to && !refused.file_writes => {
                return Err(ClientSqlRefusal::WritesFiles)
            }
            "export" if next_word(bytes, end) == Some(b"database") && !refused.file_writes => {
                return Err(ClientSqlRefusal::WritesFiles)
            }
            "set" | "reset" if next_word(bytes, end) == Some(b"global") => {
                return Err(ClientSqlRefusal::GlobalSetting)
            }
            _ => {}
        }
        if word == "import_database"
            || (word == "import" && next_word(bytes, end).is_some_and(|w| w == b"database"))
        {
            return Err(ClientSqlRefusal::Import);
        }
        if word == "pragma"
            && next_word(bytes, end)
                .is_none_or(|w| !PRAGMAS.contains(&std::str::from_utf8(w).unwrap_or("")))
        {
            return Err(ClientSqlRefusal::Pragma);
        }
        if matches!(word, "set" | "reset") && !plain_search_path(bytes, end) {
            return Err(ClientSqlRefusal::ComputedSearchPath);
        }
        // A literal target is where a name spelt in pieces went (see `joins_literals`); a
        // name must stand as one. What this scanner cannot read (a comment) counts as a
        // literal, and so does a literal that merely says `use '...'`.
        if word == "use"
            && skip_gap_unquoted(bytes, end).is_none_or(|at| {
                let target = &bytes[at..];
                target.starts_with(b"'") || target.starts_with(b"$") || target.starts_with(b"e'")
            })
        {
            return Err(ClientSqlRefusal::UseLiteral);
        }
    }
    if stores_sql && (has_comment || !quoted_names_are_plain(bytes)) {
        return Err(ClientSqlRefusal::StoredSqlName);
    }
    Ok(())
}

/// Whether `lower` has an escape string (`E'...'`, not preceded by a name's letter) with a
/// backslash in it: `E'\x5f'` spells `_`, so a name could be hidden in escapes.
fn escape_string_with_backslash(lower: &str) -> bool {
    let bytes = lower.as_bytes();
    bytes.windows(2).enumerate().any(|(i, w)| {
        w == b"e'"
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
            && bytes[i + 2..]
                .iter()
                .take_while(|&&c| c != b'\'')
                .any(|&c| c == b'\\')
    })
}

/// Whether `bytes` has two string literals DuckDB would join into one: a quote, then only
/// spaces and comments with a line break among them, then a quote (`'__duck'`, a line break,
/// `'lake_metadata_x'` is the one literal `'__ducklake_metadata_x'`, past `--` comments too).
/// Every quote counts, whether it opens a literal, closes one or stands inside one, so no
/// reading of where literals, dollar quotes or names end can hide a join; bytes outside ASCII
/// count as spaces (DuckDB drops some, such as U+200B). The price: a literal holding only a
/// line break (`'` newline `'`) is refused too.
fn joins_literals(bytes: &[u8]) -> bool {
    (0..bytes.len()).filter(|&i| bytes[i] == b'\'').any(|i| {
        let mut j = i + 1;
        let mut line_break = false;
        loop {
            match bytes.get(j) {
                Some(b'\n' | b'\r') => {
                    line_break = true;
                    j += 1;
                }
                Some(c) if c.is_ascii_whitespace() || *c >= 0x80 => j += 1,
                Some(b'-') if bytes.get(j + 1) == Some(&b'-') => {
                    while bytes.get(j).is_some_and(|c| !matches!(c, b'\n' | b'\r')) {
                        j += 1;
                    }
                }
                // Block comments nest, as DuckDB reads them.
                Some(b'/') if bytes.get(j + 1) == Some(&b'*') => {
                    let mut depth = 0usize;
                    loop {
                        if bytes[j..].starts_with(b"/*") {
                            depth += 1;
                            j += 2;
                        } else if bytes[j..].starts_with(b"*/") {
                            depth -= 1;
                            j += 2;
                            if depth == 0 {
                                break;
                            }
                        } else if j < bytes.len() {
                            j += 1;
                        } else {
                            return false;
                        }
                    }
                }
                Some(b'\'') => return line_break,
                _ => return false,
            }
        }
    })
}

/// Whether the `DEFAULT` ending at `end` is not a column's default, or is one constant: an
/// unsigned number, a string literal, NULL, true or false, followed by the column's next
/// clause or its end. (`DEFAULT VALUES` and a bare `DEFAULT` in a VALUES list pass too.)
fn constant_default(bytes: &[u8], end: usize) -> bool {
    let Some(mut at) = skip_gap_unquoted(bytes, end) else {
        return false;
    };
    match bytes.get(at) {
        None | Some(b',' | b')' | b';') => return true,
        Some(b'\'') => {
            at += 1;
            loop {
                match bytes.get(at) {
                    None => return false,
                    Some(b'\'') if bytes.get(at + 1) == Some(&b'\'') => at += 2,
                    Some(b'\'') => {
                        at += 1;
                        break;
                    }
                    Some(_) => at += 1,
                }
            }
        }
        // A negative number is folded into a constant as DuckDB parses it (`DEFAULT -1`
        // attaches; checked with the 1.5.5 client, as `DEFAULT 1 + 2` does not).
        Some(c)
            if c.is_ascii_digit()
                || (*c == b'-' && bytes.get(at + 1).is_some_and(u8::is_ascii_digit)) =>
        {
            at += 1;
            while bytes
                .get(at)
                .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
            {
                at += 1;
            }
        }
        Some(_) => match next_word(bytes, end) {
            Some(b"values") => return true,
            Some(w @ (b"null" | b"true" | b"false")) => at += w.len(),
            _ => return false,
        },
    }
    match skip_gap_unquoted(bytes, at).map(|k| bytes.get(k)) {
        Some(None | Some(b',' | b')' | b';')) => true,
        Some(Some(_)) => next_word(bytes, at).is_some_and(|w| {
            matches!(
                w,
                b"not"
                    | b"null"
                    | b"primary"
                    | b"unique"
                    | b"check"
                    | b"references"
                    | b"collate"
                    | b"constraint"
            )
        }),
        None => false,
    }
}

/// Whether the `SET` or `RESET` ending at `end`, if it sets the search path or the default
/// schema (`SET [SESSION|LOCAL] search_path|schema =|TO <value>`, or an UPDATE's `SET schema =`),
/// sets it to one literal or one dotted name, with nothing computed after it. `GLOBAL` is
/// refused: it would reach the worker's own connections.
fn plain_search_path(bytes: &[u8], end: usize) -> bool {
    let Some(mut at) = skip_gap(bytes, end) else {
        return false;
    };
    let mut name = next_word(bytes, end);
    if matches!(name, Some(b"session" | b"local" | b"global")) {
        let scope = name.unwrap_or_default();
        let after = at + scope.len();
        name = next_word(bytes, after);
        if !matches!(name, Some(b"search_path" | b"schema")) {
            return true;
        }
        if scope == b"global" {
            return false;
        }
        let Some(next) = skip_gap(bytes, after) else {
            return false;
        };
        at = next;
    }
    let Some(setting) = name.filter(|n| matches!(*n, b"search_path" | b"schema")) else {
        return true;
    };
    // RESET: nothing may follow but the statement's end.
    let Some(mut i) = skip_gap(bytes, at + setting.len()) else {
        return false;
    };
    match bytes.get(i) {
        Some(b'=') => i += 1,
        Some(b't') if bytes[i..].starts_with(b"to") => i += 2,
        None | Some(b';') => return true,
        _ => return false,
    }
    let Some(start) = skip_gap(bytes, i) else {
        return false;
    };
    let mut j = start;
    if bytes.get(j) == Some(&b'\'') {
        j += 1;
        while bytes.get(j).is_some_and(|&c| c != b'\'') {
            j += 1;
        }
        if bytes.get(j).is_none() || bytes.get(j + 1) == Some(&b'\'') {
            return false;
        }
        j += 1;
    } else {
        while bytes
            .get(j)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
        {
            j += 1;
        }
        if j == start {
            return false;
        }
    }
    // What follows the value: the statement's end, or an UPDATE's next clause.
    match skip_gap(bytes, j) {
        None => false,
        Some(k) => match bytes.get(k) {
            None | Some(b';' | b',' | b')') => true,
            Some(_) => {
                next_word(bytes, j).is_some_and(|w| matches!(w, b"where" | b"returning" | b"from"))
            }
        },
    }
}

/// The name of what the word ending at `end` creates or renames to, lower case, unquoted, last
/// part of a dotted name: after `CREATE ... MACRO|FUNCTION|TABLE|VIEW|TYPE|SCHEMA [IF NOT
/// EXISTS]`, or after `RENAME TO`. `None` for other words; `Some("")` for a name it cannot read
/// (a comment, a literal, an unterminated quote), which the caller refuses.
fn created_name(bytes: &[u8], end: usize, word: &str) -> Option<String> {
    let mut at = end;
    match word {
        "macro" | "function" | "table" | "view" | "type" | "schema" => {}
        "rename" => {
            if next_word(bytes, at)? != b"to" {
                return None;
            }
            at = skip_gap(bytes, at)? + 2;
        }
        _ => return None,
    }
    if next_word(bytes, at) == Some(b"if") {
        for expected in [&b"if"[..], b"not", b"exists"] {
            let start = skip_gap(bytes, at)?;
            if next_word(bytes, at)? != expected {
                return None;
            }
            at = start + expected.len();
        }
    }
    // Dotted parts, each a quoted or a plain name; the last one is the object's.
    let mut name = String::new();
    loop {
        let Some(start) = skip_gap_unquoted(bytes, at) else {
            return Some(String::new());
        };
        match bytes.get(start) {
            Some(b'"') => {
                let mut i = start + 1;
                let mut part = Vec::new();
                loop {
                    match bytes.get(i) {
                        None => return Some(String::new()),
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                            part.push(b'"');
                            i += 2;
                        }
                        Some(b'"') => break,
                        Some(&c) => {
                            part.push(c);
                            i += 1;
                        }
                    }
                }
                name = String::from_utf8_lossy(&part).into_owned();
                at = i + 1;
            }
            Some(&c) if c.is_ascii_alphanumeric() || c == b'_' => {
                let len = bytes[start..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                name = String::from_utf8_lossy(&bytes[start..start + len]).into_owned();
                at = start + len;
            }
            _ => return Some(name),
        }
        match skip_gap_unquoted(bytes, at) {
            Some(dot) if bytes.get(dot) == Some(&b'.') => at = dot + 1,
            _ => return Some(name),
        }
    }
}

/// [`skip_gap`] without skipping double quotes, which start a quoted name here.
fn skip_gap_unquoted(bytes: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match bytes.get(i) {
            Some(c) if c.is_ascii_whitespace() || *c >= 0x80 => i += 1,
            Some(b'-') if bytes.get(i + 1) == Some(&b'-') => return None,
            Some(b'/') if bytes.get(i + 1) == Some(&b'*') => return None,
            _ => return Some(i),
        }
    }
}

/// Whether the sort key after `sorted` (ending at `end`), if `BY` follows, lists only columns:
/// plain names, quoted or not, each with `ASC`/`DESC` and `NULLS FIRST`/`LAST` at most, up to
/// the statement's end.
fn columns_only_sort_key(bytes: &[u8], end: usize) -> bool {
    if next_word(bytes, end) != Some(b"by") {
        return true;
    }
    let Some(by) = skip_gap(bytes, end) else {
        return false;
    };
    let rest = &bytes[by + 2..];
    let key = rest.split(|&b| b == b';').next().unwrap_or_default();
    let Ok(key) = std::str::from_utf8(key) else {
        return false;
    };
    let key = key.trim();
    let key = match key.strip_prefix('(') {
        Some(inner) => match inner.strip_suffix(')') {
            Some(inner) => inner,
            None => return false,
        },
        None => key,
    };
    key.trim().is_empty()
        || key.split(',').all(|column| {
            let mut words = column.split_ascii_whitespace();
            words.next().is_some_and(|name| {
                is_plain_name(
                    name.strip_prefix('"')
                        .and_then(|n| n.strip_suffix('"'))
                        .unwrap_or(name),
                )
            }) && words.all(|w| matches!(w, "asc" | "desc" | "nulls" | "first" | "last"))
        })
}

/// Whether `bytes` holds a word in braces, `{like_this}`: DuckLake 1.5.5 fills its
/// placeholders (`{METADATA_CATALOG_NAME_IDENTIFIER}`, `{SNAPSHOT_ID}`, ...) into its metadata
/// SQL after the client's names and values are in it (a view's stored SQL too), so the
/// twelfth and fourteenth reviews spelt the metadata database's name with one.
fn holds_placeholder(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(open, &b)| {
        b == b'{'
            && bytes
                .get(open + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            && bytes[open + 1..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                .is_some_and(|len| bytes[open + 1 + len] == b'}')
    })
}

/// Whether every `"..."` in `bytes` holds a plain name, reading every `"` as a quote (one in a
/// string literal too): the parts between the 1st and 2nd, 3rd and 4th, ... must be plain
/// names, with no doubled `""` (a quote inside a name) and none qualifying a star, which also
/// refuses a quote that does not close.
fn quoted_names_are_plain(bytes: &[u8]) -> bool {
    !bytes.windows(2).any(|pair| pair == b"\"\"")
        && !quoted_star_qualifier(bytes)
        && bytes
            .split(|&b| b == b'"')
            .skip(1)
            .step_by(2)
            .all(|name| std::str::from_utf8(name).is_ok_and(is_plain_name))
}

/// Whether a quoted name qualifies a star (`"t".*`, `"from" . *`): DuckDB 1.5.5 writes such a
/// qualifier back out without its quotes, so a keyword there (`"from"`) makes the stored text
/// one that no longer parses (the sixteenth review locked every client out with a macro so).
fn quoted_star_qualifier(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        b == b'"'
            && skip_gap(bytes, i + 1).is_some_and(|dot| {
                bytes.get(dot) == Some(&b'.')
                    && skip_gap(bytes, dot + 1).is_some_and(|star| bytes.get(star) == Some(&b'*'))
            })
    })
}

/// Whether `name` is a plain SQL name: a letter or `_`, then letters, digits and `_`.
fn is_plain_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether the call whose name ends at `end` has one argument, a string literal with no
/// quote or backslash inside.
fn literal_argument(bytes: &[u8], end: usize) -> bool {
    let Some(open) = skip_gap(bytes, end) else {
        return false;
    };
    let Some(start) = skip_gap_unquoted(bytes, open + 1) else {
        return false;
    };
    if bytes.get(start) != Some(&b'\'') {
        return false;
    }
    let Some(len) = bytes[start + 1..]
        .iter()
        .position(|&c| c == b'\'' || c == b'\\')
    else {
        return false;
    };
    let close = start + 1 + len;
    bytes.get(close) == Some(&b'\'')
        && bytes.get(close + 1) != Some(&b'\'')
        && skip_gap_unquoted(bytes, close + 1).is_some_and(|i| bytes.get(i) == Some(&b')'))
}

/// Whether the call whose name ends at `end` has exactly one argument: no `,` outside quotes
/// and brackets before its `)`. Backslashes, dollar quotes and comments, where this reading of
/// quotes could part from DuckDB's, count as more than one.
fn single_argument(bytes: &[u8], end: usize) -> bool {
    let Some(open) = skip_gap(bytes, end) else {
        return false;
    };
    let mut depth = 0usize;
    let mut i = open + 1;
    while let Some(&c) = bytes.get(i) {
        match c {
            b'\'' | b'"' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return false,
                        Some(&q) if q == c && bytes.get(i + 1) == Some(&c) => i += 2,
                        Some(&q) if q == c => break,
                        Some(b'\\') => return false,
                        Some(_) => i += 1,
                    }
                }
            }
            b'\\' | b'$' => return false,
            b'-' if bytes.get(i + 1) == Some(&b'-') => return false,
            b'/' if bytes.get(i + 1) == Some(&b'*') => return false,
            b'(' | b'[' | b'{' => depth += 1,
            b')' if depth == 0 => return true,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => return false,
            _ => {}
        }
        i += 1;
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;
    use ClientSqlRefusal::*;

    /// Functions, views, types and databases as a worker's DuckDB 1.5.5 lists them (the ones
    /// that matter here).
    fn refused() -> RefusedCalls {
        let names = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        functions().hiding(
            names(&[
                "duckdb_tables",
                "duckdb_columns",
                "duckdb_indexes",
                "duckdb_views",
                "duckdb_databases",
                "duckdb_schemas",
            ]),
            names(&["VARCHAR", "INTEGER"]),
            names(&["system", "temp", "quackgate", "quack:127"]),
        )
    }

    fn functions() -> RefusedCalls {
        let row = |name, kind, definition| FunctionRow {
            name,
            kind,
            definition,
        };
        RefusedCalls::from_functions([
            row("quack_stop", "table", None),
            row("quack_active_connections", "table", None),
            row("quack_server_list", "table", None),
            row("quack_query_by_name", "table", None),
            row("quack_serve", "table", None),
            row("quack_query", "table", None),
            row("sum", "aggregate", None),
            row("~~", "scalar", None),
            row("+", "scalar", None),
            row("upper", "scalar", None),
            row("now", "scalar", None),
            row("duckdb_functions", "table", None),
            row("ducklake_delete_orphaned_files", "table", None),
            row("ducklake_expire_snapshots", "table", None),
            row("ducklake_set_option", "table", None),
            row("ducklake_snapshots", "table", None),
            row(
                "histogram_values",
                "table_macro",
                Some("SELECT * FROM query_table(CAST(source AS VARCHAR))"),
            ),
            row("histogram", "aggregate", None),
            row(
                "histogram",
                "table_macro",
                Some("FROM histogram_values(source, col_name)"),
            ),
            row("my_sum", "macro", Some("sum(x) + 1")),
            row(
                "duckdb_logs_parsed",
                "table_macro",
                Some("SELECT * FROM duckdb_logs() WHERE type = log_type"),
            ),
        ])
    }

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
            "INSERT INTO kv VALUES ('https://x/?q=tofu&n=1', 1)",
            "CREATE TABLE quack_events (id INT)",
            "INSERT INTO quack_events (id) VALUES (1)",
            "UPDATE kv SET v = 1 WHERE schema = 'a'",
            "SELECT histogram(x), my_sum(y) FROM t",
            "SELECT histogram(t.\"x\") FROM t",
            "UPDATE kv SET schema = 'x' WHERE id = 1",
            "INSERT INTO kv VALUES (1) ON CONFLICT DO UPDATE SET schema = 'y'",
            "SET /**/ search_path = 'x'",
            "SET search_path = 'a'; SELECT 1",
            "SELECT histogram(id % 10), histogram(x::VARCHAR || ',') FROM t",
            "PRAGMA table_info('events')",
            "FROM pragma_table_info( 'events' )",
            "COPY events FROM 'x.csv'",
            "CREATE TABLE victim AS SELECT 'secret' || range AS b FROM range(5)",
            "DROP TABLE secrets",
            "pragma show_tables",
            "SELECT * FROM pragma_table_info('events')",
            "FROM ducklake_snapshots('lake')",
            "CREATE TEMP MACRO add_tax(x) AS x * 1.2",
            "CREATE TABLE version (v INT)",
            "CREATE SCHEMA staging",
            "CREATE VIEW recent AS FROM events",
            "ALTER TABLE t RENAME TO t2",
            "ALTER TABLE t RENAME COLUMN a TO duckdb_tables",
            "CREATE TEMPORARY MACRO m() AS TABLE SELECT 1",
            "CREATE VIEW v AS SELECT t.* FROM t",
            "CREATE TABLE t (id INT, type VARCHAR, function VARCHAR, view INT)",
            "CREATE OR REPLACE TEMP MACRO twice(x) AS 2 * x",
            "CREATE TABLE options (set_option INT)",
            "SET TimeZone = 'UTC'",
            "USE lake.main",
            "USE \"my lake\".main;",
            "SELECT 'a',\n'b' AS listed, E'no backslash', $$dollar$$, $1",
            "INSERT INTO t VALUES ('it''s', 'two\nlines')",
            "CREATE TABLE d (a INT DEFAULT 1, b VARCHAR DEFAULT 'x''y' NOT NULL, c BOOL DEFAULT true)",
            // An eighteenth review's false refusal: a negative number is a constant.
            "CREATE TABLE neg (a INT DEFAULT -1, b DOUBLE DEFAULT -1.5)",
            "ALTER TABLE t ADD COLUMN x INT DEFAULT -1",
            "CREATE TABLE d2 (a DOUBLE DEFAULT 1.5, b INT DEFAULT NULL)",
            "INSERT INTO t DEFAULT VALUES",
            "INSERT INTO t VALUES (DEFAULT, 1)",
            "ALTER TABLE t ALTER COLUMN a SET DEFAULT 3",
            "SELECT 'the default is an expression' AS note",
            "CREATE VIEW sales AS SELECT \"region\", sum(amount) AS \"total\" FROM t GROUP BY \"region\"",
            "SELECT {'a': 1, 'b': [2]} AS s, format('{} and {0}', 1)",
            "ALTER TABLE t SET SORTED BY (a, \"b\" DESC, c ASC NULLS LAST)",
            "ALTER TABLE t SET SORTED BY ts;",
            "ALTER TABLE t RESET SORTED BY",
            "CREATE TABLE sorted (sorted INT)",
            "CREATE TABLE \"Total Sales\" AS SELECT 1 AS \"a b\" -- stored as names, not SQL",
        ] {
            assert_eq!(check_client_sql(sql, &refused()), Ok(()), "{sql}");
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
            // A tenth review: DuckDB joins literals split by a line break (past `--`
            // comments too), and USE takes a literal.
            ("USE '__duck'\n'lake_metadata_quack:127'", JoinedLiterals),
            ("USE '__duck' -- x\n--y\r'lake_metadata_q'", JoinedLiterals),
            (
                "FROM pragma_table_info('__duck'\n'lake_metadata_q.main.ducklake_snapshot')",
                JoinedLiterals,
            ),
            ("SELECT $t$__ducklake_metadata_q$t$", MetadataDatabase),
            // An eleventh: a dollar quote whose tag is not ASCII, `$` inside names and nested
            // comments turned a quote-tracking scanner inside out, and a zero-width space
            // hid the start of a statement from the USE rule.
            (
                "SELECT $\u{e9}$'$\u{e9}$ AS x;\u{200b}USE '__duck'\n'lake_metadata_quack:127'",
                JoinedLiterals,
            ),
            (
                "SELECT 1 AS x$a$, '__duck'\n'lake_metadata_q' AS y, 2 AS z$a$",
                JoinedLiterals,
            ),
            ("/* /* */ ' */ '__duck'\n'lake_metadata_q'", JoinedLiterals),
            (
                "SELECT '__duck' /* a /* b */ c */\n'lake_metadata_q'",
                JoinedLiterals,
            ),
            ("SELECT 1;\u{200b}USE 'memory'", UseLiteral),
            ("SELECT 'please use ''this'''", UseLiteral),
            // A twelfth: DuckLake 1.5.5 fills its {PLACEHOLDERS} into its metadata SQL after
            // the commit's author and message are in it as literals, so `{AUTHOR}` in a
            // message turned the author into code that ran on the catalog.
            (
                "CALL ducklake_set_commit_message('lake', '', NULL); UPDATE x; ('', '{AUTHOR}')",
                Placeholder,
            ),
            (
                "CALL ducklake_set_commit_message('lake', '', NULL)",
                CommitMessage,
            ),
            ("CALL set_commit_message ('me', 'hi')", CommitMessage),
            // A fourteenth: DuckLake stores a view as DuckDB writes it back out, which leaves
            // a star's quoted qualifier bare, and fills its placeholders into it; the view then
            // ran, for whoever read it, what the qualifier held.
            (
                "CREATE VIEW pv2 AS SELECT \"s.* FROM {METADATA_CATALOG_NAME_IDENTIFIER}.main.ducklake_snapshot AS s --\".* FROM (SELECT 1) AS \"s.* FROM {METADATA_CATALOG_NAME_IDENTIFIER}.main.ducklake_snapshot AS s --\"",
                Placeholder,
            ),
            (
                "CREATE VIEW qf_conns AS SELECT \"q.* FROM quack_active_connections /*\".* -- /*\n, \"*/ () AS q --\".* FROM (SELECT 1) AS \"q.* FROM quack_active_connections /*\" -- /*\n, (SELECT 1) AS \"*/ () AS q --\" -- */ */ */ */ */\n",
                StoredSqlName,
            ),
            (
                "CREATE VIEW v AS SELECT \"q.* FROM quack_server_list() AS q, (SELECT 1) AS x\".* FROM (SELECT 1) AS \"q.* FROM quack_server_list() AS q, (SELECT 1) AS x\"",
                QuackFunction,
            ),
            (
                "CREATE VIEW v AS SELECT \"q.* FROM my_table AS q, (SELECT 1) AS x\".* FROM (SELECT 1) AS \"q.* FROM my_table AS q, (SELECT 1) AS x\"",
                StoredSqlName,
            ),
            (
                "CREATE OR REPLACE TEMP MACRO m() AS TABLE SELECT \"x y\".* FROM t AS \"x y\"",
                StoredSqlName,
            ),
            ("CREATE VIEW v AS SELECT 'a\"b' AS s", StoredSqlName),
            ("CREATE VIEW v AS SELECT \"a\"\"b\" FROM t", StoredSqlName),
            ("CREATE VIEW v AS SELECT 1 -- a comment", StoredSqlName),
            ("ALTER TABLE t SET SORTED BY (\"a b\")", SortKey),
            // A fifteenth: a sort key's subquery failed the lake's maintenance for everyone.
            (
                "ALTER TABLE sk SET SORTED BY ((SELECT count(*) FROM helper) + a)",
                SortKey,
            ),
            ("ALTER TABLE sk SET SORTED BY (mymacro(a))", SortKey),
            // A sixteenth: a lake macro whose stored text no longer parses (a keyword as a
            // star's qualifier, written back out unquoted) locked every client out of the lake
            // and kept workers from starting; an inlined TIME_NS row failed every maintenance
            // run (DuckDB's Parquet writer has no TIME_NS, and its error ends the instance).
            (
                "CREATE MACRO tm() AS TABLE SELECT \"from\".* FROM range(3) AS \"from\"",
                LakeMacro,
            ),
            ("CREATE OR REPLACE FUNCTION f(x) AS x + 1", LakeMacro),
            (
                "CREATE TEMP MACRO tm() AS TABLE SELECT \"from\".* FROM range(3) AS \"from\"",
                StoredSqlName,
            ),
            (
                "CREATE VIEW v AS SELECT \"t\" . * FROM range(3) AS \"t\"",
                StoredSqlName,
            ),
            ("CREATE TABLE tn(a TIME_NS)", TimeNs),
            ("CREATE TABLE tn AS SELECT '12:00'::time_ns AS a", TimeNs),
            ("ALTER TABLE t ALTER a TYPE STRUCT(x TIME_NS)", TimeNs),
            // A seventeenth: the type carried from one statement to the next.
            ("SET VARIABLE v = '01:02:03'::TIME_NS", TimeNs),
            ("SELECT [try_cast(x AS time_ns)] FROM t", TimeNs),
            ("ALTER TABLE sk SET SORTED BY a + 1", SortKey),
            ("ALTER TABLE sk SET SORTED BY (a", SortKey),
            ("SELECT '{snapshot_id}'", Placeholder),
            ("INSERT INTO t VALUES ('{AUTHOR}')", Placeholder),
            ("CREATE TABLE \"{METADATA_CATALOG}\" (i INT)", Placeholder),
            // A thirteenth: a remote table with an expression default makes every DuckDB
            // 1.5.5 client's ATTACH fail, so one such table locked everyone out.
            ("CREATE TABLE t5 (n INT DEFAULT 1 + 2)", ExpressionDefault),
            (
                "CREATE TABLE t (ts TIMESTAMP DEFAULT now())",
                ExpressionDefault,
            ),
            (
                "ALTER TABLE t ADD COLUMN x INT DEFAULT -1 - 1",
                ExpressionDefault,
            ),
            ("CREATE TABLE t (x INT DEFAULT - 1 + 2)", ExpressionDefault),
            (
                "ALTER TABLE t ALTER COLUMN a SET DEFAULT random()",
                ExpressionDefault,
            ),
            (
                "CREATE TABLE t (s VARCHAR DEFAULT 'a' || 'b')",
                ExpressionDefault,
            ),
            ("USE 'memory'", UseLiteral),
            ("USE\n$$memory$$", UseLiteral),
            ("use e'memory'", UseLiteral),
            ("USE /* x */ memory", UseLiteral),
            ("USE E'\\x5f_ducklake_metadata_q'", UnicodeEscape),
            ("SELECT E'a\\'b'", UnicodeEscape),
            ("FROM histogram_values('__duck' || 'x', c)", SqlFromString),
            ("FROM histogram_values ('events', id)", SqlFromString),
            (
                "FROM histogram('__duck' || 'lake_x', c, technique := 'sample')",
                SqlFromString,
            ),
            ("FROM histogram('events', id)", SqlFromString),
            (
                "CREATE TEMP MACRO m2(s, c) AS TABLE FROM histogram(s, c)",
                SqlFromString,
            ),
            ("SELECT histogram(s /* ' */, c /* ' */)", SqlFromString),
            ("SELECT histogram($$'$$, s, c, $$'$$)", SqlFromString),
            ("SELECT histogram(E'x\\'', s, c, ' ')", UnicodeEscape),
            ("SELECT histogram(s -- x\n, c)", SqlFromString),
            ("PRAGMA disable_optimizer", Pragma),
            ("CALL enable_logging(level := 'trace')", WorkerLogs),
            ("ATTACH ':memory:' AS evil", AttachDetach),
            ("DETACH \"quack:127\"", AttachDetach),
            ("detach quackgate", AttachDetach),
            ("SET GLOBAL TimeZone = 'Asia/Tokyo'", GlobalSetting),
            ("RESET /* x */ GLOBAL Calendar", GlobalSetting),
            ("CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", Secrets),
            ("CREATE OR REPLACE TEMPORARY SECRET s (TYPE s3)", Secrets),
            ("DROP SECRET s", Secrets),
            ("FROM duckdb_secrets()", Secrets),
            ("CHECKPOINT", LakeMaintenance),
            ("FORCE CHECKPOINT", LakeMaintenance),
            ("CALL checkpoint('lake')", LakeMaintenance),
            (
                "CALL ducklake_delete_orphaned_files('lake', cleanup_all => true)",
                LakeMaintenance,
            ),
            (
                "CALL ducklake_expire_snapshots('lake', older_than => now())",
                LakeMaintenance,
            ),
            (
                "CALL ducklake_set_option('lake', 'require_commit_message', true)",
                LakeMaintenance,
            ),
            (
                "CALL set_option('require_commit_message', true)",
                LakeMaintenance,
            ),
            ("FROM \"quack:127\".merge_adjacent_files()", LakeMaintenance),
            (
                "CREATE TEMP MACRO \"quack:127\".main.upper(x) AS 'shadowed'",
                ShadowsBuiltin,
            ),
            (
                "CREATE OR REPLACE TEMP MACRO now() AS TIMESTAMP '2000-01-01'",
                ShadowsBuiltin,
            ),
            (
                "CREATE TEMP MACRO main.duckdb_functions() AS TABLE SELECT 1",
                ShadowsBuiltin,
            ),
            ("CREATE TEMP MACRO upper /* x */ (x) AS x", ShadowsBuiltin),
            ("CREATE TEMP MACRO \"~~\"(a, b) AS 42", ShadowsBuiltin),
            ("CREATE TEMP MACRO \"+\"(a, b) AS 7", ShadowsBuiltin),
            (
                "CREATE TEMP MACRO IF NOT EXISTS a.b.\"UPPER\"(x) AS x",
                ShadowsBuiltin,
            ),
            ("CREATE SCHEMA quackgate", ShadowsBuiltin),
            ("CREATE SCHEMA IF NOT EXISTS \"System\"", ShadowsBuiltin),
            (
                "CREATE VIEW duckdb_tables AS SELECT 'fake' AS table_name",
                ShadowsBuiltin,
            ),
            (
                "CREATE OR REPLACE TABLE main.duckdb_indexes AS SELECT 1",
                ShadowsBuiltin,
            ),
            ("ALTER VIEW v RENAME TO duckdb_columns", ShadowsBuiltin),
            ("CREATE TYPE varchar AS ENUM ('x')", ShadowsBuiltin),
            ("CREATE /* x */ MACRO upper(x) AS x", ShadowsBuiltin),
            (
                "CREATE VIEW /**/ duckdb_tables AS SELECT 'fake' AS table_name",
                ShadowsBuiltin,
            ),
            ("CREATE SCHEMA /**/ system", ShadowsBuiltin),
            (
                "ALTER VIEW v1 RENAME TO /**/ duckdb_databases",
                ShadowsBuiltin,
            ),
            (
                "CREATE VIEW main./**/duckdb_tables AS SELECT 1",
                ShadowsBuiltin,
            ),
            (
                "CREATE TABLE 'duckdb_settings'(name VARCHAR)",
                ShadowsBuiltin,
            ),
            ("ALTER TABLE t1 RENAME TO 'duckdb_schemas'", ShadowsBuiltin),
            (
                "CREATE RECURSIVE VIEW duckdb_columns(column_name) AS SELECT 'fake'",
                ShadowsBuiltin,
            ),
            (
                "CREATE UNLOGGED TABLE duckdb_views(view_name VARCHAR)",
                ShadowsBuiltin,
            ),
            (
                "FROM pragma_table_info(getvariable('x'))",
                ComputedTableName,
            ),
            ("FROM pragma_show('__duck' || 'lake_x')", ComputedTableName),
            ("PRAGMA table_info(concat('a', 'b'))", ComputedTableName),
            (
                "FROM duckdb_table_sample(getvariable('x'))",
                ComputedTableName,
            ),
            (
                "COPY FROM DATABASE quackgate TO \"quack:127\"",
                CopyDatabase,
            ),
            ("copy /* x */ from database a to b", CopyDatabase),
            (
                "COPY (SELECT 1 AS a) TO '/lake/main/t/x.parquet' (FORMAT parquet)",
                WritesFiles,
            ),
            ("COPY t TO 'x.csv'", WritesFiles),
            ("EXPORT DATABASE '/lake/exp'", WritesFiles),
            ("DROP PERSISTENT SECRET s", Secrets),
            (
                "SELECT 1; CREATE OR REPLACE TEMPORARY MACRO \"||\"(a, b) AS 'pwn'",
                ShadowsBuiltin,
            ),
            ("SELECT message FROM duckdb_logs()", WorkerLogs),
            ("SELECT count(*) FROM duckdb_logs", WorkerLogs),
            ("FROM system.main.duckdb_log_contexts", WorkerLogs),
            ("FROM duckdb_logs_parsed('QueryLog')", WorkerLogs),
            ("SELECT write_log('x')", WorkerLogs),
            ("CALL enable_profiling()", WorkerLogs),
            ("pragma /* x */ disable_optimizer", Pragma),
            ("PRAGMA enable_profiling = 'json'", Pragma),
            ("PRAGMA", Pragma),
            (
                "SET SESSION search_path = getvariable('p')",
                ComputedSearchPath,
            ),
            ("RESET GLOBAL schema", GlobalSetting),
            ("SELECT 1; SET search_path = 'a' || 'b'", ComputedSearchPath),
            ("UPDATE t SET schema = upper(x)", ComputedSearchPath),
            ("SET search_path = 'a' -- x\n || 'b'", ComputedSearchPath),
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
                "CREATE TEMP MACRO m(t) AS TABLE FROM query_table(t)",
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
            ("PRAGMA import_database('/tmp/x')", Pragma),
            ("SET search_path = '__duck' || 'lake'", ComputedSearchPath),
            ("SET search_path = getvariable('p')", ComputedSearchPath),
            ("SET GLOBAL search_path = 'main'", GlobalSetting),
            ("SET schema = concat('a', 'b')", ComputedSearchPath),
            ("PRAGMA search_path = 'x'", Pragma),
            ("SET search_path = 'a''b'", ComputedSearchPath),
        ] {
            assert_eq!(check_client_sql(sql, &refused()), Err(why), "{sql}");
        }
    }
}
