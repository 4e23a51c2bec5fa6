//! Spawns the worker processes (this same binary, `quackgate worker`), restarts them when they
//! die, and stops them on shutdown.
//!
//! The spec goes to the child on stdin as one JSON line and stdin then stays open: the child
//! exits on end of file, so workers never outlive the gateway, even one killed with SIGKILL.
//! The child answers one status line on stdout; its stderr is the gateway's, so DuckDB's own
//! messages reach the operator unchanged.
//!
//! A worker that fails on its first start is fatal (the operator must fix something, and
//! the message says what); after that, every exit is logged with its cause and the slot is
//! restarted with exponential backoff.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quackgate_duckdb::{
    DuckLakeSpec, WorkerSpec, WorkerStatus, EXIT_CATALOG_LOST, EXIT_SERVER_STOPPED, LAKE_PREFIX,
    MAINTAIN_LINE,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::Access;
use crate::auth::WorkerToken;
use crate::sessions::table::SessionTable;
use crate::workers::config::WorkersConfig;
use crate::workers::lake::LakeStatus;
use crate::workers::{exits, memory, Worker, WorkerSet};

/// First restart delay.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process that served this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Time a worker gets to exit after its stdin closes, before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why a worker did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The process could not be spawned or talked to.
    #[error("worker {worker}: {what}: {source}")]
    Io {
        worker: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The worker said why it cannot start.
    #[error("worker {worker} failed to start: {why}")]
    Failed { worker: String, why: String },
    /// The worker exited without saying anything.
    #[error("worker {worker} exited during start-up ({status})")]
    Exited { worker: String, status: String },
    /// The worker did not report ready in time.
    #[error(
        "worker {worker} did not start serving within {secs} s (workers.startup_timeout_secs)"
    )]
    Timeout { worker: String, secs: u64 },
}

/// What every worker of this node is started with.
#[derive(Debug)]
pub struct Launcher {
    pub exe: PathBuf,
    /// The `[workers]` config.
    pub config: WorkersConfig,
    /// The internal token the gateway swaps in.
    pub token: WorkerToken,
    /// The internal token of read-only sessions: read-only workers serve with it; a worker
    /// that serves both kinds (the catalog's) accepts it beside `token`.
    pub read_only_token: WorkerToken,
    /// Whether one worker serves both kinds of session (the catalog).
    pub roles_share_workers: bool,
    /// Where the catalog's maintenance reports go, and run requests come from.
    pub lake: Arc<LakeStatus>,
}

/// A started worker process.
struct Running {
    child: Child,
    /// Held open: closing it tells the worker to exit.
    stdin: ChildStdin,
    port: u16,
    /// Keeps the port out of everyone else's hands while the worker serves on it.
    _reservation: PortReservation,
}

impl Launcher {
    fn spec(&self, worker: &Worker, port: u16) -> WorkerSpec {
        WorkerSpec {
            worker_id: worker.id.clone(),
            port,
            token: match worker.access {
                Access::ReadWrite => self.token.expose().to_string(),
                Access::ReadOnly => self.read_only_token.expose().to_string(),
            },
            extension_dir: self.config.extension_dir.clone(),
            database: self.config.database_file.clone().or_else(|| {
                self.config
                    .database_dir
                    .as_ref()
                    .map(|dir| dir.join(format!("w{}.duckdb", worker.index)))
            }),
            threads: self.config.threads,
            memory_limit: self
                .config
                .memory_limit
                .clone()
                .or_else(|| memory::share(self.config.count + self.config.read_only_count)),
            init_sql: self.config.init_sql.clone(),
            fetch_batch_chunks: Some(self.config.fetch_batch_chunks),
            // A read-only session must not write files or change settings either.
            external_access: self.config.external_access && worker.access == Access::ReadWrite,
            read_only: worker.access == Access::ReadOnly,
            accept_unconfined: self.config.accept_unconfined_risk
                && worker.access == Access::ReadWrite,
            read_only_token: self
                .roles_share_workers
                .then(|| self.read_only_token.expose().to_string()),
            lake_commits: self.config.lake_commits,
            maintenance: self.config.maintenance,
            readable_dirs: self.config.readable_dirs.clone(),
            writable_dirs: self.config.writable_dirs.clone(),
            ducklake: self.config.ducklake.as_ref().map(|lake| DuckLakeSpec {
                catalog: lake.catalog.clone(),
                // Read-only workers reach the catalog with its read-only token.
                catalog_token: match (&lake.read_only_catalog_token, worker.access) {
                    (Some(token), Access::ReadOnly) => token.expose().to_string(),
                    _ => lake.catalog_token.expose().to_string(),
                },
                data_path: lake.data_path.clone(),
                catalog_ca_file: lake.catalog_ca_file.clone(),
                commit_retry: lake.commit_retry,
                azure: match worker.access {
                    Access::ReadWrite => lake.azure.clone(),
                    Access::ReadOnly => lake.read_only_azure.clone(),
                },
            }),
        }
    }

