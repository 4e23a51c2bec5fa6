//! The id secret and a rotation's other secrets, re-read from their files every
//! [`RELOAD_INTERVAL`], so that rotating the secret (Key Vault updating the mounted files)
//! needs no restart and ends no session. Connection ids and the peer leg both change keys.
//!
//! A rotation goes in three steps, each done on every node and edge before the next starts
//! (on Azure Container Apps, once the mounted secrets have been refreshed everywhere):
//! 1. the new secret goes into a `gateway.previous_id_secret_files` file: it verifies, and
//!    signs nothing yet;
//! 2. the id secret file and that file swap: the new secret signs, the old one still verifies
//!    the ids of the open sessions and the peer requests of processes not yet switched;
//! 3. once the old secret's sessions are gone (`gateway.session_idle_secs` at the latest), the
//!    old secret leaves the previous file (write the new one there too).
//!
//! A file that cannot be read or does not hold a secret keeps the secrets in force, with a
//! warning: half a rotation is never applied.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::Cluster;
use crate::routable_id::{IdSecret, IdSigner, SECRET_BYTES};

pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Where the secrets are: `gateway.id_secret_file` and `gateway.previous_id_secret_files`.
#[derive(Debug, Clone)]
pub struct IdSecretFiles {
    pub current: PathBuf,
    pub previous: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not hold {} hex characters", SECRET_BYTES * 2)]
    Format { path: PathBuf },
}

/// Keeps the signers' keys equal to what the files hold.
pub struct Rotation {
    files: IdSecretFiles,
    ids: IdSigner,
    cluster: Option<Arc<Cluster>>,
    /// Digest of the secrets in force, in file order.
    in_force: Mutex<[u8; 32]>,
}

impl Rotation {
    /// Watches `files`, whose secrets at start were `current` and `previous`.
    pub fn new(
        files: IdSecretFiles,
        ids: IdSigner,
        cluster: Option<Arc<Cluster>>,
        current: &IdSecret,
        previous: &[IdSecret],
    ) -> Self {
        Rotation {
            files,
            ids,
            cluster,
            in_force: Mutex::new(digest(current, previous)),
        }
    }

    fn read(&self) -> Result<(IdSecret, Vec<IdSecret>), RotationError> {
        let read = |path: &PathBuf| {
            let text = std::fs::read(path).map_err(|source| RotationError::Read {
                path: path.clone(),
                source,
            })?;
            IdSecret::from_hex(&String::from_utf8_lossy(&text))
                .ok_or_else(|| RotationError::Format { path: path.clone() })
        };
        let current = read(&self.files.current)?;
        let previous = self
            .files
            .previous
            .iter()
            .map(read)
            .collect::<Result<_, _>>()?;
        Ok((current, previous))
    }

    /// Reads the files and puts what they hold in force if it changed. Returns whether it did.
    pub fn reload(&self) -> bool {
        let (current, previous) = match self.read() {
            Ok(secrets) => secrets,
            Err(e) => {
                warn!(error = %e, "the id secret files do not load; keeping the secrets in force");
                return false;
            }
        };
        let now = digest(&current, &previous);
        let mut in_force = self.in_force.lock().unwrap_or_else(|e| e.into_inner());
        if *in_force == now {
            return false;
        }
        let previous: Vec<&[u8; SECRET_BYTES]> = previous.iter().map(IdSecret::expose).collect();
        self.ids.rotate(current.expose(), &previous);
        if let Some(cluster) = &self.cluster {
            cluster.key().rotate(current.expose(), &previous);
        }
        *in_force = now;
        info!(
            previous = previous.len(),
            "id secrets reloaded: ids and peer requests use the new set"
        );
        true
    }

    pub async fn watch(self, stop: CancellationToken) {
        crate::shutdown::every(RELOAD_INTERVAL, stop, || {
            self.reload();
        })
        .await;
    }
}

fn digest(current: &IdSecret, previous: &[IdSecret]) -> [u8; 32] {
    let mut d = Sha256::new();
    d.update(current.expose());
    for p in previous {
        d.update(p.expose());
    }
    d.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::access::Access;
    use crate::routable_id::Grant;

    fn write(dir: &std::path::Path, name: &str, byte: u8) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("{}\n", hex::encode([byte; SECRET_BYTES]))).unwrap();
        path
    }

    fn secret(byte: u8) -> IdSecret {
        IdSecret::from_bytes([byte; SECRET_BYTES])
    }

    #[test]
    fn a_three_step_rotation_keeps_every_open_session_routable() {
        let dir = tempfile::tempdir().unwrap();
        let current = write(dir.path(), "id-secret", 1);
        let next = write(dir.path(), "id-secret-previous", 1);
        let ids = IdSigner::with_keys(&[1; SECRET_BYTES], &[&[1; SECRET_BYTES]]);
        // Another process of the cluster, switched at each step before or after this one.
        let other = IdSigner::with_keys(&[1; SECRET_BYTES], &[&[1; SECRET_BYTES]]);
        let rotation = Rotation::new(
            IdSecretFiles {
                current: current.clone(),
                previous: vec![next.clone()],
            },
            ids.clone(),
            None,
            &secret(1),
            &[secret(1)],
        );
        let grant = Grant::new(Access::ReadWrite, None, "p");
        let old_id = ids.mint("n1", 0, &grant, b"old");
        assert!(!rotation.reload(), "nothing changed");

        // 1: the new secret verifies everywhere, signs nowhere.
        write(dir.path(), "id-secret-previous", 2);
        assert!(rotation.reload());
        other.rotate(&[1; SECRET_BYTES], &[&[2; SECRET_BYTES]]);
        // 2: this process signs with the new secret first; the other still verifies its ids.
        write(dir.path(), "id-secret", 2);
        write(dir.path(), "id-secret-previous", 1);
        assert!(rotation.reload());
        let new_id = ids.mint("n1", 0, &grant, b"new");
        assert!(
            other.verify(&new_id).is_ok(),
            "a process one step behind verifies it"
        );
        assert!(
            ids.verify(&old_id).is_ok(),
            "the open session's id still routes"
        );
        // 3: the old secret goes; its ids stop routing, the new ones stay.
        write(dir.path(), "id-secret-previous", 2);
        assert!(rotation.reload());
        assert!(ids.verify(&new_id).is_ok());
        assert!(ids.verify(&old_id).is_err());
    }

    #[test]
    fn a_file_caught_half_written_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let current = write(dir.path(), "id-secret", 1);
        let ids = IdSigner::new(&[1; SECRET_BYTES]);
        let rotation = Rotation::new(
            IdSecretFiles {
                current: current.clone(),
                previous: vec![],
            },
            ids.clone(),
            None,
            &secret(1),
            &[],
        );
        let id = ids.mint("n1", 0, &Grant::new(Access::ReadOnly, None, "p"), b"w");
        std::fs::write(&current, "abc").unwrap();
        assert!(!rotation.reload());
        std::fs::remove_file(&current).unwrap();
        assert!(!rotation.reload());
        assert!(ids.verify(&id).is_ok(), "the secret in force stays");
    }
}
