//! The harness: real `quackgate` processes on ephemeral loopback ports, and real DuckDB clients
//! (the 1.5.5 CLI, Python duckdb, adbc-driver-quack) from the toolchain `scripts/fetch-duckdb`
//! installs. A missing toolchain fails the test with the command that installs it.

#![allow(dead_code)]

pub mod gate;
pub mod topology;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Where the DuckDB CLI, extensions and Python venv are.
pub struct Toolchain {
    pub root: PathBuf,
}

impl Toolchain {
    pub fn get() -> Toolchain {
        let root = std::env::var_os("QUACKGATE_DUCKDB_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/duckdb-1.5.5"));
        for needed in [
            "bin/duckdb",
            "venv/bin/python",
            "ext/v1.5.5/linux_amd64/quack.duckdb_extension",
        ] {
            assert!(
                root.join(needed).exists(),
                "{} is missing: run scripts/fetch-duckdb (or set QUACKGATE_DUCKDB_HOME)",
                root.join(needed).display()
            );
        }
        Toolchain { root }
    }

    pub fn cli(&self) -> PathBuf {
        self.root.join("bin/duckdb")
    }

    pub fn python(&self) -> PathBuf {
        self.root.join("venv/bin/python")
    }

    pub fn ext_dir(&self) -> PathBuf {
        self.root.join("ext")
    }
}

/// Waits for `cond` up to `deadline`, polling; panics with `what` when it never holds.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Options for a test gateway.
#[derive(Clone)]
pub struct GatewayOptions {
    pub workers: usize,
    pub rust_log: Option<&'static str>,
    /// TOML lines added to the `[workers]` section.
    pub extra_workers_toml: String,
    /// TOML appended after everything else (whole sections).
    pub extra_toml: String,
    /// TOML lines added to the `[gateway]` section.
    pub extra_gateway_toml: String,
    pub extension_dir: Option<PathBuf>,
    /// `serve` or `catalog`.
    pub subcommand: &'static str,
    /// The accepted client token; a random one when `None`.
    pub token: Option<String>,
    /// Extra command-line arguments (e.g. `--plain-listen 127.0.0.1:PORT`).
    pub args: Vec<String>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            workers: 2,
            rust_log: None,
            extra_workers_toml: String::new(),
            extra_toml: String::new(),
            extra_gateway_toml: String::new(),
            extension_dir: None,
            subcommand: "serve",
            token: None,
            args: Vec::new(),
        }
    }
}

/// A running `quackgate serve` with its own temp dir, CA, token and ports.
pub struct Gateway {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub https: SocketAddr,
    pub plain: SocketAddr,
    pub admin: SocketAddr,
    /// The peer listener, for nodes of a cluster.
    pub peer: Option<SocketAddr>,
    /// The health listener, when `gateway.health_listen` is set.
    pub health: Option<SocketAddr>,
    pub token: String,
    pub ca: PathBuf,
    pub log: Arc<Mutex<String>>,
    pub toolchain: Toolchain,
}

/// Writes a config for a test gateway into `dir`; returns (config path, token, CA path).
pub fn write_config(
    dir: &Path,
    opts: &GatewayOptions,
    toolchain: &Toolchain,
) -> (PathBuf, String, PathBuf) {
    let tls = quackgate::dev_init::write_tls(dir, &[]).expect("test CA");
    let token = opts
        .token
        .clone()
        .unwrap_or_else(|| format!("tok-{}", random_hex()));
    let ext = opts
        .extension_dir
        .clone()
        .unwrap_or_else(|| toolchain.ext_dir());
    let config = format!(
        r#"[gateway]
listen = "127.0.0.1:0"
plain_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_secs = 60
{extra_gateway}

[tls]
cert = "{cert}"
key = "{key}"

[[auth.static_tokens]]
name = "tester"
sha256 = "{hash}"

[workers]
count = {workers}
extension_dir = "{ext}"
threads = 2
health_interval_ms = 200
{extra}
{extra_toml}
"#,
        cert = tls.cert.display(),
        key = tls.key.display(),
        hash = quackgate::auth::hash_token(&token),
        workers = opts.workers,
        ext = ext.display(),
        extra = opts.extra_workers_toml,
        extra_toml = opts.extra_toml,
        extra_gateway = opts.extra_gateway_toml,
    );
    let path = dir.join("quackgate.toml");
    std::fs::write(&path, config).unwrap();
    (path, token, tls.ca_cert)
}