    async fn start(&self, worker: &Worker) -> Result<Running, LaunchError> {
        let io = |what| {
            let worker = worker.id.clone();
            move |source| LaunchError::Io {
                worker,
                what,
                source,
            }
        };
        let reservation = PortReservation::new().map_err(io("reserving a port"))?;
        let port = reservation.port;
        let mut child = Command::new(&self.exe)
            .arg("worker")
            .env_clear()
            .envs(crate::workers::env::for_worker())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a Ctrl-C meant for the gateway must not kill the workers
            // before the gateway has drained.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(io("spawning"))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = serde_json::to_vec(&self.spec(worker, port)).expect("spec serializes");
        line.push(b'\n');
        stdin
            .write_all(&line)
            .await
            .map_err(io("sending the spec"))?;
        stdin.flush().await.map_err(io("sending the spec"))?;

        let mut lines = BufReader::new(stdout).lines();
        let status = tokio::time::timeout(self.config.startup_timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(status) = WorkerStatus::parse_line(&line) {
                    return Some(status);
                }
                debug!(worker.id = %worker.id, line = %line, "worker stdout");
            }
            None
        })
        .await;
        match status {
            Ok(Some(WorkerStatus::Ready { port })) => {
                // Keep draining stdout so the worker never blocks writing to it.
                let id = worker.id.clone();
                let lake = self.lake.clone();
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        match line.strip_prefix(LAKE_PREFIX) {
                            Some(report) => lake.record(report),
                            None => debug!(worker.id = %id, line = %line, "worker stdout"),
                        }
                    }
                });
                Ok(Running {
                    child,
                    stdin,
                    port,
                    _reservation: reservation,
                })
            }
            Ok(Some(WorkerStatus::Failed(why))) => {
                if let Err(e) = child.wait().await {
                    debug!(worker.id = %worker.id, error = %e, "waiting for a failed worker");
                }
                Err(LaunchError::Failed {
                    worker: worker.id.clone(),
                    why,
                })
            }
            Ok(None) => {
                let status = child
                    .wait()
                    .await
                    .map(describe_exit)
                    .unwrap_or_else(|e| e.to_string());
                Err(LaunchError::Exited {
                    worker: worker.id.clone(),
                    status,
                })
            }
            Err(_elapsed) => {
                if let Err(e) = child.kill().await {
                    debug!(worker.id = %worker.id, error = %e, "killing a worker that did not start");
                }
                Err(LaunchError::Timeout {
                    worker: worker.id.clone(),
                    secs: self.config.startup_timeout.as_secs(),
                })
            }
        }
    }
}

impl Running {
    /// Asks the worker to exit by closing its stdin; kills it if it does not.
    async fn stop(mut self, worker: &Worker) {
        drop(self.stdin);
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(Ok(status)) => {
                info!(worker.id = %worker.id, exit = %describe_exit(status), "worker stopped")
            }
            Ok(Err(e)) => warn!(worker.id = %worker.id, error = %e, "waiting for worker to stop"),
            Err(_elapsed) => {
                warn!(worker.id = %worker.id, grace_secs = STOP_GRACE.as_secs(), "worker did not stop in time; killing it");
                if let Err(e) = self.child.kill().await {
                    warn!(worker.id = %worker.id, error = %e, "killing worker");
                }
            }
        }
    }
}

