//! Where sessions go: placement of new sessions, and the local table of open sessions that
//! placement weighs.
//!
//! Routing an existing session needs no table at all, since its signed id names the worker
//! (see `routable_id`). The table only counts sessions per worker so that new sessions land on
//! the least-loaded one, and forgets sessions on DISCONNECT, on `Invalid connection id`, when
//! their worker restarts, or after `gateway.session_idle_secs` unused (clients that crash
//! never disconnect, and v1.5 servers never expire sessions). Selection is kept apart from
//! health: it is handed only the ready workers' loads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::workers::{Worker, WorkerSet};

/// Why a request cannot be routed. The client sees `Invalid connection id` or a "no worker"
/// error; the variant goes to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// The id does not verify.
    #[error(transparent)]
    Id(#[from] crate::routable_id::IdError),
    /// The id names another node, and this request may not be forwarded (it came from a
    /// peer, or this node is not in a cluster).
    #[error("connection id belongs to another node")]
    ForeignNode,
    /// The id names a worker slot this node does not have.
    #[error("connection id names worker {0}, which does not exist")]
    UnknownWorker(u16),
    /// The id's worker has no running process.
    #[error("worker {0} is not running")]
    WorkerDown(u16),
    /// A non-CONNECTION_REQUEST message without a connection id.
    #[error("message has no connection id")]
    NoConnectionId,
    /// No worker can take a new session.
    #[error("no worker is ready")]
    NoWorkerReady,
}

/// Picks the worker for a new session: the ready one with the least load. Ties go to the first
/// ready worker at or after `start`, so that a burst of simultaneous connects spreads out.
///
/// `loads[i]` is `Some(load)` for a ready worker and `None` otherwise.
pub fn place_session(loads: &[Option<usize>], start: usize) -> Option<usize> {
    let n = loads.len();
    (0..n)
        .map(|k| (start + k) % n.max(1))
        .filter_map(|i| loads[i].map(|load| (load, i)))
        .min_by_key(|(load, _)| *load)
        .map(|(_, i)| i)
}

#[derive(Debug, Clone, Copy)]
struct Session {
    worker: u16,
    last_used: Instant,
}

/// Sessions open on this node, keyed by their routable id.
#[derive(Debug, Default)]
pub struct SessionTable {
    sessions: DashMap<Box<[u8]>, Session>,
    /// Rotates the tie-break of [`place_session`].
    next_start: AtomicUsize,
}

