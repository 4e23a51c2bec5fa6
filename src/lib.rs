//! quackgate: a gateway for DuckDB's Quack protocol that terminates TLS, checks tokens, and
//! pins every Quack session to the embedded DuckDB worker that owns it, by a signed,
//! routable connection id rather than by cookies or shared state.
//!
//! # Layout
//! A client request goes `server` (accept, TLS, HTTP) → `proxy` (its phases: `read`, then
//! `connect` for a new session or `session` for the rest) → `upstream` (to a worker on loopback,
//! or to the peer node that owns the session); `error` decides what the client sees.
//!
//! - `app`: wiring only: builds the state, binds the listeners, starts the workers and the
//!   background tasks, and runs the shutdown sequence.
//! - `state`: [`state::AppState`], what every request shares, defined low and built in `app`.
//! - `body`: the body types of both legs and their constructors.
//! - `shutdown`: the signals, and the [`shutdown::Lifecycle`] tokens each stage cancels.
//! - `config`: the TOML file and `QUACKGATE__*` overrides, validated section by section and
//!   converted to the types their modules own; read only by `app`, `state` and the binary.
//! - `server`: accept loops; TLS handshake and HTTP inside each connection's task.
//! - `linger`: the lingering close that lets a refusal reach a client still sending.
//! - `tls`: the rustls server configuration.
//! - `proxy`: one client request, phase by phase.
//! - `error`: the one place that decides what a client sees when something fails.
//! - the Quack protocol facts and codec are the `quack-codec` crate (`crates/quack-codec`).
//! - `auth`: static tokens (SHA-256 digests, constant-time comparison) and JWTs: `auth::keys`
//!   holds the keys in force, `auth::jwt` verifies, `auth::refresh` and `auth::jwks_url` keep
//!   the keys current; `auth::mint` makes test tokens.
//! - `limits`: the failed-authentication backoff per client address.
//! - `held_append`: where an APPEND waits while it is read whole: memory, then disk.
//! - `forwarded`: the client's address behind trusted proxies (`X-Forwarded-For`).
//! - `routable_id`: signed connection ids that name their node and worker; `keyring` holds
//!   their keys and the peer leg's, and `id_rotation` replaces both when the secret files change.
//! - `routing`: why a request cannot be routed, and where a new session goes.
//! - `sessions`: the table of open sessions (`sessions::table`) and the idle sweep
//!   (`sessions::idle`).
//! - `cluster`: the other gateway nodes, and the credential of the peer leg.
//! - `upstream`: the HTTP client to workers and peers, its connections leased per request.
//! - `workers`: worker slots; `workers::supervisor` runs the processes, `workers::health`
//!   probes them, `workers::config` is what they are started with.
//! - `admin`: `/healthz`, `/readyz`, `/status` and `/metrics`.
//! - `audit`: one record per new session and per statement, on a target of its own.
//! - `metrics`: the Prometheus metrics.
//! - `role`: gateway or catalog.
//! - `telemetry`: logging.
//! - `dev_init`: local CA, certificate, token and config for the local stack and the tests.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod body;
pub mod cluster;
pub mod config;
pub mod dev_init;
pub mod error;
pub mod forwarded;
pub mod held_append;
pub mod host_memory;
pub mod id_rotation;
pub mod keyring;
pub mod limits;
pub mod linger;
pub mod metrics;
pub mod proxy;
pub mod role;
pub mod routable_id;
pub mod routing;
pub mod server;
pub mod sessions;
pub mod shutdown;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod workers;