/// Runs one worker slot until `stop_workers`: start, wait for exit, restart with backoff (but
/// not once the drain has begun, `shutdown`).
///
/// The result of the first start goes to `first_start`; if it failed, the slot gives up,
/// because the gateway is about to exit with that error.
pub async fn supervise(
    workers: Arc<WorkerSet>,
    index: u16,
    launcher: Arc<Launcher>,
    sessions: Arc<SessionTable>,
    first_start: oneshot::Sender<Result<(), LaunchError>>,
    shutdown: CancellationToken,
    stop_workers: CancellationToken,
) {
    let worker = workers.get(index).expect("slot index comes from the set");
    let mut first_start = Some(first_start);
    let mut backoff = BACKOFF_INITIAL;
    loop {
        let started = tokio::select! {
            started = launcher.start(worker) => started,
            _ = stop_workers.cancelled() => return,
        };
        match started {
            Ok(mut running) => {
                worker.set_serving(running.port);
                info!(worker.id = %worker.id, port = running.port, pid = running.child.id(), "worker serving");
                if let Some(tx) = first_start.take() {
                    // The receiver only goes away when the gateway is already exiting.
                    let _ignored = tx.send(Ok(()));
                }
                let since = Instant::now();
                let maintains = launcher.config.maintenance.is_some();
                let status = loop {
                    tokio::select! {
                        status = running.child.wait() => break Ended::Exited(status),
                        _ = stop_workers.cancelled() => break Ended::Stopping,
                        _ = worker.restart_requested() => break Ended::Freed,
                        _ = launcher.lake.run_requested(), if maintains => {
                            let line = format!("{MAINTAIN_LINE}\n");
                            if let Err(e) = running.stdin.write_all(line.as_bytes()).await {
                                warn!(worker.id = %worker.id, error = %e, "asking the worker for a maintenance run");
                            }
                        }
                    }
                };
                match status {
                    Ended::Exited(status) => {
                        worker.set_down();
                        sessions.forget_worker(worker);
                        let catalog_lost =
                            matches!(&status, Ok(s) if s.code() == Some(EXIT_CATALOG_LOST));
                        let exit = status.map(describe_exit).unwrap_or_else(|e| e.to_string());
                        warn!(worker.id = %worker.id, exit = %exit, served_secs = since.elapsed().as_secs(), "worker exited; its sessions are lost; restarting");
                        // An isolated worker's end is its principal's doing, unless the lake's
                        // catalog went away under it.
                        if let Some(principal) = worker.owner().filter(|_| !catalog_lost) {
                            if let Some(penalty) = workers.exits.ended(&principal, Instant::now()) {
                                warn!(principal.name = %principal, workers_ended = exits::LIMIT, within_secs = exits::WINDOW.as_secs(), refused_secs = penalty.as_secs(), "a principal's sessions ended workers in a loop; its new sessions are refused for a while");
                            }
                        }
                        if since.elapsed() >= STABLE_AFTER {
                            backoff = BACKOFF_INITIAL;
                        }
                        if shutdown.is_cancelled() {
                            // No new sessions come during a drain; a new process would only
                            // delay the exit.
                            info!(worker.id = %worker.id, "not restarting the worker during the drain");
                            return;
                        }
                    }
                    Ended::Stopping => {
                        worker.set_down();
                        running.stop(worker).await;
                        return;
                    }
                    Ended::Freed => {
                        // Planned, and nothing of the old principal's may outlive it: a new
                        // process at once, not a restart with backoff.
                        running.stop(worker).await;
                        worker.set_down();
                        sessions.forget_worker(worker);
                        info!(worker.id = %worker.id, served_secs = since.elapsed().as_secs(), "worker replaced by a new process (for another principal, or to stop a statement past limits.statement_timeout_secs)");
                        continue;
                    }
                }
            }
            Err(e) => {
                if let Some(tx) = first_start.take() {
                    // As above: no receiver means the gateway is exiting anyway.
                    let _ignored = tx.send(Err(e));
                    return;
                }
                warn!(worker.id = %worker.id, error = %e, "worker failed to restart; retrying");
            }
        }
        worker.count_restart();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop_workers.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Why a serving worker process was left.
enum Ended {
    Exited(std::io::Result<ExitStatus>),
    /// The gateway stops its workers.
    Stopping,
    /// Another principal needs the slot ([`Worker::free_for`]).
    Freed,
}

/// A loopback port held for one worker process.
///
/// quack_serve cannot bind port 0, so the gateway picks the port. Picking one and letting it go
/// would race with every other process binding ports on the machine, and quack_serve binds
/// with SO_REUSEPORT, so a clash with another Quack server would not even fail: both would
/// serve the port and requests would reach the wrong one. So the port comes from the kernel on
/// a socket that is bound, with SO_REUSEPORT, and never listens: the worker's server can bind
/// the same port (it sets SO_REUSEPORT too), nobody else is handed it, and a socket that does
/// not listen takes no connections.
struct PortReservation {
    _socket: socket2::Socket,
    port: u16,
}

impl PortReservation {
    fn new() -> std::io::Result<Self> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.set_reuse_port(true)?;
        socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let port = socket
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .ok_or_else(|| std::io::Error::other("reserved socket has no IP address"))?;
        Ok(PortReservation {
            _socket: socket,
            port,
        })
    }
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(EXIT_SERVER_STOPPED), _) => {
            format!("exit code {EXIT_SERVER_STOPPED}: its Quack server was stopped (quack_stop from client SQL)")
        }
        (Some(EXIT_CATALOG_LOST), _) => {
            format!("exit code {EXIT_CATALOG_LOST}: DuckLake catalog lost")
        }
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}
