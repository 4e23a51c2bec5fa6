//! Start-up, readiness, worker crashes and shutdown.

use std::process::Command;
use std::time::{Duration, Instant};

use quackgate::quack::codec;

use crate::support::{
    fixture, quack_post, spawn_gateway, wait_until, write_config, Gateway, GatewayOptions, Toolchain,
};

#[test]
fn health_and_readiness_are_served_on_the_admin_listener_only() {
    let gw = Gateway::start();
    assert_eq!(gw.admin_get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(gw.admin_get("/readyz"), (200, "ready: 2/2 workers\n".to_string()));
    let (status, _) = crate::support::http_get(gw.plain, "/readyz");
    assert_eq!(status, 404, "readiness must not be on the public port");
}

#[test]
fn a_killed_worker_is_restarted_and_its_sessions_get_invalid_connection_id() {
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        ..Default::default()
    });
    // Open a session with a raw CONNECTION_REQUEST, and use it once.
    let buf = fixture("connection_request.bin");
    let header = codec::decode_header(&buf).unwrap();
    let req = codec::decode_connection_request(&buf, &header).unwrap();
    let connect = codec::replace_token(&buf, &header, &req, gw.token.as_bytes()).to_vec();
    let (_, answer) = quack_post(gw.plain, connect.clone());
    let id = codec::decode_header(&answer).unwrap().connection_id(&answer).unwrap().to_vec();
    let prepare = {
        let p = fixture("prepare_request_select42.bin");
        let h = codec::decode_header(&p).unwrap();
        let mut out = codec::rewrite_header(&p, &h, &id).to_vec();
        out.extend_from_slice(&p[h.len..]);
        out
    };
    let (_, body) = quack_post(gw.plain, prepare.clone());
    assert_eq!(codec::decode_header(&body).unwrap().msg_type, 4);

    let pids = gw.worker_pids();
    assert_eq!(pids.len(), 1, "log:\n{}", gw.log());
    assert!(Command::new("kill").args(["-9", &pids[0].to_string()]).status().unwrap().success());
    wait_until("the supervisor to log the exit and restart the worker", Duration::from_secs(30), || {
        gw.worker_pids().len() == 2
    });
    let log = gw.log();
    assert!(log.contains("worker exited") && log.contains("signal 9"), "log:\n{log}");
    wait_until("readiness after the restart", Duration::from_secs(30), || {
        gw.admin_get("/readyz").0 == 200
    });

    let (status, body) = quack_post(gw.plain, prepare);
    assert_eq!((status, body.as_ref()), (200, &fixture("error_invalid_connection_id.bin")[..]));
    // A new ATTACH works on the restarted worker.
    assert_eq!(gw.cli_ok("FROM r.query('SELECT 42');"), vec!["42"]);
}

#[test]
fn missing_extensions_fail_before_binding_and_name_the_file() {
    let toolchain = Toolchain::get();
    let dir = tempfile::tempdir().unwrap();
    let empty_ext = dir.path().join("no-extensions-here");
    std::fs::create_dir_all(&empty_ext).unwrap();
    let (config, _, _) = write_config(
        dir.path(),
        &GatewayOptions {
            extension_dir: Some(empty_ext.clone()),
            ..Default::default()
        },
        &toolchain,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_quackgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = empty_ext.join("v1.5.5/linux_amd64/quack.duckdb_extension");
    assert!(stderr.contains(&expected.display().to_string()), "{stderr}");
    assert!(stderr.contains("scripts/fetch-duckdb"), "{stderr}");
    assert!(stderr.contains("duckdb-extension-quack==1.5.5"), "{stderr}");
}

#[test]
fn a_worker_that_cannot_start_stops_the_gateway_with_its_reason() {
    let toolchain = Toolchain::get();
    let dir = tempfile::tempdir().unwrap();
    let (config, _, _) = write_config(
        dir.path(),
        &GatewayOptions {
            extra_workers_toml: "init_sql = [\"SELEC broken\"]".into(),
            ..Default::default()
        },
        &toolchain,
    );
    let (mut child, log) = spawn_gateway(&config, None);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "gateway did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    wait_until("the reason in the log", Duration::from_secs(5), || {
        log.lock().unwrap().contains("workers.init_sql")
    });
    let log = log.lock().unwrap().clone();
    assert!(log.contains("failed to start") && log.contains("syntax error"), "{log}");
}

#[test]
fn sigterm_lets_a_running_query_finish_then_exits_cleanly() {
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        ..Default::default()
    });
    let toolchain = Toolchain::get();
    // A query that runs for seconds, tagged so the worker's connection list can show it.
    let sql = format!(
        ".output /dev/null\n{}.output\nSELECT * FROM r.query('SELECT sum(a.range * b.range) > 0 AS drain_marker FROM range(60000) a, range(60000) b');\n",
        gw.attach_sql(&gw.token)
    );
    let client = std::thread::spawn(move || crate::support::run_cli(&toolchain, &sql));
    // The marker is split in the probe so the probe does not find itself.
    wait_until("the long query to be running on the worker", Duration::from_secs(60), || {
        let out = gw.cli(
            "FROM r.query('SELECT count(*) FROM quack_active_connections() WHERE contains(query, ''drain_'' || ''marker'')');",
        );
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    });
    assert!(!client.is_finished(), "the query ended before the drain began; make it longer");
    gw.signal("TERM");
    wait_until("readiness to turn false during the drain", Duration::from_secs(10), || {
        gw.admin_get("/readyz") == (503, "draining\n".to_string())
    });
    let out = client.join().unwrap();
    assert!(out.status.success(), "query cut by the drain: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "true");
    let mut gw = gw;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "gateway did not exit after the drain");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "log:\n{}", gw.log());
    assert!(gw.log().contains("shutdown complete"));
}
