//! Rotating what a deployment keeps in mounted secret files (Key Vault on Azure Container
//! Apps): the TLS pair, the static tokens file and the id secret, each while a real client
//! holds a session open, with no restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::topology::{wait_for, write_file, Driven};
use crate::support::{random_hex, wait_until, Gateway, GatewayOptions};

/// A held Python session: `probe` answers `ok <worker>,<variable>` or `error <message>`.
const HELD_PY: &str = r#"
import duckdb, os, sys
port, token, ca, ext = (os.environ[k] for k in ("QG_PORT", "QG_TOKEN", "QG_CA", "QG_EXT"))
con = duckdb.connect(config={"extension_directory": ext, "autoinstall_known_extensions": "false"})
con.execute("LOAD quack")
con.execute("SET enable_progress_bar=false")
con.execute(f"SET ca_cert_file='{ca}'")
con.execute(f"CREATE SECRET (TYPE quack, TOKEN '{token}', SCOPE 'quack:localhost:{port}')")
con.execute(f"ATTACH 'quack:localhost:{port}' AS r (DISABLE_SSL false)")

def probe():
    row = con.execute("FROM r.query('SELECT quackgate.worker_id(), getvariable(''v'')')").fetchall()[0]
    return ",".join(str(c) for c in row)

def answer(f):
    try:
        print("ok", f(), flush=True)
    except Exception as e:
        print("error", str(e).replace("\n", " "), flush=True)

answer(lambda: (con.execute("FROM r.query('SET VARIABLE v = 42')").fetchall(), probe())[1])
for line in sys.stdin:
    answer(probe)
"#;

struct Held {
    d: Driven,
    worker: String,
}

impl Held {
    fn open(gw: &Gateway, name: &str, token: &str, ca: &Path) -> Held {
        let script = write_file(gw.dir.path(), "held.py", HELD_PY);
        let mut d = Driven::spawn(
            name,
            &gw.toolchain.python(),
            &[script.display().to_string()],
            &[
                ("QG_PORT", gw.https.port().to_string()),
                ("QG_TOKEN", token.to_string()),
                ("QG_CA", ca.display().to_string()),
                ("QG_EXT", gw.toolchain.ext_dir().display().to_string()),
            ],
        );
        let first = d.line(Duration::from_secs(120));
        let worker = first
            .strip_prefix("ok ")
            .and_then(|rest| rest.strip_suffix(",42"))
            .unwrap_or_else(|| panic!("{name}: set-up failed: {first}\n{}", d.proc.log()))
            .to_string();
        Held { d, worker }
    }

    /// Asserts the session still answers, on its worker, with its variable.
    fn still_works(&mut self, when: &str) {
        let answer = self.d.ask("probe");
        assert_eq!(
            answer,
            format!("ok {},42", self.worker),
            "{}: {when}",
            self.d.proc.name
        );
    }
}

fn tokens_file(entries: &[(&str, &str)]) -> String {
    entries
        .iter()
        .map(|(name, token)| {
            format!(
                "[[static_tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\n",
                quackgate::auth::hash_token(token)
            )
        })
        .collect()
}

/// Replaces `path` as Key Vault's mount does it: a whole new file moved over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn secret_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    hex::encode(bytes)
}

/// A CA that signs server certificates for `localhost`.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rotation test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// A new certificate and key, PEM.
    fn leaf(&self) -> (String, String) {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The leaf certificate the gateway serves now, PEM, as Python's ssl module reads it.
fn served_cert(gw: &Gateway) -> String {
    let script = format!(
        "import ssl; print(ssl.get_server_certificate(('127.0.0.1', {})))",
        gw.https.port()
    );
    gw.python_lines(&script, &[]).join("\n")
}

fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
}

