//! Start-up, readiness, worker crashes and shutdown.

use std::process::Command;
use std::time::Duration;

use crate::support::{
    fixture, msg_type, open_session, prepare_with_id, quack_post, spawn_gateway, wait_for_exit,
    wait_until, write_config, Gateway, GatewayOptions, Toolchain,
};

#[test]
fn health_and_readiness_are_served_on_the_admin_listener_only() {
    let gw = Gateway::start();
    assert_eq!(gw.admin_get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(
        gw.admin_get("/readyz"),
        (200, "ready: 2/2 workers\n".to_string())
    );
    let (status, _) = crate::support::http_get(gw.plain, "/readyz");
    assert_eq!(status, 404, "readiness must not be on the public port");
}

#[test]
fn the_health_listener_serves_probes_and_nothing_else() {
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_gateway_toml: "health_listen = \"127.0.0.1:0\"".into(),
        ..GatewayOptions::default()
    });
    let health = gw.health.expect("health= in the READY line");
    let get = |path| crate::support::http_get(health, path);
    assert_eq!(get("/healthz"), (200, "ok\n".to_string()));
    wait_until("ready", Duration::from_secs(30), || get("/readyz").0 == 200);
    for private in ["/metrics", "/status"] {
        assert_eq!(get(private).0, 404, "{private} on the health listener");
        assert_eq!(
            gw.admin_get(private).0,
            200,
            "{private} on the admin listener"
        );
    }
}

#[test]
fn a_killed_worker_is_restarted_and_its_sessions_get_invalid_connection_id() {
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        ..Default::default()
    });
    let id = open_session(&gw);
    let prepare = prepare_with_id(&id);
    let (_, body) = quack_post(gw.plain, prepare.clone());
    assert_eq!(msg_type(&body), 4);

    gw.kill_worker();
    wait_until(
        "the supervisor to log the exit and restart the worker",
        Duration::from_secs(30),
        || gw.worker_pids().len() == 2,
    );
    let log = gw.log();
    assert!(
        log.contains("worker exited") && log.contains("signal 9"),
        "log:\n{log}"
    );
    wait_until(
        "readiness after the restart",
        Duration::from_secs(30),
        || gw.admin_get("/readyz").0 == 200,
    );

    let (status, body) = quack_post(gw.plain, prepare);
    assert_eq!(
        (status, body.as_ref()),
        (200, &fixture("error_invalid_connection_id.bin")[..])
    );
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
    let status = wait_for_exit(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1));
    wait_until("the reason in the log", Duration::from_secs(5), || {
        log.lock().unwrap().contains("workers.init_sql")
    });
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("failed to start") && log.contains("syntax error"),
        "{log}"
    );
}