/// Spawns `quackgate serve` with stdout piped (for the READY line) and stderr captured.
pub fn spawn_gateway(config: &Path, rust_log: Option<&str>) -> (Child, Arc<Mutex<String>>) {
    spawn_role("serve", config, rust_log, &[])
}

/// Spawns `quackgate <subcommand> --config <config> <args>`.
pub fn spawn_role(
    subcommand: &str,
    config: &Path,
    rust_log: Option<&str>,
    args: &[String],
) -> (Child, Arc<Mutex<String>>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quackgate"));
    cmd.arg(subcommand)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG");
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let mut child = cmd.spawn().expect("spawning quackgate");
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (child, log)
}

impl Gateway {
    pub fn start() -> Gateway {
        Gateway::start_with(GatewayOptions::default())
    }

    pub fn start_with(opts: GatewayOptions) -> Gateway {
        let toolchain = Toolchain::get();
        let dir = tempfile::tempdir().unwrap();
        let (config, token, ca) = write_config(dir.path(), &opts, &toolchain);
        let (mut child, log) = spawn_role(opts.subcommand, &config, opts.rust_log, &opts.args);
        let line = ready_line(&mut child, &log, "gateway");
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("no {key}= in {line}"))
                .parse()
                .unwrap()
        };
        let optional = |key: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .map(|a| a.parse().unwrap())
        };
        let (peer, health) = (optional("peer"), optional("health"));
        Gateway {
            peer,
            health,
            https: addr("https"),
            plain: addr("plain"),
            admin: addr("admin"),
            child,
            dir,
            token,
            ca,
            log,
            toolchain,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SQL that makes the CLI attach through HTTPS as `r` with `token`.
    pub fn attach_sql(&self, token: &str) -> String {
        https_attach_sql(&self.toolchain, self.https.port(), &self.ca, token)
    }

    /// Runs `sql` in the DuckDB CLI after attaching with the right token. CSV, no header.
    pub fn cli(&self, sql: &str) -> Output {
        self.cli_with_token(&self.token.clone(), sql)
    }

    pub fn cli_with_token(&self, token: &str, sql: &str) -> Output {
        run_cli(
            &self.toolchain,
            &format!(
                ".output /dev/null\n{}.output\n{sql}",
                self.attach_sql(token)
            ),
        )
    }

    /// Runs the CLI and returns stdout lines, failing the test with stderr when it fails.
    pub fn cli_ok(&self, sql: &str) -> Vec<String> {
        let out = self.cli(sql);
        assert!(
            out.status.success(),
            "duckdb CLI failed: {}\nstdout: {}\ngateway log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.log()
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// The value of the metric whose exposition line starts with `name` (labels included).
    pub fn metric(&self, name: &str) -> Option<u64> {
        metric_of(&self.admin_get("/metrics").1, name)
    }

    /// The pids of this gateway's worker processes, from its log.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.log()
            .lines()
            .filter(|l| l.contains("worker serving"))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix("pid="))
                    .and_then(|p| p.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
            })
            .collect()
    }

    /// Runs a Python script in the toolchain's venv and returns its stdout lines, failing the
    /// test with its stderr and this gateway's log when it fails.
    pub fn python_lines(&self, script: &str, env: &[(&str, &str)]) -> Vec<String> {
        let out = run_python(&self.toolchain, script, env);
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Kills this gateway's only worker process with SIGKILL.
    pub fn kill_worker(&self) {
        let pids = self.worker_pids();
        assert_eq!(pids.len(), 1, "log:\n{}", self.log());
        assert!(Command::new("kill")
            .args(["-9", &pids[0].to_string()])
            .status()
            .unwrap()
            .success());
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- gateway log ----\n{}", self.log());
        }
    }
}

