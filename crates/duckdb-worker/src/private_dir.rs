//! The worker's private folder: mode 0700, named after the worker and its pid, removed when the
//! worker ends. It holds the catalog secret for as long as the lake takes to open, a read-only
//! worker's identity database, and the worker's spill files: the only place a read-only
//! worker may write at all.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// A private folder removed when dropped.
#[derive(Debug)]
pub struct PrivateDir(PathBuf);

impl PrivateDir {
    /// Makes `<tmp>/quackgate-<worker>-<pid>`, first sweeping away folders of the same worker
    /// whose process is gone.
    pub fn create(worker_id: &str) -> std::io::Result<Self> {
        let prefix = format!(
            "quackgate-{}-",
            worker_id.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        );
        // A predecessor killed during its start (say, on a start-up timeout) could not remove
        // its folder: sweep those whose process is gone, so no token outlives its worker. A
        // live process's folder may be another gateway's worker of the same name.
        for entry in std::fs::read_dir(std::env::temp_dir())?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&prefix) else {
                continue;
            };
            let gone = pid
                .parse::<u32>()
                .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if gone {
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    eprintln!("quackgate worker: removing {}: {e}", entry.path().display());
                }
            }
        }
        let path = std::env::temp_dir().join(format!("{prefix}{}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir(path))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A new private subfolder.
    pub fn subdir(&self, name: &str) -> std::io::Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(path)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        for entry in entries.flatten() {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                eprintln!("quackgate worker: removing {}: {e}", entry.path().display());
            }
        }
        // A read-only worker may not remove the folder itself (it lies outside what it may
        // write); the next start of the worker sweeps it.
        if let Err(e) = std::fs::remove_dir(&self.0) {
            if e.kind() != std::io::ErrorKind::PermissionDenied {
                eprintln!("quackgate worker: removing {}: {e}", self.0.display());
            }
        }
    }
}
