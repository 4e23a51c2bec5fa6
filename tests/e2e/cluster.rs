//! Scale-out without cookies: three gateway nodes behind a plain round-robin nginx (a stand-in
//! for a non-sticky ingress), each request of a session reaching the worker that owns it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ducklake::{data_dir, start_catalog};
use crate::support::gate::Gate;
use crate::support::{
    https_attach_sql, python_attach, random_hex, run_cli, wait_until, Gateway, GatewayOptions,
    Toolchain,
};

/// A real nginx, TLS-terminating on `port` and plain on `plain_port`, round-robin with no
/// stickiness over `upstreams`, adding the client's address to `X-Forwarded-For` as an
/// ingress does.
pub(crate) struct Nginx {
    child: Child,
    pub(crate) port: u16,
    pub(crate) plain_port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub(crate) fn start(upstreams: &[SocketAddr], cert: &Path, key: &Path) -> Nginx {
        Self::start_with_timeout(upstreams, cert, key, 600)
    }

    /// With a request timeout of `read_timeout_secs`, as an ingress has.
    pub(crate) fn start_with_timeout(
        upstreams: &[SocketAddr],
        cert: &Path,
        key: &Path,
        read_timeout_secs: u64,
    ) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is missing: apt-get install -y nginx (scripts/test installs it)");
        let dir = tempfile::tempdir().unwrap();
        // nginx cannot report an ephemeral port, so ports are picked free just before.
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, plain_port) = (free_port(), free_port());
        let servers: String = upstreams
            .iter()
            .map(|a| format!("    server {a};\n"))
            .collect();
        let conf = format!(
            r#"daemon off;
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream gateways {{
{servers}    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{port} ssl;
    listen 127.0.0.1:{plain_port};
    ssl_certificate {cert};
    ssl_certificate_key {key};
    client_max_body_size 256m;
    location / {{
      proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header Connection "";
      proxy_read_timeout {read_timeout_secs}s;
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
}}
"#,
            d = dir.path().display(),
            cert = cert.display(),
            key = key.display(),
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx");
        wait_until("nginx to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", plain_port)).is_ok()
        });
        Nginx {
            child,
            port,
            plain_port,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM, so the master stops its worker process too.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Three nodes sharing one id secret, one token, one lake; nginx in front.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Gateway>,
    pub(crate) catalog: Gateway,
    pub(crate) nginx: Nginx,
    pub(crate) shared: tempfile::TempDir,
    pub(crate) token: String,
    pub(crate) ca: PathBuf,
    /// With [`Cluster::start_gated`]: the gate node `from` reaches node `to` through.
    pub(crate) gates: Vec<(usize, usize, Gate)>,
}

impl Cluster {
    pub(crate) fn start() -> Cluster {
        Cluster::start_inner(false)
    }

    /// Each node reaches each peer through a [`Gate`] of its own (and a peers file of its
    /// own), so a test can cut any node off from its peers in both directions while clients
    /// still reach it.
    pub(crate) fn start_gated() -> Cluster {
        Cluster::start_inner(true)
    }

