//! The HTTP side of a Quack endpoint: where messages go and how they are labelled.

/// The one path every Quack message is POSTed to.
pub const QUACK_PATH: &str = "/quack";
/// Content type of every Quack response.
pub const RESPONSE_CONTENT_TYPE: &str = "application/vnd.duckdb";
/// Content type the DuckDB client sends (the server ignores it).
pub const REQUEST_CONTENT_TYPE: &str = "application/octet-stream";
/// What the DuckDB Quack server answers on `GET /`.
pub const BANNER: &str =
    "This is a DuckDB Quack RPC endpoint. Use ATTACH 'quack:...' to connect here.";
