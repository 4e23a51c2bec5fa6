//! Brakes on what one client address or one principal can take: failed authentications from
//! an address trip a backoff that doubles each time it trips again, so guessing tokens is slow
//! while other addresses are not affected; connections per address and requests in flight per
//! principal are capped. Session counts per principal and in total live with the
//! sessions themselves (`sessions::table`).
//!
//! IPv6 clients are counted per /64, since one host usually owns a whole /64. Behind a layer-7
//! balancer the address is the one it reports, when it is a trusted proxy (`forwarded`).

use std::hash::Hash;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

/// How often records that have aged out are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// `[limits]`: how much one principal, everyone, and one failing address may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Open Quack sessions on this node, all principals together. Default 10000.
    pub max_sessions: usize,
    /// Open Quack sessions of one principal on this node. Default 256.
    pub max_sessions_per_principal: usize,
    /// Open TCP connections from one client address (IPv6: one /64) on the public listeners;
    /// trusted proxies are exempt. Default 1024.
    pub max_connections_per_address: usize,
    /// Requests of one principal's sessions being read or waiting for their worker's answer
    /// on this node. Default 256, as many as its sessions: a shared token is one principal.
    pub max_requests_per_principal: usize,
    /// Failed authentications from one address within the window that trip the backoff.
    /// Default 10.
    pub failed_auth_burst: u32,
    /// The window failures are counted in. Default 60 s.
    pub failed_auth_window: Duration,
    /// First backoff; doubles each time the address trips again. Default 5 s.
    pub failed_auth_backoff: Duration,
    /// Longest backoff. Default 300 s.
    pub failed_auth_backoff_max: Duration,
    /// Longest a request of a read-write session may wait for its worker's answer (a PREPARE
    /// waits as long as its statement runs); `None` is no limit. Default 3600 s.
    pub statement_timeout: Option<Duration>,
    /// The same for read-only sessions. Default: `statement_timeout`.
    pub read_only_statement_timeout: Option<Duration>,
    /// Bytes of APPEND bodies this node holds in memory while it reads them whole, all
    /// principals together (`held_append`). Default: a tenth of what the process may use (its
    /// cgroup's limit or the machine's memory), at least 256 MiB.
    pub max_held_append_bytes: u64,
    /// The same, of one principal. Default: half of `max_held_append_bytes`.
    pub max_held_append_bytes_per_principal: u64,
    /// An APPEND larger than this is held on disk, in `append_spill_dir`. Default 1 MiB.
    pub append_memory_bytes: u64,
    /// Where APPENDs past `append_memory_bytes` are held, in files without a name. Default:
    /// the temporary folder (`TMPDIR`, else `/tmp`).
    pub append_spill_dir: PathBuf,
    /// Bytes of APPENDs this node holds on disk, all principals together. Default: half of
    /// what `append_spill_dir`'s file system had free at start.
    pub max_spilled_append_bytes: u64,
    /// The same, of one principal. Default: a quarter of `max_spilled_append_bytes`.
    pub max_spilled_append_bytes_per_principal: u64,
    /// The slowest an APPEND may arrive, on average after its first 60 s, in bytes a second:
    /// its bytes are held against caps other principals share. Default 128 KiB/s, about a
    /// 1 Mbit/s line.
    pub min_append_rate: u64,
    /// While a cap on held APPENDs is full, bodies being read slower than this over the last
    /// 5 to 10 s give way to an APPEND that needs their room (`held_append::give_way`).
    /// Default 1 MiB/s.
    pub append_rate_under_pressure: u64,
}

/// `max_spilled_append_bytes` unless set: half of what `dir`'s file system has free.
///
/// # Errors
/// `dir` cannot be queried.
pub fn default_spilled_append_bytes(dir: &Path) -> std::io::Result<u64> {
    quackgate_spill::available_bytes(dir).map(|free| free / 2)
}

/// `max_held_append_bytes` unless set.
pub fn default_held_append_bytes() -> u64 {
    crate::host_memory::process_limit().map_or(1 << 30, |total| (total / 10).max(256 << 20))
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let spilled = default_spilled_append_bytes(&std::env::temp_dir()).unwrap_or(1 << 30);
        LimitsConfig {
            max_sessions: 10_000,
            max_sessions_per_principal: 256,
            max_connections_per_address: 1024,
            max_requests_per_principal: 256,
            failed_auth_burst: 10,
            failed_auth_window: Duration::from_secs(60),
            failed_auth_backoff: Duration::from_secs(5),
            failed_auth_backoff_max: Duration::from_secs(300),
            statement_timeout: Some(Duration::from_secs(3600)),
            read_only_statement_timeout: Some(Duration::from_secs(3600)),
            max_held_append_bytes: default_held_append_bytes(),
            max_held_append_bytes_per_principal: default_held_append_bytes() / 2,
            append_memory_bytes: 1 << 20,
            append_spill_dir: std::env::temp_dir(),
            max_spilled_append_bytes: spilled,
            max_spilled_append_bytes_per_principal: spilled / 4,
            min_append_rate: 128 << 10,
            append_rate_under_pressure: 1 << 20,
        }
    }
}

