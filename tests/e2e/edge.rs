//! The edge tier (issue 12) in the shape it has on Azure Container Apps, rebuilt with Linux
//! network namespaces: every app has its own address and the same ports.
//!
//! ```text
//!  DuckDB clients (root namespace)
//!        │ TLS
//!  front nginx 127.0.0.1:<port>  round robin, no stickiness, adds X-Forwarded-For
//!        │
//!   ┌────┴─────┐   10.77.<s>.0/24 bridge (root namespace is .1, the edges' trusted proxy)
//!  edge e1    edge e2      `quackgate edge`, each in its namespace, :8080 plain, :8443 TLS, :9090 admin
//!        │ TLS, SNI and Host nX.internal (peers file: nX = "nX.internal:443")
//!  ┌─────┼─────────┬─────────┐
//!  n1    n2        n3       (n4)  each namespace: nginx ingress <ip>:443 (TLS, HTTP/1.1,
//!                                 keep-alive) → `quackgate node` peer listener 127.0.0.1:7000
//!        │ TLS
//!  catalog  `quackgate catalog` on catalog.internal:8443; DuckLake data in a shared folder
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::topology::{
    https_request, in_ns, run_cli_bounded, try_get, wait_for, write_file, Driven, Net, Nginx,
    NginxSpec, Ns, Proc,
};
use crate::support::{https_attach_sql, random_hex, Toolchain};

/// Ports every app uses inside its own namespace, as on ACA.
const EDGE_PLAIN_PORT: u16 = 8080;
const EDGE_TLS_PORT: u16 = 8443;
const ADMIN_PORT: u16 = 9090;
const INGRESS_PORT: u16 = 443;
const PEER_PORT: u16 = 7000;
const CATALOG_PORT: u16 = 8443;
/// The front balancer talks to the edges' plain listeners (as ACA's ingress talks plain HTTP
/// to an app); `true` would use their TLS listeners instead.
const FRONT_TO_EDGE_TLS: bool = false;
/// A node's nginx ingress times a request out after this (ACA's Envoy: 240 s).
const INGRESS_TIMEOUT_SECS: u32 = 240;

const CATALOG_HOST: u8 = 5;
const EDGE_HOSTS: [u8; 2] = [11, 12];
const NODE_HOST_BASE: u8 = 20;
/// Nodes started with the topology; n4 may be added later by a test.
const NODES: usize = 3;
const MAX_NODES: usize = 4;

const FETCH_ROWS: u64 = 250_000;
/// Between the edges' starts: half the peers file's re-read interval (2 s), the most two
/// timers of that period can be out of phase.
const EDGE_STAGGER: Duration = Duration::from_millis(1000);

fn fetch_sum() -> u64 {
    FETCH_ROWS * (FETCH_ROWS - 1) / 2
}

struct EdgeApp {
    id: String,
    proc: Proc,
    ns: Ns,
    admin: SocketAddr,
}

struct NodeApp {
    id: String,
    proc: Proc,
    _ingress: Nginx,
    ns: Ns,
    admin: SocketAddr,
}

/// One state line of an edge's `/status`: `node <id> <host:port> <state> sessions=<n> ...`.
#[derive(Debug, Clone)]
struct NodeLine {
    addr: String,
    state: String,
    sessions: u64,
}

/// The whole stand-in; dropped in field order: clients' front first, the network last.
struct Topology {
    front: Option<Nginx>,
    edges: Vec<EdgeApp>,
    nodes: Vec<NodeApp>,
    _catalog: Proc,
    net: Net,
    shared: tempfile::TempDir,
    toolchain: Toolchain,
    token: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn node_id(n: usize) -> String {
    format!("n{n}")
}

fn node_name(n: usize) -> String {
    format!("n{n}.internal")
}

impl Topology {
    fn start() -> Topology {
        let started = Instant::now();
        let toolchain = Toolchain::get();
        let net = Net::create();
        let shared = tempfile::tempdir().unwrap();
        let s = shared.path();
        let mut names: Vec<String> = (1..=MAX_NODES).map(node_name).collect();
        names.push("catalog.internal".into());
        let tls = quackgate::dev_init::write_tls(s, &names).expect("test CA");
        let token = format!("tok-{}", random_hex());
        let catalog_token = format!("cat-{}", random_hex());
        write_file(s, "catalog-token", &catalog_token);
        write_file(
            s,
            "id-secret",
            &(random_hex() + &random_hex() + &random_hex()[..16]),
        );
        write_file(s, "peers.toml", &peers_toml(NODES));
        std::fs::create_dir_all(s.join("data")).unwrap();

        // The catalog app.
        let cat_ns = net.add_ns("cat", CATALOG_HOST, "");
        let cat_dir = s.join("catalog");
        std::fs::create_dir_all(&cat_dir).unwrap();
        let cat_config = write_file(
            &cat_dir,
            "catalog.toml",
            &format!(
                r#"[gateway]
listen = "{ip}:{CATALOG_PORT}"
admin_listen = "{ip}:{ADMIN_PORT}"
shutdown_grace_secs = 5

[tls]
cert = "{cert}"
key = "{key}"

[[auth.static_tokens]]
name = "lake"
sha256 = "{hash}"

[workers]
count = 1
extension_dir = "{ext}"
threads = 2
health_interval_ms = 200

[catalog]
file = "{file}"
"#,
                ip = cat_ns.ip,
                cert = tls.cert.display(),
                key = tls.key.display(),
                hash = quackgate::auth::hash_token(&catalog_token),
                ext = toolchain.ext_dir().display(),
                file = cat_dir.join("catalog.duckdb").display(),
            ),
        );
        let mut catalog = spawn_quackgate("catalog", &cat_ns, "catalog", &cat_config);
        catalog.wait_ready(Duration::from_secs(60));

        let mut topo = Topology {
            front: None,
            edges: Vec::new(),
            nodes: Vec::new(),
            _catalog: catalog,
            net,
            shared,
            toolchain,
            token,
            ca: tls.ca_cert.clone(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
        };
        let ns: Vec<Ns> = (1..=NODES).map(|n| topo.node_ns(n)).collect();
        let mut procs: Vec<(Proc, Nginx)> = ns
            .iter()
            .enumerate()
            .map(|(i, ns)| topo.spawn_node(i + 1, ns))
            .collect();
        for (i, (proc, ns)) in procs.drain(..).zip(ns).enumerate() {
            topo.finish_node(i + 1, proc, ns);
        }

        // The edges.
        let hosts: String = (1..=MAX_NODES)
            .map(|n| {
                format!(
                    "{} {}\n",
                    topo.net.ip(NODE_HOST_BASE + n as u8),
                    node_name(n)
                )
            })
            .collect();
        // One after the other, a second apart, as replicas of an app start: their timers
        // (peers file, load polls) then run out of phase, as they would in production, and a
        // membership change reaches them at different moments.
        for (i, host) in EDGE_HOSTS.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(EDGE_STAGGER);
            }
            let id = format!("edge-{}", (b'a' + i as u8) as char);
            let ns = topo.net.add_ns(&format!("e{}", i + 1), *host, &hosts);
            let config = topo.edge_config(&id, &ns);
            let mut proc = spawn_quackgate(&id, &ns, "edge", &config);
            let ready = proc.wait_ready(Duration::from_secs(60));
            let admin = ready_addr(&ready, "admin", &ns);
            topo.edges.push(EdgeApp {
                id,
                proc,
                ns,
                admin,
            });
        }