#[test]
fn tls_pair_static_tokens_and_id_secret_rotate_under_open_sessions() {
    let secrets = tempfile::tempdir().unwrap();
    let s = secrets.path();
    let (alice, bob) = (
        format!("alice-{}", random_hex()),
        format!("bob-{}", random_hex()),
    );
    let tokens = write_file(s, "static-tokens", &tokens_file(&[("alice", &alice)]));
    let (old_secret, new_secret) = (secret_hex(), secret_hex());
    let id_secret = write_file(s, "id-secret", &old_secret);
    let id_previous = write_file(s, "id-secret-previous", &old_secret);
    let gw = Gateway::start_with(GatewayOptions {
        // Alice's and Bob's sessions are open at once: one isolated worker each.
        workers: 2,
        extra_workers_toml: "max_per_principal = 1\n".into(),
        rust_log: Some("info"),
        extra_gateway_toml: format!(
            "id_secret_file = \"{}\"\nprevious_id_secret_files = [\"{}\"]",
            id_secret.display(),
            id_previous.display()
        ),
        extra_toml: format!("[auth]\nstatic_tokens_file = \"{}\"\n", tokens.display()),
        ..GatewayOptions::default()
    });
    // The deployment's CA, and the certificate in force before the rotation.
    let ca = Ca::new();
    let cas = write_file(s, "ca.pem", &ca.cert.pem());
    let config = std::fs::read_to_string(gw.dir.path().join("quackgate.toml")).unwrap();
    let cert = PathBuf::from(
        config
            .lines()
            .find_map(|l| l.strip_prefix("cert = \""))
            .unwrap()
            .trim_end_matches('"'),
    );
    let key = cert.with_file_name("key.pem");
    let serve = |(c, k): &(String, String)| {
        replace(&key, k);
        replace(&cert, c);
        let want = pem_body(c);
        wait_until(
            "the new certificate served",
            Duration::from_secs(20),
            || pem_body(&served_cert(&gw)) == want,
        );
    };
    serve(&ca.leaf());
    let mut a = Held::open(&gw, "alice's session", &alice, &cas);
    a.still_works("before any rotation");

    // 1. The TLS pair: the files change, new handshakes get the new certificate, the session
    //    (one TLS connection per request) carries on.
    serve(&ca.leaf());
    a.still_works("after the TLS pair changed");

    // 2. Static tokens: bob is added, then alice is taken out. Bob connects without a restart;
    //    alice's open session ends with the revocation error.
    let token_reloads = |gw: &Gateway| gw.log().matches("static tokens reloaded").count();
    let loaded = token_reloads(&gw);
    replace(&tokens, &tokens_file(&[("alice", &alice), ("bob", &bob)]));
    wait_until("bob's token loaded", Duration::from_secs(20), || {
        token_reloads(&gw) > loaded
    });
    let mut b = Held::open(&gw, "bob's session", &bob, &cas);
    a.still_works("after bob was added");
    replace(&tokens, &tokens_file(&[("bob", &bob)]));
    let refusal = wait_for("alice's session refused", Duration::from_secs(20), || {
        let answer = a.d.ask("probe");
        answer.starts_with("error").then_some(answer)
    });
    assert!(refusal.contains("revoked"), "alice's answer: {refusal}");
    b.still_works("after alice was revoked");

    // 3. The id secret, in the three steps of a rotation; bob's session (signed by the old
    //    secret) lives through the first two, a session opened after the switch through all.
    let reloads = |gw: &Gateway| gw.log().matches("id secrets reloaded").count();
    replace(&id_previous, &new_secret);
    wait_until("step 1 applied", Duration::from_secs(20), || {
        reloads(&gw) == 1
    });
    b.still_works("the new secret only verifies");
    replace(&id_secret, &new_secret);
    replace(&id_previous, &old_secret);
    wait_until("step 2 applied", Duration::from_secs(20), || {
        reloads(&gw) == 2
    });
    b.still_works("the new secret signs, the old one still verifies");
    let mut c = Held::open(&gw, "a session under the new secret", &bob, &cas);
    replace(&id_previous, &new_secret);
    wait_until("step 3 applied", Duration::from_secs(20), || {
        reloads(&gw) == 3
    });
    c.still_works("the old secret is gone");
    let gone = b.d.ask("probe");
    assert!(
        gone.starts_with("error") && gone.contains("Invalid connection id"),
        "a session signed by a retired secret: {gone}"
    );

    // Nothing of the secrets in the log.
    let log = gw.log();
    for secret in [&alice, &bob, &old_secret, &new_secret] {
        assert!(!log.contains(secret.as_str()), "a secret in the log");
    }
    for h in [a, b, c] {
        h.d.finish();
    }
}

