//! Error texts the DuckDB server itself uses; clients and newer client versions react to them
//! (a 2.0 client re-handshakes on exactly `Invalid connection id`).

/// Wrong or missing token.
pub const AUTHENTICATION_FAILED: &str = "Authentication failed";
/// Unknown, expired or foreign connection id.
pub const INVALID_CONNECTION_ID: &str = "Invalid connection id";
