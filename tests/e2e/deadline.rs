//! `limits.statement_timeout_secs`: a statement that runs past it is answered with a clear
//! error at the deadline, its session is ended, and on an isolated worker the statement itself
//! is stopped by replacing the worker's process (DuckDB 1.5.5 cannot interrupt a served
//! statement); on a shared worker it runs on, and only its session is ended.

use std::time::Duration;

use crate::support::{open_session, python_attach, wait_until, Gateway, GatewayOptions};

/// Runs a statement of minutes on a gateway with a 2 s deadline; returns the printed lines and
/// the worker pids before and after.
fn past_the_deadline(isolation: &str) -> (Vec<String>, Gateway, u32) {
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_workers_toml: format!("isolation = \"{isolation}\"\n"),
        extra_toml: "[limits]\nstatement_timeout_secs = 2\n".into(),
        ..Default::default()
    });
    // The log line naming the pid is read from stderr, apart from the READY line.
    wait_until(
        "the worker's pid in the log",
        Duration::from_secs(10),
        || gw.worker_pids().len() == 1,
    );
    let before = gw.worker_pids();
    let script = format!(
        r#"{attach}
import time
started = time.monotonic()
try:
    con.execute("FROM r.query('SELECT sum(hash(i)) FROM range(1000000000000) t(i)')").fetchall()
    print("long ok")
except Exception as e:
    print("long", str(e).splitlines()[0])
print("secs", round(time.monotonic() - started, 1))
"#,
        attach = python_attach(&gw.toolchain, &gw.ca, &gw.token, gw.https.port()),
    );
    let lines = gw.python_lines(&script, &[]);
    (lines, gw, before[0])
}

fn line<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"))
}

#[test]
fn a_statement_past_its_deadline_is_stopped_on_an_isolated_worker() {
    let (lines, gw, old) = past_the_deadline("principal");
    assert!(
        line(&lines, "long ").contains("stopped by restarting its worker"),
        "{lines:?}"
    );
    let secs: f64 = line(&lines, "secs ").parse().unwrap();
    eprintln!("the statement failed after {secs} s (deadline 2 s)");
    // The old process, still computing without the deadline, is gone; a new one serves.
    wait_until("the old worker to exit", Duration::from_secs(30), || {
        !alive(old)
    });
    wait_until("a new worker", Duration::from_secs(30), || {
        gw.worker_pids().len() == 2
    });
    assert_eq!(gw.cli_ok("FROM r.query('SELECT 42');"), vec!["42"]);
}

#[test]
fn on_a_shared_worker_only_the_session_is_ended() {
    let (lines, gw, old) = past_the_deadline("shared");
    assert!(
        line(&lines, "long ").contains("its session was ended"),
        "{lines:?}"
    );
    // Same process: DuckDB 1.5.5 has no way to stop the statement short of ending it.
    assert!(alive(old));
    assert_eq!(gw.worker_pids(), vec![old]);
    assert_eq!(gw.cli_ok("FROM r.query('SELECT 42');"), vec!["42"]);
}

/// A statement whose client hangs up still meets its deadline, however soon it hangs up: past
/// the deadline its isolated worker is replaced, as for a client that waits (a thirty-third
/// review's statement ran 40 s past a 5 s deadline once its client closed the socket). It
/// also leaves an audit record, `abandoned`, though nobody read its answer.
#[test]
fn a_statement_whose_client_hangs_up_still_meets_its_deadline() {
    use std::io::Write;

    use sha2::{Digest, Sha256};

    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_workers_toml: "isolation = \"principal\"\n".into(),
        extra_toml: format!(
            "[limits]\nstatement_timeout_secs = 4\n[log]\naudit_file = \"{}\"\n",
            audit.display()
        ),
        ..Default::default()
    });
    wait_until(
        "the worker's pid in the log",
        Duration::from_secs(10),
        || gw.worker_pids().len() == 1,
    );
    let before = gw.worker_pids();
    let idle = crate::support::cpu_ticks(before[0]);
    let id = open_session(&gw);
    let sql = "SELECT sum(hash(i)) FROM range(1000000000000) t(i)";
    let message = quack_codec::prepare_request(&id, 5, sql);
    let mut s = std::net::TcpStream::connect(gw.plain).unwrap();
    write!(
        s,
        "POST /quack HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        message.len()
    )
    .unwrap();
    s.write_all(&message).unwrap();
    // The client gives up as soon as its statement runs at the worker (its first 0.3 s of
    // CPU), mostly before even its session would be ended for it.
    wait_until("the statement running", Duration::from_secs(30), || {
        crate::support::cpu_ticks(before[0]) > idle + 30
    });
    drop(s);
    wait_until("the worker replaced", Duration::from_secs(30), || {
        let now = gw.worker_pids();
        !now.is_empty() && now != before
    });
    assert!(
        gw.log()
            .contains("an abandoned request ran past limits.statement_timeout_secs"),
        "{}",
        gw.log()
    );
    assert!(!alive(before[0]), "the old worker process is gone");
    let digest = hex::encode(Sha256::digest(sql.as_bytes()));
    wait_until("the statement's record", Duration::from_secs(10), || {
        std::fs::read_to_string(&audit).is_ok_and(|text| {
            text.lines()
                .any(|l| l.contains(&digest) && l.contains("\"outcome\":\"abandoned\""))
        })
    });
}
