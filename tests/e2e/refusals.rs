//! Bad input gets the exact answer a DuckDB server would give, or a clear HTTP status when it
//! is not a Quack message at all, and nothing of it reaches a worker.

use std::time::Duration;

use crate::support::{
    append_of_one_column, connection_request, fixture, http, msg_type, open_session,
    open_session_as, post_in_two_parts, prepare_with_id, quack_post, wait_until, Gateway,
    GatewayOptions,
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

/// An APPEND streams to its worker, but one that ends early or runs on past its end is cut
/// off before the worker has it whole (the 1.5.5 server would read past the end of a short
/// one): the client gets 400, the table holds only the rows of whole APPENDs, and the session
/// goes on.
#[test]
fn an_append_cut_short_or_padded_never_reaches_the_worker() {
    use quack_codec::{append_request, AppendColumn};
    // One worker: the raw session and the CLI's share its in-memory database.
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        ..Default::default()
    });
    gw.cli_ok("FROM r.query('CREATE TABLE t (a BIGINT, s VARCHAR)');");
    let id = open_session(&gw);
    let append = |query_id, rows: i64| {
        append_request(
            &id,
            query_id,
            "main",
            "t",
            &[
                AppendColumn::BigInt((0..rows).collect()),
                AppendColumn::Varchar((0..rows).map(|i| format!("row {i}")).collect()),
            ],
        )
        .to_vec()
    };
    let whole = append(1, 2048);
    for cut in [30, whole.len() / 2, whole.len() - 3, whole.len() - 1] {
        let (status, body) = quack_post(gw.plain, whole[..cut].to_vec());
        assert_eq!(status, 400, "cut at {cut}: {body:?}");
    }
    let mut padded = whole.clone();
    padded.extend_from_slice(&[0xff, 0xff]);
    let (status, _) = quack_post(gw.plain, padded);
    assert_eq!(status, 400, "padded");
    // Whole, but listing more strings than its rows: DuckDB would write them past the vector
    // it sized for the rows (a nineteenth review crashed a worker so).
    let three = append(3, 3);
    let rows_at = three
        .windows(5)
        .position(|w| w == [0x2c, 0x01, 0x64, 0x00, 0x03])
        .expect("the chunk's row count")
        + 4;
    let mut overflowing = three.clone();
    overflowing[rows_at] = 1;
    let (status, _) = quack_post(gw.plain, overflowing);
    assert_eq!(status, 400, "strings past the rows");
    let (status, body) = quack_post(gw.plain, whole);
    assert_eq!((status, msg_type(&body)), (200, 10), "{body:?}");
    let (status, body) = quack_post(gw.plain, append(2, 3));
    assert_eq!((status, msg_type(&body)), (200, 10), "{body:?}");
    assert_eq!(
        gw.cli_ok("FROM r.query('SELECT count(*), sum(a) FROM t');"),
        vec!["2051,2096131"]
    );
}

