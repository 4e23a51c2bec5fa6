//! A worker's DuckDB `memory_limit` when `workers.memory_limit` is unset: its share of what
//! this process may use. DuckDB's own default is 80% of the machine's memory for each
//! database, so a node of several workers promises the same memory several times over, and
//! one heavy query (or an APPEND that costs more than it carries) can take the whole node
//! into the kernel's OOM killer. With a share each, a worker over it fails its statement
//! with DuckDB's out-of-memory error instead.

use std::path::Path;

/// The part of what the process may use that its workers share.
const WORKERS_PERCENT: u64 = 80;

/// `workers` workers' share each, as DuckDB reads a size; `None` when the memory cannot be
/// read (DuckDB's default then).
pub fn share(workers: usize) -> Option<String> {
    let total = limit_of(Path::new("/"))?;
    let each = total / 100 * WORKERS_PERCENT / workers.max(1) as u64;
    Some(format!("{}MiB", (each >> 20).max(64)))
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
    fn the_share_is_the_lesser_of_the_cgroup_and_the_machine_split_among_workers() {
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

    #[test]
    fn this_machine_has_a_share() {
        let one: u64 = share(1).unwrap().trim_end_matches("MiB").parse().unwrap();
        let four: u64 = share(4).unwrap().trim_end_matches("MiB").parse().unwrap();
        assert!(one >= 64 && four <= one / 4 + 1, "{one} {four}");
    }
}
