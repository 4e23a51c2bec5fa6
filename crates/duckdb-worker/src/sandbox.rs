//! What a worker process may still do at the OS level once it serves.
//!
//! `quack_serve` is an ordinary table function, and neither `enable_external_access = false`
//! nor `lock_configuration` stops client SQL from calling it: a client could open a second
//! Quack server on the worker, with a token of its choosing, that bypasses the gateway's
//! authentication and roles. A worker never needs to listen again after its own server is up,
//! so a seccomp filter makes `listen(2)` fail with EPERM for every thread of the process, and
//! `quack_serve` then fails with DuckDB's own "Failed to bind" error.
//!
//! Client SQL runs in the worker as the gateway's OS user. `enable_external_access = false`
//! stops `read_text` and `COPY`, but one DuckDB escape, or `workers.external_access = true`,
//! would read whatever that user can: the id secret, the TLS key, the gateway's files. And
//! `allowed_directories`, which lets a locked-down worker reach the lake's data folder, grants
//! writing there too (`COPY ... TO` over a lake Parquet file from a read-only session). So
//! before DuckDB starts, every worker confines its own file access with Landlock to what
//! [`crate::file_access`] says it needs; every thread DuckDB starts inherits that.

use std::collections::BTreeMap;

use crate::file_access::FileRules;

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
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

/// How much of a Landlock ruleset the kernel enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforcement {
    Full,
    /// Enforced, but some kinds of access stay open on this kernel; the reason says which.
    Partial(String),
    /// Not enforced at all; the reason says what the kernel lacks.
    None(String),
}

/// Lets this thread, and every thread it starts from now on, read only below `rules.read` and
/// `rules.write`, write only below `rules.write`, and execute nothing.
///
/// Landlock restricts the calling thread and its future children only, so this must run before
/// DuckDB starts any thread.
///
/// # Errors
/// A description of a ruleset the kernel refused to build or apply.
pub fn confine_files(rules: &FileRules) -> Result<Enforcement, String> {
    let abi = ABI::V3;
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(&rules.read, read)))
        .and_then(|r| r.add_rules(path_beneath_rules(&rules.write, AccessFs::from_all(abi))))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("Landlock: {e}"))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial(
            "the kernel enforces Landlock only in part (ABI v3, Linux 6.2 or later, is needed to confine every kind of file write, truncation included)".into(),
        ),
        RulesetStatus::NotEnforced => Enforcement::None(
            "the kernel does not enforce Landlock (Linux 5.13 or later, with landlock in the lsm= list)".into(),
        ),
    })
}