/// Addresses tracked at most, so a flood of sources cannot exhaust memory. A full table
/// forgets its least recently seen addresses that are not backing off (see
/// [`AuthThrottle::failed`]); it never stops tracking new ones.
const MAX_TRACKED: usize = 100_000;
/// The share of a full table forgotten at once, so that evictions cost O(1) per address
/// amortised.
const EVICT_DIVISOR: usize = 10;

/// An address that failed too often and must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed authentications from this address; retry in {} s", retry_after.as_secs().max(1))]
pub struct Throttled {
    /// Time left until the address may try again.
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    window_start: Instant,
    failures: u32,
    /// How many times the address has tripped; sets the next backoff.
    strikes: u32,
    blocked_until: Option<Instant>,
    last_seen: Instant,
}

/// Failed-authentication bookkeeping per client address.
#[derive(Debug)]
pub struct AuthThrottle {
    burst: u32,
    window: Duration,
    backoff: Duration,
    backoff_max: Duration,
    records: DashMap<IpAddr, Record>,
    max_tracked: usize,
    /// When a full table was last swept.
    last_full_sweep: std::sync::Mutex<Option<Instant>>,
}

impl AuthThrottle {
    /// A throttle with the configured limits.
    pub fn new(limits: &LimitsConfig) -> Self {
        AuthThrottle {
            burst: limits.failed_auth_burst,
            window: limits.failed_auth_window,
            backoff: limits.failed_auth_backoff,
            backoff_max: limits.failed_auth_backoff_max,
            records: DashMap::new(),
            max_tracked: MAX_TRACKED,
            last_full_sweep: std::sync::Mutex::new(None),
        }
    }

    /// Whether `ip` may attempt to authenticate now. Checked before the token is looked at,
    /// so a blocked address learns nothing about its guesses.
    ///
    /// # Errors
    /// [`Throttled`] while the address is backing off.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Throttled> {
        match self.records.get(&key(ip)).and_then(|r| r.blocked_until) {
            Some(until) if until > now => Err(Throttled {
                retry_after: until - now,
            }),
            _ => Ok(()),
        }
    }

    /// Records a failed authentication; returns the backoff if this one tripped it.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let key = key(ip);
        if self.records.len() >= self.max_tracked && !self.records.contains_key(&key) {
            // A full table is swept at most once a second: each sweep reads every entry.
            let mut last = self
                .last_full_sweep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1)) {
                *last = Some(now);
                drop(last);
                self.sweep(now);
            }
            if self.records.len() >= self.max_tracked {
                self.evict_least_recent(now);
            }
        }
        let mut record = self.records.entry(key).or_insert(Record {
            window_start: now,
            failures: 0,
            strikes: 0,
            blocked_until: None,
            last_seen: now,
        });
        if now.saturating_duration_since(record.window_start) >= self.window {
            record.window_start = now;
            record.failures = 0;
        }
        record.failures += 1;
        record.last_seen = now;
        if record.failures < self.burst {
            return None;
        }
        let backoff = self
            .backoff
            .saturating_mul(1u32 << record.strikes.min(16))
            .min(self.backoff_max);
        record.strikes = record.strikes.saturating_add(1);
        record.failures = 0;
        record.window_start = now;
        record.blocked_until = Some(now + backoff);
        Some(backoff)
    }

    /// Forgets a tenth of the table: addresses not backing off first, the least recently seen
    /// first among them. A flood of new addresses thus pushes out other quiet ones, never an
    /// address that is blocked, unless every tracked address is.
    fn evict_least_recent(&self, now: Instant) {
        let mut order: Vec<(bool, Instant, IpAddr)> = self
            .records
            .iter()
            .map(|r| {
                let blocked = r.blocked_until.is_some_and(|until| until > now);
                (blocked, r.last_seen, *r.key())
            })
            .collect();
        let n = (order.len() / EVICT_DIVISOR).max(1).min(order.len());
        if n < order.len() {
            order.select_nth_unstable(n);
        }
        for (_, _, ip) in order.into_iter().take(n) {
            self.records.remove(&ip);
        }
    }

    /// Sweeps every [`SWEEP_INTERVAL`] until `stop`.
    pub async fn run_sweeper(self: std::sync::Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep(Instant::now()),
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Forgets addresses quiet for longer than the window and the longest backoff, so the
    /// doubling restarts for an address that behaved for that long.
    pub fn sweep(&self, now: Instant) {
        let quiet = self.window + self.backoff_max;
        self.records.retain(|_, r| {
            let blocked = r.blocked_until.is_some_and(|u| u > now);
            blocked || now.saturating_duration_since(r.last_seen) < quiet
        });
    }

    pub fn tracked(&self) -> usize {
        self.records.len()
    }
}

