//! The sessions open on this node: the table that placement and the limits read, and the sweep
//! that ends sessions nobody uses.

pub mod idle;
pub mod table;