/// SQL that makes the CLI attach `quack:localhost:<port>` over HTTPS as `r` with `token`,
/// trusting `ca`.
pub fn https_attach_sql(toolchain: &Toolchain, port: u16, ca: &Path, token: &str) -> String {
    format!(
        "SET extension_directory='{ext}';\nSET autoinstall_known_extensions=false;\nLOAD quack;\n\
         SET ca_cert_file='{ca}';\n\
         CREATE SECRET (TYPE quack, TOKEN '{token}', SCOPE 'quack:localhost:{port}');\n\
         ATTACH 'quack:localhost:{port}' AS r (DISABLE_SSL false);\n",
        ext = toolchain.ext_dir().display(),
        ca = ca.display(),
    )
}

pub fn run_cli(toolchain: &Toolchain, script: &str) -> Output {
    let mut child = Command::new(toolchain.cli())
        .args(["-csv", "-noheader", "-bail"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the duckdb CLI");
    // Under load a slow query would draw a progress bar into the CSV output.
    let script = format!("SET enable_progress_bar = false;\n{script}");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs a Python script in the toolchain's venv with `env`.
pub fn run_python(toolchain: &Toolchain, script: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(toolchain.python());
    cmd.arg("-c").arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawning python")
}

pub fn random_hex() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).unwrap();
    hex::encode(bytes)
}

/// A plain HTTP GET on loopback; returns status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http("GET", addr, path, Bytes::new());
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A raw HTTP request on loopback; returns status, headers and body.
pub fn http(
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: Bytes,
) -> (u16, http::HeaderMap, Bytes) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/octet-stream")
            .body(Full::new(body))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    })
}

/// POSTs a raw Quack message to the gateway's plain listener.
pub fn quack_post(addr: SocketAddr, body: Vec<u8>) -> (u16, Bytes) {
    let (status, _, body) = http("POST", addr, "/quack", Bytes::from(body));
    (status, body)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/quack")
            .join(name),
    )
    .unwrap()
}

/// A CONNECTION_REQUEST (the CLI's captured one) carrying `token`.
pub fn connection_request(token: &str) -> Vec<u8> {
    use quack_codec as codec;
    let buf = fixture("connection_request.bin");
    let header = codec::decode_header(&buf).unwrap();
    let req = codec::decode_connection_request(&buf, &header).unwrap();
    codec::replace_token(&buf, &header, &req, token.as_bytes()).to_vec()
}

/// A PREPARE of `SELECT 42` (the captured one) carrying connection id `id`.
pub fn prepare_with_id(id: &[u8]) -> Vec<u8> {
    use quack_codec as codec;
    let buf = fixture("prepare_request_select42.bin");
    let header = codec::decode_header(&buf).unwrap();
    let mut out = codec::rewrite_header(&buf, &header, id).to_vec();
    out.extend_from_slice(&buf[header.len..]);
    out
}

/// POSTs `message` to `/quack` on a new connection in two parts, running `between` after its
/// first `cut` bytes; returns the raw HTTP answer (the gateway may answer and close before the
/// second part).
pub fn post_in_two_parts(
    addr: SocketAddr,
    message: &[u8],
    cut: usize,
    between: impl FnOnce(),
) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "POST /quack HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        message.len()
    )
    .unwrap();
    s.write_all(&message[..cut]).unwrap();
    between();
    let _ = s.write_all(&message[cut..]);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

/// Opens a session with a raw CONNECTION_REQUEST on the plain listener; returns its id.
/// An APPEND to `table` in session `id` of `rows` rows of one column: `logical_type` is the
/// column's LogicalType object and `vector` its vector, each with its end.
pub fn append_of_one_column(
    id: &[u8],
    query_id: u64,
    table: &str,
    rows: u8,
    logical_type: &[u8],
    vector: &[u8],
) -> Vec<u8> {
    use quack_codec::{append_request, AppendColumn};
    let template = append_request(
        id,
        query_id,
        "main",
        table,
        &[AppendColumn::Integer(vec![])],
    );
    let chunk = template
        .windows(4)
        .position(|w| w == [0x2c, 0x01, 0x64, 0x00])
        .expect("the chunk")
        + 2;
    let mut m = template[..chunk].to_vec();
    m.extend_from_slice(&[0x64, 0, rows, 0x65, 0, 1]);
    m.extend_from_slice(logical_type);
    m.extend_from_slice(&[0x66, 0, 1]);
    m.extend_from_slice(vector);
    m.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    m
}