/// Things held at once per key, each key capped: open connections per client address, so that
/// one address cannot hold every connection the gateway accepts (`gateway.max_connections`)
/// with sockets it never authenticates on; requests in flight per principal, so that one
/// principal cannot fill memory with request bodies read at once.
#[derive(Debug)]
pub struct Caps<K: Eq + Hash> {
    held: DashMap<K, usize>,
    max: usize,
}

/// Open connections per client address (IPv6: per /64).
pub type ConnectionCaps = Caps<IpAddr>;

/// Bytes held under a key and in total, each capped: the APPEND bodies a node holds whole
/// (an APPEND reaches its worker only whole: DuckDB 1.5.5 runs a body whose client paused for
/// 5 s as far as it got, reading the rest from its heap).
#[derive(Debug)]
pub struct ByteCaps<K: Eq + Hash> {
    tally: std::sync::Mutex<Tally<K>>,
    max_total: u64,
    max_each: u64,
}

#[derive(Debug)]
struct Tally<K: Eq + Hash> {
    total: u64,
    each: std::collections::HashMap<K, u64>,
}

/// Which cap a hold would have passed, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteCapFull {
    Total(u64),
    Each(u64),
}

/// Bytes held under one key, released when it drops.
#[derive(Debug)]
pub struct Held<K: Eq + Hash + Clone> {
    caps: std::sync::Arc<ByteCaps<K>>,
    key: K,
    bytes: u64,
}

impl<K: Eq + Hash + Clone> ByteCaps<K> {
    pub fn new(max_total: u64, max_each: u64) -> Self {
        ByteCaps {
            tally: std::sync::Mutex::new(Tally {
                total: 0,
                each: std::collections::HashMap::new(),
            }),
            max_total,
            max_each,
        }
    }

    /// Bytes held now, all keys together.
    pub fn total(&self) -> u64 {
        self.tally().total
    }