/// DuckDB 1.5.5 reads a compressed vector inside another with no limit, and generates a
/// sequence it cannot hold with an internal error that ends its database: a twenty-third
/// review crashed workers with both. The gateway refuses them; their plain twins land.
#[test]
fn compressed_vectors_duckdb_would_recurse_on_or_fail_inside_never_reach_the_worker() {
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        ..Default::default()
    });
    gw.cli_ok(
        "FROM r.query('CREATE TABLE d (v VARCHAR)');\nFROM r.query('CREATE TABLE q (n TINYINT)');\nFROM r.query('CREATE TABLE a (v INTEGER[8000])');\nFROM r.query('CREATE TABLE l (v INTEGER[])');\nFROM r.query('CREATE TABLE m (v MAP(INTEGER, INTEGER))');",
    );
    let workers = gw.worker_pids();
    let id = open_session(&gw);
    let append = |query_id, table: &str, rows: u8, logical_type: &[u8], vector: &[u8]| {
        append_of_one_column(&id, query_id, table, rows, logical_type, vector)
    };
    // A dictionary of one row over one value, `levels` deep, over the flat value 'x'.
    let dictionaries = |levels| {
        let mut v = [0x5a, 0, 3, 0x5b, 0, 4, 0, 0, 0, 0, 0x5c, 0, 1].repeat(levels);
        v.extend_from_slice(&[0x64, 0, 0, 0x66, 0, 1, 1, b'x', 0xff, 0xff]);
        v
    };
    // A TINYINT sequence from `start` (signed LEB128) by 1.
    let sequence = |start: &[u8]| {
        let mut v = vec![0x5a, 0, 4, 0x5b, 0];
        v.extend_from_slice(start);
        v.extend_from_slice(&[0x5c, 0, 1, 0xff, 0xff]);
        v
    };
    // INTEGER[8000], and one NULL row of it whose child is `child` (its fields and end): a
    // compressed child of a NULL row had DuckDB clear bits past the child's validity mask
    // (a twenty-fourth review's heap corruption).
    let array_type = [
        0x64, 0, 0x6c, 0x65, 0, 1, 0x64, 0, 9, 0xc8, 0, 0x64, 0, 0x0d, 0xff, 0xff, 0xc9, 0, 0xc0,
        0x3e, 0xff, 0xff, 0xff, 0xff,
    ];
    let null_array_row = |child: &[u8]| {
        let mut v = vec![
            0x64, 0, 1, 0x65, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0x67, 0, 0xc0, 0x3e, 0x68, 0,
        ];
        v.extend_from_slice(child);
        v.extend_from_slice(&[0xff, 0xff]);
        v
    };
    let mut flat_child = vec![0x64, 0, 0, 0x66, 0, 0x80, 0xfa, 0x01];
    flat_child.extend_from_slice(&[0; 32_000]);
    flat_child.extend_from_slice(&[0xff, 0xff]);
    let constant_child = [
        0x5a, 0, 2, 0x64, 0, 0, 0x66, 0, 4, 0x2a, 0, 0, 0, 0xff, 0xff,
    ];
    // INTEGER[], and one row of it holding 5,000 values whose child is `child`: a NULL
    // constant standing for more than 2,048 rows had DuckDB write past its validity mask
    // (a twenty-fifth review's).
    let list_type = [
        0x64, 0, 0x65, 0x65, 0, 1, 0x64, 0, 4, 0xc8, 0, 0x64, 0, 0x0d, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff,
    ];
    let list_of_5000 = |child: &[u8]| {
        let mut v = vec![
            0x64, 0, 0, 0x68, 0, 0x88, 0x27, 0x69, 0, 1, 0x64, 0, 0, 0x65, 0, 0x88, 0x27, 0xff,
            0xff, 0x6a, 0,
        ];
        v.extend_from_slice(child);
        v.extend_from_slice(&[0xff, 0xff]);
        v
    };
    let null_constant = [
        0x5a, 0, 2, 0x64, 0, 1, 0x65, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0x66, 0, 4, 0, 0, 0, 0, 0xff,
        0xff,
    ];
    // MAP(INTEGER, INTEGER), and one row of it of one entry 7 => 7, the key's validity mask
    // byte `key_mask`: a NULL key, which SQL cannot make, had `map_concat` end a worker's
    // database (a twenty-sixth review's).
    let mut map_type = vec![0x64, 0, 0x66, 0x65, 0, 1, 0x64, 0, 4, 0xc8, 0];
    map_type.extend_from_slice(&[0x64, 0, 0x64, 0x65, 0, 1, 0x64, 0, 5, 0xc8, 0, 2]);
    for name in [&b"key"[..], b"value"] {
        map_type.extend_from_slice(&[0, 0, name.len() as u8]);
        map_type.extend_from_slice(name);
        map_type.extend_from_slice(&[1, 0, 0x64, 0, 0x0d, 0xff, 0xff, 0xff, 0xff]);
    }
    map_type.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let map_row = |key_mask: u8| {
        let mut v = vec![
            0x64, 0, 0, 0x68, 0, 1, 0x69, 0, 1, 0x64, 0, 0, 0x65, 0, 1, 0xff, 0xff, 0x6a, 0, 0x64,
            0, 0, 0x67, 0, 2, 0x64, 0, 1, 0x65, 0, 8, key_mask, 0, 0, 0, 0, 0, 0, 0,
        ];
        v.extend_from_slice(&[0x66, 0, 4, 7, 0, 0, 0, 0xff, 0xff]);
        v.extend_from_slice(&[0x64, 0, 0, 0x66, 0, 4, 7, 0, 0, 0, 0xff, 0xff]);
        v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        v
    };
    let varchar = [0x64, 0, 25, 0xff, 0xff];
    let tinyint = [0x64, 0, 11, 0xff, 0xff];
    let (status, _) = quack_post(
        gw.plain,
        append(1, "d", 1, &varchar, &dictionaries(100_000)),
    );
    assert_eq!(status, 400, "dictionaries of dictionaries");
    let (status, _) = quack_post(
        gw.plain,
        append(2, "q", 3, &tinyint, &sequence(&[0xe8, 0x07])),
    );
    assert_eq!(status, 400, "a TINYINT sequence from 1000");
    let (status, _) = quack_post(
        gw.plain,
        append(3, "a", 1, &array_type, &null_array_row(&constant_child)),
    );
    assert_eq!(status, 400, "a constant child of an ARRAY");
    let (status, _) = quack_post(
        gw.plain,
        append(7, "l", 1, &list_type, &list_of_5000(&null_constant)),
    );
    assert_eq!(status, 400, "a NULL constant of 5,000 values");
    let (status, _) = quack_post(gw.plain, append(9, "m", 1, &map_type, &map_row(0)));
    assert_eq!(status, 400, "a MAP with a NULL key");
    let (status, body) = quack_post(gw.plain, append(10, "m", 1, &map_type, &map_row(1)));
    assert_eq!((status, msg_type(&body)), (200, 10), "{body:?}");
    let (status, body) = quack_post(
        gw.plain,
        append(8, "l", 1, &list_type, &list_of_5000(&constant_child)),
    );
    assert_eq!((status, msg_type(&body)), (200, 10), "{body:?}");
    let (status, body) = quack_post(gw.plain, append(4, "d", 1, &varchar, &dictionaries(1)));
    assert_eq!((status, msg_type(&body)), (200, 10), "{body:?}");
    let (status, body) = quack_post(gw.plain, append(5, "q", 3, &tinyint, &sequence(&[1])));
    assert_eq!((status, msg_type(&body)), (200, 10), "{body:?}");
    let (status, body) = quack_post(
        gw.plain,
        append(6, "a", 1, &array_type, &null_array_row(&flat_child)),
    );
    assert_eq!((status, msg_type(&body)), (200, 10), "{body:?}");
    assert_eq!(
        gw.cli_ok("FROM r.query('SELECT (SELECT string_agg(v) FROM d), (SELECT sum(n) FROM q), (SELECT count(*) FILTER (v IS NULL) FROM a), (SELECT sum(list_sum(v)) FROM l), (SELECT map_concat(v, MAP {5: 5})::VARCHAR FROM m)');"),
        vec!["x,6,1,210000,\"{7=7, 5=5}\""]
    );
    assert_eq!(gw.worker_pids(), workers, "no worker restarted");
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
                || stderr.contains("configuration has been locked")
                || stderr.contains("write files on the worker"),
            "{sql}: {stderr}"
        );
    }
    assert!(!gw.dir.path().join("out.csv").exists());
}

