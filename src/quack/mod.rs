//! The Quack protocol facts and codec, now in the `quack-codec` crate; this shim keeps the
//! `crate::quack::...` paths compiling until the imports name `quack_codec` directly.

pub use quack_codec as codec;
pub use quack_codec::*;
