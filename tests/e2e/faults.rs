//! Faults under load (issue 16, item 3): each test runs `quackload --soak` sessions (reads,
//! APPENDs, server transactions on a DuckLake) through the real gateway, injects one fault
//! while they are active, and then requires what a client is promised: only the sessions the
//! fault touched fail, each with one of the documented error texts (quackload's verdict fails
//! on any other, and on any request without an answer within its timeout), service comes back
//! without help (the measured time to recover is printed), and the lake holds every
//! acknowledged row exactly once and nothing from a transaction that never committed.

use std::time::{Duration, Instant};

use crate::soak::{alive, check_ledger, kill, LakeStack, SoakRun, SoakShape};

/// What a fault test saw.
struct Seen {
    out: String,
    recovery: Duration,
}

/// Loads `stack` with `sessions` sessions for `secs` seconds, calls `fault` a quarter of the way
/// in (it returns the time to recover), and checks the run and the lake.
fn under_load(
    stack: &mut LakeStack,
    name: &str,
    sessions: usize,
    secs: u64,
    fault: impl FnOnce(&mut LakeStack) -> Duration,
) -> Seen {
    stack.cli_ok("FROM r.query('CREATE TABLE soak (k BIGINT, v VARCHAR)');");
    let run = SoakRun::start(
        stack,
        &SoakShape {
            sessions,
            secs,
            think_ms: 200,
            interval_secs: 5,
            request_timeout_secs: 60,
        },
    );
    let begin = Instant::now();
    std::thread::sleep(Duration::from_secs(secs / 4));
    let at = begin.elapsed();
    let recovery = fault(stack);
    eprintln!(
        "FAULT {name}: injected at t={:.0}s, recovered after {:.1} s",
        at.as_secs_f64(),
        recovery.as_secs_f64()
    );
    assert!(
        begin.elapsed() + Duration::from_secs(5) < Duration::from_secs(secs),
        "the fault outlasted the load: make the run longer"
    );
    let (passed, out, ledger) = run.finish(Duration::from_secs(secs + 120));
    assert!(passed, "quackload's verdict is a failure:\n{out}");
    let problems = check_ledger(stack, &ledger, "soak");
    assert!(problems.is_empty(), "{problems:?}");
    Seen { out, recovery }
}

/// `SOAKSESSIONS hit=<n> of=<m>` from quackload's output.
fn sessions_hit(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("SOAKSESSIONS "))
        .expect("a SOAKSESSIONS line");
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k))
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("hit="), field("of="))
}

fn expected_errors(out: &str) -> u64 {
    out.lines()
        .filter(|l| l.starts_with("SOAKERR expected"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("count="))
        })
        .map(|n| n.parse::<u64>().unwrap())
        .sum()
}

#[test]
fn kill_9_of_a_worker_under_load_fails_only_its_sessions() {
    let mut stack = LakeStack::one_node(2);
    let seen = under_load(&mut stack, "kill -9 worker", 24, 40, |s| s.kill9_worker(0));
    let (hit, of) = sessions_hit(&seen.out);
    // The killed worker held about half of the sessions: they fail once (Invalid connection id,
    // or "failed during this request" for one in flight) and reopen; the others never notice.
    assert!(hit > 0, "the kill touched no session:\n{}", seen.out);
    assert!(
        hit < of,
        "every session failed, not only the killed worker's:\n{}",
        seen.out
    );
    assert!(seen.recovery < Duration::from_secs(60));
}

#[test]
#[ignore = "open finding: after SIGCONT, one request in flight on the stopped worker came back as HTTP 500 from the worker (seen in a fresh-clone CI run, 1 of 24 sessions); passed in the run before"]
fn sigstop_of_a_worker_for_30_s_delays_its_sessions_and_fails_none() {
    let mut stack = LakeStack::one_node(2);
    let seen = under_load(&mut stack, "SIGSTOP worker 30 s", 24, 80, |s| {
        let pid = alive(&s.nodes[0].worker_pids()).unwrap();
        kill("-STOP", pid);
        std::thread::sleep(Duration::from_secs(30));
        kill("-CONT", pid);
        let start = Instant::now();
        crate::support::wait_until("the node to be ready", Duration::from_secs(60), || {
            s.all_ready()
        });
        s.cli_ok("FROM r.query('SELECT count(*) FROM soak');");
        start.elapsed()
    });
    eprintln!(
        "SIGSTOP: {} expected errors, sessions hit {:?}",
        expected_errors(&seen.out),
        sessions_hit(&seen.out)
    );
    // The stopped worker's requests wait for it (no gateway timeout is shorter than 30 s) and
    // then complete; nobody gets an error, and the other worker's sessions go on meanwhile.
    let (hit, _) = sessions_hit(&seen.out);
    assert_eq!(hit, 0, "a session failed:\n{}", seen.out);
    let max_ms: f64 = seen
        .out
        .lines()
        .find_map(|l| l.strip_prefix("soak: ")?.split(", max ").nth(1))
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .expect("the summary's max latency");
    assert!(
        max_ms >= 25_000.0,
        "no request waited for the stopped worker (max {max_ms} ms): the fault missed\n{}",
        seen.out
    );
}

/// Both workers lose their catalog session and restart. Meanwhile statements fail with
/// DuckLake's own error (the catalog unreachable, or no longer knowing the worker's session),
/// never a bare `Authorization failed` / `Authentication failed` (Quack's hooks failing on a
/// lake worker, which were looked up in the lake) nor an HTTP 500 (an APPEND the worker's Quack
/// server threw on, passed on as it was); quackload's verdict fails on any other text.
#[test]
fn a_catalog_restart_under_load_loses_no_acknowledged_row() {
    let mut stack = LakeStack::one_node(2);
    let seen = under_load(&mut stack, "catalog restart", 24, 60, |s| {
        s.restart_catalog()
    });
    assert!(seen.recovery < Duration::from_secs(120));
}

#[test]
fn kill_9_of_a_cluster_node_fails_only_the_sessions_it_held() {
    let mut stack = LakeStack::cluster();
    let seen = under_load(&mut stack, "kill -9 node", 30, 60, |s| {
        let start = Instant::now();
        let node = s.nodes.pop().unwrap();
        kill("-9", node.child.id());
        drop(node);
        // Recovered: a new session through the balancer works.
        s.cli_ok("FROM r.query('SELECT 42');");
        start.elapsed()
    });
    let (hit, of) = sessions_hit(&seen.out);
    assert!(hit > 0, "the kill touched no session:\n{}", seen.out);
    assert!(hit < of, "every session failed:\n{}", seen.out);
}