/// The gateway's resident memory, from /proc.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A field of /proc/<pid>/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn one_principal_flooding_large_statements_cannot_grow_memory_or_stop_others() {
    use std::io::Write;
    // A read-only principal floods (reading is all it may do, and it can send as much as
    // any); a read-write one keeps working. Its worker reads the lake.
    let stack = crate::security::lake_stack(1, "", |shared| {
        (
            crate::ducklake::data_dir(shared).display().to_string(),
            "[limits]\nmax_requests_per_principal = 16\n".into(),
        )
    });
    let gw = &stack.gateway;
    let other_token = gw.token.clone();
    let id = open_session_as(gw, &stack.reader);
    // 64 statements at once, each declaring 64 MiB and sending 8 MiB of it, then holding.
    // Before the caps each would be read whole (up to gateway.max_body_bytes, 256 MiB): 512
    // MiB at least. With them, 16 of one principal are read at a time, up to 1 MiB each.
    let prepare = prepare_with_id(&id);
    let header_len = prepare.len() - 8;
    let before = rss_kib(gw.child.id());
    let chunk = vec![0u8; 1 << 20];
    let held: Vec<std::net::TcpStream> = (0..64)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(gw.plain).unwrap();
            s.set_write_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            write!(
                s,
                "POST /quack HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
                64 << 20
            )
            .unwrap();
            s.write_all(&prepare[..header_len]).unwrap();
            for _ in 0..8 {
                // A refused request's socket stops taking bytes; that is the point.
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
            s
        })
        .collect();
    let peak = rss_kib(gw.child.id());
    // Another principal connects and queries meanwhile.
    let other = open_session_as(gw, &other_token);
    let (_, answer) = quack_post(gw.plain, prepare_with_id(&other));
    assert_eq!(msg_type(&answer), 4, "{answer:?}");
    let grown = peak.saturating_sub(before);
    eprintln!("the gateway grew by {grown} KiB during the flood");
    assert!(
        grown < 64 * 1024,
        "the gateway grew by {grown} KiB while one principal flooded it"
    );
    drop(held);
    // And the flooding principal's own session still serves once its requests are gone.
    let answered = msg_type(&fixture("prepare_response_select42.bin"));
    wait_until(
        "the principal's places back",
        Duration::from_secs(70),
        || {
            let (_, answer) = quack_post(gw.plain, prepare_with_id(&id));
            msg_type(&answer) == answered
        },
    );
}

