//! Cluster membership and the peer leg: which node owns a session, where that node listens,
//! and how one gateway node proves to another that a forwarded request comes from the cluster.
//!
//! A routable id names its node, so any node can route any request with no shared store: a
//! request for another node's session goes to that node's peer listener, which serves it
//! locally and never forwards it again. Peers are a static list, a peers file re-read every
//! few seconds (a Kubernetes ConfigMap, say), and/or a DNS name whose addresses are the peers
//! (a Kubernetes headless Service): each new address is asked for its node id at
//! `GET /node`, an answer signed like any peer credential. Every name is re-resolved on every
//! round. The peer leg is authenticated with an HMAC over the sender, the time and the
//! connection id, under a key derived from the shared id secret; a client token is never a
//! peer credential.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::routable_id::SECRET_BYTES;
use crate::upstream::Upstream;

/// Header carrying the peer credential on forwarded requests.
pub const PEER_HEADER: &str = "quackgate-peer";
/// How old a peer credential may be.
const MAX_AGE_SECS: u64 = 60;
/// How far ahead of ours a peer's clock may be.
const MAX_FUTURE_SECS: u64 = 5;
/// How often the peers file is re-read and the names resolved again.
pub const PEERS_FILE_INTERVAL: Duration = Duration::from_secs(2);
/// Where a peer listener says which node it is.
pub const NODE_PATH: &str = "/node";
/// What an identity answer is bound to in place of a connection id.
const IDENTITY_CONTEXT: &[u8] = b"quackgate node identity";

/// `[cluster]`: the peer listener and where the other nodes are.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where other nodes send requests for this node's sessions. Private network only.
    pub peer_listen: SocketAddr,
    /// Node id to `host:port` of its peer listener; names are re-resolved on every reload.
    pub peers: BTreeMap<String, String>,
    /// A TOML file of `node = "host:port"` lines, re-read every 2 s.
    pub peers_file: Option<PathBuf>,
    /// `host:port` whose addresses are the peers (a headless Service), resolved every 2 s.
    pub peers_dns: Option<String>,
}

/// Why a peer request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerAuthError {
    /// No or unparsable credential.
    #[error("missing or malformed peer credential")]
    Malformed,
    /// Too old or from the future.
    #[error("peer credential outside the allowed clock skew")]
    Stale,
    /// The MAC does not verify.
    #[error("peer credential does not verify")]
    Signature,
}

/// Why the peers file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Unreadable or not TOML.
    #[error("cluster.peers_file {path}: {why}")]
    PeersFile { path: PathBuf, why: String },
}

/// This node's view of the cluster.
#[derive(Debug)]
pub struct Cluster {
    node_id: String,
    key: Hmac<Sha256>,
    static_peers: BTreeMap<String, String>,
    peers_file: Option<PathBuf>,
    /// `host:port` whose addresses are the peers' listeners.
    peers_dns: Option<String>,
    /// Addresses found through `peers_dns`, with the node id each one proved.
    discovered: DashMap<SocketAddr, String>,
    /// Node id to peer listener, rebuilt every round. Read per forwarded request.
    peers: DashMap<String, SocketAddr>,
}

impl Cluster {
    /// The cluster as configured; static peers are resolved at once.
    pub fn new(node_id: &str, id_secret: &[u8; SECRET_BYTES], config: &ClusterConfig) -> Self {
        // A key of its own, derived so the cluster shares one secret, not two.
        let mut derive = Hmac::<Sha256>::new_from_slice(id_secret).expect("any key length");
        derive.update(b"quackgate peer v1");
        let key = Hmac::new_from_slice(&derive.finalize().into_bytes()).expect("any key length");
        let cluster = Cluster {
            node_id: node_id.to_string(),
            key,
            static_peers: config.peers.clone(),
            peers_file: config.peers_file.clone(),
            peers_dns: config.peers_dns.clone(),
            discovered: DashMap::new(),
            peers: DashMap::new(),
        };
        if let Err(e) = cluster.reload() {
            warn!(error = %e, "peers not loaded");
        }
        cluster
    }

    /// The peer listener of `node`, if known.
    pub fn peer(&self, node: &str) -> Option<SocketAddr> {
        self.peers.get(node).map(|addr| *addr)
    }

