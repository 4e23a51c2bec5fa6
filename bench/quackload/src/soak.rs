//! `quackload --soak`: many long-lived sessions on a mixed workload (reads, one-row APPENDs,
//! server-side transactions) with a per-interval table of latency, errors and the watched
//! processes' RSS and open file descriptors, and a ledger of every key written: acknowledged
//! (the server said yes), unknown (the answer was an error or never came, so the row may or may
//! not have landed) and aborted (the transaction never reached COMMIT, so it must not land).
//! The caller counts the table afterwards against that ledger. It exists because a benchmark
//! measures minutes of steady load, while lost writes, leaks and hangs show over a long run
//! with faults in it.
//!
//! A failed request is never retried: a session that lost its worker opens a new session (a
//! new CONNECTION_REQUEST), exactly what a DuckDB client's DETACH and ATTACH does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use quack_codec::{msg_type, AppendColumn};

use crate::client::{Client, Endpoint};
use crate::{error_text, new_hist};

/// What a soak run is told.
pub struct SoakPlan {
    pub endpoint: Arc<Endpoint>,
    pub token: String,
    pub sessions: usize,
    pub duration: Duration,
    pub think: Duration,
    pub interval: Duration,
    pub request_timeout: Duration,
    pub table: String,
    pub watch: Vec<u32>,
    pub key_base: i64,
    pub keys_out: Option<std::path::PathBuf>,
}

/// Errors whose text says what happened and that a session or statement was lost to a fault
/// (a worker or node gone, the catalog away): the documented answers. Anything else is
/// unexpected and fails the soak.
const EXPECTED: &[(&str, &str)] = &[
    (
        "Invalid connection id",
        "invalid connection id (session's worker restarted)",
    ),
    ("no DuckDB worker is ready", "no worker ready"),
    ("no node is ready", "no node ready"),
    (
        "the connection to the DuckDB worker failed during this request",
        "worker lost mid-request",
    ),
    ("could not reach the DuckDB worker", "worker unreachable"),
    // An answer that was streaming when its worker died: the status and headers were sent,
    // so the gateway can only cut the connection (no close_notify over TLS).
    (
        "error reading a body from connection",
        "answer cut off: its worker died while it streamed",
    ),
    (
        "which holds this session, is unreachable",
        "owner node unreachable",
    ),
    (
        "which held this session, has left the cluster",
        "owner node left",
    ),
    // The balancer in front of a cluster, for a request in flight on a node that died: the
    // node took the connection with it, and the request is not replayed (not idempotent).
    (
        "HTTP 502 Bad Gateway",
        "balancer 502: node died mid-request",
    ),
    // A statement that needed the DuckLake catalog while it was down: DuckDB's own text for
    // the worker's failed Quack request to the catalog.
    (
        "Failed to send message: IO Error: Could not connect to server",
        "lake catalog unreachable",
    ),
    // The same, for a request of the worker's that was in flight when the catalog went
    // down (seen once in a cluster soak's catalog restart): nothing was acknowledged.
    (
        "Failed to send message: IO Error: Failure when receiving data from the peer",
        "lake catalog unreachable",
    ),
    // The same, worded as the catalog closing the connection before its answer (seen once in
    // a cluster soak's catalog restart, 2026-12-05, with no acknowledged row lost).
    (
        "Failed to send message: IO Error: Server returned nothing",
        "lake catalog unreachable",
    ),
    // A write while the lake's data disk is full: DuckDB's own text for the failed file
    // write; nothing is committed.
    ("No space left on device", "data disk full"),
    // A statement that needed the lake's object storage while it was unreachable: the text
    // of DuckDB's HTTP client, naming the storage endpoint.
    (
        "Fail to get a new connection for: http",
        "object storage unreachable",
    ),
];

/// Error texts this run counts as expected besides [`EXPECTED`] (`--expect`).
static EXPECTED_ALSO: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Sets this run's `--expect` texts; the first call wins.
pub fn expect_also(needles: Vec<String>) {
    let _ = EXPECTED_ALSO.set(needles);
}

/// The kind of an error and whether it is one of the documented, expected answers.
fn classify(text: &str) -> (String, bool) {
    for (needle, kind) in EXPECTED {
        if text.contains(needle) {
            return (kind.to_string(), true);
        }
    }
    for needle in EXPECTED_ALSO.get().into_iter().flatten() {
        if text.contains(needle.as_str()) {
            return (format!("expected in this run: {needle}"), true);
        }
    }
    // Unexpected: keep the text short and free of ids, so equal errors count together.
    let mut kind: String = text
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .take(120)
        .collect();
    kind = kind.replace('\n', " ");
    (kind, false)
}

