//! `[cluster]`: the peer listener and where the other nodes are, checked against the role.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::cluster::ClusterConfig;
use crate::config::file::FileCluster;
use crate::config::problems::Problems;
use crate::role::Role;
use crate::tls::TlsFiles;

/// `has_id_secret`: whether `gateway.id_secret_file` is set, which every node of a cluster
/// needs.
pub(super) fn validate(
    cluster: Option<FileCluster>,
    role: Role,
    has_id_secret: bool,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    problems: &mut Problems,
) -> Option<ClusterConfig> {
    let Some(c) = cluster else {
        if matches!(role, Role::Edge | Role::Node) {
            problems.push(format!(
                "cluster: required by `quackgate {}`",
                if role == Role::Edge { "edge" } else { "node" }
            ));
        }
        return None;
    };
    if !has_id_secret {
        problems.push(
            "cluster: every node must share gateway.id_secret_file, so that each can verify the others' ids".into(),
        );
    }
    for (node, addr) in &c.peers {
        if !addr.contains(':') {
            problems.push(format!(
                "cluster.peers.{node}: must be host:port, got {addr:?}"
            ));
        }
    }
    if let Some(name) = &c.peers_dns {
        if !name.contains(':') {
            problems.push(format!(
                "cluster.peers_dns: must be host:port, got {name:?}"
            ));
        }
    }
    if role == Role::Edge && c.peers.is_empty() && c.peers_file.is_none() && c.peers_dns.is_none() {
        problems.push(
            "cluster: an edge needs its nodes: set cluster.peers, cluster.peers_file or cluster.peers_dns".into(),
        );
    }
    let peer_listen_tls = match (c.peer_tls_cert, c.peer_tls_key) {
        (Some(cert), Some(key)) => {
            let files = TlsFiles {
                cert: resolve(cert),
                key: resolve(key),
            };
            for (key, path) in [
                ("cluster.peer_tls_cert", &files.cert),
                ("cluster.peer_tls_key", &files.key),
            ] {
                if !path.is_file() {
                    problems.push(format!("{key}: no such file {}", path.display()));
                }
            }
            Some(files)
        }
        (None, None) => None,
        _ => {
            problems
                .push("cluster.peer_tls_cert and cluster.peer_tls_key: set both or neither".into());
            None
        }
    };
    let peer_listen = match (role, c.peer_listen) {
        (Role::Edge, Some(_)) => {
            problems.push(
                "cluster.peer_listen: an edge holds no sessions and has no peer listener; remove it".into(),
            );
            None
        }
        (Role::Edge, None) => None,
        (_, None) => {
            problems.push("cluster.peer_listen: required (where edges and other nodes reach this node's sessions)".into());
            None
        }
        (_, Some(text)) => match text.parse::<SocketAddr>() {
            Ok(addr) => {
                let private = c.private_network.unwrap_or(false);
                if peer_listen_tls.is_none() && !private && !is_private(addr.ip()) {
                    problems.push(format!(
                        "cluster.peer_listen: {addr} may be reachable from outside, and the peer leg would be plain HTTP: set cluster.peer_tls_cert and cluster.peer_tls_key, bind a loopback or private address, or set cluster.private_network = true if only a private network (an ingress that terminates TLS) reaches it"
                    ));
                }
                Some(addr)
            }
            Err(_) => {
                problems.push(format!(
                    "cluster.peer_listen: must be an IP address and port, got {text:?}"
                ));
                None
            }
        },
    };
    let peer_ca_file = c.peer_ca_file.map(resolve);
    if let Some(ca) = &peer_ca_file {
        if !ca.is_file() {
            problems.push(format!(
                "cluster.peer_ca_file: no such file {}",
                ca.display()
            ));
        }
    }
    Some(ClusterConfig {
        peer_listen,
        peer_listen_tls,
        peers: c.peers,
        peers_file: c.peers_file.map(resolve),
        peers_dns: c.peers_dns,
        peer_tls: c.peer_tls.unwrap_or(false),
        peer_ca_file,
    })
}

/// Loopback, RFC 1918, link-local, CGNAT (100.64/10) and unique-local addresses. The
/// unspecified address binds every interface, public ones too, so it is not private.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_off_the_internet_count_as_private() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.100.0.5",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["0.0.0.0", "::", "8.8.8.8", "100.128.0.1", "2001:db8::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