/// A GEOMETRY value goes to a worker only as one whole geometry in DuckDB's own WKB: DuckDB
/// stores an appended value as it comes and trusts its counts later (a twenty-seventh review's
/// MULTIPOINT of 2^32 - 1 points, in nine bytes, ended a plain server's database at a
/// CHECKPOINT). What the CLI sends of every geometry type lands as it was.
#[test]
fn a_geometry_whose_counts_its_bytes_do_not_back_never_reaches_the_worker() {
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        ..Default::default()
    });
    let sent = "('POINT (1 2)'), ('MULTIPOINT (1 2, 3 4)'), ('POLYGON ((0 0, 1 0, 1 1, 0 0))'), ('GEOMETRYCOLLECTION (POINT (1 2), LINESTRING (0 0, 1 1))'), ('POINT Z (1 2 3)'), ('LINESTRING EMPTY'), (NULL)";
    let out = gw.cli_ok(&format!(
        "CREATE TABLE r.g (i INTEGER, g GEOMETRY);\n\
         CREATE TABLE r.h (g GEOMETRY);\n\
         INSERT INTO r.g SELECT row_number() OVER (), v::GEOMETRY FROM (VALUES {sent}) t(v);\n\
         SELECT string_agg(coalesce(g::VARCHAR, 'NULL'), '; ' ORDER BY i) FROM r.g;\n"
    ));
    assert_eq!(
        out,
        // Quoted: CSV, and the values hold commas.
        ["\"POINT (1 2); MULTIPOINT (1 2, 3 4); POLYGON ((0 0, 1 0, 1 1, 0 0)); GEOMETRYCOLLECTION (POINT (1 2), LINESTRING (0 0, 1 1)); POINT Z (1 2 3); LINESTRING EMPTY; NULL\""],
        "gateway log:\n{}",
        gw.log()
    );
    let workers = gw.worker_pids();
    let id = open_session(&gw);
    let geometry = [0x64, 0, 60, 0xff, 0xff];
    let one_value = |format: u8, value: &[u8]| {
        let mut v = vec![0x63, 0, format, 0x64, 0, 0, 0x66, 0, 1, value.len() as u8];
        v.extend_from_slice(value);
        v.extend_from_slice(&[0xff, 0xff]);
        v
    };
    let mut point = vec![1, 1, 0, 0, 0];
    point.extend_from_slice(&[0; 8]);
    point.extend_from_slice(&2f64.to_le_bytes());
    for (query_id, format, value, why) in [
        (
            1,
            1,
            &[1, 4, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF][..],
            "2^32 - 1 points",
        ),
        (2, 1, &point[..point.len() - 1], "a point cut short"),
        (3, 0, &point[..], "the spatial extension's format"),
    ] {
        let (status, _) = quack_post(
            gw.plain,
            append_of_one_column(&id, query_id, "h", 1, &geometry, &one_value(format, value)),
        );
        assert_eq!(status, 400, "{why}");
    }
    let (status, body) = quack_post(
        gw.plain,
        append_of_one_column(&id, 4, "h", 1, &geometry, &one_value(1, &point)),
    );
    assert_eq!((status, msg_type(&body)), (200, 10), "{body:?}");
    assert_eq!(
        gw.cli_ok("SELECT count(*), any_value(g::VARCHAR) FROM r.h;"),
        ["1,POINT (0 2)"]
    );
    assert_eq!(gw.worker_pids(), workers, "no worker restarted");
}