    /// Known peers, sorted by node id.
    pub fn peer_list(&self) -> Vec<(String, SocketAddr)> {
        let mut list: Vec<_> = self
            .peers
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        list.sort();
        list
    }

    /// The credential for forwarding a message of type `msg_type` of session `connection_id`.
    pub fn sign(&self, msg_type: u64, connection_id: &[u8]) -> HeaderValue {
        let ts = unix_now();
        let mac = self.mac(&self.node_id, ts, msg_type, connection_id);
        HeaderValue::from_str(&format!("{}.{ts}.{mac}", self.node_id))
            .expect("node ids and hex are valid header text")
    }

    /// Checks a forwarded request's credential, in constant time with respect to the MAC.
    ///
    /// # Errors
    /// [`PeerAuthError`] when it is missing, stale or forged.
    pub fn verify(
        &self,
        credential: Option<&HeaderValue>,
        msg_type: u64,
        connection_id: &[u8],
    ) -> Result<(), PeerAuthError> {
        let text = credential
            .and_then(|v| v.to_str().ok())
            .ok_or(PeerAuthError::Malformed)?;
        let mut parts = text.splitn(3, '.');
        let (Some(node), Some(ts), Some(mac_hex)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(PeerAuthError::Malformed);
        };
        let ts: u64 = ts.parse().map_err(|_| PeerAuthError::Malformed)?;
        let now = unix_now();
        if ts > now + MAX_FUTURE_SECS || now.saturating_sub(ts) > MAX_AGE_SECS {
            return Err(PeerAuthError::Stale);
        }
        let claimed = hex::decode(mac_hex).map_err(|_| PeerAuthError::Malformed)?;
        let mut mac = self.key.clone();
        feed(&mut mac, node, ts, msg_type, connection_id);
        mac.verify_slice(&claimed)
            .map_err(|_| PeerAuthError::Signature)
    }

    fn mac(&self, node: &str, ts: u64, msg_type: u64, connection_id: &[u8]) -> String {
        let mut mac = self.key.clone();
        feed(&mut mac, node, ts, msg_type, connection_id);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Rebuilds the peer table from the static list and the peers file.
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
        for (node, addr) in wanted {
            match addr.to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) => {
                    resolved.insert(node, addr);
                }
                _ => {
                    // A lookup that fails once (a DNS blip, a pod being replaced) must not
                    // orphan that node's sessions: keep the last address it had.
                    warn!(peer.node = %node, peer.addr = %addr, "peer address does not resolve; keeping the last one known");
                    if let Some(last) = self.peer(&node) {
                        resolved.insert(node, last);
                    }
                }
            }
        }
        self.peers.retain(|node, _| resolved.contains_key(node));
        for (node, addr) in &resolved {
            if self.peers.insert(node.clone(), *addr) != Some(*addr) {
                info!(peer.node = %node, peer.addr = %addr, "peer known");
            }
        }
        Ok(resolved.len())
    }

    /// This node's identity for `GET /node` on the peer listener: `<node>.<time>.<mac>`.
    pub fn identity(&self) -> String {
        let ts = unix_now();
        format!(
            "{}.{ts}.{}",
            self.node_id,
            self.mac(&self.node_id, ts, 0, IDENTITY_CONTEXT)
        )
    }

    /// The node id an identity answer proves, if it verifies.
    fn verify_identity(&self, text: &str) -> Option<String> {
        let node = text.split('.').next()?.to_string();
        let credential = HeaderValue::from_str(text.trim()).ok()?;
        self.verify(Some(&credential), 0, IDENTITY_CONTEXT)
            .ok()
            .map(|()| node)
    }

    /// Resolves `peers_dns` and asks each new address who it is.
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
            let answer = upstream.get(addr, NODE_PATH).await;
            // This node's own address is remembered too (and skipped when the peers are built),
            // so it is not asked again every round.
            match answer.and_then(|body| self.verify_identity(&String::from_utf8_lossy(&body))) {
                Some(node) => {
                    self.discovered.insert(addr, node);
                }
                // Likely a pod still starting; it is asked again next round.
                None => {
                    debug!(peer.addr = %addr, "address behind cluster.peers_dns gave no valid node identity yet")
                }
            }
        }
    }

    /// Re-reads the peers every [`PEERS_FILE_INTERVAL`] until `stop`.
    pub async fn watch(self: Arc<Self>, upstream: Upstream, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PEERS_FILE_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            self.discover(&upstream).await;
            let cluster = self.clone();
            // Name resolution blocks; keep it off the runtime's worker threads.
            match tokio::task::spawn_blocking(move || cluster.reload()).await {
                Ok(Err(e)) => warn!(error = %e, "peers not reloaded"),
                Err(e) => warn!(error = %e, "peers reload task failed"),
                Ok(Ok(_)) => {}
            }
        }
    }
}

