//! Who gives way when the room for held APPENDs is full. The caps are shared, and an APPEND
//! earns time to arrive by what it has sent (`limits.min_append_rate`), so principals that
//! send their shares fast and then drip them could keep every other principal's large APPEND
//! out for as long as that time lasts (a thirty-first review: four principals, the disk cap,
//! 860 s at a time). So an APPEND that finds a cap full may cut the bodies still being read
//! that arrive slower than `limits.append_rate_under_pressure` over the last few seconds,
//! slowest first, and take their room; as Apache's mod_qos raises the data rate it asks of
//! its clients as its connections run out. An honest slow client loses only when the node is
//! full; one that keeps up never does. Keeping the caps full against it takes sending at that
//! rate for every body held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The span a body's recent rate is measured over: between one and two of these. A body
/// younger than one is never cut.
const WINDOW: Duration = Duration::from_secs(5);

/// Which cap a body's bytes count against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Memory,
    Disk,
}

/// The bodies being read on this node.
#[derive(Debug)]
pub(super) struct Readers {
    bodies: Mutex<HashMap<u64, Arc<Reading>>>,
    next: AtomicU64,
    /// Woken whenever a body that was being read lets its room go.
    pub(super) freed: Notify,
    /// Bytes a second a body must keep up, over its last [`WINDOW`] or two, not to be cut.
    pressure_rate: u64,
}

/// A body being read, as the others see it.
#[derive(Debug)]
pub(super) struct Reading {
    id: u64,
    marks: Mutex<Marks>,
    memory: AtomicU64,
    disk: AtomicU64,
    cut: CancellationToken,
}

/// Bytes received, and two marks of (when, how many had been received then).
#[derive(Debug)]
struct Marks {
    received: u64,
    older: (Instant, u64),
    newer: (Instant, u64),
}

impl Readers {
    pub(super) fn new(pressure_rate: u64) -> Self {
        Readers {
            bodies: Mutex::default(),
            next: AtomicU64::new(0),
            freed: Notify::new(),
            pressure_rate,
        }
    }

    pub(super) fn pressure_rate(&self) -> u64 {
        self.pressure_rate
    }

    pub(super) fn join(&self, now: Instant) -> Arc<Reading> {
        let reading = Arc::new(Reading {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            marks: Mutex::new(Marks {
                received: 0,
                older: (now, 0),
                newer: (now, 0),
            }),
            memory: AtomicU64::new(0),
            disk: AtomicU64::new(0),
            cut: CancellationToken::new(),
        });
        lock(&self.bodies).insert(reading.id, reading.clone());
        reading
    }

    /// `reading` is no longer being read; what it held has been let go, or is now the whole
    /// body's.
    pub(super) fn leave(&self, reading: &Reading) {
        lock(&self.bodies).remove(&reading.id);
        self.freed.notify_waiters();
    }

    /// Cuts the slowest bodies other than `asker` that are behind the pressure rate, until
    /// those cut hold `need` bytes in `place`. Whether any was cut.
    pub(super) fn cut_slowest(
        &self,
        asker: &Reading,
        place: Place,
        need: u64,
        now: Instant,
    ) -> bool {
        let mut behind: Vec<(f64, Arc<Reading>)> = lock(&self.bodies)
            .values()
            .filter(|r| r.id != asker.id && !r.cut.is_cancelled() && r.held(place) > 0)
            .filter_map(|r| Some((r.recent_rate(now)?, r.clone())))
            .filter(|(rate, _)| *rate < self.pressure_rate as f64)
            .collect();
        behind.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut freed = 0;
        for (_, reading) in behind {
            if freed >= need {
                break;
            }
            freed += reading.held(place);
            reading.cut.cancel();
        }
        freed > 0
    }
}

impl Reading {
    pub(super) fn received(&self, n: u64, now: Instant) {
        let mut marks = lock(&self.marks);
        marks.received += n;
        marks.rotate(now);
    }

    /// Bytes a second over the last [`WINDOW`] or two; `None` while it is younger than one.
    fn recent_rate(&self, now: Instant) -> Option<f64> {
        let mut marks = lock(&self.marks);
        marks.rotate(now);
        let (since, then) = marks.older;
        let span = now.saturating_duration_since(since);
        (span >= WINDOW).then(|| (marks.received - then) as f64 / span.as_secs_f64())
    }

    pub(super) fn set_held(&self, memory: u64, disk: u64) {
        self.memory.store(memory, Ordering::Relaxed);
        self.disk.store(disk, Ordering::Relaxed);
    }

    fn held(&self, place: Place) -> u64 {
        match place {
            Place::Memory => self.memory.load(Ordering::Relaxed),
            Place::Disk => self.disk.load(Ordering::Relaxed),
        }
    }

    /// Cancelled once another APPEND has taken this one's room.
    pub(super) fn cut(&self) -> &CancellationToken {
        &self.cut
    }
}

impl Marks {
    fn rotate(&mut self, now: Instant) {
        if now.saturating_duration_since(self.newer.0) >= WINDOW {
            self.older = self.newer;
            self.newer = (now, self.received);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_bodies_behind_the_rate_are_cut_first_and_only_as_many_as_needed() {
        let readers = Readers::new(1000);
        let t0 = Instant::now();
        let asker = readers.join(t0);
        let fast = readers.join(t0);
        let slow = readers.join(t0);
        let slower = readers.join(t0);
        let young = readers.join(t0 + WINDOW);
        for r in [&fast, &slow, &slower, &young] {
            r.set_held(0, 100);
        }
        // Over the first window: 10 kB/s, 900 B/s, 0 B/s.
        fast.received(50_000, t0 + WINDOW);
        slow.received(4_500, t0 + WINDOW);
        let now = t0 + WINDOW + Duration::from_secs(1);
        // The young one has no rate yet; nothing is cut for memory nobody holds.
        assert!(!readers.cut_slowest(&asker, Place::Memory, 100, now));
        assert!(readers.cut_slowest(&asker, Place::Disk, 100, now));
        assert!(slower.cut().is_cancelled());
        assert!(!slow.cut().is_cancelled() && !fast.cut().is_cancelled());
        assert!(!young.cut().is_cancelled());
        assert!(readers.cut_slowest(&asker, Place::Disk, 100, now));
        assert!(slow.cut().is_cancelled());
        // The fast one keeps up; the asker is never its own victim.
        assert!(!readers.cut_slowest(&asker, Place::Disk, 100, now));
        assert!(!fast.cut().is_cancelled() && !asker.cut().is_cancelled());
        readers.leave(&slower);
        assert_eq!(lock(&readers.bodies).len(), 4);
    }

    #[test]
    fn a_rate_is_measured_over_the_last_window_or_two() {
        let readers = Readers::new(1000);
        let t0 = Instant::now();
        let r = readers.join(t0);
        // Fast at first, then nothing: its recent rate falls to 0 once the burst is two
        // windows old.
        r.received(1_000_000, t0 + Duration::from_millis(100));
        let later = t0 + WINDOW * 2 + Duration::from_millis(200);
        r.received(1, t0 + WINDOW + Duration::from_millis(150));
        assert!(r.recent_rate(later).unwrap() < 1.0);
    }
}
