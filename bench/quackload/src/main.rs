//! quackload: a Quack (DuckDB 1.5 client/server protocol) load generator for the quackgate
//! benchmark. It opens sessions with a token, runs a query mix (PREPARE, then FETCH to the end
//! when the result needs it) from concurrent clients for a duration or a request count, and
//! reports requests/s and HDR-histogram latency percentiles. The last stdout line is
//! machine-readable (`QUACKLOAD key=value ...`) for `bench/run`.

mod client;
mod soak;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use quack_codec::msg_type;

use client::{Client, Endpoint};

#[derive(Parser, Debug)]
#[command(about = "Quack protocol load generator")]
struct Args {
    /// http://host:port or https://host:port of the Quack server, gateway or proxy.
    #[arg(long)]
    url: String,
    /// Token sent in CONNECTION_REQUEST.
    #[arg(long)]
    token: String,
    /// PEM CA certificate(s) that sign the server's certificate (https only).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Quack sessions (connection ids) opened before the measurement.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Concurrent clients (default: one per session). Client i uses sessions i, i+c, ...
    /// in turn, so a session never runs two queries at once; must be <= sessions.
    #[arg(long)]
    concurrency: Option<usize>,
    /// SQL to run; repeat for a mix (each client walks the list in order).
    #[arg(long = "query", default_value = "SELECT 42")]
    queries: Vec<String>,
    /// Measured run time in seconds (after the warmup).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after this many measured queries instead of after --duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Reuse one HTTP connection per client (DuckDB 1.5 clients open one per request).
    #[arg(long)]
    keepalive: bool,
    /// Open a new session for every query: CONNECT, query, DISCONNECT (connect churn). The
    /// latency is the whole sequence.
    #[arg(long)]
    session_per_query: bool,
    /// Pause between a client's queries, in milliseconds (0: closed loop, no pause).
    #[arg(long, default_value_t = 0)]
    think_ms: u64,
    /// Spread the clients' first queries evenly over one --think-ms, instead of all clients
    /// starting at the same instant.
    #[arg(long)]
    stagger: bool,
    /// Allow TLS session resumption (DuckDB 1.5 clients never resume).
    #[arg(long)]
    tls_resume: bool,
    /// Soak mode (see soak.rs): --sessions long-lived sessions for --duration seconds on a
    /// mixed read/APPEND/transaction workload against --soak-table, pausing --think-ms between
    /// a session's requests; a table row every --interval seconds; exit 2 on failure.
    #[arg(long)]
    soak: bool,
    /// The soak's table, `(k BIGINT, v VARCHAR)` in schema main, created beforehand.
    #[arg(long, default_value = "soak")]
    soak_table: String,
    /// Seconds between the soak's table rows.
    #[arg(long, default_value_t = 60.0)]
    interval: f64,
    /// A process whose RSS and open fds go in each soak row (repeat).
    #[arg(long = "watch-pid")]
    watch_pids: Vec<u32>,
    /// Where the soak writes its ledger: `acked|unknown|aborted <key>` lines.
    #[arg(long)]
    keys_out: Option<PathBuf>,
    /// Added to every soak key (run several soaks on one table with different bases).
    #[arg(long, default_value_t = 0)]
    key_base: i64,
    /// A soak request with no answer after this many seconds counts as a hang.
    #[arg(long, default_value_t = 120.0)]
    request_timeout: f64,
    /// Text of an error that this soak run counts as expected besides the documented ones
    /// (repeat): the answer a fault test allows for its fault.
    #[arg(long = "expect")]
    expect: Vec<String>,
    /// Free-form label echoed in the result line.
    #[arg(long, default_value = "run")]
    label: String,
}

/// An open Quack session.
struct Session {
    id: Bytes,
    client: Client,
    next_query_id: u64,
}

impl Session {
    async fn open(endpoint: &Arc<Endpoint>, token: &str, keepalive: bool) -> Result<Session> {
        let mut client = Client::new(endpoint.clone(), keepalive);
        let resp = client.post(quack_codec::connection_request(token)).await?;
        let h = quack_codec::decode_header(&resp)?;
        match h.msg_type {
            msg_type::CONNECTION_RESPONSE => Ok(Session {
                id: resp.slice(
                    h.connection_id
                        .context("CONNECTION_RESPONSE without a connection id")?,
                ),
                client,
                next_query_id: 1,
            }),
            msg_type::ERROR_RESPONSE => bail!("connect: {}", error_text(&resp)),
            other => bail!("connect: unexpected response type {other}"),
        }
    }