fn feed(mac: &mut Hmac<Sha256>, node: &str, ts: u64, msg_type: u64, connection_id: &[u8]) {
    mac.update(node.as_bytes());
    mac.update(b"|");
    mac.update(ts.to_string().as_bytes());
    mac.update(b"|");
    mac.update(msg_type.to_string().as_bytes());
    mac.update(b"|");
    mac.update(connection_id);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(peers: BTreeMap<String, String>, peers_file: Option<PathBuf>) -> ClusterConfig {
        ClusterConfig {
            peer_listen: "127.0.0.1:0".parse().unwrap(),
            peers,
            peers_file,
            peers_dns: None,
        }
    }

    fn cluster(node: &str, secret: u8) -> Cluster {
        Cluster::new(
            node,
            &[secret; SECRET_BYTES],
            &config(BTreeMap::new(), None),
        )
    }

    #[test]
    fn a_credential_verifies_on_another_node_of_the_same_cluster() {
        let cred = cluster("n0", 1).sign(3, b"q1.n1.0.abc.DEF");
        let n1 = cluster("n1", 1);
        assert_eq!(n1.verify(Some(&cred), 3, b"q1.n1.0.abc.DEF"), Ok(()));
    }

    #[test]
    fn foreign_edited_or_missing_credentials_are_refused() {
        let cred = cluster("n0", 1).sign(7, b"id-1");
        let n1 = cluster("n1", 1);
        let other_cluster = cluster("n1", 2);
        let refused = [
            (
                other_cluster.verify(Some(&cred), 7, b"id-1"),
                PeerAuthError::Signature,
            ),
            (n1.verify(Some(&cred), 7, b"id-2"), PeerAuthError::Signature),
            // A FETCH's credential cannot carry a PREPARE.
            (n1.verify(Some(&cred), 3, b"id-1"), PeerAuthError::Signature),
            (n1.verify(None, 7, b"id-1"), PeerAuthError::Malformed),
        ];
        for (got, want) in refused {
            assert_eq!(got, Err(want));
        }
        let client_token = HeaderValue::from_static("the-public-token");
        let got = n1.verify(Some(&client_token), 7, b"id-1");
        assert_eq!(got, Err(PeerAuthError::Malformed));
        for ts in [unix_now() - 3600, unix_now() + 600] {
            let stale = HeaderValue::from_str(&format!("n0.{ts}.00")).unwrap();
            assert_eq!(
                n1.verify(Some(&stale), 7, b"id-1"),
                Err(PeerAuthError::Stale)
            );
        }
    }

    #[test]
    fn an_identity_proves_its_node_only_within_the_cluster() {
        let id = cluster("n2", 1).identity();
        assert_eq!(
            cluster("n0", 1).verify_identity(&id),
            Some("n2".to_string())
        );
        assert_eq!(cluster("n0", 9).verify_identity(&id), None);
        assert_eq!(
            cluster("n0", 1).verify_identity(&id.replace("n2.", "n3.")),
            None
        );
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
            &config(statics, Some(file.clone())),
        );
        let nodes: Vec<_> = c.peer_list().into_iter().map(|(n, _)| n).collect();
        assert_eq!(nodes, ["n1", "n2"]);
        std::fs::write(&file, "").unwrap();
        c.reload().unwrap();
        assert_eq!(c.peer("n2"), None);
        assert_eq!(c.peer("n1"), Some("127.0.0.1:7001".parse().unwrap()));
    }
}
