//! Cluster membership: which processes make up the cluster, where their peer listeners are,
//! and (on an edge) how loaded each node is.
//!
//! A routable id names its node, so any process that holds the id secret can route any
//! request with no shared store. Nodes are listed by id and `host:port`: statically, in a
//! peers file re-read every [`RELOAD_EVERY`] (a mounted ConfigMap, an app setting), in
//! `QUACKGATE__CLUSTER__PEERS__<ID>` variables, and/or as the addresses of a DNS name (a
//! headless Service), each asked which node it is. A `host:port` may be a name that an HTTP/1.1
//! ingress routes (Azure Container Apps' internal ingress): requests then carry that name as
//! Host and SNI. The peer leg is signed (`credential`); an edge asks every node for its load
//! every [`status::POLL_INTERVAL`] (`status`).

pub mod credential;
pub mod status;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use http::HeaderValue;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cluster::credential::{body_digest, PeerKey, RequestFacts, ANSWER_HEADER, PEER_HEADER};
use crate::cluster::status::{NodeBoard, NodeLoad, POLL_INTERVAL, STATUS_PATH};
use crate::routable_id::SECRET_BYTES;
use crate::tls::TlsFiles;
use crate::upstream::{Endpoint, Upstream};

pub use credential::PeerAuthError;

/// How often the peers file is re-read and the names resolved again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// Least time between two reloads that an unknown node asks for.
pub const CATCH_UP_EVERY: Duration = Duration::from_millis(250);
/// The target a status request is signed for: any node may answer it, and proves which one
/// it is in the answer.
pub const ANY_NODE: &str = "*";

/// `[cluster]`: the peer listener and where the other nodes are.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where edges and other nodes send requests for this node's sessions. `None` on an
    /// edge, which serves no sessions itself.
    pub peer_listen: Option<SocketAddr>,
    /// TLS on the peer listener, when nothing in front of it terminates TLS.
    pub peer_listen_tls: Option<TlsFiles>,
    /// Node id to `host:port` of its peer listener (or of the ingress in front of it).
    pub peers: BTreeMap<String, String>,
    /// A TOML file of `node = "host:port"` lines, re-read every 2 s.
    pub peers_file: Option<PathBuf>,
    /// `host:port` whose addresses are the peers (a headless Service), resolved every 2 s.
    pub peers_dns: Option<String>,
    /// Whether to reach peers over TLS.
    pub peer_tls: bool,
    /// PEM CA certificates to trust for peers instead of the public web roots.
    pub peer_ca_file: Option<PathBuf>,
}

/// Why the peers file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Unreadable or not TOML.
    #[error("cluster.peers_file {path}: {why}")]
    PeersFile { path: PathBuf, why: String },
    /// The peer CA file is unusable.
    #[error("cluster.peer_ca_file {path}: {why}")]
    PeerCa { path: PathBuf, why: String },
    /// The system random source failed.
    #[error("reading the system random source: {0}")]
    Random(String),
}

/// This process's view of the cluster.
#[derive(Debug)]
pub struct Cluster {
    node_id: String,
    key: PeerKey,
    static_peers: BTreeMap<String, String>,
    peers_file: Option<PathBuf>,
    peers_dns: Option<String>,
    peer_tls: bool,
    /// Addresses found through `peers_dns`, with the node id each one proved.
    discovered: DashMap<SocketAddr, String>,
    /// Node id to its endpoint, rebuilt every round. Read per forwarded request.
    peers: DashMap<String, Endpoint>,
    /// What each node last reported, when this process places sessions on nodes (an edge).
    pub board: NodeBoard,
    /// When an unknown node last made the peers be read again (ms since `started`).
    caught_up_at: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

impl Cluster {
    /// The cluster as configured; static peers are resolved at once.
    ///
    /// # Errors
    /// When the random source fails.
    pub fn new(
        node_id: &str,
        id_secret: &[u8; SECRET_BYTES],
        previous_secrets: &[&[u8; SECRET_BYTES]],
        config: &ClusterConfig,
    ) -> Result<Self, ClusterError> {
        let cluster = Cluster {
            node_id: node_id.to_string(),
            key: PeerKey::new(id_secret)
                .map_err(|e| ClusterError::Random(e.to_string()))?
                .with_previous(previous_secrets),
            static_peers: config.peers.clone(),
            peers_file: config.peers_file.clone(),
            peers_dns: config.peers_dns.clone(),
            peer_tls: config.peer_tls,
            discovered: DashMap::new(),
            peers: DashMap::new(),
            board: NodeBoard::default(),
            caught_up_at: std::sync::atomic::AtomicU64::new(0),
            started: std::time::Instant::now(),
        };
        if let Err(e) = cluster.reload() {
            warn!(error = %e, "peers not loaded");
        }
        Ok(cluster)
    }

    /// This process's id, the sender of its peer requests.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The signer of the peer leg.
    pub fn key(&self) -> &PeerKey {
        &self.key
    }

