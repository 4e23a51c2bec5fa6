//! The table of sessions open on this node, which placement weighs and the session limits
//! count.
//!
//! The table counts sessions per worker so that new sessions land on the least-loaded one, and
//! forgets sessions on DISCONNECT, when their worker restarts, or
//! after `gateway.session_idle_secs` unused (clients that crash never disconnect, and v1.5
//! servers never expire sessions, so the gateway then ends them at the worker too: `idle`).
//!
//! A session counts against its principal's limit and the node's total from the moment its
//! CONNECTION_REQUEST is admitted (a [`Reservation`]), so concurrent connects cannot overshoot,
//! until the table forgets it.
//!
//! A table that binds sessions to addresses (the catalog's: its clients are the lake's workers,
//! which do not move) serves a session only to the address that opened it, so that an id that
//! leaks is of no use from anywhere else.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::auth::access::Access;
use crate::routing::place_session;
use crate::workers::{ConnectingGuard, Worker, WorkerSet};

/// A session limit that refuses a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The principal already has `limits.max_sessions_per_principal` open sessions here.
    #[error("principal has {0} open sessions, its limit")]
    Principal(usize),
    /// The node already has `limits.max_sessions` open sessions.
    #[error("node has {0} open sessions, its limit")]
    Total(usize),
}

/// Why a message's session is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefused {
    /// The session has ended here, or was never recorded.
    #[error("the session has ended")]
    Ended,
    /// The session is bound to the address that opened it, and this request came from
    /// another.
    #[error("session of {principal} opened from {opened_from} used from another address")]
    OtherAddress {
        principal: Arc<str>,
        opened_from: IpAddr,
    },
}

/// Where a new session goes.
#[derive(Debug)]
pub enum Placement<'w> {
    /// This worker, counted as connecting until the guard drops.
    Placed(ConnectingGuard<'w>),
    /// This worker's process is being replaced for the principal; place again once it is
    /// ready.
    Freeing(&'w Worker),
    /// Every ready worker serves another principal that still has sessions on it.
    Taken,
    /// No worker with this access is ready.
    None,
}

#[derive(Debug, Clone)]
struct Session {
    worker: u16,
    last_used: Instant,
    principal: Arc<str>,
    /// The address that opened it, when the table binds sessions to addresses.
    client: Option<IpAddr>,
}

/// Sessions open on this node, keyed by their routable id.
#[derive(Debug)]
pub struct SessionTable {
    sessions: DashMap<Box<[u8]>, Session>,
    /// Rotates the tie-break of [`place_session`].
    next_start: AtomicUsize,
    /// Sessions and admitted connects per principal.
    per_principal: DashMap<Arc<str>, usize>,
    /// Sessions and admitted connects in all.
    total: AtomicUsize,
    max_total: usize,
    max_per_principal: usize,
    /// Isolated workers one principal may hold at once.
    max_workers_per_principal: usize,
    bind_to_address: bool,
    /// Serialises isolated placements, so that a burst of one principal's connects cannot
    /// each count its workers before the others' claims and pass the cap together.
    isolated_placement: std::sync::Mutex<()>,
}

impl Default for SessionTable {
    fn default() -> Self {
        Self::new()
    }
}

/// A new session's place in the limits, held from admission until the session is recorded
/// (or released, if the connect fails).
#[derive(Debug)]
pub struct Reservation<'t> {
    table: &'t SessionTable,
    principal: Option<Arc<str>>,
    client: Option<IpAddr>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(principal) = self.principal.take() {
            self.table.release(&principal);
        }
    }
}

