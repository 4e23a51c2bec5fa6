//! Message types (header field 1) that the gateway or the bench handle by name. Types are
//! deliberately not whitelisted: newer DuckDB builds add types the gateway passes through
//! unchanged.

/// First message of a session; carries the token, has no connection id.
pub const CONNECTION_REQUEST: u64 = 1;
/// Answer to CONNECTION_REQUEST; the only message carrying the new connection id.
pub const CONNECTION_RESPONSE: u64 = 2;
/// Runs SQL (every statement, BEGIN and COMMIT included).
pub const PREPARE_REQUEST: u64 = 3;
/// Answer to PREPARE: result types and names, the first chunks, and whether to FETCH more.
pub const PREPARE_RESPONSE: u64 = 4;
/// Asks for the next batch of a result; sent in parallel for one result.
pub const FETCH_REQUEST: u64 = 7;
/// Answer to FETCH; one without results is the last.
pub const FETCH_RESPONSE: u64 = 8;
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
        PREPARE_RESPONSE => "prepare_response",
        FETCH_REQUEST => "fetch",
        FETCH_RESPONSE => "fetch_response",
        APPEND_REQUEST => "append",
        SUCCESS_RESPONSE => "success",
        DISCONNECT => "disconnect",
        12 => "cancel",
        ERROR_RESPONSE => "error",
        _ => "other",
    }
}
