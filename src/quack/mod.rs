//! Facts about the Quack protocol (DuckDB v1.5) that the gateway relies on.
//!
//! Only what routing needs is modelled: the message type and the connection id in the header,
//! and the token in a CONNECTION_REQUEST. Message types are deliberately not whitelisted,
//! because newer DuckDB builds add types the gateway should pass through unchanged.

pub mod codec;

/// The one path every Quack message is POSTed to.
pub const QUACK_PATH: &str = "/quack";
/// Content type of every Quack response.
pub const RESPONSE_CONTENT_TYPE: &str = "application/vnd.duckdb";
/// Content type the DuckDB client sends (the server ignores it).
pub const REQUEST_CONTENT_TYPE: &str = "application/octet-stream";
/// What the DuckDB Quack server answers on `GET /`.
pub const BANNER: &str =
    "This is a DuckDB Quack RPC endpoint. Use ATTACH 'quack:...' to connect here.";

/// Message types the gateway treats specially. Any other value passes through.
pub mod msg_type {
    /// First message of a session; carries the token, has no connection id.
    pub const CONNECTION_REQUEST: u64 = 1;
    /// Answer to CONNECTION_REQUEST; the only message carrying the new connection id.
    pub const CONNECTION_RESPONSE: u64 = 2;
    /// Runs SQL (every statement, BEGIN and COMMIT included).
    pub const PREPARE_REQUEST: u64 = 3;
    /// Asks for the next batch of a result; sent in parallel for one result.
    pub const FETCH_REQUEST: u64 = 7;
    /// `INSERT INTO r.t ...` data, one DataChunk per request.
    pub const APPEND_REQUEST: u64 = 9;
    /// Answer to APPEND and DISCONNECT.
    pub const SUCCESS_RESPONSE: u64 = 10;
    /// Sent on DETACH; ends the session on the server.
    pub const DISCONNECT: u64 = 11;
    /// An error, sent in an HTTP 200 with the message text in body field 1.
    pub const ERROR_RESPONSE: u64 = 100;

    /// A bounded name for logs and metric labels.
    pub fn name(t: u64) -> &'static str {
        match t {
            CONNECTION_REQUEST => "connection_request",
            CONNECTION_RESPONSE => "connection_response",
            PREPARE_REQUEST => "prepare",
            4 => "prepare_response",
            FETCH_REQUEST => "fetch",
            8 => "fetch_response",
            APPEND_REQUEST => "append",
            SUCCESS_RESPONSE => "success",
            DISCONNECT => "disconnect",
            12 => "cancel",
            ERROR_RESPONSE => "error",
            _ => "other",
        }
    }
}

/// Error texts the DuckDB server itself uses; clients and newer client versions react to them
/// (a 2.0 client re-handshakes on exactly `Invalid connection id`).
pub mod server_errors {
    /// Wrong or missing token.
    pub const AUTHENTICATION_FAILED: &str = "Authentication failed";
    /// Unknown, expired or foreign connection id.
    pub const INVALID_CONNECTION_ID: &str = "Invalid connection id";
}
