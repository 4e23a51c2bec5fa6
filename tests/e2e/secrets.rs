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

/// Runs one statement through the CLI; its success and everything it printed.
fn try_sql(gw: &Gateway, sql: &str) -> (bool, String) {
    let out = gw.cli(sql);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn client_sql_with_external_access_reaches_only_the_files_its_worker_needs() {
    let extra = tempfile::tempdir().unwrap();
    let readable = extra.path().join("readable");
    let writable = extra.path().join("writable");
    std::fs::create_dir_all(&readable).unwrap();
    std::fs::create_dir_all(&writable).unwrap();
    std::fs::write(readable.join("ok.csv"), "a\n1\n2\n3\n").unwrap();
    std::fs::write(extra.path().join("beside.csv"), "a\n1\n").unwrap();
    // External access on: DuckDB itself refuses none of the reads below, so every refusal is
    // the kernel's (Landlock), and the readable folder shows the same SQL working.
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_workers_toml: format!(
            "external_access = true\naccept_external_access_risk = true\nreadable_dirs = [\"{}\"]\nwritable_dirs = [\"{}\"]\n",
            readable.display(),
            writable.display()
        ),
        ..Default::default()
    });
    let read = |path: &std::path::Path| {
        try_sql(
            &gw,
            &format!(
                "FROM r.query('SELECT length(content) FROM read_text(''{}'')');",
                path.display()
            ),
        )
    };
    let (ok, out) = try_sql(
        &gw,
        &format!(
            "FROM r.query('SELECT sum(a) FROM read_csv(''{}'')');",
            readable.join("ok.csv").display()
        ),
    );
    assert!(ok && out.trim() == "6", "the readable folder: {out}");

    // Every file of the gateway's own folder: TLS key, config, CA.
    let mut secrets: Vec<std::path::PathBuf> = std::fs::read_dir(gw.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    assert!(
        secrets.iter().any(|p| p.to_string_lossy().contains("key")),
        "the TLS key should be among {secrets:?}"
    );
    secrets.push(format!("/proc/{}/environ", gw.child.id()).into());
    secrets.push(extra.path().join("beside.csv"));
    for path in &secrets {
        assert!(
            std::fs::read(path).is_ok(),
            "this test cannot read {path:?}"
        );
        let (ok, out) = read(path);
        assert!(!ok, "client SQL read {path:?}: {out}");
        assert!(
            out.contains("Permission denied") || out.contains("No files found"),
            "{path:?}: {out}"
        );
    }

    let outside = extra.path().join("written.csv");
    let (ok, out) = try_sql(
        &gw,
        &format!(
            "FROM r.query('COPY (SELECT 1 AS a) TO ''{}''');",
            outside.display()
        ),
    );
    assert!(!ok && !outside.exists(), "a write outside: {out}");
    let inside = writable.join("written.csv");
    let (ok, out) = try_sql(
        &gw,
        &format!(
            "FROM r.query('COPY (SELECT 1 AS a) TO ''{}''');",
            inside.display()
        ),
    );
    assert!(ok && inside.exists(), "the writable folder: {out}");

    // A sort larger than the memory limit spills into the worker's private folder.
    let (ok, out) = try_sql(
        &gw,
        "FROM r.query('SET memory_limit = ''40MB''');\n\
         FROM r.query('SELECT count(*) FROM (SELECT range AS v FROM range(20000000) ORDER BY random()) WHERE v >= 0');",
    );
    assert!(ok && out.contains("20000000"), "spilling: {out}");
    assert!(!gw.log().contains("not confined"), "{}", gw.log());
}