/// One failed request.
struct Failure {
    text: String,
    /// The session cannot be used any more (its worker or node is gone, or the transport broke).
    session_lost: bool,
}

#[derive(Default)]
struct Ledger {
    acked: Vec<i64>,
    unknown: Vec<i64>,
    aborted: Vec<i64>,
}

struct Interval {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
}

impl Interval {
    fn new() -> Interval {
        Interval {
            hist: new_hist(),
            ok: 0,
            errors: 0,
        }
    }
}

struct Stats {
    interval: Interval,
    total: Histogram<u64>,
    ok: u64,
    /// kind -> (count, expected, one full text)
    errors: BTreeMap<String, (u64, bool, String)>,
    ledger: Ledger,
    reopened: u64,
    /// Sessions (of --sessions) that saw at least one error.
    sessions_hit: u64,
}

type Shared = Arc<Mutex<Stats>>;

fn record(stats: &Shared, took: Duration, result: &Result<(), Failure>) {
    let mut s = stats.lock().unwrap();
    match result {
        Ok(()) => {
            let us = took.as_micros() as u64;
            s.interval.hist.saturating_record(us);
            s.total.saturating_record(us);
            s.interval.ok += 1;
            s.ok += 1;
        }
        Err(f) => {
            s.interval.errors += 1;
            let (kind, expected) = classify(&f.text);
            let e = s
                .errors
                .entry(kind)
                .or_insert_with(|| (0, expected, f.text.clone()));
            e.0 += 1;
        }
    }
}

/// One soak session: its Quack connection id and its request counter.
struct Conn {
    id: Bytes,
    client: Client,
    qid: u64,
    /// A request of this session failed.
    failed: bool,
}

impl Conn {
    async fn post(&mut self, plan: &SoakPlan, body: Bytes) -> Result<Bytes, Failure> {
        let answer = tokio::time::timeout(plan.request_timeout, self.client.post(body)).await;
        // Quack errors are 200 + ERROR_RESPONSE: counted here too.
        self.failed |= !matches!(&answer, Ok(Ok(resp)) if quack_codec::decode_header(resp)
            .is_ok_and(|h| h.msg_type != msg_type::ERROR_RESPONSE));
        match answer {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(Failure {
                text: format!("transport: {e:#}"),
                session_lost: true,
            }),
            Err(_) => Err(Failure {
                text: format!("request timed out after {:?}", plan.request_timeout),
                session_lost: true,
            }),
        }
    }

    async fn open(plan: &SoakPlan) -> Result<Conn, Failure> {
        let mut conn = Conn {
            id: Bytes::new(),
            client: Client::new(plan.endpoint.clone(), false),
            qid: 1,
            failed: false,
        };
        let resp = conn
            .post(plan, quack_codec::connection_request(&plan.token))
            .await?;
        let h = decoded(&resp)?;
        match (h.msg_type, h.connection_id) {
            (msg_type::CONNECTION_RESPONSE, Some(range)) => {
                conn.id = resp.slice(range);
                Ok(conn)
            }
            _ => Err(answer_failure("connect", &resp, h.msg_type)),
        }
    }

    /// PREPARE `sql` and FETCH its result to the end.
    async fn query(&mut self, plan: &SoakPlan, sql: &str) -> Result<(), Failure> {
        self.qid += 1;
        let resp = self
            .post(plan, quack_codec::prepare_request(&self.id, self.qid, sql))
            .await?;
        let h = decoded(&resp)?;
        if h.msg_type != msg_type::PREPARE_RESPONSE {
            return Err(answer_failure("prepare", &resp, h.msg_type));
        }
        let prepared = quack_codec::parse_prepare_response(&resp, &h).map_err(|e| Failure {
            text: format!("bad PREPARE_RESPONSE: {e}"),
            session_lost: true,
        })?;
        let Some(uuid) = prepared.uuid.filter(|_| prepared.needs_more_fetch) else {
            return Ok(());
        };
        let uuid = resp.slice(uuid);
        loop {
            let resp = self
                .post(plan, quack_codec::fetch_request(&self.id, self.qid, &uuid))
                .await?;
            let h = decoded(&resp)?;
            match h.msg_type {
                msg_type::FETCH_RESPONSE if quack_codec::fetch_is_last(&resp, &h) => return Ok(()),
                msg_type::FETCH_RESPONSE => {}
                other => return Err(answer_failure("fetch", &resp, other)),
            }
        }
    }

