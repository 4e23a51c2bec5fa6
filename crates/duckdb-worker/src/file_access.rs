//! The files a worker needs, and so the only ones its Landlock rules let client SQL reach.
//!
//! The lists are built from the spec alone, before DuckDB starts: what DuckDB and the C library
//! read from the system (CA bundles, name resolution, time zones, the cgroup memory limit), the
//! extensions, the worker's private folder, and the database or lake it serves. Everything else
//! the gateway's user can read (the TLS key, the id secret, the token files, other processes'
//! `/proc` entries) is out of reach, whatever SQL runs.

use std::path::{Path, PathBuf};

use crate::spec::WorkerSpec;

/// Read by DuckDB, its extensions or the C library while a worker serves; none holds a secret
/// of the gateway. Paths missing on this machine are skipped.
const SYSTEM_READS: &[&str] = &[
    // TLS trust for httpfs, azure and the catalog client.
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
    "/usr/local/share/ca-certificates",
    // Name resolution, and the NSS modules glibc may load for it.
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    // Time zones (ICU, and the local zone).
    "/etc/localtime",
    "/usr/share/zoneinfo",
    // DuckDB sizes its memory limit and threads from these; without them a container's cgroup
    // limit would go unseen and the default limit would be the host's memory.
    // Files, not `/proc/self`: its `mem` and `environ` are no client's business.
    "/proc/self/cgroup",
    "/proc/self/mountinfo",
    "/proc/self/status",
    "/proc/meminfo",
    "/proc/cpuinfo",
    "/proc/stat",
    "/sys/fs/cgroup",
    "/sys/devices/system/cpu",
    "/dev/urandom",
    "/dev/random",
];

/// Written to by libraries as a sink; reading it gives nothing.
const SYSTEM_WRITES: &[&str] = &["/dev/null"];

/// What a confined worker may touch: reading below `read`, reading and writing below `write`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRules {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
}

/// The rules for the worker `spec` describes, whose private folder is `private`.
pub fn rules(spec: &WorkerSpec, private: &Path) -> FileRules {
    let mut read: Vec<PathBuf> = SYSTEM_READS.iter().map(PathBuf::from).collect();
    read.push(spec.extension_dir.clone());
    read.extend(spec.readable_dirs.iter().cloned());
    let mut write: Vec<PathBuf> = SYSTEM_WRITES.iter().map(PathBuf::from).collect();
    write.push(private.to_path_buf());
    write.extend(spec.writable_dirs.iter().cloned());
    if let Some(db) = &spec.database {
        // DuckDB writes its WAL and spill folder beside the file.
        let folder = db.parent().filter(|p| !p.as_os_str().is_empty());
        write.push(folder.unwrap_or(Path::new(".")).to_path_buf());
    }
    if let Some(lake) = &spec.ducklake {
        if let Some(ca) = &lake.catalog_ca_file {
            read.push(ca.clone());
        }
        if let Some(folder) = local_data_folder(&lake.data_path) {
            if spec.read_only {
                read.push(folder);
            } else {
                write.push(folder);
            }
        }
    }
    FileRules { read, write }
}

/// The lake's data folder when it is on this machine (not `az://...` or another URL).
pub fn local_data_folder(data_path: &str) -> Option<PathBuf> {
    (!data_path.contains("://")).then(|| PathBuf::from(data_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(read_only: bool, data_path: &str) -> WorkerSpec {
        let json = serde_json::json!({
            "worker_id": "n0.w0", "port": 1, "token": "t", "extension_dir": "/ext",
            "database": null, "threads": null, "memory_limit": null, "init_sql": [],
            "external_access": false, "read_only": read_only,
            "ducklake": {"catalog": "127.0.0.1:1", "catalog_token": "c", "data_path": data_path,
                         "catalog_ca_file": "/ca.pem", "azure": null},
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_read_write_worker_writes_its_lake_folder_and_a_read_only_one_only_reads_it() {
        let rw = rules(&spec(false, "/lake/data/"), Path::new("/tmp/p"));
        assert!(rw.write.contains(&PathBuf::from("/lake/data/")));
        assert!(rw.write.contains(&PathBuf::from("/tmp/p")));
        assert!(rw.read.contains(&PathBuf::from("/ca.pem")));
        assert!(rw.read.contains(&PathBuf::from("/ext")));
        let ro = rules(&spec(true, "/lake/data/"), Path::new("/tmp/p"));
        assert!(ro.read.contains(&PathBuf::from("/lake/data/")));
        assert!(!ro.write.contains(&PathBuf::from("/lake/data/")));
    }

    #[test]
    fn a_lake_on_object_storage_adds_no_folder() {
        let r = rules(&spec(false, "az://c/p/"), Path::new("/tmp/p"));
        assert!(!r.write.iter().any(|p| p.to_string_lossy().contains("az:")));
        assert!(!r.read.iter().any(|p| p.to_string_lossy().contains("az:")));
    }

    #[test]
    fn a_database_file_makes_its_folder_writable() {
        let mut s = spec(false, "az://c/p/");
        s.ducklake = None;
        s.database = Some(PathBuf::from("/var/lib/q/catalog.duckdb"));
        assert!(rules(&s, Path::new("/tmp/p"))
            .write
            .contains(&PathBuf::from("/var/lib/q")));
    }
}
