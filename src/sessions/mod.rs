//! The sessions open on this node: the table that placement and the limits read, the sweeps
//! that end sessions nobody uses or whose static token was revoked, and how a session is ended
//! at its worker.

pub mod end;
pub mod idle;
pub mod revoked;
pub mod table;