    /// One APPEND of `keys` into the soak table (what `INSERT INTO r.t VALUES ...` sends).
    async fn append(&mut self, plan: &SoakPlan, keys: &[i64]) -> Result<(), Failure> {
        self.qid += 1;
        let body = quack_codec::append_request(
            &self.id,
            self.qid,
            "main",
            &plan.table,
            &[
                AppendColumn::BigInt(keys.to_vec()),
                AppendColumn::Varchar(keys.iter().map(|_| "append".to_string()).collect()),
            ],
        );
        let resp = self.post(plan, body).await?;
        let h = decoded(&resp)?;
        if h.msg_type != msg_type::SUCCESS_RESPONSE {
            return Err(answer_failure("append", &resp, h.msg_type));
        }
        Ok(())
    }

    async fn disconnect(mut self, plan: &SoakPlan) {
        let _ = self
            .post(plan, quack_codec::encode_disconnect(&self.id))
            .await;
    }
}

fn decoded(resp: &[u8]) -> Result<quack_codec::Header, Failure> {
    quack_codec::decode_header(resp).map_err(|e| Failure {
        text: format!("undecodable answer: {e}"),
        session_lost: true,
    })
}

fn answer_failure(what: &str, resp: &[u8], t: u64) -> Failure {
    if t == msg_type::ERROR_RESPONSE {
        let text = error_text(resp);
        let session_lost = classify(&text).1;
        Failure { text, session_lost }
    } else {
        Failure {
            text: format!("{what}: unexpected answer type {t}"),
            session_lost: true,
        }
    }
}

/// Runs session `n` until `until`: a cycle of a read, an APPEND of one row, a lake read, and a
/// server transaction inserting two rows.
async fn session(plan: Arc<SoakPlan>, stats: Shared, n: usize, until: Instant) {
    let mut seq: i64 = 0;
    let mut next_key = || {
        seq += 1;
        plan.key_base + ((n as i64) << 32) + seq
    };
    // Spread the first requests over one think time.
    if !plan.think.is_zero() {
        tokio::time::sleep(plan.think * n as u32 / plan.sessions as u32).await;
    }
    let mut conn: Option<Conn> = None;
    let mut step = n;
    let mut hit = false;
    while Instant::now() < until {
        let c = match conn.take() {
            Some(c) => c,
            None => {
                let start = Instant::now();
                let opened = Conn::open(&plan).await;
                match opened {
                    Ok(c) => {
                        record(&stats, start.elapsed(), &Ok(()));
                        c
                    }
                    Err(f) => {
                        hit = true;
                        record(&stats, start.elapsed(), &Err(f));
                        stats.lock().unwrap().reopened += 1;
                        tokio::time::sleep(plan.think.max(Duration::from_millis(200))).await;
                        continue;
                    }
                }
            }
        };
        let mut c = c;
        let lost = match step % 4 {
            0 => {
                timed(
                    &stats,
                    c.query(&plan, "SELECT sum(range) FROM range(100000)"),
                )
                .await
            }
            1 => {
                let key = next_key();
                let start = Instant::now();
                let r = c.append(&plan, &[key]).await;
                {
                    let mut s = stats.lock().unwrap();
                    match &r {
                        Ok(()) => s.ledger.acked.push(key),
                        Err(_) => s.ledger.unknown.push(key),
                    }
                }
                finish(&stats, start, r)
            }
            2 => {
                let sql = format!("SELECT count(*) FROM {}", plan.table);
                timed(&stats, c.query(&plan, &sql)).await
            }
            _ => {
                let keys = [next_key(), next_key()];
                transaction(&plan, &stats, &mut c, keys).await
            }
        };
        step += 1;
        hit |= c.failed;
        if !lost {
            conn = Some(c);
        } else {
            // Given up as a DuckDB client gives up an ATTACH: DETACH sends DISCONNECT. A session
            // given up on an error that did not end it (a lake statement failing while the
            // worker's catalog session is gone says `Invalid connection id` too) would
            // otherwise stay open at the gateway, and reopening every few hundred
            // milliseconds until the worker restarts ran into the principal's session limit.
            c.disconnect(&plan).await;
            stats.lock().unwrap().reopened += 1;
        }
        if !plan.think.is_zero() {
            tokio::time::sleep(plan.think).await;
        }
    }
    if let Some(c) = conn {
        c.disconnect(&plan).await;
    }
    if hit {
        stats.lock().unwrap().sessions_hit += 1;
    }
}

