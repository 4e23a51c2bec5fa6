//! End-to-end tests: the real `quackgate` binary, real DuckDB 1.5.5 clients, real TLS with a
//! test CA, ephemeral loopback ports. One test binary, so DuckDB-free linking stays cheap.

mod support;

mod audit;
mod clients;
mod cluster;
mod ducklake;
mod edge;
mod faults;
mod lake_writes;
mod lifecycle;
mod pinning;
mod refusals;
mod rotation;
mod secrets;
mod security;
mod soak;
mod timeouts;
