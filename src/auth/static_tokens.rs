//! Static tokens: those written in the config, and those of `auth.static_tokens_file`, which is
//! re-read every [`RELOAD_INTERVAL`] so that a rotated secret (Key Vault updating a mounted
//! file) takes effect with no restart. A token that leaves the file is revoked: new sessions
//! are refused, and so are the next requests of the sessions it opened (a session's id carries
//! its principal's tag, see `routable_id`), on every edge and gateway that reads the file.
//!
//! The file holds the same entries as the config: `[[static_tokens]]` with `name`, `sha256`
//! and `role`. A file that cannot be read or parsed keeps the tokens in force and is reported;
//! a file that is gone revokes its tokens.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::access::principal_tag;
use crate::auth::access::Access;

/// One accepted static token, stored as the SHA-256 of the token.
#[derive(Debug, Clone)]
pub struct StaticToken {
    /// The principal name logged for sessions of this token.
    pub name: Arc<str>,
    pub sha256: [u8; 32],
    /// What its sessions may do (`role`, default `read_write`).
    pub access: Access,
}

/// How often the tokens file is read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// One entry, as the config and the tokens file write it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub sha256: String,
    pub role: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    static_tokens: Vec<TokenEntry>,
}

impl TokenEntry {
    /// The token, or why not (naming the field).
    ///
    /// # Errors
    /// A bad digest, an empty name, or an unknown role.
    pub fn check(self) -> Result<StaticToken, String> {
        let mut sha256 = [0u8; 32];
        if hex::decode_to_slice(&self.sha256, &mut sha256).is_err() {
            return Err(format!(
                "sha256: must be 64 hex characters (`quackgate hash-token` prints it), got {} characters",
                self.sha256.len()
            ));
        }
        if self.name.is_empty() {
            return Err("name: must not be empty".into());
        }
        // A JWT's principal is `jwt:<sub>`: a static token of that name would share its
        // limits and isolated workers.
        if self.name.starts_with("jwt:") {
            return Err(format!(
                "name: must not start with jwt: (JWT principals are named so), got {:?}",
                self.name
            ));
        }
        let role = self.role.as_deref().unwrap_or("read_write");
        let access = Access::parse(role)
            .ok_or_else(|| format!("role: must be read_write or read_only, got {role:?}"))?;
        Ok(StaticToken {
            name: self.name.into(),
            sha256,
            access,
        })
    }
}

/// The tokens of a file's text.
///
/// # Errors
/// The first problem, naming its entry.
pub fn parse_file(text: &str) -> Result<Vec<StaticToken>, String> {
    let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
    file.static_tokens
        .into_iter()
        .enumerate()
        .map(|(i, entry)| entry.check().map_err(|e| format!("static_tokens[{i}].{e}")))
        .collect()
}

/// The tokens in force, with the tags of their principals and the access of each.
#[derive(Debug, Default)]
pub struct TokenSet {
    pub tokens: Vec<StaticToken>,
    tags: HashSet<(u32, Access)>,
}

impl TokenSet {
    fn new(tokens: Vec<StaticToken>) -> Self {
        let tags = tokens
            .iter()
            .map(|t| (principal_tag(&t.name, Some(&t.sha256)), t.access))
            .collect();
        TokenSet { tokens, tags }
    }
}

/// The static tokens of the config and of the tokens file.
#[derive(Debug)]
pub struct StaticTokens {
    inline: Vec<StaticToken>,
    file: Option<PathBuf>,
    current: RwLock<Arc<TokenSet>>,
    generation: std::sync::atomic::AtomicU64,
}

