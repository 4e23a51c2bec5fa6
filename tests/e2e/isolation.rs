//! Client SQL that ends or lists its worker (`quack_stop`, `quack_active_connections()`) is
//! refused by the workers' check on client SQL; behind that check, it would reach only its own
//! principal's sessions when workers are isolated per principal (the default). Operator-made
//! macros (`workers.init_sql`, which the check does not see into) stand in for a way past the
//! check, so that what isolation alone holds is still tested; with `workers.isolation =
//! "shared"` the same SQL reaches another principal's, which shows that the test can fail.

use crate::support::{random_hex, Gateway, GatewayOptions};

/// Quack's functions under names the client check lets through, made at the worker's start.
const BYPASS_MACROS: &str = r#"init_sql = [
  "CREATE MACRO sessions_here() AS TABLE SELECT * FROM quack_active_connections()",
  "CREATE MACRO listener_here() AS TABLE SELECT listen_uri FROM quack_server_list()",
  "CREATE MACRO stop_here(u) AS TABLE SELECT * FROM quack_stop(u)",
]
"#;

fn gateway(workers: usize, isolation: &str, bob: &str) -> Gateway {
    Gateway::start_with(GatewayOptions {
        workers,
        extra_workers_toml: format!("isolation = \"{isolation}\"\n{BYPASS_MACROS}"),
        extra_toml: format!(
            "[[auth.static_tokens]]\nname = \"bob\"\nsha256 = \"{}\"\n",
            quackgate::auth::hash_token(bob)
        ),
        ..Default::default()
    })
}

/// A Python prelude with `connect(token)`, a new client attached as `r`.
fn prelude(gw: &Gateway) -> String {
    format!(
        r#"import duckdb, threading, time
def connect(token):
    con = duckdb.connect(config={{"extension_directory": "{ext}", "autoinstall_known_extensions": "false"}})
    con.execute("LOAD quack")
    con.execute("SET enable_progress_bar=false")
    con.execute("SET ca_cert_file='{ca}'")
    con.execute(f"CREATE SECRET (TYPE quack, TOKEN '{{token}}', SCOPE 'quack:localhost:{port}')")
    con.execute("ATTACH 'quack:localhost:{port}' AS r (DISABLE_SSL false)")
    return con
def one(con, sql):
    return con.execute(f"FROM r.query('{{sql}}')").fetchone()[0]
"#,
        ext = gw.toolchain.ext_dir().display(),
        ca = gw.ca.display(),
        port = gw.https.port(),
    )
}

/// Alice runs a long statement; Bob lists his worker's sessions meanwhile, then stops his
/// worker's server; Alice's session is then asked for another answer. Prints what each saw.
fn stop_and_list(gw: &Gateway, bob: &str) -> Vec<String> {
    let script = format!(
        r#"{prelude}
alice, bob = connect("{alice}"), connect("{bob}")
print("alice_worker", one(alice, "SELECT quackgate.worker_id()"))
print("bob_worker", one(bob, "SELECT quackgate.worker_id()"))
refused = 0
for sql in ["SELECT * FROM quack_active_connections()", "SELECT listen_uri FROM quack_server_list()"]:
    try:
        bob.execute(f"FROM r.query('{{sql}}')").fetchall()
    except Exception as e:
        refused += "refused: it calls one of Quack" in str(e)
print("direct_calls_refused", refused)
marker = "marker_alice_9c4e"
def slow():
    alice.execute(f"FROM r.query('SELECT sum(hash(i)) AS {{marker}} FROM range(3000000000) t(i)')").fetchall()
t = threading.Thread(target=slow)
t.start()
seen_marker, most = False, 0
deadline = time.monotonic() + 120
while t.is_alive() and time.monotonic() < deadline:
    rows = bob.execute("FROM r.query('FROM sessions_here()')").fetchall()
    most = max(most, len(rows))
    seen_marker = seen_marker or any(marker in str(r) for r in rows)
    time.sleep(0.05)
t.join()
print("bob_saw_alice_sql", seen_marker)
print("bob_saw_sessions", most)
uri = one(bob, "FROM listener_here()")
try:
    bob.execute(f"FROM r.query('FROM stop_here(''{{uri}}'')')").fetchall()
except Exception as e:
    pass
# The stopped server's process answers on open keep-alive connections until it exits: wait
# until Bob's own session is gone before asking Alice's.
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        one(bob, "SELECT 1")
        time.sleep(0.1)
    except Exception:
        break
else:
    raise SystemExit("Bob's session outlived quack_stop by 60 s")
try:
    print("alice_after_stop", one(alice, "SELECT 42"))
except Exception as e:
    print("alice_after_stop error", str(e).splitlines()[0])
"#,
        prelude = prelude(gw),
        alice = gw.token,
    );
    gw.python_lines(&script, &[])
}

fn value<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

