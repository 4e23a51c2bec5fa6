//! Node load, reported over the peer leg: a node answers `GET /peer/status` with its
//! readiness and load, signed and bound to the asker's nonce; an edge asks every node
//! [`POLL_INTERVAL`] and places new sessions from what they said. The answer is also how a node
//! proves which node it is, so a spoofed name cannot pass for a node.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Access;
use crate::routing::place_session;

/// Where a node answers status requests, on its peer listener.
pub const STATUS_PATH: &str = "/peer/status";
/// How often an edge asks each node.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// A report older than this no longer places sessions.
const REPORT_TTL: Duration = Duration::from_secs(3);

/// What a node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeLoad {
    pub draining: bool,
    /// Open sessions.
    pub sessions: usize,
    /// Ready read-write workers.
    pub read_write: usize,
    /// Ready read-only workers.
    pub read_only: usize,
}

impl NodeLoad {
    /// The wire form: `node=<id> draining=<0|1> sessions=<n> rw=<n> ro=<n>`.
    pub fn encode(&self, node: &str) -> String {
        format!(
            "node={node} draining={} sessions={} rw={} ro={}\n",
            u8::from(self.draining),
            self.sessions,
            self.read_write,
            self.read_only
        )
    }

    /// The node id and load in `text`, if it is well formed.
    pub fn parse(text: &str) -> Option<(String, NodeLoad)> {
        let mut fields = BTreeMap::new();
        for pair in text.split_whitespace() {
            let (k, v) = pair.split_once('=')?;
            fields.insert(k, v);
        }
        let num = |k: &str| fields.get(k)?.parse::<usize>().ok();
        Some((
            fields.get("node")?.to_string(),
            NodeLoad {
                draining: num("draining")? != 0,
                sessions: num("sessions")?,
                read_write: num("rw")?,
                read_only: num("ro")?,
            },
        ))
    }

    fn workers(&self, access: Access) -> usize {
        match access {
            Access::ReadWrite => self.read_write,
            Access::ReadOnly => self.read_only,
        }
    }
}

/// What an edge knows of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Not asked yet.
    Unknown,
    /// The last request failed, or its answer did not verify.
    Unreachable,
    /// It answered, at `at`; `placed` sessions were placed on it since.
    Reported {
        load: NodeLoad,
        at: Instant,
        placed: usize,
    },
}

impl NodeState {
    /// The word `/status` shows.
    pub fn label(&self, now: Instant) -> &'static str {
        match self {
            NodeState::Unknown => "unknown",
            NodeState::Unreachable => "unreachable",
            NodeState::Reported { at, .. } if now.duration_since(*at) > REPORT_TTL => "stale",
            NodeState::Reported { load, .. } if load.draining => "draining",
            NodeState::Reported { load, .. } if load.read_write + load.read_only == 0 => {
                "not-ready"
            }
            NodeState::Reported { .. } => "ready",
        }
    }
}

/// The edge's view of every node's load, for placement.
#[derive(Debug, Default)]
pub struct NodeBoard {
    nodes: Mutex<BTreeMap<String, NodeState>>,
    /// Where ties start, so a burst of connects spreads out.
    rotation: std::sync::atomic::AtomicUsize,
}

impl NodeBoard {
    /// Keeps exactly `nodes`, new ones as [`NodeState::Unknown`].
    pub fn retain_only(&self, nodes: &[String]) {
        let mut map = self.lock();
        map.retain(|n, _| nodes.contains(n));
        for n in nodes {
            map.entry(n.clone()).or_insert(NodeState::Unknown);
        }
    }

    pub fn reported(&self, node: &str, load: NodeLoad) {
        if let Some(state) = self.lock().get_mut(node) {
            *state = NodeState::Reported {
                load,
                at: Instant::now(),
                placed: 0,
            };
        }
    }

    pub fn unreachable(&self, node: &str) {
        if let Some(state) = self.lock().get_mut(node) {
            *state = NodeState::Unreachable;
        }
    }

    /// Every node and its state, sorted by id.
    pub fn snapshot(&self) -> Vec<(String, NodeState)> {
        self.lock().iter().map(|(n, s)| (n.clone(), *s)).collect()
    }

    /// Whether some node takes new sessions.
    pub fn any_ready(&self) -> bool {
        let now = Instant::now();
        self.lock().values().any(|s| s.label(now) == "ready")
    }

