//! Network namespaces, a bridge, processes inside namespaces and nginx: a local stand-in for a
//! platform where every app has its own address and the same ports (Azure Container Apps).
//!
//! Everything made here is named with a random per-run tag, so a leftover of a crashed run never
//! collides with a new one, and is torn down on `Drop`, also while a test panics: the processes
//! first, then every process still inside a namespace (orphaned workers), then the namespaces,
//! their `/etc/netns/<name>` folders and the bridge.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::wait_until;

/// Runs `ip <args>`; the error output when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    u32::from_le_bytes(b)
}

/// A Linux bridge with an address in the root namespace, and namespaces plugged into it.
pub struct Net {
    /// Random per run, 5 hex characters: part of every name made here.
    pub tag: String,
    /// The third octet of `10.77.<subnet>.0/24`.
    pub subnet: u8,
    pub bridge: String,
    namespaces: Mutex<Vec<String>>,
    veths: Mutex<Vec<String>>,
}

/// One network namespace: one app of the platform.
#[derive(Clone, Debug)]
pub struct Ns {
    pub name: String,
    pub ip: Ipv4Addr,
}

impl Net {
    /// Makes the bridge `10.77.<random>.1/24`. Fails the test with what to do when network
    /// namespaces cannot be made here (not root, no `ip`).
    pub fn create() -> Net {
        let used = Command::new("ip")
            .args(["-4", "-o", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| {
                panic!("the edge topology needs iproute2 (`ip`) and root: running `ip`: {e}")
            });
        sweep_dead_runs();
        let r = random_u32();
        let tag = format!("{:05x}", r & 0xf_ffff);
        std::fs::create_dir_all(RUNS_DIR).unwrap();
        std::fs::write(
            Path::new(RUNS_DIR).join(&tag),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let mut subnet = ((r >> 20) % 250 + 2) as u8;
        while used.contains(&format!(" 10.77.{subnet}.")) {
            subnet = subnet % 250 + 2;
        }
        let net = Net {
            bridge: format!("qb{tag}"),
            tag,
            subnet,
            namespaces: Mutex::new(Vec::new()),
            veths: Mutex::new(Vec::new()),
        };
        let addr = format!("10.77.{subnet}.1/24");
        let made = ip(&["link", "add", &net.bridge, "type", "bridge"])
            .and_then(|()| ip(&["addr", "add", &addr, "dev", &net.bridge]))
            .and_then(|()| ip(&["link", "set", &net.bridge, "up"]));
        if let Err(e) = made {
            panic!(
                "the edge topology needs Linux network namespaces, veth and bridges (run as root \
                 with iproute2, or in a container with CAP_NET_ADMIN and CAP_SYS_ADMIN): {e}"
            );
        }
        net
    }

    /// Notes a process this run starts outside its namespaces, so that a later run can stop
    /// it if this one dies without its `Drop`. `marker` is a part of its command line.
    pub fn note_root_process(&self, pid: u32, marker: &str) {
        use std::fs::OpenOptions;
        if let Ok(mut f) = OpenOptions::new()
            .append(true)
            .open(Path::new(RUNS_DIR).join(&self.tag))
        {
            let _ = writeln!(f, "{pid} {marker}");
        }
    }

    /// The bridge's address: the source address of whatever the root namespace sends to an app.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, host)
    }

    /// A namespace `qg-<tag>-<role>` at `10.77.<subnet>.<host>`, its `eth0` a veth into the
    /// bridge, its loopback up, and `hosts` as its `/etc/hosts` (`ip netns exec` bind-mounts
    /// `/etc/netns/<name>/hosts` over `/etc/hosts`). `role` is at most 3 characters.
    pub fn add_ns(&self, role: &str, host: u8, hosts: &str) -> Ns {
        assert!(
            role.len() <= 3,
            "role {role:?} makes too long an interface name"
        );
        let name = format!("qg-{}-{role}", self.tag);
        let veth = format!("q{}{role}", self.tag);
        let ip_addr = self.ip(host);
        ip(&["netns", "add", &name]).unwrap_or_else(|e| panic!("{e}"));
        self.namespaces.lock().unwrap().push(name.clone());
        let cidr = format!("{ip_addr}/24");
        let made = ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ])
        .and_then(|()| {
            self.veths.lock().unwrap().push(veth.clone());
            ip(&["link", "set", &veth, "master", &self.bridge])
        })
        .and_then(|()| ip(&["link", "set", &veth, "up"]))
        .and_then(|()| ip(&["-n", &name, "addr", "add", &cidr, "dev", "eth0"]))
        .and_then(|()| ip(&["-n", &name, "link", "set", "eth0", "up"]))
        .and_then(|()| ip(&["-n", &name, "link", "set", "lo", "up"]));
        made.unwrap_or_else(|e| panic!("{e}"));
        let etc = Path::new("/etc/netns").join(&name);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("hosts"),
            format!("127.0.0.1 localhost\n::1 localhost\n{hosts}"),
        )
        .unwrap();
        Ns { name, ip: ip_addr }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let namespaces = self.namespaces.lock().unwrap().clone();
        remove_namespaces(&namespaces);
        for veth in self.veths.lock().unwrap().iter() {
            // Gone with its namespace already, normally.
            let _ = Command::new("ip")
                .args(["link", "del", veth])
                .stderr(Stdio::null())
                .status();
        }
        let _ = ip(&["link", "del", &self.bridge]);
        let _ = std::fs::remove_file(Path::new(RUNS_DIR).join(&self.tag));
    }
}

