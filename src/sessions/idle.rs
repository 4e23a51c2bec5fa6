//! Ends sessions unused for `gateway.session_idle_secs`: forgotten by the table and sent a
//! DISCONNECT at their worker (`end`).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::sessions::end::SessionEnder;

/// Longest time between two sweeps.
const SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// What the sweep reads and ends sessions with.
#[derive(Debug, Clone)]
pub struct IdleSweep {
    pub ender: SessionEnder,
    pub idle: Duration,
}

impl IdleSweep {
    /// Sweeps until `stop`. A short idle time (as in tests) is honoured to within half of
    /// itself.
    pub async fn run(self, stop: CancellationToken) {
        let period = (self.idle / 2).clamp(Duration::from_secs(1), SWEEP_INTERVAL_MAX);
        let mut tick = tokio::time::interval(period);
        let sessions = &self.ender.sessions;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let expired = sessions.expire_idle(&self.ender.workers, Instant::now(), self.idle);
            if expired.is_empty() {
                continue;
            }
            info!(
                expired = expired.len(),
                open = sessions.len(),
                "ending idle sessions"
            );
            for id in expired {
                self.ender.end(id, "idle");
            }
        }
    }
}