/// An APPEND reaches its worker only whole. DuckDB 1.5.5's server, left waiting 5 s for the
/// rest of a body, runs what it has and reads the rest from its heap (a twenty-eighth review
/// had a worker's error echo another request's bytes so), so a client that pauses longer than
/// that mid-APPEND must not leave a worker waiting: its rows land once the rest comes.
#[test]
fn a_client_pausing_mid_append_never_leaves_a_worker_waiting() {
    use quack_codec::{append_request, AppendColumn};

    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        ..Default::default()
    });
    gw.cli_ok("CREATE TABLE r.p (i BIGINT, s VARCHAR);");
    let workers = gw.worker_pids();
    let id = open_session(&gw);
    let rows: i64 = 2048;
    let message = append_request(
        &id,
        1,
        "main",
        "p",
        &[
            AppendColumn::BigInt((0..rows).collect()),
            AppendColumn::Varchar((0..rows).map(|i| format!("row {i}")).collect()),
        ],
    );
    // The message in two halves with a pause between: the stimulus, not a wait. The answer:
    // its status line and its body.
    let send_pausing = |pause: Duration| -> (String, Vec<u8>) {
        let answer = post_in_two_parts(gw.plain, &message, message.len() / 2, || {
            std::thread::sleep(pause)
        });
        let text = String::from_utf8_lossy(&answer).into_owned();
        let at = text.find("\r\n\r\n").expect("an HTTP answer") + 4;
        (
            text.lines().next().unwrap_or_default().to_string(),
            answer[at..].to_vec(),
        )
    };
    // Longer than the worker's 5 s read timeout, shorter than the gateway's 10 s between
    // pieces: the rows land.
    let (status, body) = send_pausing(Duration::from_secs(7));
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(
        msg_type(&body),
        10,
        "SUCCESS_RESPONSE: {body:?}\n{}",
        gw.log()
    );
    // Longer than the gateway's 10 s: the client gets 408, and nothing lands.
    let (status, _) = send_pausing(Duration::from_secs(12));
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert_eq!(
        gw.cli_ok("SELECT count(*), sum(i), count(DISTINCT s) FROM r.p;"),
        [format!("{rows},{},{rows}", rows * (rows - 1) / 2)]
    );
    assert_eq!(gw.worker_pids(), workers, "no worker restarted");
}

/// Every message type but the five a DuckDB 1.5.5 server serves streams to its worker (a newer
/// client's type may be one a newer worker knows), so a client may pause in the middle of
/// one. None reaches a deserializer: whole, a 1.5.5 worker refuses the type from its header;
/// cut short by a pause past its 5 s read timeout, its HTTP server refuses the body first.
/// What a paused APPEND's body could do (a twenty-eighth review) needs a type it deserializes.
#[test]
fn a_message_type_the_worker_does_not_serve_is_answered_from_its_header_even_cut_short() {
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        ..Default::default()
    });
    let workers = gw.worker_pids();
    let id = open_session(&gw);
    let addr = gw.plain;
    let types = [2u8, 4, 5, 6, 8, 10, 12, 13, 100, 127];
    let clients: Vec<_> = types
        .into_iter()
        .flat_map(|t| [(t, Duration::ZERO), (t, Duration::from_secs(7))])
        .map(|(t, pause)| {
            let mut message = prepare_with_id(&id);
            assert_eq!(message[..3], [1, 0, 3]);
            message[2] = t;
            message.extend_from_slice(&[0x41; 64 * 1024]);
            std::thread::spawn(move || {
                // Past the worker's 5 s: the stimulus, not a wait.
                let answer = post_in_two_parts(addr, &message, 200, || std::thread::sleep(pause));
                (t, pause, String::from_utf8_lossy(&answer).into_owned())
            })
        })
        .collect();
    for client in clients {
        let (t, pause, answer) = client.join().unwrap();
        // Whole, the worker's dispatcher refuses the type; cut short, its HTTP server refuses
        // the body before that (HTTP 400, which the gateway turns into a Quack error).
        let refused = match pause.is_zero() {
            true => "Unsupported message type for server",
            false => "the DuckDB worker failed this request (HTTP 400)",
        };
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.contains(refused),
            "type {t}, paused {pause:?}: {answer:?}"
        );
    }
    assert_eq!(gw.worker_pids(), workers, "no worker restarted");
    assert_eq!(gw.cli_ok("FROM r.query('SELECT 40 + 2');"), ["42"]);
}