/// A static token taken out of the tokens file, or given another role, ends its sessions,
/// whether they send another request or only wait: a downgraded token's read-write session
/// is refused, a revoked principal's idle session gives its worker to another principal within
/// a reload, and neither comes back with its token (a thirty-third review wrote through a
/// downgraded token's session, kept the other principals off a revoked one's workers, and
/// revived a session by restoring its token).
#[test]
fn a_revoked_or_changed_token_ends_its_sessions() {
    use crate::support::{msg_type, open_session_as, prepare_with_id, quack_post};

    let shared = tempfile::tempdir().unwrap();
    let s = shared.path();
    let (alice, bob, carol) = ("alice-token-1", "bob-token-22", "carol-token-333");
    let tokens = write_file(
        s,
        "static-tokens",
        &tokens_file(&[("alice", alice), ("bob", bob)]),
    );
    let gw = Gateway::start_with(GatewayOptions {
        // One isolated worker each for alice and bob: none left for a third principal.
        workers: 2,
        extra_workers_toml: "max_per_principal = 1\n".into(),
        rust_log: Some("info"),
        extra_toml: format!("[auth]\nstatic_tokens_file = \"{}\"\n", tokens.display()),
        ..GatewayOptions::default()
    });
    let asks = |id: &[u8]| msg_type(&quack_post(gw.plain, prepare_with_id(id)).1);
    let a = open_session_as(&gw, alice);
    let b = open_session_as(&gw, bob);
    assert_eq!((asks(&a), asks(&b)), (4, 4));
    // Alice's token is now read-only; bob's is gone; carol's is new. Bob sends nothing.
    let reloads = |gw: &Gateway| gw.log().matches("static tokens reloaded").count();
    let loaded = reloads(&gw);
    let read_only = format!(
        "{}role = \"read_only\"\n{}",
        tokens_file(&[("alice", alice)]),
        tokens_file(&[("carol", carol)])
    );
    replace(&tokens, &read_only);
    wait_until("the tokens reloaded", Duration::from_secs(20), || {
        reloads(&gw) > loaded
    });
    let (_, refused) = quack_post(gw.plain, prepare_with_id(&a));
    assert_eq!(msg_type(&refused), 100, "{refused:?}");
    // Carol gets a worker once bob's session has been ended for him.
    wait_until("carol's session", Duration::from_secs(60), || {
        let (_, answer) = quack_post(gw.plain, crate::support::connection_request(carol));
        msg_type(&answer) == 2
    });
    // Both tokens back as they were: their old sessions stay ended.
    let loaded = reloads(&gw);
    replace(&tokens, &tokens_file(&[("alice", alice), ("bob", bob)]));
    wait_until("the tokens reloaded again", Duration::from_secs(20), || {
        reloads(&gw) > loaded
    });
    assert_eq!((asks(&a), asks(&b)), (100, 100));
    assert!(gw
        .log()
        .contains("ending the sessions of revoked static tokens"));
}

/// A node `n1` of one worker behind a TLS ingress (nginx), and an edge `edge-a` in front, on
/// loopback, once the edge sees n1 ready. `node_toml` and `edge_toml` are whole sections
/// added to each.
struct EdgeAndNode {
    edge: crate::support::RoleProcess,
    node: crate::support::RoleProcess,
    _ingress: crate::cluster::Nginx,
}

fn edge_and_node(d: &Path, node_toml: &str, edge_toml: &str) -> EdgeAndNode {
    use crate::support::RoleProcess;

    let toolchain = crate::support::Toolchain::get();
    std::fs::write(d.join("id-secret"), secret_hex()).unwrap();
    std::fs::write(
        d.join("node.toml"),
        format!(
            "[gateway]\nnode_id = \"n1\"\nadmin_listen = \"127.0.0.1:0\"\nid_secret_file = \"id-secret\"\n[workers]\ncount = 1\nextension_dir = \"{}\"\nthreads = 2\nhealth_interval_ms = 200\n[cluster]\npeer_listen = \"127.0.0.1:0\"\n{node_toml}",
            toolchain.ext_dir().display()
        ),
    )
    .unwrap();
    let node = RoleProcess::start("node", &d.join("node.toml"), None);
    let tls = quackgate::dev_init::write_tls(d, &[]).unwrap();
    let ingress =
        crate::cluster::Nginx::start_with_timeout(&[node.addr("peer")], &tls.cert, &tls.key, 60);
    std::fs::write(
        d.join("edge.toml"),
        format!(
            "[gateway]\nnode_id = \"edge-a\"\nplain_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nid_secret_file = \"id-secret\"\n[cluster]\npeers = {{ n1 = \"localhost:{}\" }}\npeer_tls = true\npeer_ca_file = \"{}\"\n{edge_toml}",
            ingress.port,
            tls.ca_cert.display()
        ),
    )
    .unwrap();
    let edge = RoleProcess::start("edge", &d.join("edge.toml"), None);
    wait_until("the edge to see n1 ready", Duration::from_secs(20), || {
        edge.admin_get("/readyz").0 == 200
    });
    EdgeAndNode {
        edge,
        node,
        _ingress: ingress,
    }
}

/// Opens a session through `plain` with `token`; its id.
fn open_through(plain: std::net::SocketAddr, token: &str) -> Option<Vec<u8>> {
    let (_, opened) = crate::support::quack_post(plain, crate::support::connection_request(token));
    let header = quack_codec::decode_header(&opened).ok()?;
    Some(header.connection_id(&opened)?.to_vec())
}

