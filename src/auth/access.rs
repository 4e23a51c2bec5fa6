//! What an authenticated client is and may do. A leaf: the id format, the workers and the
//! session table all name an [`Access`] without depending on how tokens are checked.

use std::sync::Arc;

/// What a principal may do. The worker enforces it: read-only sessions only ever reach
/// workers that opened the lake READ_ONLY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reads and writes.
    ReadWrite,
    /// Reads only.
    ReadOnly,
}

impl Access {
    /// `read_write` or `read_only`; anything else is unknown, and unknown means refused.
    pub fn parse(role: &str) -> Option<Access> {
        match role {
            "read_write" => Some(Access::ReadWrite),
            "read_only" => Some(Access::ReadOnly),
            _ => None,
        }
    }

    /// The name used in config and claims.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadWrite => "read_write",
            Access::ReadOnly => "read_only",
        }
    }
}

/// An authenticated client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// A static token's configured name, or `jwt:` and a JWT's `sub` (so a JWT subject can
    /// never share a static token's limits); safe to log.
    pub name: Arc<str>,
    /// What it may do.
    pub access: Access,
    /// When its credential expires (a JWT's `exp`, seconds since the epoch); `None` for
    /// static tokens.
    pub expires_at: Option<u64>,
}