/// An APPEND larger than `limits.append_memory_bytes` is held on disk, in a file without a
/// name, and lands whole; one that would pass the bytes a node may hold on disk is answered
/// with a Quack error naming the cap, and is not run.
#[test]
fn an_append_past_the_bytes_a_node_may_hold_is_refused_by_name() {
    let spill = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_toml: format!(
            "[limits]\nappend_memory_bytes = 65536\nappend_spill_dir = \"{}\"\n\
             max_spilled_append_bytes = 4194304\nmax_spilled_append_bytes_per_principal = 1048576\n",
            spill.path().display()
        ),
        ..Default::default()
    });
    let out = gw.cli(
        "CREATE TABLE r.h (s VARCHAR);\n\
         INSERT INTO r.h SELECT repeat('x', 1000) || range FROM range(2000);\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("limits.max_spilled_append_bytes_per_principal (1 MiB)"),
        "{stderr}"
    );
    // About 600 KB: past what is held in memory, within the disk's cap.
    assert_eq!(
        gw.cli_ok("INSERT INTO r.h SELECT repeat('x', 300) || range FROM range(2000);\nSELECT count(*), min(length(s)) FROM r.h;"),
        ["2000,301"]
    );
    assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0);
}

/// The gateway's anonymous memory: what it cannot give back to the kernel under pressure, as
/// it can a mapped file's pages.
fn rss_anon_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon:")
}

/// Bytes of the files `pid` holds open below `dir`, named or not.
fn open_file_bytes_below(pid: u32, dir: &std::path::Path) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(dir)))
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .map(|m| m.len())
        .sum()
}

/// Spill files `pid` has mapped below `dir` (a held body closes its file once it maps it).
fn mapped_below(pid: u32, dir: &std::path::Path) -> usize {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|maps| {
            maps.lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(5)
                        .is_some_and(|p| p.starts_with(&dir))
                })
                .count()
        })
        .unwrap_or(0)
}

/// An APPEND waiting at its worker behind a long statement of its session gives its held bytes
/// back once the worker has read them, not when it answers (a thirty-first review held the
/// caps so for as long as the statement could run, an hour by default).
#[test]
fn an_append_waiting_behind_a_long_statement_holds_nothing_meanwhile() {
    use std::sync::mpsc;

    use quack_codec::{append_request, prepare_request, AppendColumn};

    let spill = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_toml: format!(
            "[limits]\nstatement_timeout_secs = 20\nappend_spill_dir = \"{}\"\n",
            spill.path().display()
        ),
        ..Default::default()
    });
    gw.cli_ok("CREATE TABLE r.w (i BIGINT);");
    let pid = gw.child.id();
    let worker = gw.worker_pids()[0];
    let id = open_session(&gw);
    let addr = gw.plain;
    let idle = crate::support::cpu_ticks(worker);
    let long = {
        let message = prepare_request(&id, 5, "SELECT sum(hash(i)) FROM range(1000000000000) t(i)");
        std::thread::spawn(move || quack_post(addr, message.to_vec()))
    };
    wait_until(
        "the statement running at the worker",
        Duration::from_secs(30),
        || crate::support::cpu_ticks(worker) > idle + 100,
    );
    // About 2 MB: held on disk.
    let message = append_request(
        &id,
        6,
        "main",
        "w",
        &[AppendColumn::BigInt((0..250_000).collect())],
    );
    let (sent, all_sent) = mpsc::channel();
    let append = std::thread::spawn(move || {
        post_in_two_parts(addr, &message, message.len(), move || {
            sent.send(()).unwrap()
        })
    });
    all_sent.recv().unwrap();
    wait_until("the APPEND held on disk", Duration::from_secs(10), || {
        gw.metric("quackgate_appends_spilled") == Some(1)
    });
    wait_until(
        "the APPEND's place given back",
        Duration::from_secs(10),
        || {
            gw.metric("quackgate_append_held_bytes{place=\"disk\"}") == Some(0)
                && mapped_below(pid, spill.path()) == 0
        },
    );
    assert!(
        !long.is_finished() && !append.is_finished(),
        "both still wait"
    );
    // The deadline ends the statement; the APPEND is answered after it.
    let (status, answer) = long.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&answer).contains("statement_timeout_secs"),
        "{answer:?}"
    );
    let answer = append.join().unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
}

