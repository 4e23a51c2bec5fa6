//! Which principal a worker process serves, when workers are isolated per principal
//! (`workers.isolation = "principal"`, the default).
//!
//! Client SQL can do things to the worker process it runs in that no setting of DuckDB 1.5.5
//! takes away: `quack_stop` ends the worker's server, and every session on it with it, and
//! `quack_active_connections()` lists the SQL of every session on it. A text filter does not
//! help (`query('CALL quack_' || 'stop(...)')`). So a process serves one principal for its
//! life: it is claimed by the first principal placed on it and is fresh (a new process, and
//! no owner) after every restart. When every worker is claimed, a worker whose owner has no
//! session left is restarted for the principal that needs one ("freed"): a new process, so
//! nothing the old principal left in its memory (tables of an in-memory database, attached
//! databases, macros) reaches the next.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long a process freed for a principal stays theirs before it can be freed for another.
/// The connect that asked for it is woken as soon as it serves and places within
/// milliseconds; without this, a third principal arriving in between would find the new
/// process idle and have it freed again, and the first would wait on.
pub(crate) const FREED_RESERVATION: Duration = Duration::from_secs(10);

/// A worker slot's owner, and the restart that frees it for another principal.
#[derive(Debug, Default)]
pub(crate) struct Owner {
    principal: Mutex<Option<Arc<str>>>,
    /// Set while the process is being replaced for the principal now in `principal`; no
    /// session is placed on the slot until the new process serves.
    freeing: AtomicBool,
    /// Wakes the supervisor to replace the process.
    restart: Notify,
    /// Wakes connects that wait for the slot's new process.
    serving: Notify,
    /// Until when a process freed for its owner may not be freed for another principal.
    reserved_until: Mutex<Option<Instant>>,
}

impl Owner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Option<Arc<str>>> {
        self.principal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_freeing(&self) -> bool {
        self.freeing.load(Ordering::Acquire)
    }

    /// Marks the slot as being freed for `principal` and asks its supervisor for a new
    /// process. The caller holds the lock and has checked that no session is left.
    pub(crate) fn free_for(&self, owner: &mut Option<Arc<str>>, principal: &Arc<str>) {
        *owner = Some(principal.clone());
        self.freeing.store(true, Ordering::Release);
        self.restart.notify_one();
    }

    /// A new process serves: it belongs to the principal it was freed for, or to nobody.
    /// `publish` makes it ready; it runs under the lock, after the owner is set, so no claim
    /// can see the new process with the old owner.
    pub(crate) fn new_process(&self, publish: impl FnOnce()) {
        let mut owner = self.lock();
        let reserved = if self.freeing.swap(false, Ordering::AcqRel) {
            Some(Instant::now() + FREED_RESERVATION)
        } else {
            *owner = None;
            None
        };
        *self.reservation() = reserved;
        publish();
        drop(owner);
        self.serving.notify_waiters();
    }

    fn reservation(&self) -> MutexGuard<'_, Option<Instant>> {
        self.reserved_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the process was freed for its owner, who has not placed a session on it yet,
    /// less than [`FREED_RESERVATION`] ago.
    pub(crate) fn is_reserved(&self, now: Instant) -> bool {
        self.reservation().is_some_and(|until| now < until)
    }

    /// The owner placed a session: the reservation has served its purpose.
    pub(crate) fn claimed(&self) {
        *self.reservation() = None;
    }

    /// Resolves when the supervisor is asked to replace the process.
    pub(crate) async fn restart_requested(&self) {
        self.restart.notified().await;
    }

    /// Resolves once a new process serves, or at once if `served` says one already does.
    pub(crate) async fn serving_again(&self, served: impl Fn() -> bool) {
        let notified = self.serving.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if served() {
            return;
        }
        notified.await;
    }
}
