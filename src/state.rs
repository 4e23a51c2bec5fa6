//! The state every request shares, defined low and built once at the top (`app::run`), so the
//! modules that read it never import the wiring.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::audit::AuditConfig;
use crate::auth::jwt::{JwtVerifier, SessionExpiry};
use crate::auth::static_tokens::StaticTokens;
use crate::auth::{Authenticator, WorkerToken};
use crate::cluster::{peer_tls_client, Cluster, ClusterError};
use crate::config::Config;
use crate::held_append::HeldAppends;
use crate::limits::{AuthThrottle, Caps};
use crate::metrics::Metrics;
use crate::role::Role;
use crate::routable_id::{IdSecret, IdSigner};
use crate::sessions::end::SessionEnder;
use crate::sessions::table::SessionTable;
use crate::upstream::Upstream;
use crate::workers::config::Isolation;
use crate::workers::WorkerSet;

/// Why the shared state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The system random source failed.
    #[error("reading the system random source: {0}")]
    Random(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// State shared by every request, built once.
#[derive(Debug)]
pub struct AppState {
    /// Part of every connection id this node mints.
    pub node_id: String,
    pub role: Role,
    /// `gateway.max_body_bytes`.
    pub max_body_bytes: u64,
    /// `limits.statement_timeout_secs` and its read-only twin.
    pub statement_timeout: Option<std::time::Duration>,
    /// `limits.min_append_rate`, bytes a second.
    pub min_append_rate: u64,
    pub read_only_statement_timeout: Option<std::time::Duration>,
    /// `gateway.max_prepare_bytes`.
    pub max_prepare_bytes: u64,
    /// `log.audit_sql`.
    pub audit: AuditConfig,
    /// Requests in flight per principal (by its tag), `limits.max_requests_per_principal`.
    pub in_flight: Arc<Caps<u32>>,
    /// Where APPENDs wait while they are read whole, and the caps on them.
    pub held_appends: HeldAppends,
    pub auth: Authenticator,
    pub ids: IdSigner,
    pub workers: Arc<WorkerSet>,
    /// Open sessions, for placement, limits and the idle sweep.
    pub sessions: Arc<SessionTable>,
    pub upstream: Upstream,
    /// Swapped in for the client's token on a read-write session.
    pub worker_token: WorkerToken,
    /// Swapped in for read-only principals. On a gateway only read-only workers accept it, so
    /// client SQL on a read-only worker that learnt it could not use it on a read-write one;
    /// on the catalog, its one worker accepts both and lets sessions of this token only read.
    pub read_only_worker_token: WorkerToken,
    /// One worker serves both kinds of session (the catalog), rather than read-only
    /// principals going to read-only workers.
    pub roles_share_workers: bool,
    /// Each worker process serves one principal (`workers.isolation = "principal"`, never on
    /// the catalog, whose clients are the nodes' workers).
    pub isolate_principals: bool,
    /// The other gateway nodes, when this node is part of a cluster.
    pub cluster: Option<Arc<Cluster>>,
    /// Requests served here for sessions of this node that other nodes forwarded.
    pub peer_requests: AtomicU64,
    /// Failed-authentication backoff per client address.
    pub throttle: Arc<AuthThrottle>,
    pub metrics: Metrics,
    /// `Some(leeway)` when sessions end with their JWT (`auth.jwt.session_expiry = "end"`).
    pub session_expiry_leeway: Option<Duration>,
    /// Cancelled when the drain begins.
    shutdown: CancellationToken,
}

impl AppState {
    /// Everything a request needs, from a validated config. Starts nothing and binds nothing;
    /// `shutdown` is the token whose cancellation begins the drain.
    ///
    /// # Errors
    /// [`StateError`] when the random source fails (secrets and tokens made here).
    pub fn new(config: &Config, shutdown: CancellationToken) -> Result<AppState, StateError> {
        let secret = match &config.id_secret {
            Some(secret) => secret.clone(),
            None => {
                info!("gateway.id_secret_file is unset: connection ids are signed with a secret made for this process");
                IdSecret::generate().map_err(|e| StateError::Random(e.to_string()))?
            }
        };
        let jwt = config
            .jwt
            .as_ref()
            .map(|(jwt, keys)| Arc::new(JwtVerifier::new(jwt.clone(), keys.clone())));
        let session_expiry_leeway = config
            .jwt
            .as_ref()
            .filter(|(jwt, _)| jwt.session_expiry == SessionExpiry::End)
            .map(|(jwt, _)| jwt.leeway);
        let worker_token = match &config.workers.token {
            Some(token) => token.clone(),
            None => WorkerToken::generate().map_err(|e| StateError::Random(e.to_string()))?,
        };
        let read_only_worker_token =
            WorkerToken::generate().map_err(|e| StateError::Random(e.to_string()))?;
        let previous: Vec<&[u8; crate::routable_id::SECRET_BYTES]> = config
            .previous_id_secrets
            .iter()
            .map(IdSecret::expose)
            .collect();
        let mut upstream = Upstream::new();
        let mut cluster = None;
        if let Some(c) = &config.cluster {
            if c.peer_tls {
                upstream = upstream.with_peer_tls(peer_tls_client(c.peer_ca_file.as_deref())?);
            }
            cluster = Some(Arc::new(Cluster::new(
                &config.node_id,
                secret.expose(),
                &previous,
                c,
            )?));
        }
        Ok(AppState {
            node_id: config.node_id.clone(),
            role: config.role,
            max_body_bytes: config.max_body_bytes,
            statement_timeout: config.limits.statement_timeout,
            min_append_rate: config.limits.min_append_rate,
            read_only_statement_timeout: config.limits.read_only_statement_timeout,
            max_prepare_bytes: config.max_prepare_bytes,
            audit: config.audit,
            in_flight: Arc::new(Caps::new(config.limits.max_requests_per_principal)),
            held_appends: HeldAppends::new(&config.limits),
            auth: Authenticator::new(
                Arc::new(StaticTokens::new(
                    config.static_tokens.clone(),
                    config
                        .static_tokens_file
                        .as_ref()
                        .map(|(path, _)| path.clone()),
                    config
                        .static_tokens_file
                        .as_ref()
                        .map(|(_, tokens)| tokens.clone())
                        .unwrap_or_default(),
                )),
                jwt,
            ),
            ids: IdSigner::with_keys(secret.expose(), &previous),
            workers: Arc::new(WorkerSet::new(
                config.workers.count,
                config.workers.read_only_count,
                &config.node_id,
            )),
            sessions: Arc::new({
                let table = SessionTable::with_limits(
                    config.limits.max_sessions,
                    config.limits.max_sessions_per_principal,
                )
                .with_workers_per_principal(config.workers.max_per_principal.unwrap_or(usize::MAX));
                // The catalog's clients are the lake's workers, whose addresses do not move.
                if config.role == Role::Catalog && config.catalog_binds_sessions {
                    table.binding_sessions_to_addresses()
                } else {
                    table
                }
            }),
            upstream,
            worker_token,
            read_only_worker_token,
            roles_share_workers: config.role == Role::Catalog,
            isolate_principals: config.role != Role::Catalog
                && config.workers.isolation == Isolation::Principal,
            cluster,
            peer_requests: AtomicU64::new(0),
            throttle: Arc::new(AuthThrottle::new(&config.limits)),
            metrics: Metrics::new(),
            session_expiry_leeway,
            shutdown,
        })
    }

    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Ends sessions at their workers.
    pub fn ender(&self) -> SessionEnder {
        SessionEnder {
            sessions: self.sessions.clone(),
            workers: self.workers.clone(),
            ids: self.ids.clone(),
            upstream: self.upstream.clone(),
        }
    }

    /// Counts a request another node forwarded here.
    pub fn peer_request_served(&self) {
        self.peer_requests.fetch_add(1, Ordering::Relaxed);
    }
}