/// While the room for held APPENDs is full, a body that arrives slower than
/// `limits.append_rate_under_pressure` gives way to an APPEND that needs its room: a principal
/// sending its share fast and then a byte every 2 s (a thirty-first review held a node's disk
/// cap so for 860 s at a time) has its APPEND cut with an error that says why, and another
/// principal's APPEND lands.
#[test]
fn a_dripping_append_gives_way_when_the_room_is_full() {
    use std::io::{Read, Write};

    use quack_codec::{append_request, AppendColumn};

    let victim_token = "the-victim-principal";
    let spill = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(GatewayOptions {
        // One worker for each principal.
        workers: 2,
        extra_workers_toml: "max_per_principal = 1\n".into(),
        extra_toml: format!(
            "[[auth.static_tokens]]\nname = \"victim\"\nsha256 = \"{}\"\n[limits]\nappend_memory_bytes = 65536\nappend_spill_dir = \"{}\"\nmax_spilled_append_bytes = 8388608\nmax_spilled_append_bytes_per_principal = 8388608\n",
            quackgate::auth::hash_token(victim_token),
            spill.path().display()
        ),
        ..Default::default()
    });
    let out = gw.cli_with_token(victim_token, "CREATE TABLE r.v (i BIGINT);");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // About 8 MB: all of the disk's room but its last 300 kB, then a byte every 2 s.
    let dripper = open_session(&gw);
    let message = append_request(
        &dripper,
        1,
        "main",
        "d",
        &[AppendColumn::BigInt((0..1_000_000).collect())],
    );
    assert!(
        message.len() > 7_900_000 && message.len() < 8_388_608,
        "{}",
        message.len()
    );
    let addr = gw.plain;
    let drip = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "POST /quack HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            message.len()
        )
        .unwrap();
        let fast = message.len() - 300_000;
        s.write_all(&message[..fast]).unwrap();
        // The stimulus: 30 drips, 60 s, fewer bytes than the rest; the gateway cuts it first.
        for byte in &message[fast..fast + 30] {
            std::thread::sleep(Duration::from_secs(2));
            if s.write_all(std::slice::from_ref(byte)).is_err() {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    });
    wait_until(
        "the dripping APPEND on disk",
        Duration::from_secs(30),
        || {
            gw.metric("quackgate_append_held_bytes{place=\"disk\"}")
                .is_some_and(|held| held > 7_500_000)
        },
    );
    // About 2 MB: it needs the dripper's room, and gets it once the dripper has been slow for
    // the 5 to 10 s a rate is measured over.
    let victim = open_session_as(&gw, victim_token);
    let message = append_request(
        &victim,
        1,
        "main",
        "v",
        &[AppendColumn::BigInt((0..250_000).collect())],
    );
    let mut refused = 0;
    wait_until(
        "the other principal's APPEND lands",
        Duration::from_secs(40),
        || {
            let (_, answer) = quack_post(gw.plain, message.to_vec());
            if msg_type(&answer) == 10 {
                return true;
            }
            assert!(
                String::from_utf8_lossy(&answer).contains("limits.max_spilled_append_bytes"),
                "{answer:?}"
            );
            refused += 1;
            false
        },
    );
    eprintln!(
        "the other principal's APPEND was refused {refused} times before the dripper gave way"
    );
    let answer = drip.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("gave way to another"),
        "{answer:?}"
    );
    let out = gw.cli_with_token(victim_token, "SELECT count(*) FROM r.v;");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "250000");
}