    fn start_inner(gated: bool) -> Cluster {
        let shared = tempfile::tempdir().unwrap();
        let s = shared.path();
        let catalog_token = format!("cat-{}", random_hex());
        std::fs::write(s.join("catalog-token"), &catalog_token).unwrap();
        std::fs::write(
            s.join("id-secret"),
            random_hex() + &random_hex() + &random_hex()[..16],
        )
        .unwrap();
        let peers_file = |n: usize| s.join(format!("peers-{n}.toml"));
        for n in 0..3 {
            std::fs::write(peers_file(n), "").unwrap();
        }
        let catalog = start_catalog(s, &catalog_token, None);
        let token = format!("tok-{}", random_hex());
        let mut nodes = Vec::new();
        for n in 0..3 {
            nodes.push(Gateway::start_with(GatewayOptions {
                token: Some(token.clone()),
                extra_gateway_toml: format!(
                    "node_id = \"n{n}\"\nid_secret_file = \"{}\"\n",
                    s.join("id-secret").display()
                ),
                extra_workers_toml: format!(
                    "[workers.ducklake]\ncatalog = \"127.0.0.1:{}\"\ncatalog_token_file = \"{}\"\ndata_path = \"{}\"\n",
                    catalog.plain.port(),
                    s.join("catalog-token").display(),
                    data_dir(s).display()
                ),
                extra_toml: format!(
                    "[cluster]\npeer_listen = \"127.0.0.1:0\"\npeers_file = \"{}\"\n",
                    peers_file(n).display()
                ),
                ..Default::default()
            }));
        }
        // The membership arrives after start, as a mounted ConfigMap would.
        let mut gates = Vec::new();
        for (from, _) in nodes.iter().enumerate() {
            let mut peers = String::new();
            for (to, gw) in nodes.iter().enumerate() {
                let mut addr = gw.peer.expect("peer listener");
                if gated && from != to {
                    let gate = Gate::open_to(addr);
                    addr.set_port(gate.port());
                    gates.push((from, to, gate));
                }
                peers.push_str(&format!("n{to} = \"{addr}\"\n"));
            }
            std::fs::write(peers_file(from), peers).unwrap();
        }
        for gw in &nodes {
            wait_until(
                "every node to know its two peers",
                Duration::from_secs(20),
                || gw.admin_get("/status").1.matches("\npeer ").count() == 2,
            );
        }
        let tls = quackgate::dev_init::write_tls(s, &[]).unwrap();
        let upstreams: Vec<SocketAddr> = nodes.iter().map(|gw| gw.plain).collect();
        let nginx = Nginx::start(&upstreams, &tls.cert, &tls.key);
        Cluster {
            nodes,
            catalog,
            nginx,
            shared,
            token,
            ca: tls.ca_cert,
            gates,
        }
    }

    pub(crate) fn attach_sql(&self) -> String {
        format!(
            ".output /dev/null\n{}.output\n",
            https_attach_sql(&Toolchain::get(), self.nginx.port, &self.ca, &self.token)
        )
    }
}

#[test]
fn twelve_sessions_through_round_robin_nginx_each_stay_on_one_worker() {
    let cluster = Cluster::start();
    let toolchain = Toolchain::get();
    let setup = run_cli(
        &toolchain,
        &format!(
            "{}FROM r.query('CREATE TABLE events (k INTEGER)');\n",
            cluster.attach_sql()
        ),
    );
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );

    const SESSIONS: usize = 12;
    const PROBES: usize = 8;
    let outs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..SESSIONS)
            .map(|k| {
                let mut sql = cluster.attach_sql();
                sql.push_str("FROM r.query('CREATE TEMP TABLE tt AS SELECT 1 AS x');\n");
                sql.push_str("FROM r.query('SET VARIABLE v = 42');\n");
                sql.push_str("FROM r.query('BEGIN TRANSACTION');\n");
                sql.push_str(&format!("FROM r.query('INSERT INTO events VALUES ({k})');\n"));
                for p in 0..PROBES {
                    sql.push_str("FROM r.query('SELECT ''probe'', quackgate.worker_id(), getvariable(''v''), (SELECT x FROM tt)');\n");
                    if p == PROBES / 2 {
                        sql.push_str("FROM r.query('COMMIT');\n");
                        sql.push_str("SELECT 'rows', count(*) FROM r.query('SELECT * FROM range(200000)');\n");
                    }
                }
                let toolchain = &toolchain;
                s.spawn(move || run_cli(toolchain, &sql))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut nodes_used = BTreeSet::new();
    for (k, out) in outs.iter().enumerate() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "session {k} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let probes: Vec<&str> = stdout.lines().filter(|l| l.starts_with("probe,")).collect();
        assert_eq!(probes.len(), PROBES, "session {k}: {stdout}");
        let distinct: BTreeSet<_> = probes.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "session {k} saw several workers or lost state: {distinct:?}"
        );
        let fields: Vec<&str> = probes[0].split(',').collect();
        assert_eq!(
            &fields[2..],
            ["42", "1"],
            "session {k}: variable or temp table lost"
        );
        nodes_used.insert(fields[1].split('.').next().unwrap().to_string());
        assert!(stdout.contains("rows,200000"), "session {k}: {stdout}");
    }
    assert!(nodes_used.len() >= 2, "only {nodes_used:?} placed sessions");
    let count = run_cli(
        &toolchain,
        &format!(
            "{}FROM r.query('SELECT count(*), count(DISTINCT k) FROM events');\n",
            cluster.attach_sql()
        ),
    );
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        "12,12",
        "{}",
        String::from_utf8_lossy(&count.stderr)
    );
    for gw in &cluster.nodes {
        assert!(
            !gw.log().contains("WARN"),
            "warnings on a node:\n{}",
            gw.log()
        );
    }
    drop(cluster.shared);
}

