//! What a quackgate process is. A leaf, because the config reads it from the command line and
//! the shared state and the shutdown sequence act on it.

/// Which role this process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `quackgate serve`: the gateway for clients.
    Gateway,
    /// `quackgate edge`: no workers; places sessions on nodes and routes by id. Stateless, so
    /// any number of replicas can run behind one balancer.
    Edge,
    /// `quackgate node`: workers behind a peer listener, with no client listener; sessions
    /// arrive from edges only.
    Node,
    /// `quackgate catalog`: the DuckLake catalog for workers. Its clients are workers whose
    /// catalog sessions last as long as they run, so a drain does not wait for them.
    Catalog,
}
