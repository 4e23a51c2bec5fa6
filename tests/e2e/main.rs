//! End-to-end tests: the real `quackgate` binary, real DuckDB 1.5.5 clients, real TLS with a
//! test CA, ephemeral loopback ports. One test binary, so DuckDB-free linking stays cheap.

mod support;

mod audit;
mod bad_input;
mod clients;
mod cluster;
mod deadline;
mod ducklake;
mod edge;
mod faults;
mod isolation;
mod lake_writes;
mod lifecycle;
mod pinning;
mod refusals;
mod rotation;
mod secrets;
mod security;
mod settings;
mod soak;
mod timeouts;
