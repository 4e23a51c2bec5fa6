//! The problems collector every section validates into, so that one run reports every
//! mistake in the file, each naming its key, and the readers of secret files the sections share.

use std::path::Path;

use quackgate_duckdb::AzureCredentials;

use crate::auth::WorkerToken;

/// Every problem found so far, one line each.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<String>);

impl Problems {
    pub(super) fn push(&mut self, problem: String) {
        self.0.push(problem);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The lines, or `Ok` when there are none.
    pub(super) fn finish(self) -> Result<(), Vec<String>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }

    /// Records a problem when a value that must be positive is 0.
    pub(super) fn positive(&mut self, key: &str, v: u64) {
        if v == 0 {
            self.push(format!("{key}: must be > 0, got 0"));
        }
    }

    /// A token of at least 4 characters (DuckDB's minimum) from a file.
    pub(super) fn token_file(&mut self, key: &str, path: &Path) -> Option<WorkerToken> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().len() >= 4 => Some(WorkerToken::fixed(text.trim().to_string())),
            Ok(_) => {
                self.push(format!(
                    "{key}: {} must hold a token of at least 4 characters (DuckDB's minimum)",
                    path.display()
                ));
                None
            }
            Err(e) => {
                self.push(format!("{key}: reading {}: {e}", path.display()));
                None
            }
        }
    }

    /// An Azure storage connection string from a file.
    pub(super) fn connection_string_file(
        &mut self,
        key: &str,
        path: &Path,
    ) -> Option<AzureCredentials> {
        match std::fs::read_to_string(path) {
            Ok(cs) if !cs.trim().is_empty() => {
                Some(AzureCredentials::ConnectionString(cs.trim().to_string()))
            }
            Ok(_) => {
                self.push(format!("{key}: {} is empty", path.display()));
                None
            }
            Err(e) => {
                self.push(format!("{key}: reading {}: {e}", path.display()));
                None
            }
        }
    }
}