    /// Runs one query to its end: PREPARE, then FETCH until the empty last batch.
    async fn query(&mut self, sql: &str) -> Result<()> {
        let qid = self.next_query_id;
        self.next_query_id += 1;
        let resp = self
            .client
            .post(quack_codec::prepare_request(&self.id, qid, sql))
            .await?;
        let h = quack_codec::decode_header(&resp)?;
        let prepared = match h.msg_type {
            msg_type::PREPARE_RESPONSE => quack_codec::parse_prepare_response(&resp, &h)?,
            msg_type::ERROR_RESPONSE => bail!("query: {}", error_text(&resp)),
            other => bail!("query: unexpected response type {other}"),
        };
        if !prepared.needs_more_fetch {
            return Ok(());
        }
        let uuid = resp.slice(
            prepared
                .uuid
                .context("PREPARE_RESPONSE needs FETCH but has no result uuid")?,
        );
        loop {
            let resp = self
                .client
                .post(quack_codec::fetch_request(&self.id, qid, &uuid))
                .await?;
            let h = quack_codec::decode_header(&resp)?;
            match h.msg_type {
                msg_type::FETCH_RESPONSE if quack_codec::fetch_is_last(&resp, &h) => return Ok(()),
                msg_type::FETCH_RESPONSE => {}
                msg_type::ERROR_RESPONSE => bail!("fetch: {}", error_text(&resp)),
                other => bail!("fetch: unexpected response type {other}"),
            }
        }
    }

    async fn disconnect(mut self) -> Result<u64> {
        let resp = self
            .client
            .post(quack_codec::encode_disconnect(&self.id))
            .await?;
        let h = quack_codec::decode_header(&resp)?;
        match h.msg_type {
            msg_type::SUCCESS_RESPONSE => Ok(self.client.bytes_in),
            msg_type::ERROR_RESPONSE => bail!("disconnect: {}", error_text(&resp)),
            other => bail!("disconnect: unexpected response type {other}"),
        }
    }
}

/// The text of the ERROR_RESPONSE `resp`, for an error message.
fn error_text(resp: &[u8]) -> String {
    match quack_codec::error_message(resp) {
        Some(text) => String::from_utf8_lossy(text).into_owned(),
        None => "ERROR_RESPONSE without a message".to_string(),
    }
}

/// What one client measured.
struct Tally {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    bytes_in: u64,
    sessions: Vec<Session>,
}

