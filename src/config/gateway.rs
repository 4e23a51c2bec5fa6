//! `[gateway]` and `[tls]`: this node's id, its listeners and their limits, and the secret
//! its connection ids are signed with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::file::{FileGateway, FileTls};
use crate::config::problems::Problems;
use crate::forwarded::{self, TrustedProxies};
use crate::id_rotation::IdSecretFiles;
use crate::role::Role;
use crate::routable_id::{IdSecret, MAX_NODE_ID_LEN, SECRET_BYTES};
use crate::tls::TlsFiles;

/// Most secrets kept for verifying during a rotation.
const MAX_PREVIOUS_ID_SECRETS: usize = 3;
/// Default node id.
pub const DEFAULT_NODE_ID: &str = "n0";
/// Default cap on concurrently open client TCP connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default listen backlog of the gateway's listeners; the kernel caps it at
/// `net.core.somaxconn`.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
/// Default cap on a request body: the Quack docs' proxy recipes allow 256 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;
/// A PREPARE carries SQL text, not data (data comes as APPEND, streamed), and is read whole.
pub const DEFAULT_MAX_PREPARE_BYTES: u64 = 1024 * 1024;
/// Default time a client gets to finish its TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Default time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// Default time after which an unused session is ended.
pub const DEFAULT_SESSION_IDLE_SECS: u64 = 6 * 60 * 60;

/// What `[gateway]` and `[tls]` say, validated; the fields are `Config`'s of the same names.
pub(super) struct GatewaySection {
    pub(super) node_id: String,
    pub(super) listen: Option<SocketAddr>,
    pub(super) plain_listen: Option<SocketAddr>,
    pub(super) admin_listen: Option<SocketAddr>,
    pub(super) health_listen: Option<SocketAddr>,
    pub(super) tls: Option<TlsFiles>,
    pub(super) id_secret: Option<IdSecret>,
    pub(super) previous_id_secrets: Vec<IdSecret>,
    pub(super) id_secret_files: Option<IdSecretFiles>,
    pub(super) max_connections: usize,
    pub(super) listen_backlog: u32,
    pub(super) max_body_bytes: u64,
    pub(super) max_prepare_bytes: u64,
    pub(super) tls_handshake_timeout: Duration,
    pub(super) shutdown_grace: Duration,
    pub(super) session_idle: Duration,
    pub(super) threads: Option<usize>,
    pub(super) trusted_proxies: TrustedProxies,
}

