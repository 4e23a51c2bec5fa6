//! The soak (issue 16, item 4): `quackload --soak` drives many long-lived sessions (reads,
//! one-row APPENDs, server-side transactions) through one gateway node or a 3-node cluster
//! behind round-robin nginx, on a DuckLake served by the catalog role, while a worker is killed
//! with SIGKILL and the catalog is restarted. At the end every acknowledged key must be in the
//! lake exactly once, nothing may land that was not written, and quackload's verdict (no
//! unexpected error, flat RSS and fds) must be a pass.
//!
//! The shape comes from the environment, so `bench/soak` runs the long version and
//! `scripts/test` a short one: `QUACKGATE_SOAK_SECS` (30), `QUACKGATE_SOAK_SESSIONS` (200),
//! `QUACKGATE_SOAK_THINK_MS` (5000: the pause between a session's requests),
//! `QUACKGATE_SOAK_INTERVAL_SECS` (a table row every so often; 60, or 10 below 3 minutes),
//! `QUACKGATE_SOAK_FAULTS` (1, the default: both faults; `kill` or `catalog`: that one only;
//! 0: none).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, Nginx};
use crate::ducklake::{data_dir, start_catalog};
use crate::support::{
    https_attach_sql, random_hex, run_cli, wait_for_exit, wait_until, Gateway, GatewayOptions,
    Toolchain,
};

/// The gateway nodes, the catalog and where clients connect.
pub(crate) struct LakeStack {
    pub(crate) nodes: Vec<Gateway>,
    pub(crate) catalog: Gateway,
    pub(crate) shared: tempfile::TempDir,
    pub(crate) token: String,
    pub(crate) ca: PathBuf,
    /// The client-facing HTTPS port (the node's, or nginx's in front of the cluster).
    pub(crate) port: u16,
    _nginx: Option<Nginx>,
    /// With [`LakeStack::cluster_gated`]: the gate node `from` reaches node `to` through.
    gates: Vec<(usize, usize, crate::support::gate::Gate)>,
}

impl LakeStack {
    /// One gateway node with `workers` workers on a DuckLake served by a catalog.
    pub(crate) fn one_node(workers: usize) -> LakeStack {
        LakeStack::one_node_in(workers, tempfile::tempdir().unwrap())
    }

    /// [`LakeStack::one_node`] with the catalog, the token and the lake's data below `shared`
    /// (its `data` folder may be a mount of the test's own).
    pub(crate) fn one_node_in(workers: usize, shared: tempfile::TempDir) -> LakeStack {
        let data = data_dir(shared.path()).display().to_string();
        LakeStack::one_node_on(workers, shared, &data, "")
    }

    /// [`LakeStack::one_node_in`] with the lake's data at `data_path`, and more
    /// `[workers.ducklake]` TOML (an `[workers.ducklake.azure]` table).
    pub(crate) fn one_node_on(
        workers: usize,
        shared: tempfile::TempDir,
        data_path: &str,
        extra_lake_toml: &str,
    ) -> LakeStack {
        let catalog_token = format!("cat-{}", random_hex());
        std::fs::write(shared.path().join("catalog-token"), &catalog_token).unwrap();
        let catalog = start_catalog(shared.path(), &catalog_token, None);
        let gateway = Gateway::start_with(GatewayOptions {
            workers,
            extra_workers_toml: format!(
                "[workers.ducklake]\ncatalog = \"127.0.0.1:{port}\"\ncatalog_token_file = \"{token}\"\ndata_path = \"{data_path}\"\n{extra_lake_toml}",
                port = catalog.plain.port(),
                token = shared.path().join("catalog-token").display(),
            ),
            ..Default::default()
        });
        LakeStack {
            token: gateway.token.clone(),
            ca: gateway.ca.clone(),
            port: gateway.https.port(),
            nodes: vec![gateway],
            catalog,
            shared,
            _nginx: None,
            gates: Vec::new(),
        }
    }

