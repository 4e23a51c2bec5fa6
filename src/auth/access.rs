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

impl Principal {
    /// The form a session's grant travels in on the peer leg, under the peer MAC:
    /// `<rw|ro>.<expiry or 0>.<hex of the name>`.
    pub fn to_grant(&self) -> String {
        let access = match self.access {
            Access::ReadWrite => "rw",
            Access::ReadOnly => "ro",
        };
        format!(
            "{access}.{}.{}",
            self.expires_at.unwrap_or(0),
            hex::encode(self.name.as_bytes())
        )
    }

    /// The principal a grant names, if it is well formed.
    pub fn from_grant(grant: &[u8]) -> Option<Principal> {
        let text = std::str::from_utf8(grant).ok()?;
        let mut parts = text.splitn(3, '.');
        let access = match parts.next()? {
            "rw" => Access::ReadWrite,
            "ro" => Access::ReadOnly,
            _ => return None,
        };
        let expires_at: u64 = parts.next()?.parse().ok()?;
        let name = String::from_utf8(hex::decode(parts.next()?).ok()?).ok()?;
        if name.is_empty() {
            return None;
        }
        Some(Principal {
            name: name.into(),
            access,
            expires_at: (expires_at != 0).then_some(expires_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_names_the_same_principal_on_the_other_side() {
        for p in [
            Principal {
                name: "jwt:ana.maria@example.com".into(),
                access: Access::ReadOnly,
                expires_at: Some(1_900_000_000),
            },
            Principal {
                name: "tester".into(),
                access: Access::ReadWrite,
                expires_at: None,
            },
        ] {
            assert_eq!(Principal::from_grant(p.to_grant().as_bytes()), Some(p));
        }
        for bad in ["", "rw", "admin.0.74", "rw.x.74", "rw.0.zz", "rw.0."] {
            assert_eq!(Principal::from_grant(bad.as_bytes()), None, "{bad}");
        }
    }
}
