//! What an authenticated client is and may do. A leaf: the id format, the workers and the
//! session table all name an [`Access`] without depending on how tokens are checked.

use std::sync::Arc;

use sha2::{Digest, Sha256};

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
    /// What its sessions' ids carry (`routable_id::Grant::principal_tag`): for a static token,
    /// of its name and digest, so that a token replaced under the same name revokes the old
    /// one's sessions; for a JWT, of its name.
    pub tag: u32,
}

/// The first 32 bits of SHA-256 of a principal's name, and of its static token's digest when
/// it has one.
pub fn principal_tag(name: &str, token_sha256: Option<&[u8; 32]>) -> u32 {
    let mut d = Sha256::new();
    d.update(name.as_bytes());
    if let Some(digest) = token_sha256 {
        d.update([0]);
        d.update(digest);
    }
    let digest = d.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

impl Principal {
    /// The form a session's grant travels in on the peer leg, under the peer MAC:
    /// `<rw|ro>.<expiry or 0>.<tag, 8 hex>.<hex of the name>`.
    pub fn to_grant(&self) -> String {
        let access = match self.access {
            Access::ReadWrite => "rw",
            Access::ReadOnly => "ro",
        };
        format!(
            "{access}.{}.{:08x}.{}",
            self.expires_at.unwrap_or(0),
            self.tag,
            hex::encode(self.name.as_bytes())
        )
    }

    /// The principal a grant names, if it is well formed.
    pub fn from_grant(grant: &[u8]) -> Option<Principal> {
        let text = std::str::from_utf8(grant).ok()?;
        let mut parts = text.splitn(4, '.');
        let access = match parts.next()? {
            "rw" => Access::ReadWrite,
            "ro" => Access::ReadOnly,
            _ => return None,
        };
        let expires_at: u64 = parts.next()?.parse().ok()?;
        let tag = parts.next().filter(|t| t.len() == 8)?;
        let tag = u32::from_str_radix(tag, 16).ok()?;
        let name = String::from_utf8(hex::decode(parts.next()?).ok()?).ok()?;
        if name.is_empty() {
            return None;
        }
        Some(Principal {
            name: name.into(),
            access,
            expires_at: (expires_at != 0).then_some(expires_at),
            tag,
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
                tag: principal_tag("jwt:ana.maria@example.com", None),
            },
            Principal {
                name: "tester".into(),
                access: Access::ReadWrite,
                expires_at: None,
                tag: principal_tag("tester", Some(&[7; 32])),
            },
        ] {
            assert_eq!(Principal::from_grant(p.to_grant().as_bytes()), Some(p));
        }
        for bad in [
            "",
            "rw",
            "admin.0.00000000.74",
            "rw.x.00000000.74",
            "rw.0.00000000.zz",
            "rw.0.00000000.",
            "rw.0.74",
            "rw.0.0000000g.74",
        ] {
            assert_eq!(Principal::from_grant(bad.as_bytes()), None, "{bad}");
        }
    }
}