/// Behind an edge, a session whose static token the edge no longer accepts is ended at its
/// node, not only refused: the node forgets it and frees its worker, and the token coming
/// back does not revive it (a thirty-fourth review revived one so).
#[test]
fn behind_an_edge_a_revoked_tokens_session_ends_at_its_node() {
    use crate::support::{connection_request, msg_type, prepare_with_id, quack_post};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (alice, bob) = ("alice-token-1", "bob-token-22");
    let tokens = write_file(
        d,
        "tokens.toml",
        &tokens_file(&[("alice", alice), ("bob", bob)]),
    );
    let EdgeAndNode { edge, node, .. } = &edge_and_node(
        d,
        "",
        &format!("[auth]\nstatic_tokens_file = \"{}\"\n", tokens.display()),
    );
    let plain = edge.addr("plain");
    let a = open_through(plain, alice).expect("alice's session");
    let asks = |id: &[u8]| msg_type(&quack_post(plain, prepare_with_id(id)).1);
    assert_eq!(asks(&a), 4);
    let node_sessions = || {
        let (_, status) = node.admin_get("/status");
        status
            .lines()
            .next()
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix("sessions="))
            })
            .and_then(|n| n.parse::<usize>().ok())
    };
    assert_eq!(node_sessions(), Some(1));
    // Alice's token is taken out: her next request is refused and her session ends at n1.
    replace(&tokens, &tokens_file(&[("bob", bob)]));
    wait_until("alice's request refused", Duration::from_secs(20), || {
        asks(&a) == 100
    });
    wait_until(
        "n1 forgets alice's session",
        Duration::from_secs(10),
        || node_sessions() == Some(0),
    );
    // Her token back: the session stays ended.
    replace(&tokens, &tokens_file(&[("alice", alice), ("bob", bob)]));
    wait_until("alice's token back", Duration::from_secs(20), || {
        msg_type(&quack_post(plain, connection_request(alice)).1) == 2
    });
    let (_, old) = quack_post(plain, prepare_with_id(&a));
    assert_eq!(msg_type(&old), 100, "{old:?}");
    assert!(
        String::from_utf8_lossy(&old).contains("Invalid connection id"),
        "{old:?}"
    );
}

/// Behind an edge, a statement whose client hung up still counts among its principal's
/// requests in flight at its node until it ends or meets its deadline: the edge's count ends
/// with the client's request, so a thirty-fifth review ran six statements at once against a
/// limit of two by hanging up on each.
#[test]
fn behind_an_edge_a_hung_up_statement_still_counts_in_flight_at_its_node() {
    use std::io::Write;

    use crate::support::{msg_type, prepare_with_id, quack_post};

    let dir = tempfile::tempdir().unwrap();
    let token = "the-only-token";
    let EdgeAndNode { edge, node, .. } = &edge_and_node(
        dir.path(),
        "[limits]\nmax_requests_per_principal = 1\nstatement_timeout_secs = 6\n",
        &format!(
            "[[auth.static_tokens]]\nname = \"tester\"\nsha256 = \"{}\"\n",
            quackgate::auth::hash_token(token)
        ),
    );
    let plain = edge.addr("plain");
    let open = || open_through(plain, token).expect("a session");
    let (a, b) = (open(), open());
    let at_node = "quackgate_requests_total{msg_type=\"prepare\",origin=\"peer\"}";
    let before = node.metric(at_node).unwrap_or(0);
    let long =
        quack_codec::prepare_request(&a, 5, "SELECT sum(hash(i)) FROM range(1000000000000) t(i)");
    let mut s = std::net::TcpStream::connect(plain).unwrap();
    write!(
        s,
        "POST /quack HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        long.len()
    )
    .unwrap();
    s.write_all(&long).unwrap();
    // The client hangs up once its statement has reached the node.
    wait_until("the statement at n1", Duration::from_secs(20), || {
        node.metric(at_node).unwrap_or(0) > before
    });
    drop(s);
    let (_, refused) = quack_post(plain, prepare_with_id(&b));
    assert!(
        String::from_utf8_lossy(&refused).contains("limits.max_requests_per_principal"),
        "{refused:?}"
    );
    // At the deadline the statement is stopped and its place given back.
    wait_until(
        "a statement of the principal answered",
        Duration::from_secs(40),
        || {
            open_through(plain, token)
                .is_some_and(|id| msg_type(&quack_post(plain, prepare_with_id(&id)).1) == 4)
        },
    );
}
