//! Worker processes that a principal's sessions ended.
//!
//! With workers isolated per principal, a worker that crashes under a principal's statement,
//! or whose server its client SQL stops, ends only that principal's sessions. But its next
//! session lands on the next free slot, so a principal ending workers in a loop kept every
//! slot restarting, and other principals found no worker ready (a twenty-third review did it
//! with crashing APPENDs). A principal whose sessions ended [`LIMIT`] workers within
//! [`WINDOW`] is refused new sessions for [`PENALTY`]; its open sessions go on.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Worker exits within [`WINDOW`] that refuse a principal.
pub const LIMIT: usize = 3;
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a principal's new sessions are refused.
pub const PENALTY: Duration = Duration::from_secs(60);
/// Principals remembered before quiet ones are forgotten.
const MAX_PRINCIPALS: usize = 10_000;

#[derive(Debug, Default)]
struct Record {
    recent: VecDeque<Instant>,
    refused_until: Option<Instant>,
}

impl Record {
    fn is_quiet(&self, now: Instant) -> bool {
        self.refused_until.is_none_or(|until| until <= now)
            && self
                .recent
                .back()
                .is_none_or(|t| now.duration_since(*t) >= WINDOW)
    }
}

/// The ledger of worker exits per principal.
#[derive(Debug, Default)]
pub struct WorkerExits {
    by_principal: Mutex<HashMap<Arc<str>, Record>>,
}

impl WorkerExits {
    /// Records that a worker serving `principal` ended on its own. Returns how long its new
    /// sessions are refused from now, when this exit refuses them.
    pub fn ended(&self, principal: &Arc<str>, now: Instant) -> Option<Duration> {
        let mut map = self
            .by_principal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_PRINCIPALS && !map.contains_key(principal) {
            map.retain(|_, r| !r.is_quiet(now));
        }
        let record = map.entry(principal.clone()).or_default();
        while record
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            record.recent.pop_front();
        }
        record.recent.push_back(now);
        if record.recent.len() < LIMIT {
            return None;
        }
        record.recent.clear();
        record.refused_until = Some(now + PENALTY);
        Some(PENALTY)
    }

    /// How much longer `principal`'s new sessions are refused, if they are.
    pub fn refused_for(&self, principal: &str, now: Instant) -> Option<Duration> {
        let map = self
            .by_principal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let until = map.get(principal)?.refused_until?;
        (until > now).then(|| until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_that_ends_workers_in_a_loop_is_refused_for_a_while() {
        let exits = WorkerExits::default();
        let bob: Arc<str> = "bob".into();
        let t0 = Instant::now();
        assert_eq!(exits.ended(&bob, t0), None);
        // An exit older than the window no longer counts.
        assert_eq!(exits.ended(&bob, t0 + WINDOW), None);
        assert_eq!(
            exits.ended(&bob, t0 + WINDOW + Duration::from_secs(1)),
            None
        );
        assert_eq!(exits.refused_for("bob", t0 + WINDOW), None);
        let third = t0 + WINDOW + Duration::from_secs(2);
        assert_eq!(exits.ended(&bob, third), Some(PENALTY));
        assert_eq!(
            exits.refused_for("bob", third + Duration::from_secs(10)),
            Some(PENALTY - Duration::from_secs(10))
        );
        assert_eq!(exits.refused_for("alice", third), None, "only bob");
        assert_eq!(exits.refused_for("bob", third + PENALTY), None);
        assert_eq!(
            exits.ended(&bob, third + PENALTY),
            None,
            "the count starts again"
        );
    }

    #[test]
    fn a_full_ledger_forgets_quiet_principals_and_keeps_refused_ones() {
        let exits = WorkerExits::default();
        let t0 = Instant::now();
        let refused: Arc<str> = "refused".into();
        for i in 0..LIMIT {
            exits.ended(&refused, t0 + Duration::from_millis(i as u64));
        }
        for i in 0..MAX_PRINCIPALS {
            exits.ended(&Arc::from(format!("p{i}")), t0);
        }
        let later = t0 + WINDOW;
        exits.ended(&Arc::from("newcomer"), later);
        let map = exits.by_principal.lock().unwrap();
        assert_eq!(map.len(), 2, "the quiet ones were forgotten");
        drop(map);
        assert!(exits.refused_for("refused", later).is_some());
    }
}
