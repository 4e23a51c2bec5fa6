//! Why a request cannot be routed, and where a new session goes: the least-loaded ready
//! worker. Selection is kept apart from health: it is handed only the ready workers' loads.
//!
//! Routing an existing session needs no table at all, since its signed id names the worker
//! (see `routable_id`).

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
    /// The id verifies, but its session has ended here (or was never recorded).
    #[error("the session has ended")]
    SessionEnded,
    /// The session is bound to the address that opened it, and the request came from
    /// another.
    #[error("the session belongs to another address")]
    SessionElsewhere,
    /// The id's worker has no running process.
    #[error("worker {0} is not running")]
    WorkerDown(u16),
    /// A non-CONNECTION_REQUEST message without a connection id.
    #[error("message has no connection id")]
    NoConnectionId,
    /// No worker can take a new session.
    #[error("no worker is ready")]
    NoWorkerReady,
    /// Every ready worker serves another principal that still has sessions on it (isolated
    /// workers).
    #[error("every worker serves another principal")]
    WorkersTaken,
    /// On an edge: no node can take a new session.
    #[error("no node is ready")]
    NoNodeReady,
    /// The session is read-only and this node runs no read-only worker.
    #[error("no read-only worker is configured")]
    NoReadOnlyWorker,
    /// The id's grant does not match the worker it names (read-only session, read-write
    /// worker). Only a bug could mint such an id; it is refused all the same.
    #[error("connection id's access does not match worker {0}")]
    AccessMismatch(u16),
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
}
