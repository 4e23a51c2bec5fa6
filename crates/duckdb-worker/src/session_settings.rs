//! The DuckDB settings client SQL may still change once a worker locks its configuration.
//!
//! `lock_configuration = true` is what stops client SQL from turning external access back on,
//! raising its memory or threads, or pointing DuckDB at files; but it refuses every `SET`,
//! including the per-session ones client tools send (a time zone, an expression depth).
//! DuckDB's `allowed_configs` names settings that stay changeable under the lock, checked by
//! DuckDB itself whatever the SQL text looks like. These are the ones that widen no access:
//! none names a file, a URL, a credential or a resource limit (so `profiling_output`,
//! `enable_http_logging`, `threads`, `memory_limit` and the like stay locked).
//!
//! DuckDB applies the list to `SET GLOBAL` as well: that reaches the other sessions of the
//! same worker process, which under `workers.isolation = "principal"` are the same
//! principal's.

/// Settings that stay changeable under `lock_configuration`.
pub const SESSION_SETTINGS: &[&str] = &[
    "TimeZone",
    "Calendar",
    "max_expression_depth",
    "enable_progress_bar",
    "enable_progress_bar_print",
    "progress_bar_time",
    "enable_profiling",
    "profiling_mode",
    "custom_profiling_settings",
    "explain_output",
    "default_order",
    "default_null_order",
    "default_collation",
    "errors_as_json",
    "integer_division",
    "ieee_floating_point_ops",
    "order_by_non_integer_literal",
    "scalar_subquery_error_on_multiple_rows",
    "search_path",
    "schema",
    "catalog_error_max_schemas",
    "pivot_limit",
];
