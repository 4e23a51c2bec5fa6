//! Bad input gets the exact answer a DuckDB server would give, or a clear HTTP status when it
//! is not a Quack message at all, and nothing of it reaches a worker.

use crate::support::{
    connection_request, fixture, http, msg_type, open_session, prepare_with_id, quack_post, Gateway,
};

#[test]
fn a_wrong_token_gets_authentication_failed_from_the_cli_and_raw() {
    let gw = Gateway::start();
    let out = gw.cli_with_token("not-the-token", "FROM r.query('SELECT 1');");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Authentication failed"), "{stderr}");

    let mut near_miss = gw.token.clone().into_bytes();
    let last = near_miss.len() - 1;
    near_miss[last] ^= 1;
    let (status, body) = quack_post(
        gw.plain,
        connection_request(std::str::from_utf8(&near_miss).unwrap()),
    );
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), fixture("error_authentication_failed.bin"));
}

#[test]
fn issued_ids_are_signed_and_tampered_or_made_up_ids_are_invalid() {
    let gw = Gateway::start();
    let id = open_session(&gw);
    assert!(
        id.starts_with(b"q2.n0.0.rw.0."),
        "{}",
        String::from_utf8_lossy(&id)
    );

    let (status, body) = quack_post(gw.plain, prepare_with_id(&id));
    assert_eq!((status, msg_type(&body)), (200, 4), "the real id must work");

    let invalid = fixture("error_invalid_connection_id.bin");
    // Flip one character in each part of the id: version, node, worker, access, expiry,
    // principal, MAC, worker's id.
    for at in [1, 4, 6, 9, 11, 15, 30, id.len() - 1] {
        let mut tampered = id.clone();
        tampered[at] = if tampered[at] == b'1' { b'0' } else { b'1' };
        let (status, body) = quack_post(gw.plain, prepare_with_id(&tampered));
        assert_eq!((status, body.as_ref()), (200, &invalid[..]), "flip at {at}");
    }
    let made_up = b"A424FCD8ACB5D3BB949C46D82A8E0530";
    let (status, body) = quack_post(gw.plain, prepare_with_id(made_up));
    assert_eq!((status, body.as_ref()), (200, &invalid[..]));
    // The worker's own id, stripped of the signature, is refused too.
    let inner = id.rsplit(|b| *b == b'.').next().unwrap();
    let (status, body) = quack_post(gw.plain, prepare_with_id(inner));
    assert_eq!((status, body.as_ref()), (200, &invalid[..]));

    // The gateway keeps serving, and the session still works.
    let (status, body) = quack_post(gw.plain, prepare_with_id(&id));
    assert_eq!((status, msg_type(&body)), (200, 4));
}

#[test]
fn malformed_messages_are_refused_before_any_worker_sees_them() {
    let gw = Gateway::start();
    let id = open_session(&gw);
    let good = prepare_with_id(&id);
    // Truncated inside the SQL string: the 1.5.5 server would read past the end.
    let (status, _) = quack_post(gw.plain, good[..good.len() - 4].to_vec());
    assert_eq!(status, 400);
    let (status, _) = quack_post(gw.plain, b"GARBAGE".to_vec());
    assert_eq!(status, 400);
    let (status, _) = quack_post(gw.plain, Vec::new());
    assert_eq!(status, 400);
    let mut cr = connection_request(&gw.token);
    cr.truncate(cr.len() - 3);
    let (status, _) = quack_post(gw.plain, cr);
    assert_eq!(status, 400);
    // And the session is unharmed.
    let (status, body) = quack_post(gw.plain, good);
    assert_eq!((status, msg_type(&body)), (200, 4));
}

#[test]
fn banner_cors_and_unknown_paths_answer_like_the_duckdb_server() {
    let gw = Gateway::start();
    let (status, _, body) = http("GET", gw.plain, "/", Default::default());
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).starts_with("This is a DuckDB Quack RPC endpoint"));
    let (status, headers, _) = http("OPTIONS", gw.plain, "/quack", Default::default());
    assert_eq!(status, 204);
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(
        headers["access-control-allow-methods"],
        "GET, POST, OPTIONS"
    );
    for (method, path) in [
        ("GET", "/quack"),
        ("POST", "/"),
        ("POST", "/foo"),
        ("PUT", "/quack"),
    ] {
        let (status, _, _) = http(method, gw.plain, path, Default::default());
        assert_eq!(status, 404, "{method} {path}");
    }
}

#[test]
fn client_sql_cannot_read_the_gateways_files_or_retune_the_worker() {
    let gw = Gateway::start();
    let key = gw.dir.path().join("key.pem");
    for sql in [
        format!(
            "FROM r.query('SELECT * FROM read_text(''{}'')');",
            key.display()
        ),
        format!(
            "FROM r.query('COPY (SELECT 1) TO ''{}/out.csv''');",
            gw.dir.path().display()
        ),
        "FROM r.query('SET threads = 1');".to_string(),
    ] {
        let out = gw.cli(&sql);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sql} succeeded");
        assert!(
            stderr.contains("disabled by configuration")
                || stderr.contains("configuration has been locked"),
            "{sql}: {stderr}"
        );
    }
    assert!(!gw.dir.path().join("out.csv").exists());
}