    /// The node for a new session of `access`: among nodes with a fresh report, not draining
    /// and with a ready worker of that access, the one with the fewest sessions per such
    /// worker; `skip` are nodes already tried. Counts the session against it until its next
    /// report.
    pub fn place(&self, access: Access, skip: &[String]) -> Option<String> {
        let now = Instant::now();
        let mut map = self.lock();
        let names: Vec<String> = map.keys().cloned().collect();
        // Sessions per worker, scaled so that integer comparison keeps the order.
        let loads: Vec<Option<usize>> = names
            .iter()
            .map(|name| match map.get(name) {
                Some(NodeState::Reported { load, at, placed })
                    if now.duration_since(*at) <= REPORT_TTL
                        && !load.draining
                        && load.workers(access) > 0
                        && !skip.contains(name) =>
                {
                    Some((load.sessions + placed) * 1024 / load.workers(access))
                }
                _ => None,
            })
            .collect();
        let start = self
            .rotation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % names.len().max(1);
        let chosen = names.get(place_session(&loads, start)?)?.clone();
        if let Some(NodeState::Reported { placed, .. }) = map.get_mut(&chosen) {
            *placed += 1;
        }
        Some(chosen)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NodeState>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(sessions: usize, rw: usize, ro: usize) -> NodeLoad {
        NodeLoad {
            draining: false,
            sessions,
            read_write: rw,
            read_only: ro,
        }
    }

    fn board(nodes: &[(&str, NodeLoad)]) -> NodeBoard {
        let b = NodeBoard::default();
        let names: Vec<String> = nodes.iter().map(|(n, _)| n.to_string()).collect();
        b.retain_only(&names);
        for (n, l) in nodes {
            b.reported(n, *l);
        }
        b
    }

    #[test]
    fn a_report_survives_its_wire_form() {
        let l = NodeLoad {
            draining: true,
            sessions: 7,
            read_write: 2,
            read_only: 1,
        };
        assert_eq!(NodeLoad::parse(&l.encode("n3")), Some(("n3".into(), l)));
        assert_eq!(NodeLoad::parse("node=n3 sessions=x"), None);
        assert_eq!(NodeLoad::parse(""), None);
    }

    #[test]
    fn the_least_loaded_node_with_a_worker_of_the_access_is_chosen() {
        let b = board(&[
            ("n1", load(4, 2, 0)),
            ("n2", load(3, 1, 0)),
            ("n3", load(1, 2, 1)),
        ]);
        assert_eq!(b.place(Access::ReadWrite, &[]).as_deref(), Some("n3"));
        // Only n3 has a read-only worker.
        assert_eq!(b.place(Access::ReadOnly, &[]).as_deref(), Some("n3"));
        assert_eq!(
            b.place(Access::ReadOnly, &["n3".into()]),
            None,
            "a node already tried is skipped"
        );
    }

    #[test]
    fn sessions_placed_since_the_report_count() {
        let b = board(&[("n1", load(0, 1, 0)), ("n2", load(0, 1, 0))]);
        let mut seen: Vec<String> = (0..4)
            .filter_map(|_| b.place(Access::ReadWrite, &[]))
            .collect();
        seen.sort();
        assert_eq!(seen, ["n1", "n1", "n2", "n2"]);
    }

    #[test]
    fn draining_unreachable_unknown_and_stale_nodes_get_nothing() {
        let b = board(&[
            (
                "n1",
                NodeLoad {
                    draining: true,
                    ..load(0, 2, 0)
                },
            ),
            ("n2", load(0, 2, 0)),
        ]);
        b.unreachable("n2");
        b.retain_only(&["n1".into(), "n2".into(), "n3".into()]);
        assert_eq!(b.place(Access::ReadWrite, &[]), None);
        assert!(!b.any_ready());
        b.reported("n3", load(0, 1, 0));
        if let Some(NodeState::Reported { at, .. }) = b.lock().get_mut("n3") {
            *at -= REPORT_TTL + Duration::from_secs(1);
        }
        assert_eq!(b.place(Access::ReadWrite, &[]), None);
        let labels: Vec<_> = b
            .snapshot()
            .iter()
            .map(|(_, s)| s.label(Instant::now()))
            .collect();
        assert_eq!(labels, ["draining", "unreachable", "stale"]);
    }
}
