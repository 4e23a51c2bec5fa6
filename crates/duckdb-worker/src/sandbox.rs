//! What a worker process may still do at the OS level once it serves.
//!
//! `quack_serve` is an ordinary table function, and neither `enable_external_access = false`
//! nor `lock_configuration` stops client SQL from calling it: a client could open a second
//! Quack server on the worker, with a token of its choosing, that bypasses the gateway's
//! authentication and roles. A worker never needs to listen again after its own server is up,
//! so a seccomp filter makes `listen(2)` fail with EPERM for every thread of the process, and
//! `quack_serve` then fails with DuckDB's own "Failed to bind" error.
//!
//! A read-only worker must also write no file: DuckDB's `allowed_directories` lets a locked-down
//! worker read the lake's data folder, but it grants writing there too (`COPY ... TO` over a
//! Parquet file of the lake). So before DuckDB starts, a read-only worker confines itself with
//! Landlock to writing only below its private folder; every thread DuckDB starts inherits that.

use std::collections::BTreeMap;
use std::path::Path;

use landlock::{
    path_beneath_rules, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// Denies `listen(2)` to every thread of this process from now on.
///
/// # Errors
/// A description of what failed (an unsupported architecture, or a kernel without seccomp).
pub fn deny_listen() -> Result<(), String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("seccomp on {}: {e}", std::env::consts::ARCH))?;
    let rules = BTreeMap::from([(libc::SYS_listen, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("building the seccomp filter: {e}"))?;
    let program =
        BpfProgram::try_from(filter).map_err(|e| format!("compiling the seccomp filter: {e}"))?;
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|e| format!("installing the seccomp filter: {e}"))
}

/// Lets this thread, and every thread it starts from now on, write only below `dir`.
///
/// # Errors
/// A description of what failed, including a kernel that does not enforce Landlock, or
/// enforces only part of it.
pub fn confine_writes(dir: &Path) -> Result<(), String> {
    let write = AccessFs::from_write(ABI::V3);
    let status = Ruleset::default()
        .handle_access(write)
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules([dir], write)))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("Landlock: {e}"))?;
    match status.ruleset {
        RulesetStatus::NotEnforced => {
            Err("the kernel does not enforce Landlock (Linux 5.13 or later, with landlock in the lsm= list)".into())
        }
        // Part of the rules would leave some kinds of write (truncation, on kernels before
        // 6.2) open to client SQL: a read-only worker does not start on such a kernel.
        RulesetStatus::PartiallyEnforced => {
            Err("the kernel enforces Landlock only in part (ABI v3, Linux 6.2 or later, is needed to confine every kind of file write)".into())
        }
        RulesetStatus::FullyEnforced => Ok(()),
    }
}