        // The front balancer, in the root namespace.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let upstreams = topo
            .edges
            .iter()
            .map(|e| {
                let port = if FRONT_TO_EDGE_TLS {
                    EDGE_TLS_PORT
                } else {
                    EDGE_PLAIN_PORT
                };
                format!("{}:{port}", e.ns.ip)
            })
            .collect();
        let ca = topo.ca.clone();
        topo.front = Some(Nginx::start(NginxSpec {
            name: "front nginx",
            ns: None,
            listen_tls: format!("127.0.0.1:{port}"),
            cert: &topo.cert,
            key: &topo.key,
            upstreams,
            upstream_tls: FRONT_TO_EDGE_TLS.then_some((ca.as_path(), "localhost")),
            keepalive: false,
            pass_host: false,
            read_timeout_secs: 600,
            extra_servers: String::new(),
        }));
        let front = topo.front.as_ref().unwrap();
        topo.net
            .note_root_process(front.proc.pid(), &front.dir.path().display().to_string());
        for n in 1..=NODES {
            topo.wait_state_everywhere(&node_id(n), "ready", Duration::from_secs(30));
        }
        for e in &topo.edges {
            for (id, line) in topo.edge_status(e).unwrap_or_default() {
                assert!(
                    line.addr.ends_with(".internal:443"),
                    "{}: node {id} at {}",
                    e.id,
                    line.addr
                );
            }
        }
        eprintln!(
            "edge topology up in {:.1} s (net {}, subnet 10.77.{}.0/24)",
            started.elapsed().as_secs_f64(),
            topo.net.tag,
            topo.net.subnet
        );
        topo
    }

    fn node_ns(&self, n: usize) -> Ns {
        let catalog = format!("{} catalog.internal\n", self.net.ip(CATALOG_HOST));
        self.net
            .add_ns(&format!("n{n}"), NODE_HOST_BASE + n as u8, &catalog)
    }

    /// Starts node `n`'s ingress, then the node; `finish_node` waits for it.
    fn spawn_node(&self, n: usize, ns: &Ns) -> (Proc, Nginx) {
        let s = self.shared.path();
        let ingress = Nginx::start(NginxSpec {
            name: &format!("{} ingress", node_id(n)),
            ns: Some(ns),
            listen_tls: format!("{}:{INGRESS_PORT}", ns.ip),
            cert: &self.cert,
            key: &self.key,
            upstreams: vec![format!("127.0.0.1:{PEER_PORT}")],
            upstream_tls: None,
            keepalive: true,
            pass_host: true,
            read_timeout_secs: INGRESS_TIMEOUT_SECS,
            extra_servers: String::new(),
        });
        let dir = s.join(node_id(n));
        std::fs::create_dir_all(&dir).unwrap();
        let config = write_file(
            &dir,
            "node.toml",
            &format!(
                r#"[gateway]
node_id = "{id}"
admin_listen = "{ip}:{ADMIN_PORT}"
id_secret_file = "{secret}"
shutdown_grace_secs = 60

[workers]
count = 2
extension_dir = "{ext}"
threads = 2
health_interval_ms = 200

[workers.ducklake]
catalog = "catalog.internal:{CATALOG_PORT}"
catalog_ca_file = "{ca}"
catalog_token_file = "{cat_token}"
data_path = "{data}/"

[cluster]
peer_listen = "127.0.0.1:{PEER_PORT}"
"#,
                id = node_id(n),
                ip = ns.ip,
                secret = s.join("id-secret").display(),
                ext = self.toolchain.ext_dir().display(),
                cat_token = s.join("catalog-token").display(),
                ca = self.ca.display(),
                data = s.join("data").display(),
            ),
        );
        (spawn_quackgate(&node_id(n), ns, "node", &config), ingress)
    }

    /// Waits for node `n`'s READY line.
    fn finish_node(&mut self, n: usize, (mut proc, ingress): (Proc, Nginx), ns: Ns) {
        let ready = proc.wait_ready(Duration::from_secs(90));
        let admin = ready_addr(&ready, "admin", &ns);
        self.nodes.push(NodeApp {
            id: node_id(n),
            proc,
            _ingress: ingress,
            ns,
            admin,
        });
    }

    /// Deploys node `n` (its namespace, process and ingress); the edges do not know it yet.
    fn add_node(&mut self, n: usize) {
        let ns = self.node_ns(n);
        let proc = self.spawn_node(n, &ns);
        self.finish_node(n, proc, ns);
    }

    fn edge_config(&self, id: &str, ns: &Ns) -> PathBuf {
        let s = self.shared.path();
        let dir = s.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        write_file(
            &dir,
            "edge.toml",
            &format!(
                r#"[gateway]
node_id = "{id}"
listen = "{ip}:{EDGE_TLS_PORT}"
plain_listen = "{ip}:{EDGE_PLAIN_PORT}"
admin_listen = "{ip}:{ADMIN_PORT}"
id_secret_file = "{secret}"
trusted_proxies = ["{front}/32"]
shutdown_grace_secs = 10

[tls]
cert = "{cert}"
key = "{key}"

[[auth.static_tokens]]
name = "tester"
sha256 = "{hash}"

[cluster]
peers_file = "{peers}"
peer_tls = true
peer_ca_file = "{ca}"
"#,
                ip = ns.ip,
                secret = s.join("id-secret").display(),
                front = self.net.gateway_ip(),
                cert = self.cert.display(),
                key = self.key.display(),
                hash = quackgate::auth::hash_token(&self.token),
                peers = s.join("peers.toml").display(),
                ca = self.ca.display(),
            ),
        )
    }