pub(super) fn validate(
    gateway: FileGateway,
    role: Role,
    tls: Option<FileTls>,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    problems: &mut Problems,
) -> GatewaySection {
    let node_id_set = gateway.node_id.is_some();
    let node_id = gateway.node_id.unwrap_or_else(|| DEFAULT_NODE_ID.into());
    if node_id.is_empty()
        || node_id.len() > MAX_NODE_ID_LEN
        || !node_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        problems.push(format!(
            "gateway.node_id: must be 1-{MAX_NODE_ID_LEN} characters of a-z, 0-9 and '-', got {node_id:?}"
        ));
    }
    let mut addr = |key: &str, value: Option<String>| -> Option<SocketAddr> {
        let value = value?;
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!(
                    "{key}: must be an IP address and port such as 127.0.0.1:8443, got {value:?}"
                ));
                None
            }
        }
    };
    let listen = addr("gateway.listen", gateway.listen);
    let plain_listen = addr("gateway.plain_listen", gateway.plain_listen);
    let admin_listen = addr(
        "gateway.admin_listen",
        Some(
            gateway
                .admin_listen
                .unwrap_or_else(|| "127.0.0.1:9464".into()),
        ),
    );
    let health_listen = addr("gateway.health_listen", gateway.health_listen);
    let trusted_proxies = TrustedProxies::new(
        gateway
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .filter_map(|entry| {
                forwarded::parse_net(entry)
                    .map_err(|why| problems.push(format!("gateway.trusted_proxies: {why}")))
                    .ok()
            })
            .collect(),
    );
    if let Some(plain) = plain_listen {
        if !plain.ip().is_loopback() && trusted_proxies.is_empty() {
            problems.push(format!(
                "gateway.plain_listen: plain HTTP carries tokens in clear; off loopback ({plain}) it serves only gateway.trusted_proxies (an ingress that terminates TLS), and none is set"
            ));
        }
    }
    match role {
        Role::Node if listen.is_some() || plain_listen.is_some() => problems.push(
            "gateway.listen, gateway.plain_listen: a node has no client listener (clients connect to an edge; the node serves cluster.peer_listen); remove them".into(),
        ),
        Role::Node => {}
        _ if listen.is_none() && plain_listen.is_none() => problems
            .push("gateway.listen: set it (HTTPS) or gateway.plain_listen (loopback HTTP)".into()),
        _ => {}
    }
    if matches!(role, Role::Edge | Role::Node) && !node_id_set {
        problems
            .push("gateway.node_id: required for an edge or a node, unique in the cluster".into());
    }
    let tls = tls.map(|t| TlsFiles {
        cert: resolve(t.cert),
        key: resolve(t.key),
    });
    match (&listen, &tls) {
        (Some(_), None) => {
            problems.push("tls: gateway.listen serves HTTPS and needs [tls] cert and key".into())
        }
        (_, Some(t)) => {
            for (key, path) in [("tls.cert", &t.cert), ("tls.key", &t.key)] {
                if !path.is_file() {
                    problems.push(format!("{key}: no such file {}", path.display()));
                }
            }
        }
        _ => {}
    }
    let mut read_secret = |key: &str, path: PathBuf| -> Option<IdSecret> {
        match std::fs::read(&path) {
            Ok(bytes) => match IdSecret::from_hex(&String::from_utf8_lossy(&bytes)) {
                Some(secret) => Some(secret),
                None => {
                    problems.push(format!(
                            "{key}: {} must hold {} hex characters (e.g. `openssl rand -hex {SECRET_BYTES}`)",
                            path.display(),
                            SECRET_BYTES * 2
                        ));
                    None
                }
            },
            Err(e) => {
                problems.push(format!("{key}: reading {}: {e}", path.display()));
                None
            }
        }
    };
    let id_secret_file = gateway.id_secret_file.map(resolve);
    let id_secret = id_secret_file
        .clone()
        .and_then(|path| read_secret("gateway.id_secret_file", path));
    let previous_files: Vec<PathBuf> = gateway
        .previous_id_secret_files
        .unwrap_or_default()
        .into_iter()
        .map(resolve)
        .collect();
    let previous_id_secrets: Vec<IdSecret> = previous_files
        .iter()
        .filter_map(|path| read_secret("gateway.previous_id_secret_files", path.clone()))
        .collect();
    let id_secret_files = id_secret_file.map(|current| IdSecretFiles {
        current,
        previous: previous_files.clone(),
    });
    if previous_files.len() > MAX_PREVIOUS_ID_SECRETS {
        problems.push(format!(
            "gateway.previous_id_secret_files: at most {MAX_PREVIOUS_ID_SECRETS} (each costs a MAC on every id they may have signed), got {}",
            previous_files.len()
        ));
    }
    if !previous_files.is_empty() && id_secret.is_none() {
        problems.push("gateway.previous_id_secret_files: needs gateway.id_secret_file".into());
    }
    let max_connections = gateway.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    problems.positive("gateway.max_connections", max_connections as u64);
    let listen_backlog = gateway.listen_backlog.unwrap_or(DEFAULT_LISTEN_BACKLOG);
    problems.positive("gateway.listen_backlog", listen_backlog.into());
    let max_body_bytes = gateway.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    problems.positive("gateway.max_body_bytes", max_body_bytes);
    let max_prepare_bytes = gateway
        .max_prepare_bytes
        .unwrap_or(DEFAULT_MAX_PREPARE_BYTES)
        .min(max_body_bytes);
    problems.positive("gateway.max_prepare_bytes", max_prepare_bytes);
    let tls_handshake_timeout_secs = gateway
        .tls_handshake_timeout_secs
        .unwrap_or(DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS);
    problems.positive(
        "gateway.tls_handshake_timeout_secs",
        tls_handshake_timeout_secs,
    );
    let session_idle_secs = gateway
        .session_idle_secs
        .unwrap_or(DEFAULT_SESSION_IDLE_SECS);
    problems.positive("gateway.session_idle_secs", session_idle_secs);
    if let Some(threads) = gateway.threads {
        problems.positive("gateway.threads", threads as u64);
    }
    GatewaySection {
        node_id,
        listen,
        plain_listen,
        admin_listen,
        health_listen,
        tls,
        id_secret,
        previous_id_secrets,
        id_secret_files,
        max_connections,
        listen_backlog,
        max_body_bytes,
        max_prepare_bytes,
        tls_handshake_timeout: Duration::from_secs(tls_handshake_timeout_secs),
        shutdown_grace: Duration::from_secs(
            gateway
                .shutdown_grace_secs
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS),
        ),
        session_idle: Duration::from_secs(session_idle_secs),
        threads: gateway.threads,
        trusted_proxies,
    }
}