/// Many large APPENDs of one principal arriving at once are held on disk, not in the
/// gateway's memory, while they are read whole (a thirtieth review pinned 2 GiB of memory so
/// for minutes); then every one lands whole, and the disk is given back.
#[test]
fn large_appends_arriving_together_wait_on_disk_and_land_whole() {
    use std::sync::{Arc, Barrier};

    use quack_codec::{append_request, AppendColumn};

    const CLIENTS: usize = 12;
    const ROWS: i64 = 1_500_000;
    let other_token = "the-other-principal";
    let spill = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(GatewayOptions {
        // One worker for each principal: every session of the first sees its table.
        workers: 2,
        extra_workers_toml: "max_per_principal = 1\n".into(),
        extra_toml: format!(
            "[[auth.static_tokens]]\nname = \"other\"\nsha256 = \"{}\"\n[limits]\nappend_spill_dir = \"{}\"\n",
            quackgate::auth::hash_token(other_token),
            spill.path().display()
        ),
        ..Default::default()
    });
    gw.cli_ok("CREATE TABLE r.big (i BIGINT);");
    let pid = gw.child.id();
    let before = rss_anon_kib(pid);
    // Each about 12 MB: 144 MB together, sent all but their last megabyte, then held.
    let messages: Vec<bytes::Bytes> = (0..CLIENTS)
        .map(|_| {
            let id = open_session(&gw);
            append_request(
                &id,
                1,
                "main",
                "big",
                &[AppendColumn::BigInt((0..ROWS).collect())],
            )
        })
        .collect();
    let held_back = 1 << 20;
    let sent_first: u64 = messages.iter().map(|m| (m.len() - held_back) as u64).sum();
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let addr = gw.plain;
    let clients: Vec<_> = messages
        .into_iter()
        .map(|message| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let cut = message.len() - held_back;
                post_in_two_parts(addr, &message, cut, || {
                    barrier.wait();
                })
            })
        })
        .collect();
    // Everything sent so far is in the gateway's spill files, but for the batch each has yet
    // to write (256 KiB at most): the stimulus has arrived.
    let on_disk = sent_first - CLIENTS as u64 * (256 << 10);
    wait_until(
        "the APPENDs sent so far on disk",
        Duration::from_secs(60),
        || open_file_bytes_below(pid, spill.path()) >= on_disk,
    );
    let during = rss_anon_kib(pid);
    // Another principal connects and queries meanwhile (raw, in milliseconds: the held
    // APPENDs may pause 10 s at most).
    let other = open_session_as(&gw, other_token);
    let (_, answer) = quack_post(gw.plain, prepare_with_id(&other));
    assert_eq!(msg_type(&answer), 4, "{answer:?}");
    barrier.wait();
    for client in clients {
        let answer = client.join().unwrap();
        let text = String::from_utf8_lossy(&answer);
        let at = text.find("\r\n\r\n").expect("an HTTP answer") + 4;
        assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..at]);
        assert_eq!(
            msg_type(&answer[at..]),
            10,
            "{:?}\n{}",
            &text[at..],
            gw.log()
        );
    }
    let grown = during.saturating_sub(before);
    eprintln!(
        "{CLIENTS} APPENDs of {} MB held at once; the gateway's anonymous memory grew by {grown} KiB",
        sent_first / CLIENTS as u64 / 1_000_000
    );
    assert!(
        grown < 48 * 1024,
        "the gateway's anonymous memory grew by {grown} KiB holding {sent_first} bytes"
    );
    assert_eq!(
        gw.cli_ok("SELECT count(*), sum(i) FROM r.big;"),
        [format!(
            "{},{}",
            CLIENTS as i64 * ROWS,
            CLIENTS as i64 * ROWS * (ROWS - 1) / 2
        )]
    );
    wait_until(
        "the spill files given back",
        Duration::from_secs(30),
        || mapped_below(pid, spill.path()) == 0 && open_file_bytes_below(pid, spill.path()) == 0,
    );
    assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0);
}
