//! Wiring: builds the shared state from a validated [`Config`], binds the listeners, starts the
//! workers, and runs the shutdown sequence. No request logic lives here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::auth::jwt::{JwksSource, JwtVerifier, SessionExpiry};
use crate::auth::{Authenticator, WorkerToken};
use crate::cluster::Cluster;
use crate::config::{Config, Role};
use crate::limits::AuthThrottle;
use crate::metrics::Metrics;
use crate::proxy::Origin;
use crate::routable_id::{IdSigner, SECRET_BYTES};
use crate::routing::SessionTable;
use crate::server::{self, Listener};
use crate::tls::{self, TlsError};
use crate::upstream::Upstream;
use crate::workers::health;
use crate::workers::supervisor::{self, Launcher, WorkerError};
use crate::workers::WorkerSet;
use crate::{admin, proxy};

/// Prefix of the one line the gateway prints on stdout once it serves.
pub const READY_PREFIX: &str = "QUACKGATE READY";
/// How often the drain checks whether every session has ended.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// In-flight requests always get at least this long once the listeners close.
const DRAIN_MIN_FINAL_WAIT: Duration = Duration::from_secs(1);
/// How often idle sessions are swept from the session table.
const SESSION_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Time a worker gets to answer the DISCONNECT of an idle session.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener could not bind.
    #[error("binding the {name} listener on {addr}: {source}")]
    Bind {
        /// Which listener.
        name: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A bound listener's address could not be read.
    #[error("reading the {name} listener's address: {source}")]
    LocalAddr {
        /// Which listener.
        name: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The lake's local data folder could not be made.
    #[error("workers.ducklake.data_path {path}: {source}")]
    DataPath {
        /// The folder.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A worker could not start.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The path of this executable (which workers run) is unknown.
    #[error("locating the quackgate executable to run workers: {0}")]
    Exe(#[source] std::io::Error),
    /// The system random source failed.
    #[error("reading the system random source: {0}")]
    Random(String),
}

/// State shared by every request, built once.
#[derive(Debug)]
pub struct AppState {
    /// This node's id, part of every connection id it mints.
    pub node_id: String,
    /// `gateway.max_body_bytes`.
    pub max_body_bytes: u64,
    /// Checks client tokens.
    pub auth: Authenticator,
    /// Mints and verifies connection ids.
    pub ids: IdSigner,
    /// The worker slots.
    pub workers: Arc<WorkerSet>,
    /// Open sessions, for placement.
    pub sessions: Arc<SessionTable>,
    /// The client to the workers.
    pub upstream: Upstream,
    /// The token workers accept, swapped in for the client's.
    pub worker_token: WorkerToken,
    /// The internal token swapped in for read-only principals. On a gateway only read-only
    /// workers accept it, so client SQL on a read-only worker that learnt it could not use it
    /// on a read-write one; on the catalog, its one worker accepts both and lets sessions of
    /// this token only read.
    pub read_only_worker_token: WorkerToken,
    /// Whether one worker serves both kinds of session (the catalog) rather than read-only
    /// principals going to read-only workers.
    pub roles_share_workers: bool,
    /// The other gateway nodes, when this node is part of a cluster.
    pub cluster: Option<Arc<Cluster>>,
    /// Requests served for sessions of this node that other nodes forwarded here.
    pub peer_requests: AtomicU64,
    /// Failed-authentication backoff per client address.
    pub throttle: Arc<AuthThrottle>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// `Some(leeway)` when sessions end with their JWT (`auth.jwt.session_expiry = "end"`).
    pub session_expiry_leeway: Option<Duration>,
    /// Set when the drain starts; `/readyz` then answers 503.
    draining: AtomicBool,
}

impl AppState {
    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Runs the gateway until `shutdown` is cancelled, then drains and stops.
///
/// # Errors
/// [`AppError`] when the gateway cannot start; once it serves, it only returns `Ok`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AppError> {
    // TLS material is parsed before anything binds, so a bad certificate costs no port.
    let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
    let exe = std::env::current_exe().map_err(AppError::Exe)?;

    let mut listeners = Vec::new();
    let trusted = Arc::new(config.trusted_proxies.clone());
    if let (Some(addr), Some(tls)) = (config.listen, tls) {
        let tcp = bind("https", addr).await?;
        let acceptor = TlsAcceptor::from(tls);
        listeners.push(Listener {
            tcp,
            tls: Some((acceptor, config.tls_handshake_timeout)),
            name: "https",
            trusted: trusted.clone(),
        });
    }
    if let Some(addr) = config.plain_listen {
        listeners.push(Listener {
            tcp: bind("plain", addr).await?,
            tls: None,
            name: "plain",
            trusted: trusted.clone(),
        });
    }
    let peer_listener = match &config.cluster {
        Some(cluster) => Some(Listener {
            tcp: bind("peer", cluster.peer_listen).await?,
            tls: None,
            name: "peer",
            trusted: Arc::default(),
        }),
        None => None,
    };
    let admin = Listener {
        tcp: bind("admin", config.admin_listen).await?,
        tls: None,
        name: "admin",
        trusted: Arc::default(),
    };
    let mut ready_line = String::from(READY_PREFIX);
    for l in listeners
        .iter()
        .chain(peer_listener.as_ref())
        .chain(std::iter::once(&admin))
    {
        let addr = l.tcp.local_addr().map_err(|source| AppError::LocalAddr {
            name: l.name,
            source,
        })?;
        info!(listener = l.name, addr = %addr, "listening");
        ready_line.push_str(&format!(" {}={addr}", l.name));
    }

    let secret = match &config.id_secret {
        Some(secret) => secret.0,
        None => {
            info!("gateway.id_secret_file is unset: connection ids are signed with a secret made for this process");
            random_bytes()?
        }
    };
    let workers = Arc::new(WorkerSet::new(
        config.workers.count,
        config.workers.read_only_count,
        &config.node_id,
    ));
    let sessions = Arc::new(SessionTable::with_limits(
        config.limits.max_sessions,
        config.limits.max_sessions_per_principal,
    ));
    let jwt = config
        .jwt
        .as_ref()
        .map(|(jwt, keys)| Arc::new(JwtVerifier::new(jwt.clone(), keys.clone())));
    let session_expiry_leeway = config
        .jwt
        .as_ref()
        .filter(|(jwt, _)| jwt.session_expiry == SessionExpiry::End)
        .map(|(jwt, _)| jwt.leeway);
    let throttle = Arc::new(AuthThrottle::new(&config.limits));
    let upstream = Upstream::new();
    let worker_token = match &config.workers.token {
        Some(token) => token.clone(),
        None => WorkerToken::generate().map_err(|e| AppError::Random(e.to_string()))?,
    };
    let read_only_worker_token =
        WorkerToken::generate().map_err(|e| AppError::Random(e.to_string()))?;
    let roles_share_workers = config.role == Role::Catalog;
    let state = Arc::new(AppState {
        node_id: config.node_id.clone(),
        max_body_bytes: config.max_body_bytes,
        auth: Authenticator::new(config.static_tokens.clone(), jwt.clone()),
        ids: IdSigner::new(&secret),
        workers: workers.clone(),
        sessions: sessions.clone(),
        upstream: upstream.clone(),
        worker_token: worker_token.clone(),
        read_only_worker_token: read_only_worker_token.clone(),
        roles_share_workers,
        cluster: config.cluster.as_ref().map(|c| {
            Arc::new(Cluster::new(
                &config.node_id,
                &secret,
                c.peers.clone(),
                c.peers_file.clone(),
                c.peers_dns.clone(),
            ))
        }),
        peer_requests: AtomicU64::new(0),
        throttle: throttle.clone(),
        metrics: Metrics::new(),
        session_expiry_leeway,
        draining: AtomicBool::new(false),
    });

    // Listeners serve at once; until the workers are up, /readyz says so and connects are
    // answered with a clear error.
    let drain = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let mut servers = JoinSet::new();
    for listener in listeners {
        let state = state.clone();
        servers.spawn(server::run(
            listener,
            move |req| proxy::handle(state.clone(), Origin::Client, req),
            limit.clone(),
            drain.clone(),
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
            drain.clone(),
            tracker.clone(),
        ));
    }
    {
        let state = state.clone();
        servers.spawn(server::run(
            admin,
            move |req| admin::handle(state.clone(), req),
            Arc::new(Semaphore::new(64)),
            admin_stop.clone(),
            TaskTracker::new(),
        ));
    }

    let workers_stop = CancellationToken::new();
    let launcher = Arc::new(Launcher {
        exe,
        config: config.workers.clone(),
        token: worker_token,
        read_only_token: read_only_worker_token,
        roles_share_workers,
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
    let mut supervisors = JoinSet::new();
    let started = Instant::now();
    for worker in workers.iter() {
        let (tx, rx) = oneshot::channel();
        supervisors.spawn(supervisor::supervise(
            workers.clone(),
            worker.index,
            launcher.clone(),
            sessions.clone(),
            tx,
            shutdown.clone(),
            workers_stop.clone(),
        ));
        let result = tokio::select! {
            result = rx => result,
            _ = shutdown.cancelled() => break,
        };
        if let Ok(Err(e)) = result {
            workers_stop.cancel();
            while supervisors.join_next().await.is_some() {}
            return Err(e.into());
        }
    }
    tokio::spawn(health::run_prober(
        workers.clone(),
        upstream,
        config.workers.health_interval,
        workers_stop.clone(),
    ));
    if let Some(cluster) = &state.cluster {
        tokio::spawn(
            cluster
                .clone()
                .watch(state.upstream.clone(), workers_stop.clone()),
        );
    }
    if let Some(jwt) = jwt {
        let loaded = match jwt.source() {
            JwksSource::Url(url) => url.load(&jwt).await,
            JwksSource::File(_) => true,
        };
        tokio::spawn(jwt.watch(loaded, workers_stop.clone()));
    }
    tokio::spawn(sweep_idle_sessions(
        state.clone(),
        config.session_idle,
        workers_stop.clone(),
    ));
    if !shutdown.is_cancelled() {
        info!(
            workers = workers.len(),
            startup_ms = started.elapsed().as_millis() as u64,
            "all workers serving"
        );
        println!("{ready_line}");
    }

    shutdown.cancelled().await;
    // 1. Readiness goes false and new sessions are refused, so balancers and clients go
    //    elsewhere.
    state.draining.store(true, Ordering::Release);
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
    //    waits only for requests in flight.
    let mut poll = tokio::time::interval(DRAIN_POLL_INTERVAL);
    while config.role == Role::Gateway && !state.sessions.is_empty() && Instant::now() < deadline {
        poll.tick().await;
    }
    // 3. Stop accepting; open connections finish their in-flight request and close.
    drain.cancel();
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
    workers_stop.cancel();
    while supervisors.join_next().await.is_some() {}
    // 5. Stop the admin listener last, so probes see the drain.
    admin_stop.cancel();
    servers.abort_all();
    info!("shutdown complete");
    Ok(())
}

async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { name, addr, source })
}

fn random_bytes() -> Result<[u8; SECRET_BYTES], AppError> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| AppError::Random(e.to_string()))?;
    Ok(bytes)
}

/// Every minute: forgets failed-login records that have aged out, and ends sessions unused for
/// `idle` at their workers (v1.5 servers keep a session's memory until a DISCONNECT).
async fn sweep_idle_sessions(state: Arc<AppState>, idle: Duration, stop: CancellationToken) {
    // A short idle time (as in tests) is honoured to within half of itself.
    let period = (idle / 2).clamp(Duration::from_secs(1), SESSION_SWEEP_INTERVAL);
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        state.throttle.sweep(Instant::now());
        let expired = state
            .sessions
            .expire_idle(&state.workers, Instant::now(), idle);
        if expired.is_empty() {
            continue;
        }
        info!(
            expired = expired.len(),
            open = state.sessions.len(),
            "ending idle sessions"
        );

        // Each on its own, under a timeout: a stuck worker holds up neither the others nor
        // the next sweep.
        for id in expired {
            let state = state.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(DISCONNECT_TIMEOUT, disconnect(&state, &id)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(error = %e, "ending an idle session at its worker"),
                    Err(_) => debug!("ending an idle session at its worker: no answer in time"),
                }
            });
        }
    }
}

/// Sends a DISCONNECT for session `id` (a routable id of this node) to its worker.
async fn disconnect(state: &AppState, id: &[u8]) -> Result<(), String> {
    use http_body_util::BodyExt;
    let route = state.ids.verify(id).map_err(|e| e.to_string())?;
    let port = state
        .workers
        .get(route.worker)
        .and_then(|w| w.serving_port())
        .ok_or("its worker is not running")?;
    let message = crate::quack::codec::encode_disconnect(route.inner_id);
    let length = message.len() as u64;
    let body = http_body_util::Full::new(message)
        .map_err(|never| match never {})
        .boxed();
    let response = state
        .upstream
        .send(
            SocketAddr::from(([127, 0, 0, 1], port)),
            body,
            Some(length),
            None,
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
    response
        .into_body()
        .collect()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