impl SessionTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The worker a new session should go to.
    pub fn place<'w>(&self, workers: &'w WorkerSet) -> Option<&'w Worker> {
        let loads: Vec<Option<usize>> = workers
            .iter()
            .map(|w| w.is_ready().then(|| w.load()))
            .collect();
        let start = self.next_start.fetch_add(1, Ordering::Relaxed);
        place_session(&loads, start).and_then(|i| workers.get(i as u16))
    }

    /// Records a session the worker just opened, unless the process that opened it (the one
    /// serving at `generation`) has gone since.
    pub fn opened(&self, id: &[u8], worker: &Worker, generation: u64, now: Instant) {
        if worker.generation() != generation {
            return;
        }
        let session = Session {
            worker: worker.index,
            last_used: now,
        };
        if self.sessions.insert(id.into(), session).is_none() {
            worker.sessions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Marks a session used. Unknown ids are ignored: the table is advisory.
    pub fn touched(&self, id: &[u8], now: Instant) {
        if let Some(mut s) = self.sessions.get_mut(id) {
            s.last_used = now;
        }
    }

    /// Forgets a session (DISCONNECT, or the worker no longer knows it).
    pub fn closed(&self, id: &[u8], workers: &WorkerSet) {
        if let Some((_, s)) = self.sessions.remove(id) {
            if let Some(w) = workers.get(s.worker) {
                w.session_ended();
            }
        }
    }

    /// Forgets every session of a worker whose process ended.
    pub fn forget_worker(&self, worker: &Worker) {
        self.sessions.retain(|_, s| {
            let keep = s.worker != worker.index;
            if !keep {
                worker.session_ended();
            }
            keep
        });
    }

    /// Forgets sessions unused for longer than `idle`; returns how many.
    pub fn expire_idle(&self, workers: &WorkerSet, now: Instant, idle: Duration) -> usize {
        let mut expired = 0;
        self.sessions.retain(|_, s| {
            let keep = now.saturating_duration_since(s.last_used) < idle;
            if !keep {
                expired += 1;
                if let Some(w) = workers.get(s.worker) {
                    w.session_ended();
                }
            }
            keep
        });
        expired
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_loaded_ready_worker_wins() {
        assert_eq!(place_session(&[Some(3), Some(1), Some(2)], 0), Some(1));
        assert_eq!(place_session(&[Some(3), None, Some(2)], 0), Some(2));
    }

    #[test]
    fn ties_rotate_with_the_start() {
        assert_eq!(place_session(&[Some(0), Some(0)], 0), Some(0));
        assert_eq!(place_session(&[Some(0), Some(0)], 1), Some(1));
        assert_eq!(place_session(&[Some(0), None, Some(0)], 1), Some(2));
    }

    #[test]
    fn nothing_ready_places_nothing() {
        assert_eq!(place_session(&[None, None], 0), None);
        assert_eq!(place_session(&[], 0), None);
    }

    fn ready_set() -> WorkerSet {
        let set = WorkerSet::new(2, "n0");
        for w in set.iter() {
            w.set_serving(1000 + w.index);
        }
        set
    }

    #[test]
    fn sessions_count_towards_their_worker_until_closed() {
        let set = ready_set();
        let table = SessionTable::new();
        let now = Instant::now();
        let first = table.place(&set).unwrap();
        table.opened(b"a", first, first.generation(), now);
        let second = table.place(&set).unwrap();
        assert_ne!(
            first.index, second.index,
            "second session must go to the idle worker"
        );
        table.opened(b"b", second, second.generation(), now);
        table.opened(b"b", second, second.generation(), now);
        assert_eq!(
            second.session_count(),
            1,
            "re-recording an id must not double count"
        );
        table.closed(b"a", &set);
        table.closed(b"a", &set);
        assert_eq!(first.session_count(), 0);
        assert_eq!(table.place(&set).unwrap().index, first.index);
    }

    #[test]
    fn idle_sessions_expire_and_restarted_workers_lose_theirs() {
        let set = ready_set();
        let table = SessionTable::new();
        let t0 = Instant::now();
        let w0 = set.get(0).unwrap();
        let w1 = set.get(1).unwrap();
        table.opened(b"old", w0, w0.generation(), t0);
        table.opened(b"new", w0, w0.generation(), t0 + Duration::from_secs(50));
        table.opened(b"other", w1, w1.generation(), t0);
        table.touched(b"other", t0 + Duration::from_secs(90));
        let expired =
            table.expire_idle(&set, t0 + Duration::from_secs(100), Duration::from_secs(60));
        assert_eq!(expired, 1);
        assert_eq!(w0.session_count(), 1);
        table.forget_worker(w0);
        assert_eq!(w0.session_count(), 0);
        assert_eq!(w1.session_count(), 1);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_session_from_a_process_that_has_gone_is_not_counted() {
        let set = ready_set();
        let table = SessionTable::new();
        let w0 = set.get(0).unwrap();
        let placed_at = w0.generation();
        w0.set_down();
        table.opened(b"late", w0, placed_at, Instant::now());
        assert_eq!(w0.session_count(), 0);
        assert!(table.is_empty());
        table.closed(b"late", &set);
        assert_eq!(
            w0.session_count(),
            0,
            "closing an unknown session must not wrap the count"
        );
    }

    #[test]
    fn connects_in_flight_count_as_load() {
        let set = ready_set();
        let table = SessionTable::new();
        let w0 = set.get(0).unwrap();
        let _guard = w0.connecting();
        for _ in 0..4 {
            assert_eq!(table.place(&set).unwrap().index, 1);
        }
    }
}
