//! Tokens never reach the logs, at any level; SQL text never reaches them at info; workers get
//! none of the gateway's environment beyond what DuckDB reads.

use crate::support::{Gateway, GatewayOptions};

#[test]
fn no_token_appears_in_gateway_or_worker_output_even_at_debug() {
    let gw = Gateway::start_with(GatewayOptions {
        rust_log: Some("debug"),
        ..Default::default()
    });
    assert_eq!(gw.cli_ok("FROM r.query('SELECT 42');"), vec!["42"]);
    let wrong = "wrong-token-7f3a9c";
    assert!(!gw
        .cli_with_token(wrong, "FROM r.query('SELECT 1');")
        .status
        .success());
    let log = gw.log();
    assert!(
        log.contains("session opened"),
        "debug logging was not on:\n{log}"
    );
    for secret in [gw.token.as_str(), wrong] {
        assert!(!log.contains(secret), "a token leaked into the log:\n{log}");
    }
    // The internal worker token is 64 hex characters; no such run may appear either.
    assert!(
        !has_hex_run(&log, 64),
        "a 64-hex-character secret in the log:\n{log}"
    );
}

#[test]
fn sql_text_stays_out_of_info_logs() {
    let gw = Gateway::start();
    let marker = "marker_b7c1e9";
    gw.cli_ok(&format!("FROM r.query('SELECT 1 AS {marker}');"));
    let log = gw.log();
    assert!(log.contains("all workers serving"), "{log}");
    assert!(!log.contains(marker), "SQL text in an info log:\n{log}");
    assert!(!log.contains(&gw.token));
}

fn has_hex_run(text: &str, len: usize) -> bool {
    let mut run = 0;
    for c in text.chars() {
        run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
        if run >= len {
            return true;
        }
    }
    false
}

fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect()
}

#[test]
fn workers_get_none_of_the_gateways_environment_beyond_what_duckdb_reads() {
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        ..Default::default()
    });
    let name = |kv: &String| kv.split('=').next().unwrap_or_default().to_string();
    let gateway_only: Vec<String> = environ(gw.child.id())
        .iter()
        .map(name)
        .filter(|k| !quackgate::workers::env::passes(std::ffi::OsStr::new(k)))
        .collect();
    assert!(
        gateway_only.iter().any(|k| k.starts_with("CARGO_")),
        "the test should give the gateway variables a worker must not get: {gateway_only:?}"
    );
    for pid in gw.worker_pids() {
        let leaked: Vec<String> = environ(pid)
            .iter()
            .map(name)
            .filter(|k| gateway_only.contains(k))
            .collect();
        assert!(leaked.is_empty(), "worker {pid} got {leaked:?}");
    }
}