/// Where each run notes its tag and pid, so that a later run can remove what a run that died
/// without its `Drop` (SIGKILL, an abort) left behind.
const RUNS_DIR: &str = "/run/quackgate-edge-tests";

/// Removes the namespaces, `/etc/netns` folders and bridge of every run whose process is gone.
fn sweep_dead_runs() {
    let Ok(entries) = std::fs::read_dir(RUNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let tag = entry.file_name().to_string_lossy().into_owned();
        let noted = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let mut lines = noted.lines();
        let pid = lines.next().unwrap_or("").trim().to_string();
        if !pid.is_empty() && Path::new("/proc").join(&pid).exists() {
            continue;
        }
        // Processes of that run outside its namespaces (the front nginx): `<pid> <marker>`,
        // killed only if their command line still holds the marker (not a reused pid).
        for line in lines {
            let Some((p, marker)) = line.split_once(' ') else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(marker) {
                let _ = Command::new("kill").arg(p).status();
            }
        }
        let prefix = format!("qg-{tag}-");
        let listed = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let stale: Vec<String> = listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        let _ = writeln!(
            std::io::stderr(),
            "removing what run {tag} (pid {pid}, gone) left: {stale:?}"
        );
        remove_namespaces(&stale);
        let links = Command::new("ip")
            .args(["-o", "link"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for link in links.lines().filter_map(|l| l.split(": ").nth(1)) {
            let name = link.split('@').next().unwrap_or(link);
            if name == format!("qb{tag}") || name.starts_with(&format!("q{tag}")) {
                let _ = Command::new("ip")
                    .args(["link", "del", name])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

/// Kills every process inside each namespace, then deletes it and its `/etc/netns` folder.
fn remove_namespaces(namespaces: &[String]) {
    for ns in namespaces {
        // Whatever still runs inside: workers whose gateway was killed, for instance.
        let pids = |ns: &str| -> Vec<String> {
            Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let start = Instant::now();
        loop {
            let left = pids(ns);
            if left.is_empty() || start.elapsed() > Duration::from_secs(10) {
                break;
            }
            let _ = Command::new("kill").arg("-9").args(&left).status();
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = ip(&["netns", "del", ns]);
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
    }
}

/// A process started by the test (in a namespace or not), its stdout and stderr captured.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: Arc<Mutex<String>>,
    stdout_lines: Mutex<Receiver<String>>,
    /// Killed or exited; `Drop` has nothing left to do.
    pub gone: bool,
}

/// The command line `ip netns exec <ns> <program>`, or `<program>` without a namespace.
pub fn in_ns(ns: Option<&Ns>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &ns.name]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

impl Proc {
    /// Spawns `cmd` with stdin null, stdout and stderr captured.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
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
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                {
                    let mut log = sink.lock().unwrap();
                    log.push_str("stdout: ");
                    log.push_str(&line);
                    log.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        Proc {
            name: name.to_string(),
            child,
            log,
            stdout_lines: Mutex::new(rx),
            gone: false,
        }
    }

    /// Waits for the `QUACKGATE READY k=v ...` line; its fields.
    pub fn wait_ready(&mut self, deadline: Duration) -> BTreeMap<String, String> {
        let start = Instant::now();
        loop {
            let next = self
                .stdout_lines
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_millis(200));
            match next {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("QUACKGATE READY") {
                        return rest
                            .split_whitespace()
                            .filter_map(|kv| kv.split_once('='))
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    self.gone = true;
                    panic!(
                        "{} exited ({status}) before its READY line; log:\n{}",
                        self.name,
                        self.log()
                    );
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.gone = true;
                panic!(
                    "{} exited ({status}) before its READY line; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                start.elapsed() < deadline,
                "{} printed no READY line within {deadline:?}; log:\n{}",
                self.name,
                self.log()
            );
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (e.g. "KILL", "TERM") to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {}", self.name);
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
        self.gone = true;
    }

    /// Waits for the process to exit on its own, up to `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let status = super::wait_for_exit(&mut self.child, deadline);
        self.gone = true;
        status
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.gone {
            // TERM first so that nginx's master stops its workers; then KILL if it lingers.
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            // Not eprintln!: a closed stderr must not turn this into a panic in a panic.
            let _ = writeln!(
                std::io::stderr(),
                "---- {} (last 150 lines) ----\n{}",
                self.name,
                self.log_tail(150)
            );
        }
    }
}

/// What an nginx in front of something proxies to.
pub struct NginxSpec<'a> {
    pub name: &'a str,
    pub ns: Option<&'a Ns>,
    /// `addr:port` to listen on with TLS.
    pub listen_tls: String,
    pub cert: &'a Path,
    pub key: &'a Path,
    /// `host:port` of each upstream server; round robin, no stickiness.
    pub upstreams: Vec<String>,
    /// Upstreams speak TLS (checked against `upstream_ca`, with this SNI) instead of plain.
    pub upstream_tls: Option<(&'a Path, &'a str)>,
    /// Keep-alive connections to the upstreams, as an app ingress has.
    pub keepalive: bool,
    /// Pass the client's Host (an ingress routing by Host does), not the upstream's.
    pub pass_host: bool,
    pub read_timeout_secs: u32,
    /// More `server { ... }` blocks for the `http` section.
    pub extra_servers: String,
}

/// A real nginx, run in a namespace or in the root one.
pub struct Nginx {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub listen: String,
}

pub fn nginx_binary() -> &'static str {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is missing: apt-get install -y nginx (scripts/test installs it)")
}

impl Nginx {
    pub fn start(spec: NginxSpec<'_>) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let servers: String = spec
            .upstreams
            .iter()
            .map(|a| format!("    server {a};\n"))
            .collect();
        let keepalive = if spec.keepalive {
            "    keepalive 32;\n    keepalive_timeout 60s;\n"
        } else {
            ""
        };
        let (scheme, upstream_tls) = match spec.upstream_tls {
            Some((ca, sni)) => (
                "https",
                format!(
                    "      proxy_ssl_trusted_certificate {};\n      proxy_ssl_verify on;\n      proxy_ssl_name {sni};\n      proxy_ssl_server_name on;\n",
                    ca.display()
                ),
            ),
            None => ("http", String::new()),
        };
        let host = if spec.pass_host {
            "      proxy_set_header Host $host;\n"
        } else {
            ""
        };
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
  upstream backends {{
{servers}{keepalive}  }}
  server {{
    listen {listen} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    client_max_body_size 256m;
    location / {{
      proxy_pass {scheme}://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
{host}      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
{upstream_tls}      proxy_read_timeout {timeout}s;
      proxy_send_timeout {timeout}s;
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
{extra}}}
"#,
            extra = spec.extra_servers,
            d = dir.path().display(),
            listen = spec.listen_tls,
            cert = spec.cert.display(),
            key = spec.key.display(),
            timeout = spec.read_timeout_secs,
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = in_ns(spec.ns, Path::new(nginx_binary()));
        cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf_path);
        let mut proc = Proc::spawn(spec.name, cmd);
        let addr: SocketAddr = spec.listen_tls.parse().unwrap();
        let start = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                proc.gone = true;
                panic!(
                    "{} exited ({status}): {}\n{}",
                    spec.name,
                    proc.log(),
                    std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} does not listen on {addr}",
                spec.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            proc,
            dir,
            listen: spec.listen_tls,
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "---- {} error.log ----\n{}",
                self.proc.name,
                self.error_log()
            );
        }
    }
}

/// A plain HTTP/1.0 GET with short timeouts; `None` when nothing answers.
pub fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// An answer over HTTPS.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// One HTTP/1.1 request over TLS to `addr`, with SNI and Host `server_name`, trusting `ca`.
pub fn https_request(
    addr: SocketAddr,
    server_name: &str,
    ca: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Answer, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let work = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS to {server_name}: {e}"))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let mut req = http::Request::builder()
                .method(method)
                .uri(path)
                .header("host", server_name)
                .header("content-type", "application/octet-stream");
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            let req = req.body(Full::new(Bytes::from(body))).unwrap();
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok(Answer {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(30), work)
            .await
            .map_err(|_| "timed out".to_string())?
    })
}

/// Runs the DuckDB CLI (optionally inside `ns`) on `script`, killed after `secs`.
pub fn run_cli_bounded(
    toolchain: &super::Toolchain,
    ns: Option<&Ns>,
    script: &str,
    secs: u32,
) -> Output {
    let mut cmd = in_ns(ns, Path::new("timeout"));
    cmd.arg(secs.to_string())
        .arg(toolchain.cli())
        .args(["-csv", "-noheader", "-bail"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning the duckdb CLI");
    let script = format!("SET enable_progress_bar = false;\n{script}");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A long-lived client process driven line by line: the test writes a command on its stdin
/// and reads one answer line from its stdout.
pub struct Driven {
    pub proc: Proc,
    stdin: Option<ChildStdin>,
}

impl Driven {
    /// Spawns `cmd` (killed after `secs` by `timeout`, so a hung forward fails instead of hanging).
    pub fn spawn(name: &str, program: &Path, args: &[String], env: &[(&str, String)]) -> Driven {
        let mut cmd = Command::new("timeout");
        cmd.arg("300").arg(program).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Proc::spawn sets stdin to null; a driven client needs a pipe.
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        cmd.stdin(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let stdin = child.stdin.take();
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
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Driven {
            proc: Proc {
                name: name.to_string(),
                child,
                log,
                stdout_lines: Mutex::new(rx),
                gone: false,
            },
            stdin,
        }
    }

    /// The next line of output, within `deadline`.
    pub fn line(&mut self, deadline: Duration) -> String {
        let next = self
            .proc
            .stdout_lines
            .lock()
            .unwrap()
            .recv_timeout(deadline);
        match next {
            Ok(line) => line,
            Err(e) => panic!(
                "{}: no answer within {deadline:?} ({e}); stderr:\n{}",
                self.proc.name,
                self.proc.log()
            ),
        }
    }

    /// Sends `cmd` and returns the answer line.
    pub fn ask(&mut self, cmd: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin closed");
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        self.line(Duration::from_secs(120))
    }

    /// Closes stdin (the client ends its session and exits) and waits for it.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.proc.wait_exit(Duration::from_secs(60));
    }
}

/// `dir/name`, written with `text`.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits, up to `deadline`, for `f` to give `Some`; returns it.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let mut out = None;
    wait_until(what, deadline, || {
        out = f();
        out.is_some()
    });
    out.unwrap()
}