fn new_hist() -> Histogram<u64> {
    // Microseconds, 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

struct Plan {
    endpoint: Arc<Endpoint>,
    token: String,
    queries: Vec<String>,
    keepalive: bool,
    session_per_query: bool,
    think: Duration,
    /// Delay of client i's first query: i * stagger.
    stagger: Duration,
    measure_from: Instant,
    deadline: Option<Instant>,
    /// Measured queries still to run in --requests mode.
    remaining: Option<AtomicI64>,
}

impl Plan {
    fn more(&self, now: Instant) -> bool {
        if let Some(remaining) = &self.remaining {
            return remaining.fetch_sub(1, Ordering::Relaxed) > 0;
        }
        self.deadline.is_some_and(|d| now < d)
    }
}

async fn run_client(plan: Arc<Plan>, mut sessions: Vec<Session>, offset: usize) -> Tally {
    let mut tally = Tally {
        hist: new_hist(),
        errors: 0,
        first_error: None,
        bytes_in: 0,
        sessions: Vec::new(),
    };
    let mut turn = offset;
    if !plan.stagger.is_zero() {
        tokio::time::sleep(plan.stagger * offset as u32).await;
    }
    loop {
        let start = Instant::now();
        if !plan.more(start) {
            break;
        }
        let sql = &plan.queries[turn % plan.queries.len()];
        let result = if plan.session_per_query {
            churn_once(&plan, sql)
                .await
                .map(|bytes| tally.bytes_in += bytes)
        } else {
            let n = sessions.len();
            sessions[turn % n].query(sql).await
        };
        turn += 1;
        let took = start.elapsed();
        match result {
            Ok(()) if start >= plan.measure_from => {
                tally.hist.saturating_record(took.as_micros() as u64)
            }
            Ok(()) => {}
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        if !plan.think.is_zero() {
            tokio::time::sleep(plan.think).await;
        }
    }
    tally.sessions = sessions;
    tally
}

async fn churn_once(plan: &Plan, sql: &str) -> Result<u64> {
    let mut session = Session::open(&plan.endpoint, &plan.token, plan.keepalive).await?;
    session.query(sql).await?;
    session.disconnect().await
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.soak {
        soak::check(args.sessions, args.duration, args.interval)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let passed = runtime.block_on(async {
            soak::expect_also(args.expect.clone());
            let plan = soak::SoakPlan {
                endpoint: Arc::new(Endpoint::new(&args.url, args.ca_file.as_deref(), false)?),
                token: args.token.clone(),
                sessions: args.sessions,
                duration: Duration::from_secs_f64(args.duration),
                think: Duration::from_millis(args.think_ms),
                interval: Duration::from_secs_f64(args.interval),
                request_timeout: Duration::from_secs_f64(args.request_timeout),
                table: args.soak_table.clone(),
                watch: args.watch_pids.clone(),
                key_base: args.key_base,
                keys_out: args.keys_out.clone(),
            };
            soak::run(plan).await
        })?;
        println!("SOAKVERDICT {}", if passed { "pass" } else { "FAIL" });
        if !passed {
            std::process::exit(2);
        }
        return Ok(());
    }
    let concurrency = args.concurrency.unwrap_or(args.sessions);
    if concurrency == 0 || args.sessions == 0 {
        bail!("--sessions and --concurrency must be at least 1");
    }
    if !args.session_per_query && concurrency > args.sessions {
        bail!(
            "--concurrency ({concurrency}) must be <= --sessions ({})",
            args.sessions
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args, concurrency))
}

async fn run(args: Args, concurrency: usize) -> Result<()> {
    let endpoint = Arc::new(Endpoint::new(
        &args.url,
        args.ca_file.as_deref(),
        args.tls_resume,
    )?);

    // Open the sessions up front, all at once, outside the measurement.
    let mut sessions = Vec::new();
    if !args.session_per_query {
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..args.sessions {
            let (endpoint, token) = (endpoint.clone(), args.token.clone());
            opening.spawn(async move { Session::open(&endpoint, &token, args.keepalive).await });
        }
        while let Some(opened) = opening.join_next().await {
            sessions.push(opened?.context("opening a session")?);
        }
    }

    let begin = Instant::now();
    let measure_from = begin + Duration::from_secs_f64(args.warmup);
    let plan = Arc::new(Plan {
        endpoint: endpoint.clone(),
        token: args.token.clone(),
        queries: args.queries.clone(),
        keepalive: args.keepalive,
        session_per_query: args.session_per_query,
        think: Duration::from_millis(args.think_ms),
        stagger: if args.stagger {
            Duration::from_millis(args.think_ms) / concurrency as u32
        } else {
            Duration::ZERO
        },
        measure_from: if args.requests.is_some() {
            begin
        } else {
            measure_from
        },
        deadline: Some(measure_from + Duration::from_secs_f64(args.duration)),
        remaining: args.requests.map(|n| AtomicI64::new(n as i64)),
    });

    // Deal the sessions out: client i gets sessions i, i+c, i+2c, ...
    let mut per_client: Vec<Vec<Session>> = (0..concurrency).map(|_| Vec::new()).collect();
    for (i, s) in sessions.into_iter().enumerate() {
        per_client[i % concurrency].push(s);
    }
    let mut clients = tokio::task::JoinSet::new();
    for (i, mine) in per_client.into_iter().enumerate() {
        clients.spawn(run_client(plan.clone(), mine, i));
    }
    let mut hist = new_hist();
    let (mut errors, mut first_error, mut bytes_in) = (0, None, 0);
    let mut open = Vec::new();
    while let Some(tally) = clients.join_next().await {
        let tally = tally?;
        hist.add(&tally.hist)?;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
        bytes_in += tally.bytes_in;
        open.extend(tally.sessions);
    }
    let window = Instant::now().saturating_duration_since(plan.measure_from);

    // Sessions hold server state until DISCONNECT: close them all.
    let mut closing = tokio::task::JoinSet::new();
    for s in open {
        closing.spawn(s.disconnect());
    }
    while let Some(closed) = closing.join_next().await {
        match closed? {
            Ok(bytes) => bytes_in += bytes,
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    let secs = window.as_secs_f64();
    let n = hist.len();
    let rps = n as f64 / secs;
    let mb_per_s = bytes_in as f64 / 1e6 / secs;
    let q = |p: f64| hist.value_at_quantile(p);
    println!(
        "{}: {n} queries in {secs:.2} s, {rps:.1}/s, latency p50 {} µs, p99 {} µs, p99.9 {} µs, \
         max {} µs, {errors} errors, {:.1} MB received",
        args.label,
        q(0.5),
        q(0.99),
        q(0.999),
        hist.max(),
        bytes_in as f64 / 1e6
    );
    if let Some(e) = &first_error {
        eprintln!("quackload: first error: {e}");
    }
    println!(
        "QUACKLOAD label={} requests={n} errors={errors} secs={secs:.3} rps={rps:.1} \
         p50_us={} p99_us={} p999_us={} max_us={} mean_us={:.0} bytes_in={bytes_in} mb_per_s={mb_per_s:.1}",
        args.label,
        q(0.5),
        q(0.99),
        q(0.999),
        hist.max(),
        hist.mean(),
    );
    if errors > 0 {
        std::process::exit(2);
    }
    Ok(())
}