    fn front_port(&self) -> u16 {
        self.front
            .as_ref()
            .unwrap()
            .listen
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// SQL that attaches `r` through the front balancer, its output hidden.
    fn attach_sql(&self) -> String {
        format!(
            ".output /dev/null\n{}.output\n",
            https_attach_sql(&self.toolchain, self.front_port(), &self.ca, &self.token)
        )
    }

    /// One CLI session through the front: `sql` after the ATTACH.
    fn cli(&self, sql: &str) -> std::process::Output {
        run_cli_bounded(
            &self.toolchain,
            None,
            &format!("{}{sql}", self.attach_sql()),
            180,
        )
    }

    /// One new session's worker id (`<node>.<worker>`), failing the test on any error.
    fn new_session_worker(&self) -> String {
        let out = self.cli("FROM r.query('SELECT quackgate.worker_id()');\n");
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !stdout.is_empty(),
            "a new session failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The node lines of an edge's `/status`, or `None` when the edge does not answer.
    fn edge_status(&self, edge: &EdgeApp) -> Option<BTreeMap<String, NodeLine>> {
        let (status, body) = try_get(edge.admin, "/status")?;
        if status != 200 {
            return None;
        }
        Some(parse_status(&body))
    }

    fn edge_status_text(&self) -> String {
        self.edges
            .iter()
            .filter(|e| !e.proc.gone)
            .map(|e| {
                format!(
                    "{}:\n{}",
                    e.id,
                    try_get(e.admin, "/status")
                        .map(|(_, b)| b)
                        .unwrap_or_else(|| "(no answer)".into())
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until every living edge reports `node` in `state`; returns how long it took.
    fn wait_state_everywhere(&self, node: &str, state: &str, deadline: Duration) -> Duration {
        self.wait_states_everywhere(node, &[state], deadline)
    }

    /// Waits until every living edge reports `node` in one of `states`.
    fn wait_states_everywhere(&self, node: &str, states: &[&str], deadline: Duration) -> Duration {
        let start = Instant::now();
        let ok = || {
            self.edges.iter().filter(|e| !e.proc.gone).all(|e| {
                self.edge_status(e)
                    .and_then(|nodes| nodes.get(node).cloned())
                    .is_some_and(|l| states.contains(&l.state.as_str()))
            })
        };
        while !ok() {
            assert!(
                start.elapsed() < deadline,
                "edges do not report {node} {states:?} after {deadline:?}:\n{}",
                self.edge_status_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        start.elapsed()
    }

    /// A Python duckdb client holding one session through the front, driven line by line:
    /// its first line is the answer to its set-up (temp table, variable, first probe).
    fn held_session(&self, name: &str) -> Held {
        let script = write_file(self.shared.path(), "held.py", HELD_SESSION_PY);
        let mut d = Driven::spawn(
            name,
            &self.toolchain.python(),
            &[script.display().to_string()],
            &[
                ("QG_PORT", self.front_port().to_string()),
                ("QG_TOKEN", self.token.clone()),
                ("QG_CA", self.ca.display().to_string()),
                ("QG_EXT", self.toolchain.ext_dir().display().to_string()),
                ("QG_ROWS", FETCH_ROWS.to_string()),
            ],
        );
        let first = d.line(Duration::from_secs(120));
        assert!(
            first.starts_with("ok "),
            "{name}: set-up failed: {first}\n{}",
            d.proc.log()
        );
        let first = first["ok ".len()..].to_string();
        Held {
            worker: worker_of(&first),
            first,
            d,
        }
    }

    fn node(&self, id: &str) -> &NodeApp {
        self.nodes.iter().find(|n| n.id == id).unwrap()
    }

    fn node_mut(&mut self, id: &str) -> &mut NodeApp {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    /// Warnings and errors in every quackgate log, for the report.
    fn problems_in_logs(&self) -> Vec<String> {
        let mut out = Vec::new();
        let procs = self
            .edges
            .iter()
            .map(|e| &e.proc)
            .chain(self.nodes.iter().map(|n| &n.proc));
        for p in procs {
            for line in p.log().lines() {
                if line.contains(" WARN ") || line.contains(" ERROR ") {
                    out.push(format!("{}: {line}", p.name));
                }
            }
        }
        out
    }
}

/// A held session and what its set-up answered.
struct Held {
    d: Driven,
    /// `<worker>,42,7`.
    first: String,
    worker: String,
}

impl Held {
    fn node(&self) -> String {
        node_of(&self.worker)
    }
}

/// Fields of a held session's first answer: worker, variable, temp table sum.
fn worker_of(answer: &str) -> String {
    answer.split(',').next().unwrap().to_string()
}

fn node_of(worker: &str) -> String {
    worker.split('.').next().unwrap().to_string()
}

fn peers_toml(nodes: usize) -> String {
    (1..=nodes)
        .map(|n| format!("{} = \"{}:{INGRESS_PORT}\"\n", node_id(n), node_name(n)))
        .collect()
}

fn parse_status(body: &str) -> BTreeMap<String, NodeLine> {
    body.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            if f.next()? != "node" {
                return None;
            }
            let id = f.next()?.to_string();
            let addr = f.next()?.to_string();
            // The edge's own line, `node <self> draining=...`, is not a node's.
            if addr.contains('=') {
                return None;
            }
            let state = f.next()?.to_string();
            let sessions = f
                .find_map(|kv| kv.strip_prefix("sessions="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Some((
                id,
                NodeLine {
                    addr,
                    state,
                    sessions,
                },
            ))
        })
        .collect()
}

fn ready_addr(ready: &BTreeMap<String, String>, key: &str, ns: &Ns) -> SocketAddr {
    let addr: SocketAddr = ready
        .get(key)
        .unwrap_or_else(|| panic!("no {key}= in the READY line {ready:?}"))
        .parse()
        .unwrap();
    assert_eq!(
        addr.ip(),
        std::net::IpAddr::V4(ns.ip),
        "{key} listens elsewhere"
    );
    addr
}

fn spawn_quackgate(name: &str, ns: &Ns, role: &str, config: &Path) -> Proc {
    let mut cmd = in_ns(Some(ns), Path::new(env!("CARGO_BIN_EXE_quackgate")));
    cmd.arg(role).arg("--config").arg(config);
    Proc::spawn(name, cmd)
}

/// A held Python session: `probe` answers `<worker>,<variable>,<temp table sum>`, `work` runs a
/// server transaction on the temp table and a large FETCH, then probes. Errors answer
/// `error <message>` and the session carries on.
const HELD_SESSION_PY: &str = r#"
import duckdb, os, sys
port, token, ca, ext, rows = (os.environ[k] for k in ("QG_PORT", "QG_TOKEN", "QG_CA", "QG_EXT", "QG_ROWS"))
con = duckdb.connect(config={"extension_directory": ext, "autoinstall_known_extensions": "false"})
con.execute("LOAD quack")
con.execute("SET enable_progress_bar=false")
con.execute(f"SET ca_cert_file='{ca}'")
con.execute(f"CREATE SECRET (TYPE quack, TOKEN '{token}', SCOPE 'quack:localhost:{port}')")
con.execute(f"ATTACH 'quack:localhost:{port}' AS r (DISABLE_SSL false)")

def one(sql):
    return con.execute(sql).fetchall()

def probe():
    row = one("FROM r.query('SELECT quackgate.worker_id(), getvariable(''v''), (SELECT sum(x) FROM tt)')")[0]
    return ",".join(str(c) for c in row)

def setup():
    one("FROM r.query('CREATE TEMP TABLE tt AS SELECT 7 AS x')")
    one("FROM r.query('SET VARIABLE v = 42')")
    return probe()

def work():
    one("FROM r.query('BEGIN TRANSACTION')")
    one("FROM r.query('INSERT INTO tt VALUES (1)')")
    one("FROM r.query('INSERT INTO tt VALUES (2)')")
    one("FROM r.query('COMMIT')")
    n, s = one(f"SELECT count(*), sum(range) FROM r.query('SELECT range FROM range({rows})')")[0]
    return f"{probe()} rows={n} sum={s}"

def answer(f):
    try:
        print("ok", f(), flush=True)
    except Exception as e:
        print("error", str(e).replace("\n", " "), flush=True)

answer(setup)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "probe":
        answer(probe)
    elif cmd == "work":
        answer(work)
    else:
        print("error unknown command", cmd, flush=True)
"#;

/// Runs a Python script in the toolchain's venv, killed after 120 s; its stdout lines.
fn python_bounded(toolchain: &Toolchain, script: &str, env: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("120").arg(toolchain.python()).arg("-c").arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawning python");
    assert!(
        out.status.success(),
        "python failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The answer a held session gives to `probe` when its state is intact.
fn probe_ok(h: &Held, tt_sum: u64) -> String {
    format!("ok {},42,{tt_sum}", h.worker)
}

/// The answer a held session gives to `work` when all went well.
fn work_ok(h: &Held, tt_sum: u64) -> String {
    format!(
        "ok {},42,{tt_sum} rows={FETCH_ROWS} sum={}",
        h.worker,
        fetch_sum()
    )
}

fn elapsed(start: Instant) -> String {
    format!("{:.1} s", start.elapsed().as_secs_f64())
}

#[test]
fn sixteen_cli_sessions_python_and_adbc_through_two_edges() {
    let topo = Topology::start();
    let started = Instant::now();
    let setup = topo.cli("FROM r.query('CREATE TABLE events (k INTEGER, s VARCHAR)');\n");
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );

    const SESSIONS: usize = 16;
    let probe = "SELECT 'probe', * FROM r.query('SELECT quackgate.worker_id(), getvariable(''v''), (SELECT sum(x) FROM tt)');\n";
    let outs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..SESSIONS)
            .map(|k| {
                let mut sql = String::new();
                sql.push_str("FROM r.query('CREATE TEMP TABLE tt AS SELECT 1 AS x');\n");
                sql.push_str("FROM r.query('SET VARIABLE v = 42');\n");
                sql.push_str(probe);
                sql.push_str("FROM r.query('BEGIN TRANSACTION');\n");
                sql.push_str(&format!(
                    "FROM r.query('INSERT INTO events VALUES ({k}, ''first'')');\n"
                ));
                sql.push_str(probe);
                sql.push_str(&format!(
                    "FROM r.query('INSERT INTO events VALUES ({}, ''second'')');\n",
                    k + 100
                ));
                sql.push_str("FROM r.query('INSERT INTO tt VALUES (2)');\n");
                sql.push_str("FROM r.query('COMMIT');\n");
                sql.push_str(&format!(
                    "SELECT 'rows', count(*), sum(range) FROM r.query('SELECT range FROM range({FETCH_ROWS})');\n"
                ));
                for _ in 0..3 {
                    sql.push_str(probe);
                }
                let topo = &topo;
                s.spawn(move || topo.cli(&sql))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut nodes_used: BTreeMap<String, usize> = BTreeMap::new();
    let mut workers_used = BTreeSet::new();
    for (k, out) in outs.iter().enumerate() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "session {k} failed ({}): {stderr}\n{stdout}",
            out.status
        );
        let probes: Vec<Vec<&str>> = stdout
            .lines()
            .filter(|l| l.starts_with("probe,"))
            .map(|l| l.split(',').skip(1).collect())
            .collect();
        assert_eq!(probes.len(), 5, "session {k}: {stdout}");
        let workers: BTreeSet<&str> = probes.iter().map(|p| p[0]).collect();
        assert_eq!(workers.len(), 1, "session {k} moved: {stdout}");
        let sums: Vec<&str> = probes.iter().map(|p| p[2]).collect();
        assert_eq!(
            sums,
            ["1", "1", "3", "3", "3"],
            "session {k}: temp table or transaction lost: {stdout}"
        );
        assert!(
            probes.iter().all(|p| p[1] == "42"),
            "session {k}: variable lost: {stdout}"
        );
        assert!(
            stdout.contains(&format!("rows,{FETCH_ROWS},{}", fetch_sum())),
            "session {k}: wrong FETCH: {stdout}"
        );
        let worker = probes[0][0].to_string();
        *nodes_used.entry(node_of(&worker)).or_default() += 1;
        workers_used.insert(worker);
    }
    eprintln!(
        "{SESSIONS} CLI sessions in {}: per node {nodes_used:?}, {} workers",
        elapsed(started),
        workers_used.len()
    );
    assert!(nodes_used.len() >= 2, "sessions on {nodes_used:?} only");
    // A client-side INSERT is APPENDs of sequence and constant vectors, through an edge and
    // the peer leg, rewritten flat on the node.
    let count = topo.cli(
        "INSERT INTO r.events SELECT range + 1000, 'appended' FROM range(3000);\n\
         FROM r.query('SELECT count(*), count(DISTINCT k), count(*) FILTER (s = ''appended'') FROM events');\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        format!("{},{},3000", 2 * SESSIONS + 3000, 2 * SESSIONS + 3000),
        "{}",
        String::from_utf8_lossy(&count.stderr)
    );

    // Python duckdb through the edges.
    let py = crate::support::python_attach(&topo.toolchain, &topo.ca, &topo.token, topo.front_port())
        + &format!(
            "print(con.sql(\"FROM r.query('SELECT quackgate.worker_id()')\").fetchall()[0][0])\n\
             print(con.sql(\"SELECT count(*), sum(range) FROM r.query('SELECT range FROM range({FETCH_ROWS})')\").fetchall())\n"
        );
    let lines = python_bounded(&topo.toolchain, &py, &[]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with('n'), "{lines:?}");
    assert_eq!(lines[1], format!("[({FETCH_ROWS}, {})]", fetch_sum()));

    // adbc-driver-quack (Go: it trusts the CA named by SSL_CERT_FILE).
    let adbc = format!(
        r#"
import adbc_driver_quack.dbapi as dbapi
with dbapi.connect("quack://localhost:{port}", db_kwargs={{"adbc.quack.token": "{token}", "adbc.quack.tls": "true"}}, autocommit=True) as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT quackgate.worker_id() AS w")
        print(cur.fetchall()[0][0])
        cur.execute("SELECT * FROM range({FETCH_ROWS})")
        print(cur.fetch_arrow_table().num_rows)
        cur.execute("SELECT count(*) FROM events")
        print(cur.fetchall()[0][0])
"#,
        port = topo.front_port(),
        token = topo.token,
    );
    let ca = topo.ca.display().to_string();
    let lines = python_bounded(&topo.toolchain, &adbc, &[("SSL_CERT_FILE", &ca)]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with('n'), "{lines:?}");
    assert_eq!(
        lines[1..],
        [FETCH_ROWS.to_string(), (2 * SESSIONS + 3000).to_string()]
    );

    let problems = topo.problems_in_logs();
    assert!(
        problems.is_empty(),
        "warnings or errors in the logs:\n{}",
        problems.join("\n")
    );
    eprintln!("test body took {}", elapsed(started));
}

/// PREPAREs from clients an edge has passed on, from its /metrics.
fn client_prepares(edge: &EdgeApp) -> u64 {
    let (_, metrics) = try_get(edge.admin, "/metrics").unwrap_or_default();
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("quackgate_requests_total{msg_type=\"prepare\",origin=\"client\"} ")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn killing_an_edge_loses_no_session() {
    let mut topo = Topology::start();
    let started = Instant::now();
    let mut held: Vec<Held> = (0..8)
        .map(|i| topo.held_session(&format!("client {i}")))
        .collect();
    // Every session works through both edges (round robin) before the kill.
    for h in &mut held {
        let want = work_ok(h, 10);
        assert_eq!(h.d.ask("work"), want, "{}", h.first);
    }
    // Both edges carried these sessions' requests (round robin, no stickiness).
    for e in &topo.edges {
        let served = client_prepares(e);
        eprintln!("{} served {served} client PREPAREs before the kill", e.id);
        assert!(served > 0, "{} served no request", e.id);
    }
    let victim = &mut topo.edges[0];
    eprintln!("kill -9 {} (pid {})", victim.id, victim.proc.pid());
    victim.proc.kill9();
    for round in 0..3 {
        for h in &mut held {
            let want = probe_ok(h, 10);
            assert_eq!(h.d.ask("probe"), want, "round {round}");
        }
    }
    for h in &mut held {
        let want = work_ok(h, 13);
        assert_eq!(h.d.ask("work"), want, "after the kill");
    }
    for _ in 0..4 {
        topo.new_session_worker();
    }
    for h in held {
        h.d.finish();
    }
    eprintln!("test body took {}", elapsed(started));
}

#[test]
fn killing_a_node_ends_only_its_sessions() {
    let mut topo = Topology::start();
    let started = Instant::now();
    let mut held: Vec<Held> = (0..9)
        .map(|i| topo.held_session(&format!("client {i}")))
        .collect();
    let per_node: BTreeSet<String> = held.iter().map(Held::node).collect();
    assert!(per_node.len() >= 2, "sessions on {per_node:?} only");
    let victim = held[0].node();
    let node = topo.node_mut(&victim);
    eprintln!("kill -9 {victim} (pid {})", node.proc.pid());
    node.proc.kill9();
    let mut errors = Vec::new();
    for h in &mut held {
        let answer = h.d.ask("probe");
        if h.node() == victim {
            assert!(
                answer.starts_with("error") && answer.contains(&format!("node {victim}")),
                "a session on the killed node {victim} ({}) got: {answer}",
                h.worker
            );
            errors.push(answer);
        } else {
            assert_eq!(answer, probe_ok(h, 7), "a session on a surviving node");
        }
    }
    eprintln!("errors on {victim}'s sessions:\n{}", errors.join("\n"));
    let seen = topo.wait_states_everywhere(
        &victim,
        &["unreachable", "not-ready"],
        Duration::from_secs(15),
    );
    eprintln!("edges saw {victim} gone {seen:?} after the probes");
    for _ in 0..6 {
        let worker = topo.new_session_worker();
        assert_ne!(
            node_of(&worker),
            victim,
            "a new session went to the dead node"
        );
    }
    // The survivors still work, including large results.
    for h in held.iter_mut().filter(|h| h.node() != victim) {
        let want = work_ok(h, 10);
        assert_eq!(h.d.ask("work"), want);
    }
    for h in held {
        h.d.finish();
    }
    eprintln!("test body took {}", elapsed(started));
}

/// Sets its flag when dropped, panicking or not.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One session of raw Quack messages through the front: CONNECTION_REQUEST, three PREPAREs
/// (`SELECT 42`) and DISCONNECT, each its own TLS connection as a 1.5 client makes them, so
/// round robin spreads them over both edges. What went wrong, if anything.
fn raw_session(topo: &Topology) -> Result<(), String> {
    use crate::support::{connection_request, fixture, prepare_with_id};
    let front = SocketAddr::from(([127, 0, 0, 1], topo.front_port()));
    let post = |what: &str, body: Vec<u8>, want: u64| {
        let a = https_request(front, "localhost", &topo.ca, "POST", "/quack", &[], body)
            .map_err(|e| format!("{what}: {e}"))?;
        if a.status == 200 && quack_type(&a.body) == Some(want) {
            Ok(a)
        } else {
            Err(format!("{what}: {}", describe(&a)))
        }
    };
    let a = post("CONNECTION_REQUEST", connection_request(&topo.token), 2)?;
    let header = quack_codec::decode_header(&a.body).map_err(|e| format!("{e:?}"))?;
    let id = header
        .connection_id(&a.body)
        .ok_or("no connection id")?
        .to_vec();
    for _ in 0..3 {
        post("PREPARE", prepare_with_id(&id), 4)?;
    }
    let disconnect = fixture("disconnect_request.bin");
    let h = quack_codec::decode_header(&disconnect).unwrap();
    let mut body = quack_codec::rewrite_header(&disconnect, &h, &id).to_vec();
    body.extend_from_slice(&disconnect[h.len..]);
    post("DISCONNECT", body, 10)?;
    Ok(())
}

#[test]
fn a_node_added_to_the_peers_file_gets_new_sessions_within_5_s() {
    let mut topo = Topology::start();
    let started = Instant::now();
    // Load on n1..n3, so that n4 is the least loaded once it is known.
    let held: Vec<Held> = (0..6)
        .map(|i| topo.held_session(&format!("client {i}")))
        .collect();
    topo.add_node(4);
    let n4 = node_id(4);
    for e in &topo.edges {
        let nodes = topo.edge_status(e).unwrap();
        assert!(!nodes.contains_key(&n4), "{n4} known before it is listed");
    }
    let peers = topo.shared.path().join("peers.toml");
    let tmp = topo.shared.path().join("peers.toml.new");
    std::fs::write(&tmp, peers_toml(4)).unwrap();
    let written = Instant::now();
    std::fs::rename(&tmp, &peers).unwrap();
    let mut status_ready: Option<Duration> = None;
    let mut tried = 0;
    // Errors are collected, not fatal at once, so that the time is measured either way.
    let mut errors = Vec::new();
    // The moment the edges disagree (one places on n4, the other does not know it yet), if it
    // comes: raw sessions then, one request at a time, so round robin takes each session's
    // later requests to the other edge.
    let knows = |e: &EdgeApp| {
        topo.edge_status(e)
            .and_then(|n| n.get(&n4).cloned())
            .map(|l| l.state)
    };
    let window_start = Instant::now();
    while window_start.elapsed() < Duration::from_secs(6) {
        let (a, b) = (knows(&topo.edges[0]), knows(&topo.edges[1]));
        let one_places =
            |x: &Option<String>, y: &Option<String>| x.as_deref() == Some("ready") && y.is_none();
        if one_places(&a, &b) || one_places(&b, &a) {
            eprintln!(
                "{:.2} s after the write, the edges disagree about n4 ({a:?} vs {b:?}): 4 sessions now",
                written.elapsed().as_secs_f64()
            );
            for _ in 0..4 {
                if let Err(e) = raw_session(&topo) {
                    errors.push(format!(
                        "{:.2} s (edges disagreeing): {e}",
                        written.elapsed().as_secs_f64()
                    ));
                }
            }
            break;
        }
        if a.is_some() && b.is_some() {
            eprintln!(
                "{:.2} s after the write, both edges know n4; no moment of disagreement seen",
                written.elapsed().as_secs_f64()
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Meanwhile, raw sessions open and run without a pause for 5 s, through both edges, so
    // that some are placed while one edge knows n4 and the other does not yet.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let raw_errors = std::sync::Mutex::new(Vec::new());
    let raw_count = std::sync::atomic::AtomicUsize::new(0);
    let first_on_n4 = std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    raw_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Err(e) = raw_session(&topo) {
                        raw_errors
                            .lock()
                            .unwrap()
                            .push(format!("{:.2} s: {e}", written.elapsed().as_secs_f64()));
                    }
                }
            });
        }
        // Stops them also when the wait below fails, or the scope would wait for them forever.
        let _stop = StopOnDrop(&stop);
        let first = wait_for("a new session on n4", Duration::from_secs(30), || {
            if status_ready.is_none()
                && topo.edges.iter().all(|e| {
                    topo.edge_status(e)
                        .and_then(|n| n.get(&n4).cloned())
                        .is_some_and(|l| l.state == "ready")
                })
            {
                status_ready = Some(written.elapsed());
            }
            // Several sessions at once, so that one is being placed while the edges disagree
            // (one knows n4, the other not yet), if they ever do.
            let outs: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| topo.cli("FROM r.query('SELECT quackgate.worker_id()');\n"))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            tried += outs.len();
            let mut on_n4 = false;
            for out in outs {
                let worker = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !out.status.success() || worker.is_empty() {
                    errors.push(format!(
                        "{:.2} s: {}",
                        written.elapsed().as_secs_f64(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                } else if node_of(&worker) == n4 {
                    on_n4 = true;
                }
            }
            on_n4.then(|| written.elapsed())
        });
        while written.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        first
    });
    let raw_errors = raw_errors.into_inner().unwrap();
    eprintln!(
        "raw sessions while n4 joined: {}, failed: {}",
        raw_count.into_inner(),
        raw_errors.len()
    );
    errors.extend(raw_errors);
    eprintln!("edges after n4 came:\n{}", topo.edge_status_text());
    let loads: Vec<String> = topo
        .edge_status(&topo.edges[0])
        .unwrap_or_default()
        .into_iter()
        .map(|(id, l)| format!("{id}={}", l.sessions))
        .collect();
    eprintln!("sessions per node seen by {}: {loads:?}", topo.edges[0].id);
    eprintln!(
        "n4 added: both edges report it ready after {status_ready:?}; first new session on it \
         after {:.2} s ({tried} sessions tried, {} failed)",
        first_on_n4.as_secs_f64(),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "new sessions failed while n4 joined:\n{}",
        errors.join("\n")
    );
    assert!(
        first_on_n4 < Duration::from_secs(10),
        "the first session reached n4 {first_on_n4:?} after the peers file was written"
    );
    // Once every edge knows n4, sessions placed on it keep working through both edges.
    for _ in 0..4 {
        topo.new_session_worker();
    }
    for h in held {
        h.d.finish();
    }
    eprintln!("test body took {}", elapsed(started));
}

#[test]
fn a_draining_node_gets_no_new_sessions_and_finishes_its_open_ones() {
    let mut topo = Topology::start();
    let started = Instant::now();
    let mut held: Vec<Held> = (0..6)
        .map(|i| topo.held_session(&format!("client {i}")))
        .collect();
    let victim = held[0].node();
    let on_victim = held.iter().filter(|h| h.node() == victim).count();
    eprintln!("SIGTERM {victim}, which holds {on_victim} sessions");
    topo.node(&victim).proc.signal("TERM");
    let seen = topo.wait_state_everywhere(&victim, "draining", Duration::from_secs(10));
    eprintln!("edges report {victim} draining after {seen:?}");
    for _ in 0..6 {
        let worker = topo.new_session_worker();
        assert_ne!(
            node_of(&worker),
            victim,
            "a new session went to the draining node"
        );
    }
    // Its open sessions finish their work, and so do the others.
    for h in &mut held {
        let want = work_ok(h, 10);
        assert_eq!(h.d.ask("work"), want, "{} during the drain", h.worker);
        let want = probe_ok(h, 10);
        assert_eq!(h.d.ask("probe"), want);
    }
    let status = topo.edge_status_text();
    assert!(
        status.contains(&format!("node {victim} ")),
        "{victim} vanished from the edges: {status}"
    );
    // Once its sessions end, the node exits by itself, cleanly.
    for h in held {
        h.d.finish();
    }
    let exit = topo
        .node_mut(&victim)
        .proc
        .wait_exit(Duration::from_secs(40));
    eprintln!("{victim} exited with {exit}");
    assert!(exit.success(), "{victim} exited with {exit}");
    eprintln!("test body took {}", elapsed(started));
}

/// The Quack message type of an answer, or `None` when it is not a Quack message.
fn quack_type(body: &[u8]) -> Option<u64> {
    quack_codec::decode_header(body).ok().map(|h| h.msg_type)
}

/// Quack's ERROR_RESPONSE text, for the report.
fn describe(answer: &crate::support::topology::Answer) -> String {
    format!(
        "HTTP {} type {:?}: {}",
        answer.status,
        quack_type(&answer.body),
        String::from_utf8_lossy(&answer.body)
            .chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
    )
}

/// Peer requests made with the cluster's real key (read from the shared id secret file, as a
/// stolen copy of an edge's request would be): one is admitted once, and not again; an edited
/// body, another node's credential, another cluster's key or an edited grant are refused.
fn signed_peer_requests_cannot_be_replayed_or_edited(topo: &Topology, ingress: SocketAddr) {
    use quackgate::auth::{Access, Principal};
    use quackgate::cluster::credential::{
        body_digest, PeerKey, RequestFacts, ANSWER_HEADER, DIGEST_HEADER, GRANT_HEADER, PEER_HEADER,
    };
    use quackgate::cluster::status::STATUS_PATH;
    use quackgate::cluster::ANY_NODE;
    use quackgate::routable_id::SECRET_BYTES;

    let hex_secret = std::fs::read_to_string(topo.shared.path().join("id-secret")).unwrap();
    let mut secret = [0u8; SECRET_BYTES];
    hex::decode_to_slice(hex_secret.trim(), &mut secret).unwrap();
    let key = PeerKey::new(&secret).unwrap();
    let mut other_secret = secret;
    other_secret[0] ^= 1;
    let other_key = PeerKey::new(&other_secret).unwrap();
    let grant = Principal {
        name: "tester".into(),
        access: Access::ReadWrite,
        expires_at: None,
        tag: quackgate::auth::principal_tag("tester", None),
    }
    .to_grant();
    // The node never sees a client token; this one is not even valid.
    let body = crate::support::connection_request("no-token-needed");
    // The digest header says what the body is; a body edited on the way no longer matches.
    let post = |credential: &http::HeaderValue, grant: &str, body: Vec<u8>| {
        https_request(
            ingress,
            "n1.internal",
            &topo.ca,
            "POST",
            "/quack",
            &[
                (PEER_HEADER, credential.to_str().unwrap().to_string()),
                (GRANT_HEADER, grant.to_string()),
                (DIGEST_HEADER, hex::encode(body_digest(&body))),
            ],
            body,
        )
        .expect("the ingress answers")
    };
    let sign = |key: &PeerKey, target: &str, body: &[u8], grant: &str| {
        key.sign_request(
            "edge-a",
            &RequestFacts {
                target,
                path: quack_codec::QUACK_PATH,
                msg_type: quack_codec::msg_type::CONNECTION_REQUEST,
                body_sha256: body_digest(body),
                grant: Some(grant.as_bytes()),
            },
        )
    };

    // Genuine: a session is placed, and the node's answer verifies.
    let (credential, nonce) = sign(&key, "n1", &body, &grant);
    let answer = post(&credential, &grant, body.clone());
    eprintln!("a genuine placement: {}", describe(&answer));
    assert_eq!(
        (answer.status, quack_type(&answer.body)),
        (200, Some(2)),
        "a genuine peer request was refused: {}",
        describe(&answer)
    );
    key.verify_answer(
        &nonce,
        "n1",
        answer.status,
        &answer.body,
        answer.headers.get(ANSWER_HEADER),
    )
    .expect("n1's answer verifies");

    let refused = |what: &str, answer: crate::support::topology::Answer| {
        eprintln!("{what}: {}", describe(&answer));
        assert!(
            answer.status != 200 || quack_type(&answer.body) != Some(2),
            "{what} opened a session: {}",
            describe(&answer)
        );
    };
    refused(
        "the same request replayed",
        post(&credential, &grant, body.clone()),
    );
    let (credential, _) = sign(&key, "n1", &body, &grant);
    let mut edited = crate::support::connection_request("edited-body");
    if edited == body {
        edited.push(0);
    }
    refused("an edited body", post(&credential, &grant, edited));
    let (credential, _) = sign(&key, "n1", &body, &grant);
    let admin_grant = Principal {
        name: "someone-else".into(),
        access: Access::ReadWrite,
        expires_at: None,
        tag: quackgate::auth::principal_tag("someone-else", None),
    }
    .to_grant();
    refused(
        "an edited grant",
        post(&credential, &admin_grant, body.clone()),
    );
    let (credential, _) = sign(&key, "n2", &body, &grant);
    refused(
        "a credential for n2",
        post(&credential, &grant, body.clone()),
    );
    let (credential, _) = sign(&other_key, "n1", &body, &grant);
    refused(
        "another cluster's key",
        post(&credential, &grant, body.clone()),
    );

    // The load report: answered once per nonce, and the answer is bound to it.
    let status_facts = RequestFacts {
        target: ANY_NODE,
        path: STATUS_PATH,
        msg_type: 0,
        body_sha256: body_digest(b""),
        grant: None,
    };
    let (credential, nonce) = key.sign_request("edge-a", &status_facts);
    let get = |credential: &http::HeaderValue| {
        https_request(
            ingress,
            "n1.internal",
            &topo.ca,
            "GET",
            STATUS_PATH,
            &[(PEER_HEADER, credential.to_str().unwrap().to_string())],
            Vec::new(),
        )
        .expect("the ingress answers")
    };
    let first = get(&credential);
    eprintln!("a genuine status request: {}", describe(&first));
    assert_eq!(first.status, 200, "{}", describe(&first));
    key.verify_answer(
        &nonce,
        "n1",
        200,
        &first.body,
        first.headers.get(ANSWER_HEADER),
    )
    .expect("the status answer verifies for its nonce");
    let again = get(&credential);
    eprintln!("the status request replayed: {}", describe(&again));
    assert_ne!(again.status, 200, "a replayed status request was answered");
}

#[test]
fn a_node_refuses_clients_and_forged_peer_requests() {
    let topo = Topology::start();
    let started = Instant::now();
    let n1 = topo.node("n1");
    let ingress = SocketAddr::from((n1.ns.ip, INGRESS_PORT));

    // A valid client token straight to the node's ingress: no session.
    let answer = https_request(
        ingress,
        "n1.internal",
        &topo.ca,
        "POST",
        "/quack",
        &[],
        crate::support::connection_request(&topo.token),
    )
    .expect("the ingress answers");
    eprintln!("client token straight to n1: {}", describe(&answer));
    assert!(
        answer.status != 200 || quack_type(&answer.body) != Some(2),
        "a client opened a session on n1 without an edge: {}",
        describe(&answer)
    );

    // The real CLI, from inside an edge's namespace (where n1.internal resolves).
    let out = run_cli_bounded(
        &topo.toolchain,
        Some(&topo.edges[0].ns),
        &format!(
            "SET extension_directory='{ext}';\nSET autoinstall_known_extensions=false;\nLOAD quack;\n\
             SET ca_cert_file='{ca}';\n\
             CREATE SECRET (TYPE quack, TOKEN '{token}', SCOPE 'quack:n1.internal:443');\n\
             ATTACH 'quack:n1.internal:443' AS r;\nFROM r.query('SELECT 42');\n",
            ext = topo.toolchain.ext_dir().display(),
            ca = topo.ca.display(),
            token = topo.token,
        ),
        60,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("CLI straight to n1: {} {}", out.status, stderr.trim());
    assert!(
        !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("42"),
        "the CLI attached straight to n1"
    );

    // A made-up peer credential.
    for forged in ["forged", "v2 edge-a n1 0 00 00", ""] {
        let answer = https_request(
            ingress,
            "n1.internal",
            &topo.ca,
            "POST",
            "/quack",
            &[("quackgate-peer", forged.to_string())],
            crate::support::connection_request(&topo.token),
        )
        .expect("the ingress answers");
        eprintln!("forged peer credential {forged:?}: {}", describe(&answer));
        assert!(
            answer.status != 200 || quack_type(&answer.body) != Some(2),
            "a forged peer request opened a session: {}",
            describe(&answer)
        );
    }

    signed_peer_requests_cannot_be_replayed_or_edited(&topo, ingress);

    // What a node's namespace listens on: nothing for clients but the ingress.
    let ss = std::process::Command::new("ip")
        .args(["netns", "exec", &n1.ns.name, "ss", "-ltnH"])
        .output()
        .unwrap();
    let listeners = String::from_utf8_lossy(&ss.stdout);
    eprintln!("n1's listeners:\n{listeners}");
    for line in listeners.lines() {
        let local = line.split_whitespace().nth(3).unwrap_or("");
        let ok = local.starts_with("127.0.0.1:")
            || local.starts_with("[::1]:")
            || local == format!("{}:{INGRESS_PORT}", n1.ns.ip)
            || local == format!("{}:{ADMIN_PORT}", n1.ns.ip);
        assert!(ok, "n1 listens on {local}:\n{listeners}");
    }
    let _ = n1.admin;
    eprintln!("test body took {}", elapsed(started));
}

#[test]
/// The stand-in itself, without the edge tier: a `quackgate serve` in a node's namespace, behind
/// its ingress, on a lake whose catalog is in another namespace, reached by the CLI from an
/// edge's namespace by name and by a held Python session through a front nginx. When this
/// fails, the harness is broken, not the edge tier.
fn topology_harness_serves_a_node_through_its_ingress() {
    let toolchain = Toolchain::get();
    let net = Net::create();
    let shared = tempfile::tempdir().unwrap();
    let s = shared.path();
    let names = vec!["n1.internal".to_string(), "catalog.internal".to_string()];
    let tls = quackgate::dev_init::write_tls(s, &names).unwrap();
    let catalog_token = "cat-token-123".to_string();
    write_file(s, "catalog-token", &catalog_token);
    let cat_ns = net.add_ns("cat", CATALOG_HOST, "");
    let cat_config = write_file(s, "catalog.toml", &format!(
        "[gateway]\nlisten = \"{ip}:{CATALOG_PORT}\"\nadmin_listen = \"{ip}:{ADMIN_PORT}\"\n[tls]\ncert = \"{c}\"\nkey = \"{k}\"\n[[auth.static_tokens]]\nname = \"lake\"\nsha256 = \"{h}\"\n[workers]\ncount = 1\nextension_dir = \"{e}\"\n[catalog]\nfile = \"{f}\"\n",
        ip = cat_ns.ip, c = tls.cert.display(), k = tls.key.display(), h = quackgate::auth::hash_token(&catalog_token), e = toolchain.ext_dir().display(), f = s.join("cat").join("cat.duckdb").display()));
    let mut catalog = spawn_quackgate("catalog", &cat_ns, "catalog", &cat_config);
    catalog.wait_ready(Duration::from_secs(60));
    let n1 = net.add_ns(
        "n1",
        21,
        &format!("{} catalog.internal\n", net.ip(CATALOG_HOST)),
    );
    let cfg = write_file(s, "n1.toml", &format!(
        "[gateway]\nplain_listen = \"127.0.0.1:{PEER_PORT}\"\nadmin_listen = \"{ip}:{ADMIN_PORT}\"\n[[auth.static_tokens]]\nname = \"t\"\nsha256 = \"{h}\"\n[workers]\ncount = 1\nextension_dir = \"{e}\"\n[workers.ducklake]\ncatalog = \"catalog.internal:{CATALOG_PORT}\"\ncatalog_ca_file = \"{ca}\"\ncatalog_token_file = \"{ct}\"\ndata_path = \"{d}/\"\n",
        ip = n1.ip, h = quackgate::auth::hash_token("client-tok"), e = toolchain.ext_dir().display(), ct = s.join("catalog-token").display(), ca = tls.ca_cert.display(), d = s.join("data").display()));
    let _ingress = Nginx::start(NginxSpec {
        name: "n1 ingress",
        ns: Some(&n1),
        listen_tls: format!("{}:443", n1.ip),
        cert: &tls.cert,
        key: &tls.key,
        upstreams: vec![format!("127.0.0.1:{PEER_PORT}")],
        upstream_tls: None,
        keepalive: true,
        pass_host: true,
        read_timeout_secs: 240,
        extra_servers: String::new(),
    });
    let mut node = spawn_quackgate("n1", &n1, "serve", &cfg);
    eprintln!("{:?}", node.wait_ready(Duration::from_secs(60)));

    let e1 = net.add_ns("e1", 11, &format!("{} n1.internal\n", n1.ip));
    let out = run_cli_bounded(&toolchain, Some(&e1), &format!(
        "SET extension_directory='{ext}';\nLOAD quack;\nSET ca_cert_file='{ca}';\nCREATE SECRET (TYPE quack, TOKEN 'client-tok', SCOPE 'quack:n1.internal:443');\nATTACH 'quack:n1.internal:443' AS r;\nFROM r.query('CREATE TABLE t AS SELECT 1 AS a');\nFROM r.query('SELECT quackgate.worker_id(), count(*) FROM t');\n",
        ext = toolchain.ext_dir().display(), ca = tls.ca_cert.display()), 60);
    eprintln!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let a = https_request(
        SocketAddr::from((n1.ip, 443)),
        "n1.internal",
        &tls.ca_cert,
        "GET",
        "/",
        &[],
        vec![],
    )
    .unwrap();
    eprintln!("{}", describe(&a));
    eprintln!(
        "admin {:?}",
        try_get(SocketAddr::from((n1.ip, ADMIN_PORT)), "/status")
    );
    assert!(out.status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _front = Nginx::start(NginxSpec {
        name: "front",
        ns: None,
        listen_tls: format!("127.0.0.1:{port}"),
        cert: &tls.cert,
        key: &tls.key,
        upstreams: vec![format!("{}:443", n1.ip)],
        upstream_tls: Some((&tls.ca_cert, "n1.internal")),
        keepalive: false,
        pass_host: false,
        read_timeout_secs: 60,
        extra_servers: String::new(),
    });
    let script = write_file(s, "held.py", HELD_SESSION_PY);
    let mut d = Driven::spawn(
        "held",
        &toolchain.python(),
        &[script.display().to_string()],
        &[
            ("QG_PORT", port.to_string()),
            ("QG_TOKEN", "client-tok".into()),
            ("QG_CA", tls.ca_cert.display().to_string()),
            ("QG_EXT", toolchain.ext_dir().display().to_string()),
            ("QG_ROWS", FETCH_ROWS.to_string()),
        ],
    );
    eprintln!("first {}", d.line(Duration::from_secs(60)));
    eprintln!("work {}", d.ask("work"));
    eprintln!("probe {}", d.ask("probe"));
    eprintln!("bad {}", d.ask("bogus"));
    d.finish();
}
