//! The one codec for DuckDB's Quack protocol (v1.5): the gateway decodes, checks and rewrites
//! messages with it, and the bench's load generator builds requests and reads responses with
//! it, so the two cannot drift apart. Pure byte handling with no runtime dependencies, so the
//! bench builds it without the gateway or DuckDB.
//!
//! A message is DuckDB's BinarySerializer format: a header object then a body object. An
//! object is a run of `u16 LE field id` + value, ended by `FF FF`; integers are LEB128 and
//! strings are a LEB128 length and the bytes. Default values are omitted. The layouts are
//! checked against the messages captured from DuckDB 1.5.5 in `tests/data/quack/`.

mod client;
mod decode;
mod encode;
mod endpoint;
mod error;
mod flatten;
pub mod msg_type;
mod rewrite;
mod rows;
pub mod server_errors;
mod shape;
mod stream;
mod wire;
mod wkb;

pub use client::{
    append_request, connection_request, fetch_is_last, fetch_request, parse_prepare_response,
    prepare_request, AppendColumn, Prepared,
};
pub use decode::{
    decode_connection_request, decode_header, error_message, fetch_result, prepare_sql,
    validate_request, ConnectionRequest, Header,
};
pub use encode::{
    encode_disconnect, encode_error_response, replace_token, rewrite_header, without_stack_trace,
};
pub use endpoint::{BANNER, QUACK_PATH, REQUEST_CONTENT_TYPE, RESPONSE_CONTENT_TYPE};
pub use error::CodecError;
pub use rewrite::{flatten_append, FlatAppend};
pub use rows::{check_append, ResultRows, RowCounter};

#[cfg(test)]
mod fixtures;
