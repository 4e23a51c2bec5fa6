//! Worker health: a periodic `GET /` probe of every serving worker, with a verdict that flips
//! only after several consecutive opposite results, so one slow probe does not take a busy
//! worker out of placement. Health only steers new sessions; it never cuts existing ones.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::upstream::Upstream;
use crate::workers::WorkerSet;

/// Consecutive failed probes that make a healthy worker unhealthy.
pub const FAILURES_TO_DOWN: u32 = 3;
/// Consecutive good probes that make an unhealthy worker healthy again.
pub const SUCCESSES_TO_UP: u32 = 1;

/// The verdict for one worker process, fed one probe result at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    healthy: bool,
    streak: u32,
}

impl HealthState {
    /// A process that just reported ready starts healthy.
    pub fn new_ready() -> Self {
        HealthState {
            healthy: true,
            streak: 0,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Feeds one probe result; returns the new verdict if it flipped.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy {
            FAILURES_TO_DOWN
        } else {
            SUCCESSES_TO_UP
        };
        if self.streak >= needed {
            self.healthy = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// Probes every serving worker each `interval` until `shutdown`.
pub async fn run_prober(
    workers: Arc<WorkerSet>,
    upstream: Upstream,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut states: Vec<(u64, HealthState)> = vec![(0, HealthState::new_ready()); workers.len()];
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for (worker, (generation, state)) in workers.iter().zip(states.iter_mut()) {
            let Some(port) = worker.serving_port() else {
                continue;
            };
            if *generation != worker.generation() {
                // A new process: the supervisor already marked it healthy.
                *generation = worker.generation();
                *state = HealthState::new_ready();
            }
            let ok = upstream.probe(port).await;
            // The process may have been replaced while the probe ran; its verdict is stale.
            if *generation != worker.generation() {
                continue;
            }
            match state.observe(ok) {
                Some(true) => info!(worker.id = %worker.id, "worker healthy again"),
                Some(false) => {
                    warn!(worker.id = %worker.id, probes = FAILURES_TO_DOWN, "worker failed health probes; no new sessions go to it")
                }
                None => {}
            }
            // Written every round, not only on a flip, so a verdict about a previous process
            // that landed late is corrected at the next probe.
            worker.set_healthy(state.is_healthy());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failed_probe_does_not_flip_a_healthy_worker() {
        let mut s = HealthState::new_ready();
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(true), None);
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(false), None);
        assert!(s.is_healthy());
    }

    #[test]
    fn consecutive_failures_flip_down_and_a_success_flips_back() {
        let mut s = HealthState::new_ready();
        for _ in 1..FAILURES_TO_DOWN {
            assert_eq!(s.observe(false), None);
        }
        assert_eq!(s.observe(false), Some(false));
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(true), Some(true));
        assert!(s.is_healthy());
    }
}