    /// Three nodes (two workers each) behind round-robin nginx, on one lake.
    pub(crate) fn cluster() -> LakeStack {
        LakeStack::from_cluster(Cluster::start())
    }

    /// [`LakeStack::cluster`] where each node reaches each peer through a gate of its own.
    pub(crate) fn cluster_gated() -> LakeStack {
        LakeStack::from_cluster(Cluster::start_gated())
    }

    /// Cuts node `n` off from its peers in both directions (clients still reach it), or,
    /// with `heal`, joins it again.
    pub(crate) fn partition(&mut self, n: usize, heal: bool) {
        for (from, to, gate) in &mut self.gates {
            if *from == n || *to == n {
                if heal {
                    gate.open();
                } else {
                    gate.close();
                }
            }
        }
    }

    fn from_cluster(c: Cluster) -> LakeStack {
        LakeStack {
            port: c.nginx.port,
            nodes: c.nodes,
            catalog: c.catalog,
            shared: c.shared,
            token: c.token,
            ca: c.ca,
            _nginx: Some(c.nginx),
            gates: c.gates,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// Runs `sql` in the DuckDB CLI attached as `r`.
    pub(crate) fn cli(&self, sql: &str) -> std::process::Output {
        let toolchain = Toolchain::get();
        run_cli(
            &toolchain,
            &format!(
                ".output /dev/null\n{}.output\n{sql}",
                https_attach_sql(&toolchain, self.port, &self.ca, &self.token)
            ),
        )
    }

    /// [`LakeStack::cli`]'s stdout lines, or the test fails.
    pub(crate) fn cli_ok(&self, sql: &str) -> Vec<String> {
        let out = self.cli(sql);
        assert!(
            out.status.success(),
            "duckdb CLI failed: {}\nnode 0 log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.nodes[0].log()
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub(crate) fn all_ready(&self) -> bool {
        self.nodes.iter().all(|n| n.admin_get("/readyz").0 == 200)
    }

    /// Kills a live worker of node `node` with SIGKILL; returns how long until the node has
    /// restarted it and is ready again.
    pub(crate) fn kill9_worker(&self, node: usize) -> Duration {
        let gw = &self.nodes[node];
        let pids = gw.worker_pids();
        let pid = alive(&pids).expect("a live worker");
        let start = Instant::now();
        kill("-9", pid);
        wait_until(
            "the killed worker to be restarted",
            Duration::from_secs(90),
            || gw.worker_pids().len() > pids.len() && gw.admin_get("/readyz").0 == 200,
        );
        start.elapsed()
    }

    /// Stops the catalog (SIGTERM), starts it again on its port; returns how long from the
    /// stop until every node is ready again.
    pub(crate) fn restart_catalog(&mut self) -> Duration {
        let port = self.catalog.plain.port();
        let start = Instant::now();
        self.catalog.signal("TERM");
        let status = wait_for_exit(&mut self.catalog.child, Duration::from_secs(60));
        assert_eq!(status.code(), Some(0), "{}", self.catalog.log());
        let token = std::fs::read_to_string(self.shared.path().join("catalog-token")).unwrap();
        self.catalog = start_catalog(self.shared.path(), &token, Some(port));
        wait_until(
            "every node to be ready after the catalog restart",
            Duration::from_secs(120),
            || self.all_ready(),
        );
        start.elapsed()
    }
}

/// The first of `pids` that is a live process (not a zombie).
pub(crate) fn alive(pids: &[u32]) -> Option<u32> {
    pids.iter().copied().find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    })
}

pub(crate) fn kill(sig: &str, pid: u32) {
    assert!(Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// The quackload binary, built (its own workspace; under a minute cold, a no-op warm) into
/// `$BENCH_TARGET_DIR` (default `~/.cache/quackgate/bench-target`), like `bench/run` does.
pub(crate) fn quackload() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap();
    if let Some(path) = &*built {
        return path.clone();
    }
    let target = std::env::var_os("BENCH_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var("HOME").unwrap()).join(".cache/quackgate/bench-target")
        });
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/quackload/Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("running cargo to build bench/quackload");
    assert!(status.success(), "building bench/quackload failed");
    let path = target.join("release/quackload");
    *built = Some(path.clone());
    path
}

/// A running `quackload --soak`, its stdout echoed to stderr (so `--nocapture` shows the
/// table as it comes) and kept.
pub(crate) struct SoakRun {
    child: std::process::Child,
    out: Arc<Mutex<String>>,
    echo: Option<std::thread::JoinHandle<()>>,
    pub(crate) keys: PathBuf,
    _dir: tempfile::TempDir,
}

pub(crate) struct SoakShape {
    pub(crate) sessions: usize,
    pub(crate) secs: u64,
    pub(crate) think_ms: u64,
    pub(crate) interval_secs: u64,
    pub(crate) request_timeout_secs: u64,
    /// Error texts counted as expected besides quackload's documented ones.
    pub(crate) expect: &'static [&'static str],
}

impl SoakRun {
    pub(crate) fn start(stack: &LakeStack, shape: &SoakShape) -> SoakRun {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let mut cmd = Command::new(quackload());
        cmd.arg("--soak")
            .args(["--url", &stack.url(), "--token", &stack.token])
            .arg("--ca-file")
            .arg(&stack.ca)
            .args(["--sessions", &shape.sessions.to_string()])
            .args(["--duration", &shape.secs.to_string()])
            .args(["--think-ms", &shape.think_ms.to_string()])
            .args(["--interval", &shape.interval_secs.to_string()])
            .args(["--request-timeout", &shape.request_timeout_secs.to_string()])
            .args(shape.expect.iter().flat_map(|e| ["--expect", e]))
            .arg("--keys-out")
            .arg(&keys)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for gw in &stack.nodes {
            cmd.args(["--watch-pid", &gw.child.id().to_string()]);
        }
        let mut child = cmd.spawn().expect("starting quackload");
        let stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        let echo = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut out = sink.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
        SoakRun {
            child,
            out,
            echo: Some(echo),
            keys,
            _dir: dir,
        }
    }

