//! The sessions open on this node: the table that placement and the limits read, the sweep
//! that ends sessions nobody uses, and how a session is ended at its worker.

pub mod end;
pub mod idle;
pub mod table;