/// Records the outcome of one request; true when the session is lost.
fn finish(stats: &Shared, start: Instant, r: Result<(), Failure>) -> bool {
    let lost = r.as_ref().err().is_some_and(|f| f.session_lost);
    record(stats, start.elapsed(), &r);
    lost
}

async fn timed(stats: &Shared, f: impl std::future::Future<Output = Result<(), Failure>>) -> bool {
    let start = Instant::now();
    let r = f.await;
    finish(stats, start, r)
}

/// `FROM r.query('BEGIN')`, an INSERT of `keys`, `COMMIT`, each its own request on the same
/// session. Keys are acknowledged when COMMIT succeeds, unknown when COMMIT was sent and failed,
/// aborted when the transaction never got to COMMIT (then a ROLLBACK is sent if the session
/// lives). Returns true when the session is lost.
async fn transaction(plan: &SoakPlan, stats: &Shared, c: &mut Conn, keys: [i64; 2]) -> bool {
    let steps = [
        "BEGIN TRANSACTION".to_string(),
        format!(
            "INSERT INTO {} VALUES ({}, 'txn'), ({}, 'txn')",
            plan.table, keys[0], keys[1]
        ),
        "COMMIT".to_string(),
    ];
    for (i, sql) in steps.iter().enumerate() {
        let start = Instant::now();
        let r = c.query(plan, sql).await;
        let failed = r.is_err();
        let lost = finish(stats, start, r);
        if !failed {
            continue;
        }
        {
            let mut s = stats.lock().unwrap();
            match i {
                // BEGIN failed: nothing was inserted.
                0 => {}
                1 => s.ledger.aborted.extend(keys),
                _ => s.ledger.unknown.extend(keys),
            }
        }
        if i > 0 && !lost {
            let start = Instant::now();
            let r = c.query(plan, "ROLLBACK").await;
            // "no transaction is active" after a failed COMMIT is fine: it ended already.
            let r = match r {
                Err(f) if f.text.contains("no transaction is active") => Ok(()),
                other => other,
            };
            return finish(stats, start, r);
        }
        return lost;
    }
    stats.lock().unwrap().ledger.acked.extend(keys);
    false
}