    /// Waits for quackload to end (at most `deadline`); returns whether it passed, its
    /// output and its ledger.
    pub(crate) fn finish(mut self, deadline: Duration) -> (bool, String, String) {
        let status = wait_for_exit(&mut self.child, deadline);
        if let Some(echo) = self.echo.take() {
            echo.join().unwrap();
        }
        let out = self.out.lock().unwrap().clone();
        let ledger = std::fs::read_to_string(&self.keys).unwrap_or_default();
        (status.success(), out, ledger)
    }
}

impl Drop for SoakRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ledger against the lake: returns the problems found (empty: consistent) after printing
/// the counts.
pub(crate) fn check_ledger(stack: &LakeStack, ledger: &str, table: &str) -> Vec<String> {
    let (mut acked, mut unknown, mut aborted) = (HashSet::new(), HashSet::new(), HashSet::new());
    for line in ledger.lines() {
        let (tag, key) = line.split_once(' ').unwrap();
        let key: i64 = key.parse().unwrap();
        let set = match tag {
            "acked" => &mut acked,
            "unknown" => &mut unknown,
            _ => &mut aborted,
        };
        assert!(set.insert(key), "key {key} written twice by quackload");
    }
    let mut counted: HashMap<i64, u32> = HashMap::new();
    for line in stack.cli_ok(&format!("FROM r.query('SELECT k FROM {table}');")) {
        *counted.entry(line.parse().unwrap()).or_default() += 1;
    }
    let rows: u32 = counted.values().sum();
    let duplicated = counted.values().filter(|n| **n > 1).count();
    let missing = acked.iter().filter(|k| !counted.contains_key(k)).count();
    let stray = counted
        .keys()
        .filter(|k| !acked.contains(k) && !unknown.contains(k))
        .count();
    let unknown_landed = unknown.iter().filter(|k| counted.contains_key(k)).count();
    let aborted_landed = aborted.iter().filter(|k| counted.contains_key(k)).count();
    eprintln!(
        "SOAKCHECK rows in the lake {rows} (distinct keys {}), acknowledged {}, unknown {} \
         (landed {unknown_landed}), aborted {} (landed {aborted_landed}); missing acknowledged \
         {missing}, duplicated {duplicated}, never written {stray}",
        counted.len(),
        acked.len(),
        unknown.len(),
        aborted.len()
    );
    let mut problems = Vec::new();
    for (n, what) in [
        (missing, "acknowledged keys missing from the lake"),
        (duplicated, "keys in the lake more than once"),
        (stray, "keys in the lake that were never written"),
        (
            aborted_landed,
            "keys of transactions that never got to COMMIT",
        ),
    ] {
        if n > 0 {
            problems.push(format!("{n} {what}"));
        }
    }
    if acked.is_empty() {
        problems.push("nothing was acknowledged".into());
    }
    problems
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the soak on `stack`: worker SIGKILL at a third, catalog restart at two thirds.
fn soak(mut stack: LakeStack) {
    let secs = env_u64("QUACKGATE_SOAK_SECS", 30);
    let shape = SoakShape {
        sessions: env_u64("QUACKGATE_SOAK_SESSIONS", 200) as usize,
        secs,
        think_ms: env_u64("QUACKGATE_SOAK_THINK_MS", 5000),
        interval_secs: env_u64(
            "QUACKGATE_SOAK_INTERVAL_SECS",
            if secs < 180 { 10 } else { 60 },
        ),
        request_timeout_secs: 120,
        expect: &[],
    };
    // 1 (also when unset): both faults; "kill" or "catalog": only that one; 0: none.
    let faults = std::env::var("QUACKGATE_SOAK_FAULTS").unwrap_or_else(|_| "1".into());
    let (kill_worker, catalog) = (
        faults == "1" || faults == "kill",
        faults == "1" || faults == "catalog",
    );
    stack.cli_ok("FROM r.query('CREATE TABLE soak (k BIGINT, v VARCHAR)');");
    let run = SoakRun::start(&stack, &shape);
    let begin = Instant::now();
    let at = |frac: u64| begin + Duration::from_secs(secs * frac / 3);
    if kill_worker {
        std::thread::sleep(at(1).saturating_duration_since(Instant::now()));
        let t = begin.elapsed().as_secs_f64();
        let took = stack.kill9_worker(0);
        eprintln!(
            "SOAKFAULT t={t:.0}s kill -9 a worker of node 0: node ready with a new worker after {:.1} s",
            took.as_secs_f64()
        );
    }
    if catalog {
        std::thread::sleep(at(2).saturating_duration_since(Instant::now()));
        let t = begin.elapsed().as_secs_f64();
        let took = stack.restart_catalog();
        eprintln!(
            "SOAKFAULT t={t:.0}s catalog restart: every node ready again after {:.1} s",
            took.as_secs_f64()
        );
    }
    let (passed, out, ledger) = run.finish(Duration::from_secs(secs + 300));
    let problems = check_ledger(&stack, &ledger, "soak");
    let verdict = passed && problems.is_empty();
    eprintln!(
        "SOAK VERDICT: {} ({} sessions, {} s, think {} ms{}){}",
        if verdict { "PASS" } else { "FAIL" },
        shape.sessions,
        shape.secs,
        shape.think_ms,
        match (kill_worker, catalog) {
            (true, true) => ", worker kill -9 and catalog restart",
            (true, false) => ", worker kill -9",
            (false, true) => ", catalog restart",
            (false, false) => ", no faults",
        },
        if problems.is_empty() {
            String::new()
        } else {
            format!(": {}", problems.join("; "))
        }
    );
    assert!(passed, "quackload's soak verdict is a failure:\n{out}");
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn one_node() {
    soak(LakeStack::one_node(2));
}

#[test]
fn cluster() {
    soak(LakeStack::cluster());
}
