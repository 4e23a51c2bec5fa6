//! A worker's DuckDB `memory_limit` when `workers.memory_limit` is unset: its share of what
//! this process may use. DuckDB's own default is 80% of the machine's memory for each
//! database, so a node of several workers promises the same memory several times over, and
//! one heavy query (or an APPEND that costs more than it carries) can take the whole node
//! into the kernel's OOM killer. With a share each, a worker over it fails its statement
//! with DuckDB's out-of-memory error instead.

use crate::host_memory;

/// The part of what the process may use that its workers share.
const WORKERS_PERCENT: u64 = 80;

/// `workers` workers' share each, as DuckDB reads a size; `None` when the memory cannot be
/// read (DuckDB's default then).
pub fn share(workers: usize) -> Option<String> {
    let total = host_memory::process_limit()?;
    let each = total / 100 * WORKERS_PERCENT / workers.max(1) as u64;
    Some(format!("{}MiB", (each >> 20).max(64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_a_share() {
        let one: u64 = share(1).unwrap().trim_end_matches("MiB").parse().unwrap();
        let four: u64 = share(4).unwrap().trim_end_matches("MiB").parse().unwrap();
        assert!(one >= 64 && four <= one / 4 + 1, "{one} {four}");
    }
}