/// One address per host for binding: an IPv4-mapped IPv6 address is its IPv4 one, and `::1`
/// is `127.0.0.1`, since a client naming `localhost` may reach us over either.
fn same_host(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl SessionTable {
    /// An empty table without limits.
    pub fn new() -> Self {
        Self::with_limits(usize::MAX, usize::MAX)
    }

    /// An empty table that admits at most `max_total` sessions, `max_per_principal` of any
    /// one principal.
    pub fn with_limits(max_total: usize, max_per_principal: usize) -> Self {
        SessionTable {
            sessions: DashMap::new(),
            next_start: AtomicUsize::new(0),
            per_principal: DashMap::new(),
            total: AtomicUsize::new(0),
            max_total,
            max_per_principal,
            max_workers_per_principal: usize::MAX,
            bind_to_address: false,
            isolated_placement: std::sync::Mutex::new(()),
        }
    }

    /// Lets one principal hold at most `n` isolated workers, so that others find one.
    pub fn with_workers_per_principal(mut self, n: usize) -> Self {
        self.max_workers_per_principal = n;
        self
    }

    /// Serves each session only to the address that opened it.
    pub fn binding_sessions_to_addresses(mut self) -> Self {
        self.bind_to_address = true;
        self
    }

    /// Admits one more session of `principal`, opened from `client`, or says which limit
    /// refuses it.
    ///
    /// # Errors
    /// [`LimitError`] when the principal or the node is at its limit.
    pub fn reserve(
        &self,
        principal: &Arc<str>,
        client: Option<IpAddr>,
    ) -> Result<Reservation<'_>, LimitError> {
        // The entry's lock serialises the principal's own connects; the total is a CAS.
        let mut count = self.per_principal.entry(principal.clone()).or_insert(0);
        let admitted = if *count >= self.max_per_principal {
            Err(LimitError::Principal(self.max_per_principal))
        } else {
            self.total
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.max_total).then_some(n + 1)
                })
                .map(|_| ())
                .map_err(|_| LimitError::Total(self.max_total))
        };
        if let Err(e) = admitted {
            drop(count);
            // A principal refused its first session leaves no entry behind.
            self.per_principal.remove_if(principal, |_, c| *c == 0);
            return Err(e);
        }
        *count += 1;
        Ok(Reservation {
            table: self,
            principal: Some(principal.clone()),
            client: client.filter(|_| self.bind_to_address).map(same_host),
        })
    }

    fn release(&self, principal: &Arc<str>) {
        let _ = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
        self.per_principal.remove_if_mut(principal, |_, count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
    }

    /// Open sessions (and admitted connects) of `principal`.
    pub fn principal_sessions(&self, principal: &str) -> usize {
        self.per_principal.get(principal).map_or(0, |c| *c)
    }

    /// The worker a new session with `access` should go to, shared by every principal.
    pub fn place<'w>(&self, workers: &'w WorkerSet, access: Access) -> Option<&'w Worker> {
        match self.place_for(workers, access, None) {
            Placement::Placed(connecting) => Some(connecting.worker()),
            _ => None,
        }
    }

    /// Places a new session with `access`: on the least-loaded ready worker, or, when `owner`
    /// names the principal of isolated workers, on the least-loaded one that serves it or no
    /// one yet (one that serves it first, at equal load).
    pub fn place_for<'w>(
        &self,
        workers: &'w WorkerSet,
        access: Access,
        owner: Option<&Arc<str>>,
    ) -> Placement<'w> {
        let start = self.next_start.fetch_add(1, Ordering::Relaxed);
        let _serial = owner.map(|_| {
            self.isolated_placement
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        });
        // A claim lost to another principal's connect is retried without that worker.
        for _ in 0..=workers.len() {
            let held = owner.map_or(0, |p| {
                workers
                    .iter()
                    .filter(|w| w.owner().is_some_and(|o| o == *p))
                    .count()
            });
            let may_claim = held < self.max_workers_per_principal;
            let loads: Vec<Option<usize>> = workers
                .iter()
                .map(|w| {
                    if w.access != access || !w.is_ready() {
                        return None;
                    }
                    let load = w.load();
                    match (owner, w.owner()) {
                        (None, _) => Some(load),
                        (Some(_), None) => may_claim.then_some(2 * load + 1),
                        (Some(p), Some(o)) if o == *p => Some(2 * load),
                        (Some(_), Some(_)) => None,
                    }
                })
                .collect();
            let Some(worker) = place_session(&loads, start).and_then(|i| workers.get(i as u16))
            else {
                break;
            };
            match owner {
                None => return Placement::Placed(worker.connecting()),
                Some(p) => {
                    if let Some(connecting) = worker.claim(p) {
                        return Placement::Placed(connecting);
                    }
                }
            }
        }
        let Some(p) = owner else {
            return Placement::None;
        };
        let ours = |w: &&Worker| w.access == access;
        if let Some(w) = workers.iter().filter(ours).find(|w| w.is_freed_for(p)) {
            return Placement::Freeing(w);
        }
        let held = workers
            .iter()
            .filter(|w| w.owner().is_some_and(|o| o == *p))
            .count();
        if held < self.max_workers_per_principal {
            if let Some(w) = workers.iter().filter(ours).find(|w| w.free_for(p)) {
                return Placement::Freeing(w);
            }
        }
        if workers.iter().filter(ours).any(Worker::is_ready) {
            Placement::Taken
        } else {
            Placement::None
        }
    }

    /// Records a session the worker just opened, unless the process that opened it (the one
    /// serving at `generation`) has gone since. The reservation passes to the session.
    pub fn opened(
        &self,
        id: &[u8],
        worker: &Worker,
        generation: u64,
        now: Instant,
        mut reservation: Reservation<'_>,
    ) {
        if worker.generation() != generation {
            return;
        }
        let Some(principal) = reservation.principal.take() else {
            return;
        };
        let session = Session {
            worker: worker.index,
            last_used: now,
            principal,
            client: reservation.client,
        };
        match self.sessions.insert(id.into(), session) {
            None => {
                worker.sessions.fetch_add(1, Ordering::Relaxed);
            }
            // The same id again: the earlier record already counts.
            Some(earlier) => self.release(&earlier.principal),
        }
        // The process may have ended between the check above and the insert, after its
        // sessions were forgotten: forget this one too.
        if worker.generation() != generation {
            if let Some((_, s)) = self.sessions.remove(id) {
                worker.session_ended();
                self.release(&s.principal);
            }
        }
    }

    /// The principal of session `id`, for a request from `client`.
    ///
    /// # Errors
    /// [`SessionRefused`] when the session is not open here, or the table binds sessions to
    /// addresses and `client` is not the one that opened it.
    pub fn principal_for(
        &self,
        id: &[u8],
        client: Option<IpAddr>,
    ) -> Result<Arc<str>, SessionRefused> {
        let session = self.sessions.get(id).ok_or(SessionRefused::Ended)?;
        match session.client {
            Some(opened_from) if client.map(same_host) != Some(opened_from) => {
                Err(SessionRefused::OtherAddress {
                    principal: session.principal.clone(),
                    opened_from,
                })
            }
            _ => Ok(session.principal.clone()),
        }
    }

    /// Whether session `id` is open here: ended sessions (DISCONNECT, idle, abandoned, their
    /// worker gone) are refused even though their ids still verify.
    pub fn contains(&self, id: &[u8]) -> bool {
        self.sessions.contains_key(id)
    }

    /// Marks a session used.
    pub fn touched(&self, id: &[u8], now: Instant) {
        if let Some(mut s) = self.sessions.get_mut(id) {
            s.last_used = now;
        }
    }

    /// Forgets a session (DISCONNECT).
    pub fn closed(&self, id: &[u8], workers: &WorkerSet) {
        if let Some((_, s)) = self.sessions.remove(id) {
            if let Some(w) = workers.get(s.worker) {
                w.session_ended();
            }
            self.release(&s.principal);
        }
    }

    /// Forgets every session of a worker whose process ended.
    pub fn forget_worker(&self, worker: &Worker) {
        let mut released = Vec::new();
        self.sessions.retain(|_, s| {
            let keep = s.worker != worker.index;
            if !keep {
                worker.session_ended();
                released.push(s.principal.clone());
            }
            keep
        });
        for principal in released {
            self.release(&principal);
        }
    }

    /// Forgets sessions unused for longer than `idle` and returns their ids, so that the
    /// caller can end them at their workers too.
    pub fn expire_idle(&self, workers: &WorkerSet, now: Instant, idle: Duration) -> Vec<Box<[u8]>> {
        let mut expired = Vec::new();
        self.sessions.retain(|id, s| {
            let keep = now.saturating_duration_since(s.last_used) < idle;
            if !keep {
                expired.push((id.clone(), s.principal.clone()));
                if let Some(w) = workers.get(s.worker) {
                    w.session_ended();
                }
            }
            keep
        });
        // Released outside `retain`, which holds the table's shard locks.
        expired
            .into_iter()
            .map(|(id, principal)| {
                self.release(&principal);
                id
            })
            .collect()
    }

    /// The ids of the open sessions.
    pub fn ids(&self) -> Vec<Box<[u8]>> {
        self.sessions.iter().map(|e| e.key().clone()).collect()
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

    fn p() -> Arc<str> {
        "p".into()
    }

    fn ready_set() -> WorkerSet {
        let set = WorkerSet::new(2, 0, "n0");
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
        let first = table.place(&set, Access::ReadWrite).unwrap();
        table.opened(
            b"a",
            first,
            first.generation(),
            now,
            table.reserve(&p(), None).unwrap(),
        );
        let second = table.place(&set, Access::ReadWrite).unwrap();
        assert_ne!(
            first.index, second.index,
            "second session must go to the idle worker"
        );
        for _ in 0..2 {
            let reservation = table.reserve(&p(), None).unwrap();
            table.opened(b"b", second, second.generation(), now, reservation);
        }
        assert_eq!(
            table.principal_sessions("p"),
            2,
            "the repeat gave its place back"
        );
        assert_eq!(
            second.session_count(),
            1,
            "re-recording an id must not double count"
        );
        table.closed(b"a", &set);
        table.closed(b"a", &set);
        assert_eq!(first.session_count(), 0);
        assert_eq!(
            table.place(&set, Access::ReadWrite).unwrap().index,
            first.index
        );
    }

    #[test]
    fn a_bound_session_serves_only_the_address_that_opened_it() {
        let set = ready_set();
        let worker = set.get(0).unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let bound = SessionTable::new().binding_sessions_to_addresses();
        let open = |table: &SessionTable, id: &[u8], from: Option<IpAddr>| {
            let reservation = table.reserve(&p(), from).unwrap();
            table.opened(id, worker, worker.generation(), Instant::now(), reservation);
        };
        open(&bound, b"v4", ip("10.1.2.3"));
        assert_eq!(&*bound.principal_for(b"v4", ip("10.1.2.3")).unwrap(), "p");
        assert_eq!(
            &*bound.principal_for(b"v4", ip("::ffff:10.1.2.3")).unwrap(),
            "p",
            "an IPv4-mapped address is the same host"
        );
        for other in [ip("10.1.2.4"), ip("::1"), None] {
            assert!(
                matches!(
                    bound.principal_for(b"v4", other),
                    Err(SessionRefused::OtherAddress { ref principal, opened_from })
                        if &**principal == "p" && opened_from == ip("10.1.2.3").unwrap()
                ),
                "{other:?}"
            );
        }
        open(&bound, b"lo", ip("::1"));
        assert!(
            bound.principal_for(b"lo", ip("127.0.0.1")).is_ok(),
            "localhost over IPv4 or IPv6 is one host"
        );
        assert_eq!(
            bound.principal_for(b"gone", ip("10.1.2.3")),
            Err(SessionRefused::Ended)
        );

        let unbound = SessionTable::new();
        open(&unbound, b"v4", ip("10.1.2.3"));
        assert!(unbound.principal_for(b"v4", ip("10.9.9.9")).is_ok());
        assert!(unbound.principal_for(b"v4", None).is_ok());
    }

    #[test]
    fn idle_sessions_expire_and_restarted_workers_lose_theirs() {
        let set = ready_set();
        let table = SessionTable::new();
        let t0 = Instant::now();
        let w0 = set.get(0).unwrap();
        let w1 = set.get(1).unwrap();
        table.opened(
            b"old",
            w0,
            w0.generation(),
            t0,
            table.reserve(&p(), None).unwrap(),
        );
        table.opened(
            b"new",
            w0,
            w0.generation(),
            t0 + Duration::from_secs(50),
            table.reserve(&p(), None).unwrap(),
        );
        table.opened(
            b"other",
            w1,
            w1.generation(),
            t0,
            table.reserve(&p(), None).unwrap(),
        );
        table.touched(b"other", t0 + Duration::from_secs(90));
        let expired =
            table.expire_idle(&set, t0 + Duration::from_secs(100), Duration::from_secs(60));
        assert_eq!(expired, vec![Box::from(&b"old"[..])]);
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
        table.opened(
            b"late",
            w0,
            placed_at,
            Instant::now(),
            table.reserve(&p(), None).unwrap(),
        );
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
            assert_eq!(table.place(&set, Access::ReadWrite).unwrap().index, 1);
        }
    }

    #[test]
    fn sessions_count_against_their_principal_and_the_node_until_forgotten() {
        let set = ready_set();
        let table = SessionTable::with_limits(3, 2);
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let w0 = set.get(0).unwrap();
        let now = Instant::now();
        table.opened(
            b"a1",
            w0,
            w0.generation(),
            now,
            table.reserve(&alice, None).unwrap(),
        );
        let pending = table.reserve(&alice, None).unwrap();
        assert_eq!(
            table.reserve(&alice, None).unwrap_err(),
            LimitError::Principal(2),
            "a connect in flight counts"
        );
        drop(pending);
        table.opened(
            b"a2",
            w0,
            w0.generation(),
            now,
            table.reserve(&alice, None).unwrap(),
        );
        assert!(table.reserve(&alice, None).is_err());
        table.opened(
            b"b1",
            w0,
            w0.generation(),
            now,
            table.reserve(&bob, None).unwrap(),
        );
        assert_eq!(table.reserve(&bob, None).unwrap_err(), LimitError::Total(3));
        table.closed(b"a1", &set);
        assert_eq!(table.principal_sessions("alice"), 1);
        assert!(table.reserve(&bob, None).is_ok());
        table.forget_worker(w0);
        assert_eq!(table.principal_sessions("alice"), 0);
        assert_eq!(table.principal_sessions("bob"), 0);
        assert_eq!(table.total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn read_only_sessions_go_only_to_read_only_workers() {
        let set = WorkerSet::new(1, 1, "n0");
        for w in set.iter() {
            w.set_serving(1000 + w.index);
        }
        let table = SessionTable::new();
        for _ in 0..3 {
            assert_eq!(table.place(&set, Access::ReadOnly).unwrap().index, 1);
            assert_eq!(table.place(&set, Access::ReadWrite).unwrap().index, 0);
        }
        set.get(1).unwrap().set_down();
        assert!(table.place(&set, Access::ReadOnly).is_none());
    }

    #[test]
    fn isolated_workers_serve_one_principal_and_are_freed_for_another_when_idle() {
        let set = ready_set();
        let table = SessionTable::new();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let now = Instant::now();
        let open = |id: &[u8], principal: &Arc<str>| match table.place_for(
            &set,
            Access::ReadWrite,
            Some(principal),
        ) {
            Placement::Placed(connecting) => {
                let w = connecting.worker();
                table.opened(
                    id,
                    w,
                    w.generation(),
                    now,
                    table.reserve(principal, None).unwrap(),
                );
                w.index
            }
            other => panic!("{other:?}"),
        };
        // Alice alone spreads over both workers, her own first at equal load.
        let a1 = open(b"a1", &alice);
        let a2 = open(b"a2", &alice);
        assert_ne!(a1, a2);
        assert!(set.iter().all(|w| w.owner().as_deref() == Some("alice")));
        // Bob finds none free while her sessions are open on both.
        assert!(matches!(
            table.place_for(&set, Access::ReadWrite, Some(&bob)),
            Placement::Taken
        ));
        // Once one has none left, it is replaced for Bob.
        table.closed(b"a2", &set);
        let b1 = match table.place_for(&set, Access::ReadWrite, Some(&bob)) {
            Placement::Freeing(w) => {
                w.set_serving(1500);
                w.index
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(b1, a2);
        assert_eq!(open(b"b1", &bob), b1);
        let carol: Arc<str> = "carol".into();
        assert!(matches!(
            table.place_for(&set, Access::ReadWrite, Some(&carol)),
            Placement::Taken
        ));
        // Once Bob's worker has no session left, it is replaced for Carol: not ready
        // meanwhile, and nobody else is placed there.
        table.closed(b"b1", &set);
        let freed = match table.place_for(&set, Access::ReadWrite, Some(&carol)) {
            Placement::Freeing(w) => w,
            other => panic!("{other:?}"),
        };
        assert_eq!(freed.index, b1);
        assert!(!freed.is_ready());
        assert!(matches!(
            table.place_for(&set, Access::ReadWrite, Some(&carol)),
            Placement::Freeing(w) if w.index == b1
        ));
        assert!(matches!(
            table.place_for(&set, Access::ReadWrite, Some(&bob)),
            Placement::Taken
        ));
        match table.place_for(&set, Access::ReadWrite, Some(&alice)) {
            Placement::Placed(c) => assert_eq!(c.worker().index, a1),
            other => panic!("{other:?}"),
        }
        // Its new process is Carol's.
        freed.set_serving(2000);
        assert_eq!(freed.owner().as_deref(), Some("carol"));
        assert_eq!(open(b"c1", &carol), b1);
        // A process that restarts for any other reason belongs to nobody.
        freed.set_down();
        freed.set_serving(2001);
        assert_eq!(freed.owner(), None);
    }

    #[test]
    fn a_process_freed_for_one_principal_is_not_freed_again_for_a_third_before_it_places() {
        let set = WorkerSet::new(1, 0, "n0");
        let w = set.get(0).unwrap();
        w.set_serving(1000);
        let table = SessionTable::new();
        let (alice, bob, carol): (Arc<str>, Arc<str>, Arc<str>) =
            ("alice".into(), "bob".into(), "carol".into());
        match table.place_for(&set, Access::ReadWrite, Some(&alice)) {
            Placement::Placed(c) => drop(c),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            table.place_for(&set, Access::ReadWrite, Some(&bob)),
            Placement::Freeing(_)
        ));
        w.set_serving(1001);
        assert_eq!(w.owner().as_deref(), Some("bob"));
        // Carol arrives between Bob's new process serving and Bob's connect placing.
        assert!(matches!(
            table.place_for(&set, Access::ReadWrite, Some(&carol)),
            Placement::Taken
        ));
        match table.place_for(&set, Access::ReadWrite, Some(&bob)) {
            Placement::Placed(c) => drop(c),
            other => panic!("{other:?}"),
        }
        // Placed and idle again: now it can go to Carol.
        assert!(matches!(
            table.place_for(&set, Access::ReadWrite, Some(&carol)),
            Placement::Freeing(_)
        ));
    }

    #[test]
    fn a_worker_with_a_connect_in_flight_is_not_freed() {
        let set = WorkerSet::new(1, 0, "n0");
        set.get(0).unwrap().set_serving(1000);
        let table = SessionTable::new();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let connecting = match table.place_for(&set, Access::ReadWrite, Some(&alice)) {
            Placement::Placed(c) => c,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            table.place_for(&set, Access::ReadWrite, Some(&bob)),
            Placement::Taken
        ));
        drop(connecting);
        assert!(matches!(
            table.place_for(&set, Access::ReadWrite, Some(&bob)),
            Placement::Freeing(_)
        ));
    }

    #[test]
    fn a_principal_holds_at_most_its_share_of_isolated_workers() {
        let set = WorkerSet::new(3, 0, "n0");
        for w in set.iter() {
            w.set_serving(1000 + w.index);
        }
        let table = SessionTable::new().with_workers_per_principal(2);
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let mut used = std::collections::BTreeSet::new();
        for n in 0..6u8 {
            let Placement::Placed(c) = table.place_for(&set, Access::ReadWrite, Some(&alice))
            else {
                panic!("alice's session {n} was not placed");
            };
            let w = c.worker();
            table.opened(
                &[n],
                w,
                w.generation(),
                Instant::now(),
                table.reserve(&alice, None).unwrap(),
            );
            used.insert(w.index);
        }
        assert_eq!(used.len(), 2);
        assert!(matches!(
            table.place_for(&set, Access::ReadWrite, Some(&bob)),
            Placement::Placed(c) if !used.contains(&c.worker().index)
        ));
    }
}
