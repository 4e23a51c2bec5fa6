//! The DuckDB settings client SQL may still change once a worker locks its configuration.
//!
//! `lock_configuration = true` is what stops client SQL from turning external access back on,
//! raising its memory or threads, or pointing DuckDB at files; but it refuses every `SET`,
//! including the per-session ones client tools send (a time zone, a search path). DuckDB's
//! `allowed_configs` names settings that stay changeable under the lock, checked by DuckDB
//! itself whatever the SQL text looks like. DuckDB applies the list to `SET GLOBAL` too, and a
//! global value reaches the worker's own connections (its server watch, its lake's metadata
//! queries) and every session of the process. So the list holds only settings that widen no
//! access (none names a file, a URL, a credential or a resource limit) and that change
//! nothing the worker's own SQL relies on. Left out, with the reason:
//!
//! - `max_expression_depth`: `SET GLOBAL max_expression_depth = 3` made every query of the
//!   process fail, the worker's own included, and new connects fail to authenticate;
//! - `default_collation`, `integer_division`, `default_order`, `default_null_order`,
//!   `ieee_floating_point_ops`, `scalar_subquery_error_on_multiple_rows`, `errors_as_json`:
//!   set globally, they change what the worker's own SQL (DuckLake's included) computes;
//! - `enable_profiling`, `profiling_mode`, `custom_profiling_settings`: the profile, SQL text
//!   included, goes to the worker's stderr, which is the gateway's log (`EXPLAIN ANALYZE`
//!   returns it to the client instead);
//! - `enable_progress_bar_print`: prints to the worker's status pipe; `profiling_output`,
//!   `enable_http_logging`: write files;
//! - `catalog_error_max_schemas`: it has no session value, so a plain `SET` of it reaches every
//!   session (found by a hostile review).
//!
//! `SET GLOBAL` of any of them is refused by the check on client SQL (`client_sql`): a time
//! zone or calendar set globally silently changed what other sessions computed.
//!
//! The catalog's worker allows none of them (`worker.rs`).

/// Settings that stay changeable under `lock_configuration`.
pub const SESSION_SETTINGS: &[&str] = &[
    "TimeZone",
    "Calendar",
    "enable_progress_bar",
    "progress_bar_time",
    "explain_output",
    "search_path",
    "schema",
    "pivot_limit",
];
