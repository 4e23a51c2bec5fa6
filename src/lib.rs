//! quackgate: a gateway for DuckDB's Quack protocol that terminates TLS, checks tokens, and
//! pins every Quack session to the embedded DuckDB worker that owns it, by a signed,
//! routable connection id rather than by cookies or shared state.
//!
//! # Layout
//! - `app`: wiring (state, listeners, workers) and the shutdown sequence.
//! - `config`: the TOML file and `QUACKGATE__*` overrides, validated before binding.
//! - `server`: accept loops; TLS handshake and HTTP inside each connection's task.
//! - `tls`: the rustls server configuration.
//! - `proxy`: one client request: read the Quack header, authenticate, route, forward.
//! - `error`: the one place that decides what a client sees when something fails.
//! - `quack`: protocol facts; `quack::codec` decodes and encodes the bytes.
//! - `auth`: static tokens (SHA-256 digests, constant-time comparison) and JWTs
//!   (`auth::jwt`, keys from a reloaded JWKS file); `auth::mint` makes test tokens.
//! - `limits`: the failed-authentication backoff per client address.
//! - `forwarded`: the client's address behind trusted proxies (`X-Forwarded-For`).
//! - `routable_id`: signed connection ids that name their node and worker.
//! - `routing`: placement of new sessions and the table of open ones.
//! - `cluster`: the other gateway nodes, and the credential of the peer leg.
//! - `upstream`: the HTTP client to workers and peers, its connections leased per request.
//! - `workers`: worker slots; `workers::supervisor` runs the processes, `workers::health`
//!   probes them.
//! - `admin`: `/healthz`, `/readyz`, `/status` and `/metrics`.
//! - `metrics`: the Prometheus metrics.
//! - `shutdown`: signals to a cancellation token.
//! - `telemetry`: logging.
//! - `dev_init`: local CA, certificate, token and config for the local stack and the tests.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod dev_init;
pub mod error;
pub mod forwarded;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod quack;
pub mod routable_id;
pub mod routing;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod workers;