    /// Where `node` is, if known.
    pub fn peer(&self, node: &str) -> Option<Endpoint> {
        self.peers.get(node).map(|e| e.value().clone())
    }

    /// Known peers, sorted by node id.
    pub fn peer_list(&self) -> Vec<(String, Endpoint)> {
        let mut list: Vec<_> = self
            .peers
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Where `node` is, reading the peers again first if it is unknown: a session another edge
    /// placed on a node this one has not read of yet must not be lost in the moment between
    /// the two edges' reloads. At most one extra reload per [`CATCH_UP_EVERY`].
    pub async fn catch_up(self: Arc<Self>, node: &str) -> Option<Endpoint> {
        use std::sync::atomic::Ordering;
        if let Some(endpoint) = self.peer(node) {
            return Some(endpoint);
        }
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.caught_up_at.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= CATCH_UP_EVERY.as_millis() as u64 || last == 0;
        if due
            && self
                .caught_up_at
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let cluster = self.clone();
            // Name resolution blocks; keep it off the runtime's worker threads.
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || cluster.reload()).await {
                warn!(error = %e, "peers not reloaded");
            }
        }
        self.peer(node)
    }

    /// Rebuilds the peer table from the static list, the peers file and what DNS found.
    ///
    /// # Errors
    /// When the peers file cannot be read; the table is left as it was.
    pub fn reload(&self) -> Result<usize, ClusterError> {
        let mut wanted = self.static_peers.clone();
        if let Some(path) = &self.peers_file {
            let err = |why: String| ClusterError::PeersFile {
                path: path.clone(),
                why,
            };
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            let file: BTreeMap<String, String> =
                toml::from_str(&text).map_err(|e| err(e.to_string()))?;
            wanted.extend(file);
        }
        for entry in self.discovered.iter() {
            wanted
                .entry(entry.value().clone())
                .or_insert_with(|| entry.key().to_string());
        }
        wanted.remove(&self.node_id);
        let mut resolved = BTreeMap::new();
        for (node, authority) in wanted {
            match self.endpoint(&authority) {
                Some(endpoint) => {
                    resolved.insert(node, endpoint);
                }
                None => {
                    // A lookup that fails once (a DNS blip, a pod being replaced) must not
                    // orphan that node's sessions: keep the last address it had.
                    warn!(peer.node = %node, peer.addr = %authority, "peer address does not resolve; keeping the last one known");
                    if let Some(last) = self.peer(&node) {
                        resolved.insert(node, last);
                    }
                }
            }
        }
        self.peers.retain(|node, _| resolved.contains_key(node));
        for (node, endpoint) in &resolved {
            if self.peers.insert(node.clone(), endpoint.clone()).as_ref() != Some(endpoint) {
                info!(peer.node = %node, peer.endpoint = %endpoint, "peer known");
            }
        }
        let names: Vec<String> = resolved.keys().cloned().collect();
        self.board.retain_only(&names);
        Ok(resolved.len())
    }

    /// `host:port` as an endpoint: the first address it resolves to, and the name itself for
    /// Host and SNI unless it is an IP address.
    fn endpoint(&self, authority: &str) -> Option<Endpoint> {
        let addr = authority.to_socket_addrs().ok()?.next()?;
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let is_ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok();
        Some(Endpoint {
            addr,
            authority: (!is_ip).then(|| Arc::from(authority)),
            tls: self.peer_tls,
        })
    }

    /// Asks `to` for its status, signed for any node; the answer must prove which node it
    /// is. Returns the node id and its load.
    pub async fn ask_status(
        &self,
        upstream: &Upstream,
        to: Endpoint,
    ) -> Option<(String, NodeLoad)> {
        let facts = RequestFacts {
            target: ANY_NODE,
            path: STATUS_PATH,
            msg_type: 0,
            body_sha256: body_digest(b""),
            grant: None,
        };
        let (credential, nonce) = self.key.sign_request(&self.node_id, &facts);
        let (parts, body) = upstream
            .get_with(to, STATUS_PATH, &[(PEER_HEADER, credential)])
            .await?;
        let (node, load) = NodeLoad::parse(std::str::from_utf8(&body).ok()?)?;
        self.key
            .verify_answer(
                &nonce,
                &node,
                parts.status.as_u16(),
                &body,
                parts.headers.get(ANSWER_HEADER),
            )
            .ok()?;
        Some((node, load))
    }

    /// Asks every node for its load, all at once, and records the answers.
    async fn poll(self: &Arc<Self>, upstream: &Upstream) {
        let mut asks = JoinSet::new();
        for (node, endpoint) in self.peer_list() {
            let (cluster, upstream) = (self.clone(), upstream.clone());
            asks.spawn(async move {
                match cluster.ask_status(&upstream, endpoint).await {
                    Some((answered, load)) if answered == node => {
                        cluster.board.reported(&node, load)
                    }
                    Some((answered, _)) => {
                        warn!(peer.node = %node, peer.answered = %answered, "a peer answered as another node; check the peers list");
                        cluster.board.unreachable(&node);
                    }
                    None => cluster.board.unreachable(&node),
                }
            });
        }
        while asks.join_next().await.is_some() {}
    }