#[test]
fn sigterm_drains_sessions_in_flight_and_refuses_new_ones() {
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        // The probe below lists the worker's statements, which client SQL may not do itself.
        extra_workers_toml: r#"init_sql = ["CREATE MACRO statements_here() AS TABLE SELECT query FROM quack_active_connections()"]
"#
        .into(),
        ..Default::default()
    });
    let toolchain = Toolchain::get();
    // 15 s of sleep before the first row (the same on any CPU), then 3M rows: the PREPARE is
    // running when SIGTERM arrives, and the many FETCHes that follow come on new connections
    // during the drain.
    let sql = format!(
        ".output /dev/null\n{}.output\nSELECT count(*), sum(i) FROM r.query('SELECT range AS i, s AS drain_marker FROM range(3000000), (SELECT sleep_ms(15000) AS s)');\n",
        gw.attach_sql(&gw.token)
    );
    let client = std::thread::spawn(move || crate::support::run_cli(&toolchain, &sql));
    // The marker is split in the probe so the probe does not find itself.
    wait_until(
        "the long query to be running on the worker",
        Duration::from_secs(60),
        || {
            let out = gw.cli(
            "FROM r.query('SELECT count(*) FROM statements_here() WHERE contains(query, ''drain_'' || ''marker'')');",
        );
            String::from_utf8_lossy(&out.stdout).trim() == "1"
        },
    );
    assert!(
        !client.is_finished(),
        "the query ended before the drain began; make it longer"
    );
    gw.signal("TERM");
    wait_until(
        "readiness to turn false during the drain",
        Duration::from_secs(10),
        || gw.admin_get("/readyz") == (503, "draining\n".to_string()),
    );
    let refused = gw.cli("FROM r.query('SELECT 1');");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("shutting down"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let out = client.join().unwrap();
    assert!(
        out.status.success(),
        "query cut by the drain: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "3000000,4499998500000"
    );
    let mut gw = gw;
    let status = wait_for_exit(&mut gw.child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", gw.log());
    assert!(gw.log().contains("shutdown complete"));
}

#[test]
fn gateway_threads_sets_the_runtime_size() {
    // The runtime line of /status of a gateway started with `threads`.
    let runtime = |threads: usize| {
        let gw = Gateway::start_with(GatewayOptions {
            workers: 1,
            extra_gateway_toml: format!("threads = {threads}\n"),
            ..Default::default()
        });
        let (status, body) = gw.admin_get("/status");
        assert_eq!(status, 200);
        body.lines().next().unwrap_or_default().to_string()
    };
    // One more than the default (half the cores), so an ignored setting cannot pass.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = (cores / 2).max(1) + 1;
    let line = runtime(n);
    assert!(
        line.contains(&format!("runtime=MultiThread runtime_threads={n}")),
        "gateway.threads = {n} was not applied: {line}"
    );
    // 1 is a single-threaded runtime.
    let line = runtime(1);
    assert!(
        line.contains("runtime=CurrentThread runtime_threads=1"),
        "gateway.threads = 1 did not give a single-threaded runtime: {line}"
    );
}

#[test]
fn the_kubernetes_configs_pass_check_config() {
    // The TOML files of the ConfigMap in infra/kubernetes, with what only a cluster has (its
    // secrets, the image's extensions, the hashes an operator pastes in) made here.
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/infra/kubernetes/quackgate.yaml"
    ))
    .unwrap();
    let block = |name: &str| -> String {
        let start = manifest
            .find(&format!("\n  {name}: |\n"))
            .unwrap_or_else(|| panic!("no {name} in the ConfigMap"));
        manifest[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let var = dir.path().join("var");
    std::fs::create_dir_all(var.join("lake")).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    let catalog_token = crate::support::random_hex();
    std::fs::write(secrets.join("catalog-token"), &catalog_token).unwrap();
    std::fs::write(
        secrets.join("id-secret"),
        &(0..3)
            .map(|_| crate::support::random_hex())
            .collect::<String>()[..64],
    )
    .unwrap();
    let tls = quackgate::dev_init::write_tls(dir.path(), &["quackgate-catalog".into()]).unwrap();
    for (file, from) in [
        ("tls.crt", &tls.cert),
        ("tls.key", &tls.key),
        ("catalog-tls.crt", &tls.cert),
        ("catalog-tls.key", &tls.key),
        ("catalog-ca.crt", &tls.ca_cert),
    ] {
        std::fs::copy(from, secrets.join(file)).unwrap();
    }
    for name in ["quackgate.toml", "catalog.toml"] {
        let text = block(name)
            .replace("/run/secrets/quackgate", &secrets.display().to_string())
            .replace(
                "/opt/quackgate/extensions",
                &Toolchain::get().ext_dir().display().to_string(),
            )
            .replace("/var/lib/quackgate", &var.display().to_string())
            .replace(
                "REPLACE-WITH-quackgate-hash-token-OUTPUT",
                &quackgate::auth::hash_token("a-client-token"),
            )
            .replace(
                "REPLACE-WITH-HASH-OF-catalog-token",
                &quackgate::auth::hash_token(&catalog_token),
            );
        let path = dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_quackgate"))
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "infra/kubernetes {name} does not pass check-config:\n{}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
