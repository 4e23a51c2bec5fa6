//! What this process may use of the machine's memory: its cgroup's limit when it has one (a
//! container's), else the machine's. The defaults of the limits that split it (workers'
//! `memory_limit`, the APPEND bytes the gateway holds) are shares of it.

use std::path::Path;

/// What this process may use, in bytes; `None` when it cannot be read.
pub fn process_limit() -> Option<u64> {
    limit_of(Path::new("/"))
}

/// What the process may use: its cgroup's limit when it has one, else the machine's memory.
fn limit_of(root: &Path) -> Option<u64> {
    let machine = meminfo_total(&std::fs::read_to_string(root.join("proc/meminfo")).ok()?)?;
    let cgroup = [
        "sys/fs/cgroup/memory.max",
        "sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|file| cgroup_limit(&std::fs::read_to_string(root.join(file)).ok()?));
    Some(cgroup.map_or(machine, |limit| limit.min(machine)))
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A cgroup memory limit file's value; `None` for none (`max`, or v1's huge sentinel).
fn cgroup_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < 1 << 60).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_the_cgroups_when_it_is_lower_than_the_machines() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(meminfo_total(meminfo), Some(24_576_000 * 1024));
        assert_eq!(cgroup_limit("max\n"), None);
        assert_eq!(cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(cgroup_limit("4294967296\n"), Some(4 << 30));

        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("proc")).unwrap();
        std::fs::create_dir_all(root.path().join("sys/fs/cgroup")).unwrap();
        std::fs::write(root.path().join("proc/meminfo"), meminfo).unwrap();
        std::fs::write(root.path().join("sys/fs/cgroup/memory.max"), "max\n").unwrap();
        assert_eq!(limit_of(root.path()), Some(24_576_000 * 1024));
        std::fs::write(root.path().join("sys/fs/cgroup/memory.max"), "4294967296\n").unwrap();
        assert_eq!(limit_of(root.path()), Some(4 << 30));
    }
}