/// VmRSS in kB and the number of open file descriptors of `pid`, or None when it is gone.
fn proc_sample(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

fn proc_columns(watch: &[u32]) -> (String, Vec<Option<(u64, usize)>>) {
    let samples: Vec<_> = watch.iter().map(|p| proc_sample(*p)).collect();
    let mut text = String::new();
    for (pid, s) in watch.iter().zip(&samples) {
        match s {
            Some((rss, fds)) => {
                let _ = write!(
                    text,
                    " | pid {pid}: {:>7.1} MB {fds:>4} fds",
                    *rss as f64 / 1024.0
                );
            }
            None => {
                let _ = write!(text, " | pid {pid}: gone");
            }
        }
    }
    (text, samples)
}

/// Prints the interval's `SOAKROW` line (ends it) and returns the processes' sample.
fn print_row(
    stats: &Shared,
    watch: &[u32],
    begin: Instant,
    suffix: &str,
) -> Vec<Option<(u64, usize)>> {
    let iv = take_interval(stats);
    let (procs, sample) = proc_columns(watch);
    println!(
        "SOAKROW t={:>5.0}s ok={:>6} errors={:>4} p50={:>7.1}ms p99={:>7.1}ms max={:>8.1}ms{procs}{suffix}",
        begin.elapsed().as_secs_f64(),
        iv.ok,
        iv.errors,
        iv.hist.value_at_quantile(0.5) as f64 / 1000.0,
        iv.hist.value_at_quantile(0.99) as f64 / 1000.0,
        iv.hist.max() as f64 / 1000.0,
    );
    sample
}

fn take_interval(stats: &Shared) -> Interval {
    std::mem::replace(&mut stats.lock().unwrap().interval, Interval::new())
}

/// Runs the soak; returns whether it passed (no unexpected error, flat RSS and fds).
pub async fn run(plan: SoakPlan) -> Result<bool> {
    let plan = Arc::new(plan);
    let stats: Shared = Arc::new(Mutex::new(Stats {
        interval: Interval::new(),
        total: new_hist(),
        ok: 0,
        errors: BTreeMap::new(),
        ledger: Ledger::default(),
        reopened: 0,
        sessions_hit: 0,
    }));
    let begin = Instant::now();
    let until = begin + plan.duration;
    let (_, first) = proc_columns(&plan.watch);
    let mut samples = vec![first];
    println!(
        "soak: {} sessions for {:?}, think {:?} between a session's requests, table {}, \
         row every {:?}",
        plan.sessions, plan.duration, plan.think, plan.table, plan.interval
    );
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..plan.sessions {
        tasks.spawn(session(plan.clone(), stats.clone(), n, until));
    }
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + plan.interval, plan.interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            joined = tasks.join_next() => {
                if joined.is_none() { break; }
                continue;
            }
        }
        samples.push(print_row(&stats, &plan.watch, begin, ""));
    }
    // The last, partial interval.
    samples.push(print_row(&stats, &plan.watch, begin, " (partial)"));

    let s = stats.lock().unwrap();
    let mut pass = true;
    println!(
        "soak: {} requests ok, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} sessions reopened",
        s.ok,
        s.total.value_at_quantile(0.5) as f64 / 1000.0,
        s.total.value_at_quantile(0.99) as f64 / 1000.0,
        s.total.max() as f64 / 1000.0,
        s.reopened
    );
    for (kind, (count, expected, text)) in &s.errors {
        let tag = if *expected { "expected" } else { "UNEXPECTED" };
        println!("SOAKERR {tag} count={count} kind={kind:?} example={text:?}");
        pass &= *expected;
    }
    if s.errors.is_empty() {
        println!("soak: no errors");
    }
    pass &= flat(&plan.watch, &samples);
    println!("SOAKSESSIONS hit={} of={}", s.sessions_hit, plan.sessions);
    println!(
        "SOAKLEDGER acked={} unknown={} aborted={}",
        s.ledger.acked.len(),
        s.ledger.unknown.len(),
        s.ledger.aborted.len()
    );
    if let Some(path) = &plan.keys_out {
        write_ledger(path, &s.ledger)?;
    }
    Ok(pass)
}

/// RSS and fds "flat": the last sample within 25 % (and 32 MB) of RSS and 32 fds of the sample
/// after the first interval (the warm state), for every watched process alive at both.
fn flat(watch: &[u32], samples: &[Vec<Option<(u64, usize)>>]) -> bool {
    let mut ok = true;
    if samples.len() < 3 {
        println!("soak: too short to judge RSS and fds (fewer than two full intervals)");
        return true;
    }
    let (warm, last) = (&samples[1], &samples[samples.len() - 1]);
    for (i, pid) in watch.iter().enumerate() {
        let (Some((rss0, fd0)), Some((rss1, fd1))) = (warm[i], last[i]) else {
            println!("SOAKFLAT pid {pid}: not alive at both ends, not judged");
            continue;
        };
        let rss_ok = rss1 <= rss0 + (rss0 / 4).max(32 * 1024);
        let fd_ok = fd1 <= fd0 + 32;
        println!(
            "SOAKFLAT pid {pid}: RSS {:.1} -> {:.1} MB {}, fds {fd0} -> {fd1} {}",
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0,
            if rss_ok { "flat" } else { "GREW" },
            if fd_ok { "flat" } else { "GREW" },
        );
        ok &= rss_ok && fd_ok;
    }
    ok
}

/// `acked <key>`, `unknown <key>`, `aborted <key>` lines.
fn write_ledger(path: &Path, ledger: &Ledger) -> Result<()> {
    let mut text = String::with_capacity(
        (ledger.acked.len() + ledger.unknown.len() + ledger.aborted.len()) * 24,
    );
    for (tag, keys) in [
        ("acked", &ledger.acked),
        ("unknown", &ledger.unknown),
        ("aborted", &ledger.aborted),
    ] {
        for k in keys.iter() {
            let _ = writeln!(text, "{tag} {k}");
        }
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Checks the arguments a soak needs.
pub fn check(sessions: usize, duration: f64, interval: f64) -> Result<()> {
    if sessions == 0 || duration <= 0.0 || interval <= 0.0 {
        bail!("--soak needs --sessions, --duration and --interval above 0");
    }
    Ok(())
}