    /// Resolves `peers_dns` and asks each new address which node it is.
    async fn discover(&self, upstream: &Upstream) {
        let Some(name) = &self.peers_dns else {
            return;
        };
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(name.as_str()).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                // Keep what was found before: a DNS blip must not orphan sessions.
                warn!(cluster.peers_dns = %name, error = %e, "peers name does not resolve");
                return;
            }
        };
        self.discovered.retain(|addr, _| addrs.contains(addr));
        for addr in addrs {
            if self.discovered.contains_key(&addr) {
                continue;
            }
            let endpoint = Endpoint {
                addr,
                authority: None,
                tls: self.peer_tls,
            };
            // This process's own address is remembered too (and skipped when the peers are
            // built), so it is not asked again every round.
            match self.ask_status(upstream, endpoint).await {
                Some((node, _)) => {
                    self.discovered.insert(addr, node);
                }
                // Likely a pod still starting; it is asked again next round.
                None => {
                    debug!(peer.addr = %addr, "address behind cluster.peers_dns gave no valid node identity yet")
                }
            }
        }
    }

    /// Re-reads the peers every [`RELOAD_EVERY`] and, when `poll_loads`, asks every node for
    /// its load every [`POLL_INTERVAL`], until `stop`.
    pub async fn watch(
        self: Arc<Self>,
        upstream: Upstream,
        poll_loads: bool,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let rounds_per_reload = (RELOAD_EVERY.as_millis() / POLL_INTERVAL.as_millis()).max(1);
        let mut round: u128 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            if round % rounds_per_reload == 0 {
                self.discover(&upstream).await;
                let cluster = self.clone();
                // Name resolution blocks; keep it off the runtime's worker threads.
                match tokio::task::spawn_blocking(move || cluster.reload()).await {
                    Ok(Err(e)) => warn!(error = %e, "peers not reloaded"),
                    Err(e) => warn!(error = %e, "peers reload task failed"),
                    Ok(Ok(_)) => {}
                }
            }
            round += 1;
            if poll_loads {
                self.poll(&upstream).await;
            }
        }
    }
}

/// The TLS client for peers: the CA file's certificates, or the public web roots.
///
/// # Errors
/// [`ClusterError::PeerCa`] when the file is unreadable or holds no certificate.
pub fn peer_tls_client(
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, ClusterError> {
    let mut config = crate::tls::client_config(ca_file).map_err(|why| ClusterError::PeerCa {
        path: ca_file.map(|p| p.to_path_buf()).unwrap_or_default(),
        why,
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A header value of a grant, which is hex and dots.
pub fn grant_header(grant: &str) -> HeaderValue {
    HeaderValue::from_str(grant).expect("a grant is hex and dots")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(peers: BTreeMap<String, String>, peers_file: Option<PathBuf>) -> ClusterConfig {
        ClusterConfig {
            peer_listen: Some("127.0.0.1:0".parse().unwrap()),
            peer_listen_tls: None,
            peers,
            peers_file,
            peers_dns: None,
            peer_tls: false,
            peer_ca_file: None,
        }
    }

    #[test]
    fn peers_come_from_the_static_list_and_the_file_without_this_node() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peers.toml");
        std::fs::write(&file, "n2 = \"127.0.0.1:7002\"\nn0 = \"127.0.0.1:7000\"\n").unwrap();
        let statics = BTreeMap::from([("n1".to_string(), "127.0.0.1:7001".to_string())]);
        let c = Cluster::new(
            "n0",
            &[1; SECRET_BYTES],
            &[],
            &config(statics, Some(file.clone())),
        )
        .unwrap();
        let nodes: Vec<_> = c.peer_list().into_iter().map(|(n, _)| n).collect();
        assert_eq!(nodes, ["n1", "n2"]);
        std::fs::write(&file, "").unwrap();
        c.reload().unwrap();
        assert!(c.peer("n2").is_none());
        assert_eq!(
            c.peer("n1").map(|e| e.addr),
            Some("127.0.0.1:7001".parse().unwrap())
        );
        let names: Vec<_> = c.board.snapshot().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["n1"]);
    }

    #[test]
    fn a_named_peer_keeps_its_name_for_host_and_sni() {
        let statics = BTreeMap::from([
            ("n1".to_string(), "localhost:7001".to_string()),
            ("n2".to_string(), "127.0.0.1:7002".to_string()),
        ]);
        let c = Cluster::new("edge", &[1; SECRET_BYTES], &[], &config(statics, None)).unwrap();
        assert_eq!(
            c.peer("n1").unwrap().authority.as_deref(),
            Some("localhost:7001")
        );
        assert_eq!(c.peer("n2").unwrap().authority, None);
    }
}