    /// Nothing held yet under `key`.
    pub fn hold(self: &std::sync::Arc<Self>, key: K) -> Held<K> {
        Held {
            caps: self.clone(),
            key,
            bytes: 0,
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally<K>> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<K: Eq + Hash + Clone> Held<K> {
    /// Holds `n` more bytes, unless that passes a cap.
    ///
    /// # Errors
    /// The cap it would pass; nothing more is held then.
    pub fn grow(&mut self, n: u64) -> Result<(), ByteCapFull> {
        let caps = &self.caps;
        let mut tally = caps.tally();
        let each = tally.each.get(&self.key).copied().unwrap_or(0);
        if each.saturating_add(n) > caps.max_each {
            return Err(ByteCapFull::Each(caps.max_each));
        }
        if tally.total.saturating_add(n) > caps.max_total {
            return Err(ByteCapFull::Total(caps.max_total));
        }
        tally.total += n;
        *tally.each.entry(self.key.clone()).or_insert(0) += n;
        self.bytes += n;
        Ok(())
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Gives back `n` of the bytes held (at most all of them).
    pub fn shrink(&mut self, n: u64) {
        let n = n.min(self.bytes);
        if n == 0 {
            return;
        }
        self.bytes -= n;
        let mut tally = self.caps.tally();
        tally.total = tally.total.saturating_sub(n);
        if let Some(each) = tally.each.get_mut(&self.key) {
            *each = each.saturating_sub(n);
            if *each == 0 {
                tally.each.remove(&self.key);
            }
        }
    }
}

impl<K: Eq + Hash + Clone> Drop for Held<K> {
    fn drop(&mut self) {
        self.shrink(self.bytes);
    }
}

/// One thing held under a key, counted until it drops.
#[derive(Debug)]
pub struct Permit<K: Eq + Hash + Clone> {
    caps: std::sync::Arc<Caps<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Drop for Permit<K> {
    fn drop(&mut self) {
        self.caps.held.remove_if_mut(&self.key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

impl<K: Eq + Hash + Clone> Caps<K> {
    pub fn new(max: usize) -> Self {
        Caps {
            held: DashMap::new(),
            max,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A permit for one more under `key`, or `None` when it holds as many as it may.
    pub fn admit_key(self: &std::sync::Arc<Self>, key: K) -> Option<Permit<K>> {
        let mut n = self.held.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        drop(n);
        Some(Permit {
            caps: self.clone(),
            key,
        })
    }
}

impl ConnectionCaps {
    /// A permit for one more connection from `ip`, or `None` when it has as many as it may.
    pub fn admit(self: &std::sync::Arc<Self>, ip: IpAddr) -> Option<Permit<IpAddr>> {
        self.admit_key(key(ip))
    }
}

/// IPv4 as is; IPv6 by its /64 (IPv4-mapped addresses as IPv4).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> AuthThrottle {
        AuthThrottle::new(&LimitsConfig {
            failed_auth_burst: 3,
            failed_auth_window: Duration::from_secs(60),
            failed_auth_backoff: Duration::from_secs(5),
            failed_auth_backoff_max: Duration::from_secs(12),
            ..LimitsConfig::default()
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_burst_of_failures_blocks_that_address_only() {
        let t = throttle();
        let t0 = Instant::now();
        assert_eq!(t.failed(A, t0), None);
        assert_eq!(t.failed(A, t0), None);
        assert_eq!(t.failed(A, t0), Some(Duration::from_secs(5)));
        assert!(t.check(A, t0 + Duration::from_secs(4)).is_err());
        assert!(t.check(B, t0).is_ok());
        assert!(t.check(A, t0 + Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let t = throttle();
        let mut now = Instant::now();
        let mut trips = Vec::new();
        for _ in 0..4 {
            for _ in 0..3 {
                if let Some(b) = t.failed(A, now) {
                    trips.push(b.as_secs());
                }
            }
            now += Duration::from_secs(20);
        }
        assert_eq!(trips, vec![5, 10, 12, 12]);
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_trip() {
        let t = throttle();
        let mut now = Instant::now();
        for _ in 0..10 {
            assert_eq!(t.failed(A, now), None);
            assert_eq!(t.failed(A, now), None);
            now += Duration::from_secs(61);
        }
    }

    #[test]
    fn ipv6_is_counted_per_64_and_quiet_addresses_are_forgotten() {
        let t = throttle();
        let now = Instant::now();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        t.failed(a, now);
        t.failed(b, now);
        assert_eq!(t.failed(a, now), Some(Duration::from_secs(5)));
        assert_eq!(t.tracked(), 1);
        t.sweep(now + Duration::from_secs(100));
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn a_full_table_forgets_quiet_addresses_and_keeps_blocked_ones() {
        let limits = LimitsConfig {
            failed_auth_burst: 2,
            ..LimitsConfig::default()
        };
        let mut t = AuthThrottle::new(&limits);
        t.max_tracked = 20;
        let now = Instant::now();
        let blocked: IpAddr = "10.9.9.9".parse().unwrap();
        t.failed(blocked, now);
        assert!(t.failed(blocked, now).is_some());
        // A flood of new addresses, each failing once, well past the table's size.
        for i in 0..200u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            t.failed(ip, now + Duration::from_millis(u64::from(i)));
        }
        assert!(t.tracked() <= 20, "{}", t.tracked());
        assert!(
            t.check(blocked, now).is_err(),
            "the blocked address was forgotten"
        );
        // The newest address is tracked: a full table does not stop counting.
        let newest = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + 199));
        t.failed(newest, now + Duration::from_secs(1));
        assert!(t.check(newest, now + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn an_address_gets_its_cap_of_connections_and_its_place_back_as_they_close() {
        let caps = std::sync::Arc::new(ConnectionCaps::new(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = caps.admit(a).unwrap();
        let _second = caps.admit(a).unwrap();
        assert!(caps.admit(a).is_none());
        assert!(caps.admit(b).is_some(), "another address is not affected");
        drop(first);
        assert!(caps.admit(a).is_some());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff".parse().unwrap();
        let _p = caps.admit(v6).unwrap();
        let _q = caps.admit(same_64).unwrap();
        assert!(caps.admit(v6).is_none(), "IPv6 counts per /64");
    }

    #[test]
    fn held_bytes_are_capped_per_key_and_in_total_and_released_on_drop() {
        let caps = std::sync::Arc::new(ByteCaps::new(100, 60));
        let mut a = caps.hold("a");
        assert_eq!(a.grow(50), Ok(()));
        assert_eq!(a.grow(11), Err(ByteCapFull::Each(60)));
        let mut b = caps.hold("b");
        assert_eq!(b.grow(51), Err(ByteCapFull::Total(100)));
        assert_eq!(b.grow(50), Ok(()));
        drop(a);
        assert_eq!(b.grow(10), Ok(()));
        assert_eq!(b.grow(1), Err(ByteCapFull::Each(60)));
        b.shrink(20);
        assert_eq!(b.grow(20), Ok(()));
        b.shrink(20);
        let mut a = caps.hold("a");
        assert_eq!(a.grow(61), Err(ByteCapFull::Each(60)));
        assert_eq!(a.grow(60), Ok(()));
        assert_eq!(b.grow(1), Err(ByteCapFull::Total(100)));
        drop((a, b));
        assert_eq!(caps.tally().total, 0);
        assert!(caps.tally().each.is_empty());
    }
}