pub fn open_session(gw: &Gateway) -> Vec<u8> {
    open_session_as(gw, &gw.token)
}

/// [`open_session`] with `token`.
pub fn open_session_as(gw: &Gateway, token: &str) -> Vec<u8> {
    use quack_codec as codec;
    let (status, body) = quack_post(gw.plain, connection_request(token));
    assert_eq!(status, 200);
    let header = codec::decode_header(&body).unwrap();
    assert_eq!(
        header.msg_type, 2,
        "expected CONNECTION_RESPONSE, got {body:?}"
    );
    header.connection_id(&body).unwrap().to_vec()
}

/// The message type of a Quack body.
pub fn msg_type(body: &[u8]) -> u64 {
    quack_codec::decode_header(body).unwrap().msg_type
}

/// Waits for the process to exit, up to `deadline`.
pub fn wait_for_exit(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let mut status = None;
    wait_until("the process to exit", deadline, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// Python that opens DuckDB as `con` and attaches `quack:localhost:<port>` over HTTPS as `r`.
pub fn python_attach(toolchain: &Toolchain, ca: &Path, token: &str, port: u16) -> String {
    format!(
        r#"import duckdb
con = duckdb.connect(config={{"extension_directory": "{ext}", "autoinstall_known_extensions": "false"}})
con.execute("LOAD quack")
con.execute("SET enable_progress_bar=false")  # it would print to stdout under load
con.execute("SET ca_cert_file='{ca}'")
con.execute("CREATE SECRET (TYPE quack, TOKEN '{token}', SCOPE 'quack:localhost:{port}')")
con.execute("ATTACH 'quack:localhost:{port}' AS r (DISABLE_SSL false)")
"#,
        ext = toolchain.ext_dir().display(),
        ca = ca.display(),
    )
}

/// Waits (up to 120 s) for `child`'s `QUACKGATE READY` line on stdout; kills it and panics with
/// its log when none comes.
pub fn ready_line(child: &mut Child, log: &Arc<Mutex<String>>, what: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("QUACKGATE READY") {
                let _ = tx.send(line);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let log = log.lock().map(|l| l.clone()).unwrap_or_default();
            panic!("{what} never printed its READY line; log:\n{log}");
        }
    }
}

/// Any `quackgate <role>` process with a config written by the test, and the addresses its
/// READY line names (`https`, `plain`, `peer`, `admin`).
pub struct RoleProcess {
    pub child: Child,
    pub addrs: std::collections::BTreeMap<String, SocketAddr>,
    pub log: Arc<Mutex<String>>,
}

impl RoleProcess {
    pub fn start(subcommand: &str, config: &Path, rust_log: Option<&str>) -> RoleProcess {
        let (mut child, log) = spawn_role(subcommand, config, rust_log, &[]);
        let line = ready_line(&mut child, &log, subcommand);
        let addrs = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect();
        RoleProcess { child, addrs, log }
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("no {name}= in the READY line: {:?}", self.addrs))
    }

    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.addr("admin"), path)
    }

    /// As [`Gateway::metric`].
    pub fn metric(&self, name: &str) -> Option<u64> {
        metric_of(&self.admin_get("/metrics").1, name)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// The value of the metric whose exposition line in `metrics` starts with `name`.
fn metric_of(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// CPU time process `pid` has used, in clock ticks (user and system).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(end) = stat.rfind(')') else {
        return 0;
    };
    let fields: Vec<&str> = stat[end + 1..].split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- process log ----\n{}", self.log());
        }
    }
}

/// SQL that makes the CLI attach `quack:localhost:<port>` over plain HTTP as `r`.
pub fn plain_attach_sql(toolchain: &Toolchain, port: u16, token: &str) -> String {
    format!(
        "SET extension_directory='{ext}';\nSET autoinstall_known_extensions=false;\nLOAD quack;\n\
         CREATE SECRET (TYPE quack, TOKEN '{token}', SCOPE 'quack:localhost:{port}');\n\
         ATTACH 'quack:localhost:{port}' AS r (DISABLE_SSL true);\n",
        ext = toolchain.ext_dir().display(),
    )
}
