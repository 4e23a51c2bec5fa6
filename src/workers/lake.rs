//! The lake as the catalog reports it after each maintenance run, and requests for a run now.
//!
//! The catalog's worker prints a `QUACKGATE-WORKER LAKE key=value ...` line after every run;
//! the supervisor reads it into these counters, which `/metrics` exports. `POST
//! /lake/maintenance` on the catalog's admin listener asks for a run now; the supervisor passes
//! that on to the worker's stdin.

use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::Notify;

/// The last report and the pending requests.
#[derive(Debug, Default)]
pub struct LakeStatus {
    /// Live data files (not yet replaced by a merge).
    pub data_files: AtomicI64,
    /// Snapshots kept.
    pub snapshots: AtomicI64,
    /// Rows kept in the catalog by data inlining, not yet flushed to Parquet.
    pub inlined_rows: AtomicI64,
    /// Maintenance runs since the catalog's worker started.
    pub runs: AtomicI64,
    /// Runs that failed.
    pub failures: AtomicI64,
    /// Length of the last run, in milliseconds.
    pub last_run_ms: AtomicI64,
    requested: Notify,
}

impl LakeStatus {
    /// Reads a report line (after the prefix); unknown keys and bad values are skipped.
    pub fn record(&self, report: &str) {
        for pair in report.split_whitespace() {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse::<i64>() else {
                continue;
            };
            let field = match key {
                "data_files" => &self.data_files,
                "snapshots" => &self.snapshots,
                "inlined_rows" => &self.inlined_rows,
                "runs" => &self.runs,
                "failures" => &self.failures,
                "last_run_ms" => &self.last_run_ms,
                _ => continue,
            };
            field.store(value, Ordering::Relaxed);
        }
    }

    /// Asks for a maintenance run now.
    pub fn request_run(&self) {
        self.requested.notify_one();
    }

    /// Waits for a request.
    pub async fn run_requested(&self) {
        self.requested.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_line_sets_the_counters_and_ignores_the_rest() {
        let lake = LakeStatus::default();
        lake.record(" data_files=3 snapshots=12 inlined_rows=40 runs=2 failures=0 last_run_ms=812 later=7 bad=x junk");
        assert_eq!(lake.data_files.load(Ordering::Relaxed), 3);
        assert_eq!(lake.snapshots.load(Ordering::Relaxed), 12);
        assert_eq!(lake.inlined_rows.load(Ordering::Relaxed), 40);
        assert_eq!(lake.runs.load(Ordering::Relaxed), 2);
        assert_eq!(lake.last_run_ms.load(Ordering::Relaxed), 812);
    }
}
