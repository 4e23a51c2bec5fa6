//! A statement that outlives the request timeout of the proxy in front (Azure Container Apps'
//! ingress allows 240 s; nginx with 3 s stands in here): the client gets a clear error at the
//! timeout, and the session is ended at its worker instead of being left to the idle sweep.

use std::time::Duration;

use crate::cluster::Nginx;
use crate::support::{
    plain_attach_sql, python_attach, random_hex, run_cli, run_python, wait_until, Gateway,
    RoleProcess, Toolchain,
};

const PROXY_TIMEOUT_SECS: u64 = 3;

/// Attaches with `attach` (Python lines), runs a statement three times longer than the proxy
/// allows, then a probe on the same session; returns what the script printed and the seconds
/// until the long statement failed.
fn long_statement(attach: &str) -> (String, f64) {
    let script = format!(
        r#"{attach}
import time
started = time.monotonic()
try:
    con.execute("FROM r.query('SELECT sleep_ms({ms})')").fetchall()
    print("long: ok")
except Exception as e:
    print("long:", e)
print("failed after", round(time.monotonic() - started, 1))
try:
    print("probe:", con.execute("FROM r.query('SELECT 42 AS after')").fetchall())
except Exception as e:
    print("probe:", e)
"#,
        ms = PROXY_TIMEOUT_SECS * 3000
    );
    let out = run_python(&Toolchain::get(), &script, &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let took = text
        .lines()
        .find_map(|l| l.strip_prefix("failed after "))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(f64::NAN);
    (text, took)
}

fn sessions_on(status: &str) -> usize {
    status
        .lines()
        .next()
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("sessions="))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

#[test]
fn behind_a_proxy_timeout_the_session_is_ended_at_the_worker() {
    let gw = Gateway::start();
    let nginx_dir = tempfile::tempdir().unwrap();
    let tls = quackgate::dev_init::write_tls(nginx_dir.path(), &[]).unwrap();
    let nginx = Nginx::start_with_timeout(&[gw.plain], &tls.cert, &tls.key, PROXY_TIMEOUT_SECS);
    let attach = python_attach(&Toolchain::get(), &tls.ca_cert, &gw.token, nginx.port);
    let (out, took) = long_statement(&attach);
    eprintln!("single node behind nginx: the client's statement failed after {took:.1} s");
    assert!(out.contains("HTTP 504"), "{out}");
    // The proxy cut it off at its timeout, not when the statement ended.
    assert!(took < (PROXY_TIMEOUT_SECS * 2) as f64, "{out}");
    // The session was ended: the next statement on it is refused, not queued behind the first.
    assert!(
        out.contains("probe: ") && out.contains("Invalid connection id"),
        "{out}"
    );
    wait_until(
        "the gateway to forget the session",
        Duration::from_secs(5),
        || sessions_on(&gw.admin_get("/status").1) == 0,
    );
    assert!(gw.log().contains("abandoned"), "{}", gw.log());
    // A new session works at once.
    let after = gw.cli_ok("FROM r.query('SELECT 7')");
    assert_eq!(after, ["7"]);
}

#[test]
fn through_an_edge_the_client_learns_the_node_timed_out_and_the_node_ends_the_session() {
    let toolchain = Toolchain::get();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("id-secret"),
        random_hex() + &random_hex() + &random_hex()[..16],
    )
    .unwrap();
    let token = format!("tok-{}", random_hex());
    std::fs::write(
        d.join("node.toml"),
        format!(
            "[gateway]\nnode_id = \"n1\"\nadmin_listen = \"127.0.0.1:0\"\nid_secret_file = \"id-secret\"\n[workers]\ncount = 1\nextension_dir = \"{}\"\nthreads = 2\nhealth_interval_ms = 200\n[cluster]\npeer_listen = \"127.0.0.1:0\"\n",
            toolchain.ext_dir().display()
        ),
    )
    .unwrap();
    let node = RoleProcess::start("node", &d.join("node.toml"), None);
    // The node's ingress: TLS for the name `localhost`, plain to the node, 3 s timeout.
    let tls = quackgate::dev_init::write_tls(d, &[]).unwrap();
    let ingress = Nginx::start_with_timeout(
        &[node.addr("peer")],
        &tls.cert,
        &tls.key,
        PROXY_TIMEOUT_SECS,
    );
    std::fs::write(
        d.join("edge.toml"),
        format!(
            "[gateway]\nnode_id = \"edge-a\"\nplain_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nid_secret_file = \"id-secret\"\n[[auth.static_tokens]]\nname = \"tester\"\nsha256 = \"{}\"\n[cluster]\npeers = {{ n1 = \"localhost:{}\" }}\npeer_tls = true\npeer_ca_file = \"{}\"\n[log]\nformat = \"json\"\n",
            quackgate::auth::hash_token(&token),
            ingress.port,
            tls.ca_cert.display()
        ),
    )
    .unwrap();
    let edge = RoleProcess::start("edge", &d.join("edge.toml"), None);
    wait_until("the edge to see n1 ready", Duration::from_secs(20), || {
        edge.admin_get("/status").1.contains("node n1 localhost:")
            && edge.admin_get("/readyz").0 == 200
    });

    let plain = edge.addr("plain").port();
    let attach = python_attach(&toolchain, &tls.ca_cert, &token, plain)
        .replace("(DISABLE_SSL false)", "(DISABLE_SSL true)");
    let (out, took) = long_statement(&attach);
    eprintln!("through edge -> ingress -> node: the client's statement failed after {took:.1} s");
    assert!(
        out.contains("node n1 did not answer within the request timeout"),
        "{out}"
    );
    assert!(out.contains("Invalid connection id"), "{out}");
    wait_until(
        "the node to end the session",
        Duration::from_secs(5),
        || sessions_on(&node.admin_get("/status").1) == 0,
    );
    assert!(node.log().contains("abandoned"), "{}", node.log());
    // The edge logs JSON lines (log.format = "json"), none with the client's token.
    let edge_log = edge.log();
    for line in edge_log.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(event["fields"]["message"].is_string(), "{line}");
    }
    assert!(edge_log.contains("peer known"), "{edge_log}");
    assert!(!edge_log.contains(&token), "{edge_log}");
    let fresh = run_cli(
        &toolchain,
        &format!(
            "{}FROM r.query('SELECT quackgate.worker_id()');\n",
            plain_attach_sql(&toolchain, plain, &token)
        ),
    );
    assert!(
        String::from_utf8_lossy(&fresh.stdout).contains("n1.w0"),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
}
