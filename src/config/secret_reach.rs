//! A secret file below a folder a worker may touch is a secret client SQL may read, whatever
//! the worker's Landlock rules keep out: such a config is refused at load, naming both.

use std::path::{Path, PathBuf};

use crate::config::problems::Problems;
use crate::workers::config::WorkersConfig;

/// The folders the workers of `workers` may read or write beyond the system's, with the key
/// that puts each there. `catalog_file` is the catalog role's database.
fn worker_folders(workers: &WorkersConfig, catalog_file: Option<&Path>) -> Vec<(String, PathBuf)> {
    let mut folders = Vec::new();
    if workers.count + workers.read_only_count > 0 {
        folders.push((
            "workers.extension_dir".into(),
            workers.extension_dir.clone(),
        ));
    }
    if let Some(dir) = &workers.database_dir {
        folders.push(("workers.database_dir".into(), dir.clone()));
    }
    if let Some(dir) = catalog_file.and_then(Path::parent) {
        folders.push(("the folder of catalog.file".into(), dir.to_path_buf()));
    }
    if let Some(lake) = &workers.ducklake {
        if !lake.data_path.contains("://") {
            let key = "workers.ducklake.data_path";
            folders.push((key.into(), PathBuf::from(&lake.data_path)));
        }
    }
    for dir in &workers.readable_dirs {
        folders.push(("workers.readable_dirs".into(), dir.clone()));
    }
    for dir in &workers.writable_dirs {
        folders.push(("workers.writable_dirs".into(), dir.clone()));
    }
    folders
}

/// Records a problem for each of `secrets` (key, path) inside a worker's folder.
pub(super) fn check(
    secrets: &[(&str, &Path)],
    workers: &WorkersConfig,
    catalog_file: Option<&Path>,
    problems: &mut Problems,
) {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let folders = worker_folders(workers, catalog_file);
    for (secret_key, secret) in secrets {
        let secret_real = real(secret);
        for (folder_key, folder) in &folders {
            if folder.as_os_str().is_empty() {
                continue;
            }
            if secret_real.starts_with(real(folder)) {
                problems.push(format!(
                    "{secret_key}: {} is inside {} ({folder_key}), which the workers may read: client SQL could read the secret; move one of them",
                    secret.display(),
                    folder.display()
                ));
            }
        }
    }
}