#[test]
fn a_principal_can_neither_stop_nor_read_another_principals_sessions() {
    let bob = format!("bob-{}", random_hex());
    let gw = gateway(2, "principal", &bob);
    let lines = stop_and_list(&gw, &bob);
    assert_ne!(
        value(&lines, "alice_worker"),
        value(&lines, "bob_worker"),
        "{lines:?}"
    );
    assert_eq!(value(&lines, "direct_calls_refused"), "2", "{lines:?}");
    assert_eq!(value(&lines, "bob_saw_alice_sql"), "False", "{lines:?}");
    assert_eq!(value(&lines, "bob_saw_sessions"), "1", "{lines:?}");
    assert_eq!(value(&lines, "alice_after_stop"), "42", "{lines:?}");
    // Bob's own worker was stopped; its slot serves again, and Bob can connect again.
    crate::support::wait_until(
        "a second start of a worker",
        std::time::Duration::from_secs(60),
        || gw.worker_pids().len() == 3,
    );
    let again = gw.python_lines(
        &format!(
            "{}\nprint(one(connect(\"{bob}\"), \"SELECT 7\"))",
            prelude(&gw)
        ),
        &[],
    );
    assert_eq!(again, vec!["7"]);
}

#[test]
fn on_shared_workers_the_same_sql_reaches_the_other_principal() {
    let bob = format!("bob-{}", random_hex());
    let gw = gateway(1, "shared", &bob);
    let lines = stop_and_list(&gw, &bob);
    assert_eq!(value(&lines, "bob_saw_alice_sql"), "True", "{lines:?}");
    assert!(
        value(&lines, "alice_after_stop").starts_with("error"),
        "{lines:?}"
    );
}

#[test]
fn a_worker_idle_for_one_principal_is_replaced_for_the_next() {
    let bob = format!("bob-{}", random_hex());
    let gw = gateway(1, "principal", &bob);
    let script = format!(
        r#"{prelude}
alice = connect("{alice}")
alice.execute("FROM r.query('CREATE TABLE left_behind AS SELECT 1 AS x')").fetchall()
try:
    connect("{bob}")
    print("bob_while_alice error none")
except Exception as e:
    print("bob_while_alice", str(e).splitlines()[0])
alice.execute("DETACH r")
alice.close()
start = time.monotonic()
bob = connect("{bob}")
print("bob_connect_secs", round(time.monotonic() - start, 2))
try:
    print("bob_reads", one(bob, "SELECT count(*) FROM left_behind"))
except Exception as e:
    print("bob_reads error", str(e).splitlines()[0])
"#,
        prelude = prelude(&gw),
        alice = gw.token,
    );
    let lines = gw.python_lines(&script, &[]);
    eprintln!("{lines:?}");
    assert!(
        value(&lines, "bob_while_alice").contains("serves another principal's open sessions"),
        "{lines:?}"
    );
    assert!(
        value(&lines, "bob_reads").starts_with("error")
            && value(&lines, "bob_reads").contains("left_behind"),
        "Bob must get a new process, without Alice's table: {lines:?}"
    );
    assert_eq!(gw.worker_pids().len(), 2, "{}", gw.log());
    assert!(gw.log().contains("worker replaced by a new process"));
}

/// A principal whose sessions end their workers in a loop (here `quack_stop`, standing in for
/// a crash) would otherwise keep every slot restarting, each new session landing on the next
/// free one; after three ends within a minute its new sessions are refused for a while, and
/// another principal's are not.
#[test]
fn a_principal_that_ends_its_workers_in_a_loop_is_refused_new_sessions() {
    let bob = format!("bob-{}", random_hex());
    let gw = gateway(2, "principal", &bob);
    let script = format!(
        r#"{prelude}
alice = connect("{alice}")
print("alice_before", one(alice, "SELECT 1"))
def connect_retrying(token):
    deadline = time.monotonic() + 60
    while True:
        try:
            return connect(token), None
        except Exception as e:
            text = str(e).splitlines()[0]
            if "refused for" in text or time.monotonic() > deadline:
                return None, text
            time.sleep(0.2)
ended = 0
for _ in range(3):
    bob, text = connect_retrying("{bob}")
    if bob is None:
        print("bob_refused_early", text)
        break
    uri = one(bob, "FROM listener_here()")
    try:
        bob.execute(f"FROM r.query('FROM stop_here(''{{uri}}'')')").fetchall()
    except Exception:
        pass
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            one(bob, "SELECT 1")
            time.sleep(0.1)
        except Exception:
            ended += 1
            break
print("bob_ended", ended)
# The supervisor records the third end as it restarts the slot: retry until it says so.
deadline = time.monotonic() + 30
text = "none"
while time.monotonic() < deadline:
    bob, text = connect_retrying("{bob}")
    if bob is None and "refused for" in text:
        break
    time.sleep(0.2)
print("bob_after", text)
print("alice_after", one(alice, "SELECT 42"))
print("alice_new", one(connect("{alice}"), "SELECT 7"))
"#,
        prelude = prelude(&gw),
        alice = gw.token,
    );
    let lines = gw.python_lines(&script, &[]);
    assert_eq!(value(&lines, "alice_before"), "1", "{lines:?}");
    assert_eq!(value(&lines, "bob_ended"), "3", "{lines:?}");
    assert!(
        value(&lines, "bob_after").contains(
            "this principal's connections ended 3 DuckDB workers within 60 s (a crash, or quack_stop); its new connections are refused for"
        ),
        "{lines:?}"
    );
    assert_eq!(value(&lines, "alice_after"), "42", "{lines:?}");
    assert_eq!(value(&lines, "alice_new"), "7", "{lines:?}");
    assert!(
        gw.log()
            .contains("a principal's sessions ended workers in a loop"),
        "{}",
        gw.log()
    );
}