#[test]
fn round_robin_over_plain_duckdb_servers_breaks_attach() {
    // The control: the same nginx in front of two plain quack_serve servers, no quackgate.
    let toolchain = Toolchain::get();
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = format!(
            "import duckdb, sys\ncon = duckdb.connect(config={{'extension_directory': '{ext}', 'autoinstall_known_extensions': 'false'}})\ncon.execute(\"LOAD httpfs; LOAD quack; CALL quack_serve('quack:127.0.0.1:{port}', token => 'plain-token')\")\nprint('ready', flush=True)\nsys.stdin.read()\n",
            ext = toolchain.ext_dir().display()
        );
        let mut child = Command::new(toolchain.python())
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let _stdin = child.stdin.take();
        wait_until("a plain quack server", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        servers.push((child, _stdin));
        ports.push(port);
    }
    let tls = quackgate::dev_init::write_tls(dir.path(), &[]).unwrap();
    let upstreams: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let nginx = Nginx::start(&upstreams, &tls.cert, &tls.key);
    let port = nginx.port;
    let out = run_cli(
        &toolchain,
        &format!(
            "SET extension_directory='{}';\nLOAD quack;\nSET ca_cert_file='{}';\nCREATE SECRET (TYPE quack, TOKEN 'plain-token', SCOPE 'quack:localhost:{port}');\nATTACH 'quack:localhost:{port}' AS r (DISABLE_SSL false);\nFROM r.query('SELECT 42');\n",
            toolchain.ext_dir().display(),
            tls.ca_cert.display()
        ),
    );
    for (mut child, _) in servers {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        !out.status.success(),
        "round robin without pinning unexpectedly worked"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Invalid connection id"), "{stderr}");
}

#[test]
fn killing_a_node_only_ends_the_sessions_it_owned() {
    let cluster = Cluster::start();
    let toolchain = Toolchain::get();
    let go = cluster.shared.path().join("go");
    // Six Python clients: each attaches through nginx, reports its worker, waits for "go",
    // then probes the same session again.
    let script = python_attach(&toolchain, &cluster.ca, &cluster.token, cluster.nginx.port)
        + &format!(
            r#"import os, time
print("before", con.sql("FROM r.query('SELECT quackgate.worker_id()')").fetchall()[0][0], flush=True)
deadline = time.time() + 120
while not os.path.exists("{go}") and time.time() < deadline:
    time.sleep(0.05)
# nginx reuses a kept-alive connection to the killed node once and answers 502 for a request
# it sent there (a POST is not passed on to the next server): the request never reached the
# session's node, so it is sent again once, as a client would.
for attempt in range(2):
    try:
        print("after", con.sql("FROM r.query('SELECT quackgate.worker_id()')").fetchall()[0][0], flush=True)
        break
    except Exception as e:
        if attempt == 0 and "Bad Gateway" in str(e):
            continue
        print("error", str(e).replace("\n", " "), flush=True)
        break
"#,
            go = go.display(),
        );
    let clients: Vec<Child> = (0..6)
        .map(|_| {
            // `timeout`: a hung forward fails this test instead of hanging CI.
            Command::new("timeout")
                .arg("180")
                .arg(toolchain.python())
                .arg("-c")
                .arg(&script)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Read each client's first line to learn which node owns its session.
    use std::io::{BufRead, BufReader};
    let mut readers = Vec::new();
    let mut owners = Vec::new();
    for mut c in clients {
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let owner = first
            .strip_prefix("before ")
            .unwrap_or_else(|| panic!("client said {first:?}"))
            .to_string();
        owners.push(owner);
        readers.push((c, lines));
    }
    let owner_nodes: BTreeSet<String> = owners
        .iter()
        .map(|o| o.split('.').next().unwrap().to_string())
        .collect();
    assert!(
        owner_nodes.len() >= 2,
        "sessions on one node only: {owners:?}"
    );
    let victim = owner_nodes.iter().next().unwrap().clone();
    let index: usize = victim.trim_start_matches('n').parse().unwrap();
    assert!(Command::new("kill")
        .args(["-9", &cluster.nodes[index].child.id().to_string()])
        .status()
        .unwrap()
        .success());
    std::fs::write(&go, "").unwrap();

    for ((mut child, mut lines), owner) in readers.into_iter().zip(owners) {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = child.wait();
        if owner.starts_with(&format!("{victim}.")) {
            assert!(
                line.starts_with("error")
                    && (line.contains("unreachable") || line.contains("Invalid connection id")),
                "session on the killed node {owner}: {line}"
            );
        } else {
            assert_eq!(
                line,
                format!("after {owner}"),
                "session on a surviving node"
            );
        }
    }
    // A new ATTACH through the same balancer still works.
    let out = run_cli(
        &toolchain,
        &format!("{}FROM r.query('SELECT 42');\n", cluster.attach_sql()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}

#[test]
fn a_peer_found_through_dns_serves_the_sessions_it_owns() {
    let shared = tempfile::tempdir().unwrap();
    let secret = shared.path().join("id-secret");
    std::fs::write(&secret, random_hex() + &random_hex() + &random_hex()[..16]).unwrap();
    let token = format!("tok-{}", random_hex());
    let node = |n: usize, cluster_toml: String| {
        Gateway::start_with(GatewayOptions {
            workers: 1,
            token: Some(token.clone()),
            extra_gateway_toml: format!(
                "node_id = \"n{n}\"\nid_secret_file = \"{}\"\n",
                secret.display()
            ),
            extra_toml: cluster_toml,
            ..Default::default()
        })
    };
    let n0 = node(0, "[cluster]\npeer_listen = \"127.0.0.1:0\"\n".into());
    let n0_peer = n0.peer.expect("peer listener");
    // n1 knows no node by name: only a DNS name whose address is n0's peer listener.
    let n1 = node(
        1,
        format!(
            "[cluster]\npeer_listen = \"127.0.0.1:0\"\npeers_dns = \"localhost:{}\"\n",
            n0_peer.port()
        ),
    );
    wait_until(
        "n1 to discover n0 through DNS",
        Duration::from_secs(20),
        || {
            n1.admin_get("/status")
                .1
                .contains(&format!("peer n0 {n0_peer}"))
        },
    );
    let id = crate::support::open_session(&n0);
    let (status, body) = crate::support::quack_post(n1.plain, crate::support::prepare_with_id(&id));
    assert_eq!((status, crate::support::msg_type(&body)), (200, 4));
    assert!(
        n0.admin_get("/status").1.contains("peer_requests=1"),
        "{}",
        n0.admin_get("/status").1
    );
}