impl StaticTokens {
    /// `inline` from the config, and `from_file` as the config load read it from `file`.
    pub fn new(
        inline: Vec<StaticToken>,
        file: Option<PathBuf>,
        from_file: Vec<StaticToken>,
    ) -> Self {
        let all = inline.iter().cloned().chain(from_file).collect();
        StaticTokens {
            inline,
            file,
            current: RwLock::new(Arc::new(TokenSet::new(all))),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The tokens in force now.
    pub fn current(&self) -> Arc<TokenSet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a static token of the principal with this tag is still in force, with this
    /// access: a token whose role changed no longer vouches for sessions opened with the old.
    pub fn principal_known(&self, tag: u32, access: Access) -> bool {
        // Read on every request of a static-token session: no Arc clone.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .tags
            .contains(&(tag, access))
    }

    /// Changes each time the tokens in force are replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn replace_file_tokens(&self, from_file: Vec<StaticToken>) {
        let all = self.inline.iter().cloned().chain(from_file).collect();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(TokenSet::new(all));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Re-reads the tokens file until `stop`; without one, returns at once.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let mut last_text: Option<String> = None;
        // A small local file: reading it inline costs less than a blocking-pool hop.
        crate::shutdown::every(RELOAD_INTERVAL, stop, || {
            self.reload(&path, &mut last_text);
        })
        .await;
    }

    /// Reads the tokens file once; `last_text` is what the previous read found.
    fn reload(&self, path: &std::path::Path, last_text: &mut Option<String>) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if last_text.take().is_some() || self.current().tokens.len() > self.inline.len() {
                    warn!(tokens_file = %path.display(), "the static tokens file is gone: its tokens are revoked");
                    self.replace_file_tokens(Vec::new());
                }
                return;
            }
            Err(e) => {
                warn!(tokens_file = %path.display(), error = %e, "cannot read the static tokens file; keeping the tokens in force");
                return;
            }
        };
        if last_text.as_deref() == Some(text.as_str()) {
            return;
        }
        match parse_file(&text) {
            Ok(tokens) => {
                info!(tokens_file = %path.display(), tokens = tokens.len(), "static tokens reloaded");
                self.replace_file_tokens(tokens);
            }
            Err(e) => {
                warn!(tokens_file = %path.display(), error = %e, "the static tokens file is invalid; keeping the tokens in force")
            }
        }
        *last_text = Some(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_static_token_cannot_take_a_jwt_principals_name() {
        let err = parse_file(&format!(
            "[[static_tokens]]\nname = \"jwt:alice\"\nsha256 = \"{HASH}\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("must not start with jwt:"), "{err}");
    }

    #[test]
    fn a_file_names_its_bad_entries() {
        let ok = parse_file(&format!(
            "[[static_tokens]]\nname = \"a\"\nsha256 = \"{HASH}\"\nrole = \"read_only\"\n"
        ))
        .unwrap();
        assert_eq!((ok.len(), ok[0].access), (1, Access::ReadOnly));
        let bad = parse_file(&format!(
            "[[static_tokens]]\nname = \"a\"\nsha256 = \"{HASH}\"\n[[static_tokens]]\nname = \"b\"\nsha256 = \"{HASH}\"\nrole = \"admin\"\n"
        ))
        .unwrap_err();
        assert!(bad.starts_with("static_tokens[1].role"), "{bad}");
        assert!(parse_file("static_tokens = 3").is_err());
    }

    #[test]
    fn a_token_removed_from_the_file_is_revoked_and_its_principal_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let entry =
            |name: &str| format!("[[static_tokens]]\nname = \"{name}\"\nsha256 = \"{HASH}\"\n");
        std::fs::write(&path, entry("alice") + &entry("bob")).unwrap();
        let from_file = parse_file(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let tokens = StaticTokens::new(Vec::new(), Some(path.clone()), from_file);
        let digest: [u8; 32] = hex::decode(HASH).unwrap().try_into().unwrap();
        let tag = |name: &str| principal_tag(name, Some(&digest));
        assert!(tokens.principal_known(tag("bob"), Access::ReadWrite));
        let mut last = None;
        std::fs::write(&path, entry("alice")).unwrap();
        tokens.reload(&path, &mut last);
        assert!(tokens.principal_known(tag("alice"), Access::ReadWrite));
        assert!(!tokens.principal_known(tag("bob"), Access::ReadWrite));
        // Half-written: the tokens in force stay.
        std::fs::write(&path, "[[static_tokens]]\nname = ").unwrap();
        tokens.reload(&path, &mut last);
        assert!(tokens.principal_known(tag("alice"), Access::ReadWrite));
        // The same name with another token (a leaked one replaced): the old one's sessions go.
        let other = "0".repeat(64);
        std::fs::write(
            &path,
            format!("[[static_tokens]]\nname = \"alice\"\nsha256 = \"{other}\"\n"),
        )
        .unwrap();
        tokens.reload(&path, &mut last);
        assert!(!tokens.principal_known(tag("alice"), Access::ReadWrite));
        assert!(tokens.principal_known(principal_tag("alice", Some(&[0; 32])), Access::ReadWrite));
        // The same token with another role: sessions opened read-write go.
        let generation = tokens.generation();
        std::fs::write(
            &path,
            format!(
                "[[static_tokens]]\nname = \"alice\"\nsha256 = \"{other}\"\nrole = \"read_only\"\n"
            ),
        )
        .unwrap();
        tokens.reload(&path, &mut last);
        assert!(tokens.generation() > generation);
        let alice = principal_tag("alice", Some(&[0; 32]));
        assert!(!tokens.principal_known(alice, Access::ReadWrite));
        assert!(tokens.principal_known(alice, Access::ReadOnly));
        std::fs::remove_file(&path).unwrap();
        tokens.reload(&path, &mut last);
        assert!(!tokens.principal_known(principal_tag("alice", Some(&[0; 32])), Access::ReadWrite));
    }
}
