//! `[cluster]`: the peer listener and where the other nodes are.

use std::path::PathBuf;

use crate::cluster::ClusterConfig;
use crate::config::file::FileCluster;
use crate::config::problems::Problems;

/// `has_id_secret`: whether `gateway.id_secret_file` is set, which every node of a cluster
/// needs.
pub(super) fn validate(
    cluster: Option<FileCluster>,
    has_id_secret: bool,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    problems: &mut Problems,
) -> Option<ClusterConfig> {
    cluster.and_then(|c| {
        if !has_id_secret {
            problems.push(
                "cluster: every node must share gateway.id_secret_file, so that each can verify the others' ids".into(),
            );
        }
        for (node, addr) in &c.peers {
            if !addr.contains(':') {
                problems.push(format!("cluster.peers.{node}: must be host:port, got {addr:?}"));
            }
        }
        if let Some(name) = &c.peers_dns {
            if !name.contains(':') {
                problems.push(format!("cluster.peers_dns: must be host:port, got {name:?}"));
            }
        }
        match c.peer_listen.parse() {
            Ok(peer_listen) => Some(ClusterConfig {
                peer_listen,
                peers: c.peers,
                peers_file: c.peers_file.map(resolve),
                peers_dns: c.peers_dns,
            }),
            Err(_) => {
                problems.push(format!(
                    "cluster.peer_listen: must be an IP address and port, got {:?}",
                    c.peer_listen
                ));
                None
            }
        }
    })
}
