//! What a worker process may still do at the OS level once it serves.
//!
//! `quack_serve` is an ordinary table function, and neither `enable_external_access = false`
//! nor `lock_configuration` stops client SQL from calling it: a client could open a second
//! Quack server on the worker, with a token of its choosing, that bypasses the gateway's
//! authentication and roles. A worker never needs to listen again after its own server is up,
//! so a seccomp filter makes `listen(2)` fail with EPERM for every thread of the process, and
//! `quack_serve` then fails with DuckDB's own "Failed to bind" error.

use std::collections::BTreeMap;

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
