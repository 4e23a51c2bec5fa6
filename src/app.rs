//! Wiring: builds the shared state from a validated [`Config`], binds the listeners, starts the
//! workers, and runs the shutdown sequence. No request logic lives here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::refresh;
use crate::config::Config;
use crate::id_rotation::Rotation;
use crate::limits::ConnectionCaps;
use crate::proxy::Origin;
use crate::role::Role;
use crate::server::{self, Listener};
use crate::sessions::idle::IdleSweep;
use crate::sessions::revoked::RevokedSweep;
use crate::shutdown::Lifecycle;
use crate::state::{AppState, StateError};
use crate::tls::{self, TlsError};
use crate::workers::health;
use crate::workers::supervisor::{self, LaunchError, Launcher};
use crate::{admin, proxy};

/// Prefix of the one line the gateway prints on stdout once it serves.
pub const READY_PREFIX: &str = "QUACKGATE READY";
/// How often the drain checks whether every session has ended.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// In-flight requests always get at least this long once the listeners close.
const DRAIN_MIN_FINAL_WAIT: Duration = Duration::from_secs(1);

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener could not bind.
    #[error("binding the {name} listener on {addr}: {source}")]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A bound listener's address could not be read.
    #[error("reading the {name} listener's address: {source}")]
    LocalAddr {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The lake's local data folder could not be made.
    #[error("workers.ducklake.data_path {path}: {source}")]
    DataPath {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A worker could not start.
    #[error(transparent)]
    Worker(#[from] LaunchError),
    /// The path of this executable (which workers run) is unknown.
    #[error("locating the quackgate executable to run workers: {0}")]
    Exe(#[source] std::io::Error),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Runs the gateway until `shutdown` is cancelled, then drains and stops.
///
/// # Errors
/// [`AppError`] when the gateway cannot start; once it serves, it only returns `Ok`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AppError> {
    // TLS material is parsed before anything binds, so a bad certificate costs no port.
    let (tls, mut cert_stores) = match config.tls.as_ref().map(tls::server_config).transpose()? {
        Some((tls, store)) => (Some(tls), vec![store]),
        None => (None, Vec::new()),
    };
    let exe = std::env::current_exe().map_err(AppError::Exe)?;

    if let Some(cap) = server::kernel_backlog_cap().filter(|&cap| cap < config.listen_backlog) {
        warn!(
            gateway.listen_backlog = config.listen_backlog,
            net.core.somaxconn = cap,
            "the kernel caps every listen backlog below gateway.listen_backlog; a burst of new \
             connections past it has its SYNs dropped and retried a second later"
        );
    }
    let mut listeners = Vec::new();
    let trusted = Arc::new(config.trusted_proxies.clone());
    let per_address = Arc::new(ConnectionCaps::new(
        config.limits.max_connections_per_address,
    ));
    if let (Some(addr), Some(tls)) = (config.listen, tls) {
        let tcp = bind("https", addr, config.listen_backlog)?;
        let acceptor = TlsAcceptor::from(tls);
        listeners.push(Listener {
            tcp,
            tls: Some((acceptor, config.tls_handshake_timeout)),
            name: "https",
            trusted: trusted.clone(),
            per_address: Some(per_address.clone()),
            only_trusted: false,
        });
    }
    if let Some(addr) = config.plain_listen {
        listeners.push(Listener {
            tcp: bind("plain", addr, config.listen_backlog)?,
            tls: None,
            name: "plain",
            trusted: trusted.clone(),
            per_address: Some(per_address.clone()),
            // Off loopback, plain HTTP serves only the proxies that terminate TLS for it.
            only_trusted: !addr.ip().is_loopback(),
        });
    }
    let peer_listener = match config
        .cluster
        .as_ref()
        .and_then(|c| c.peer_listen.map(|addr| (addr, c.peer_listen_tls.as_ref())))
    {
        Some((addr, tls_files)) => {
            let tls = match tls_files.map(tls::server_config).transpose()? {
                Some((tls, store)) => {
                    cert_stores.push(store);
                    Some(tls)
                }
                None => None,
            };
            Some(Listener {
                tcp: bind("peer", addr, config.listen_backlog)?,
                tls: tls.map(|t| (TlsAcceptor::from(t), config.tls_handshake_timeout)),
                name: "peer",
                trusted: Arc::default(),
                per_address: None,
                only_trusted: false,
            })
        }
        None => None,
    };
    let admin = Listener {
        tcp: bind("admin", config.admin_listen, config.listen_backlog)?,
        tls: None,
        name: "admin",
        trusted: Arc::default(),
        per_address: None,
        only_trusted: false,
    };
    let health = match config.health_listen {
        Some(addr) => Some(Listener {
            tcp: bind("health", addr, config.listen_backlog)?,
            tls: None,
            name: "health",
            trusted: Arc::default(),
            per_address: None,
            only_trusted: false,
        }),
        None => None,
    };
    let mut ready_line = String::from(READY_PREFIX);
    for l in listeners
        .iter()
        .chain(peer_listener.as_ref())
        .chain(std::iter::once(&admin))
        .chain(health.as_ref())
    {
        let addr = l.tcp.local_addr().map_err(|source| AppError::LocalAddr {
            name: l.name,
            source,
        })?;
        info!(listener = l.name, addr = %addr, "listening");
        ready_line.push_str(&format!(" {}={addr}", l.name));
    }

    let lifecycle = Lifecycle::new(shutdown);
    let state = Arc::new(AppState::new(&config, lifecycle.shutdown.clone())?);
    let workers = state.workers.clone();

    // Listeners serve at once; until the workers are up, /readyz says so and connects are
    // answered with a clear error.
    let tracker = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let mut servers = JoinSet::new();
    for listener in listeners {
        let state = state.clone();
        servers.spawn(server::run(
            listener,
            move |req| proxy::handle(state.clone(), Origin::Client, req),
            limit.clone(),
            lifecycle.stop_accepting.clone(),
            tracker.clone(),
        ));
    }
    if let Some(listener) = peer_listener {
        let state = state.clone();
        servers.spawn(server::run(
            listener,
            move |req| proxy::handle(state.clone(), Origin::Peer, req),
            // Its own limit: clients holding every permit while their requests wait on
            // forwards to each other's nodes would otherwise deadlock the cluster.
            Arc::new(Semaphore::new(config.max_connections)),
            lifecycle.stop_accepting.clone(),
            tracker.clone(),
        ));
    }
    {
        let state = state.clone();
        servers.spawn(server::run(
            admin,
            move |req| admin::handle(state.clone(), req),
            Arc::new(Semaphore::new(64)),
            lifecycle.stop_admin.clone(),
            TaskTracker::new(),
        ));
    }
    if let Some(health) = health {
        let state = state.clone();
        servers.spawn(server::run(
            health,
            move |req| admin::handle_health(state.clone(), req),
            Arc::new(Semaphore::new(64)),
            lifecycle.stop_admin.clone(),
            TaskTracker::new(),
        ));
    }

    let launcher = Arc::new(Launcher {
        exe,
        config: config.workers.clone(),
        token: state.worker_token.clone(),
        read_only_token: state.read_only_worker_token.clone(),
        roles_share_workers: state.roles_share_workers,
        lake: workers.lake.clone(),
    });
    if let Some(lake) = &config.workers.ducklake {
        if !lake.data_path.contains("://") {
            std::fs::create_dir_all(&lake.data_path).map_err(|source| AppError::DataPath {
                path: lake.data_path.clone(),
                source,
            })?;
        }
    }
    // Workers start one at a time, each after the previous one serves: the first attach of a
    // lake creates its metadata, and two creators at once would collide. The first worker
    // that cannot start is fatal, with its reason.
    let spill_dir = &config.limits.append_spill_dir;
    if quackgate_spill::in_memory(spill_dir).unwrap_or(false) {
        warn!(dir = %spill_dir.display(), "limits.append_spill_dir is on a file system kept in memory (tmpfs): APPENDs past limits.append_memory_bytes take memory there all the same; set it to a folder on disk");
    }
    if config.workers.external_access && config.workers.count > config.workers.read_only_count {
        warn!("workers.external_access is on (accepted in the config): read-write clients can read and write this process's files, its secrets included");
    }
    let mut supervisors = JoinSet::new();
    let started = Instant::now();
    for worker in workers.iter() {
        let (tx, rx) = oneshot::channel();
        supervisors.spawn(supervisor::supervise(
            workers.clone(),
            worker.index,
            launcher.clone(),
            state.sessions.clone(),
            tx,
            lifecycle.shutdown.clone(),
            lifecycle.stop_workers.clone(),
        ));
        let result = tokio::select! {
            result = rx => result,
            _ = lifecycle.shutdown.cancelled() => break,
        };
        if let Ok(Err(e)) = result {
            lifecycle.stop_workers.cancel();
            while supervisors.join_next().await.is_some() {}
            return Err(e.into());
        }
    }
    // Background tasks, each until the workers stop.
    let stop = &lifecycle.stop_workers;
    tokio::spawn(health::run_prober(
        workers.clone(),
        state.upstream.clone(),
        config.workers.health_interval,
        stop.clone(),
    ));
    if let Some(cluster) = &state.cluster {
        tokio::spawn(cluster.clone().watch(
            state.upstream.clone(),
            config.role == Role::Edge,
            stop.clone(),
        ));
    }
    if let Some(jwt) = state.auth.jwt() {
        let loaded = refresh::first_load(jwt.source(), jwt.keys()).await;
        tokio::spawn(refresh::run(
            jwt.source().clone(),
            jwt.keys().clone(),
            loaded,
            stop.clone(),
        ));
    }
    tokio::spawn(state.throttle.clone().run_sweeper(stop.clone()));
    tokio::spawn(state.auth.static_tokens().clone().watch(stop.clone()));
    if let (Some(files), Some(secret)) = (&config.id_secret_files, &config.id_secret) {
        let rotation = Rotation::new(
            files.clone(),
            state.ids.clone(),
            state.cluster.clone(),
            secret,
            &config.previous_id_secrets,
        );
        tokio::spawn(rotation.watch(stop.clone()));
    }
    for store in cert_stores {
        tokio::spawn(store.watch(stop.clone()));
    }
    let idle_sweep = IdleSweep {
        ender: state.ender(),
        idle: config.session_idle,
    };
    tokio::spawn(idle_sweep.run(stop.clone()));
    // A node leaves revocation to the edges that authenticate its clients.
    if state.role != Role::Node {
        let revoked = RevokedSweep {
            ender: state.ender(),
            tokens: state.auth.static_tokens().clone(),
        };
        tokio::spawn(revoked.run(stop.clone()));
    }
    if !lifecycle.shutdown.is_cancelled() {
        info!(
            workers = workers.len(),
            startup_ms = started.elapsed().as_millis() as u64,
            "all workers serving"
        );
        println!("{ready_line}");
    }

    lifecycle.shutdown.cancelled().await;
    // 1. Readiness has gone false and new sessions are refused (`AppState::is_draining`), so
    //    balancers and clients go elsewhere.
    let deadline = Instant::now() + config.shutdown_grace;
    info!(
        open_sessions = state.sessions.len(),
        grace_secs = config.shutdown_grace.as_secs(),
        "draining"
    );
    // 2. Open sessions keep working until they disconnect or the grace period ends. The
    //    listeners keep accepting meanwhile: v1.5 clients open a new connection per request,
    //    so a session's next FETCH or COMMIT arrives on a connection not yet made.
    //    The catalog's sessions belong to workers and end only when those do, so the catalog
    //    waits only for requests in flight; an edge holds no sessions.
    let mut poll = tokio::time::interval(DRAIN_POLL_INTERVAL);
    let holds_sessions = matches!(config.role, Role::Gateway | Role::Node);
    while holds_sessions && !state.sessions.is_empty() && Instant::now() < deadline {
        poll.tick().await;
    }
    // 3. Stop accepting; open connections finish their in-flight request and close.
    lifecycle.stop_accepting.cancel();
    tracker.close();
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(DRAIN_MIN_FINAL_WAIT);
    if tokio::time::timeout(left, tracker.wait()).await.is_err() {
        warn!(
            connections_cut = tracker.len(),
            sessions_cut = state.sessions.len(),
            grace_secs = config.shutdown_grace.as_secs(),
            "shutdown grace period over; cutting what is left"
        );
    }
    // 4. Stop the workers.
    lifecycle.stop_workers.cancel();
    while supervisors.join_next().await.is_some() {}
    // 5. Stop the admin listener last, so probes see the drain.
    lifecycle.stop_admin.cancel();
    servers.abort_all();
    info!("shutdown complete");
    Ok(())
}

fn bind(name: &'static str, addr: SocketAddr, backlog: u32) -> Result<TcpListener, AppError> {
    server::bind(addr, backlog).map_err(|source| AppError::Bind { name, addr, source })
}
