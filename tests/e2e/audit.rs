//! The audit trail with real clients: a record per new session and per statement, in a file of
//! its own, with no token, no id and no SQL text.

use sha2::{Digest, Sha256};

use crate::support::{Gateway, GatewayOptions};

fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn sessions_and_statements_leave_one_record_each_in_the_audit_file() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        rust_log: Some("debug"),
        extra_toml: format!("[log]\naudit_file = \"{}\"\n", audit.display()),
        ..GatewayOptions::default()
    });
    let sql = "SELECT 40 + 2 AS audited";
    let out = gw.cli(&format!("FROM r.query('{sql}');"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("42"));
    let wrong = gw.cli_with_token("not-the-token", "FROM r.query('SELECT 1');");
    assert!(!wrong.status.success());

    let all = records(&audit);
    let fields = |r: &serde_json::Value, k: &str| r["fields"][k].clone();
    let connects: Vec<_> = all
        .iter()
        .filter(|r| fields(r, "event") == "connect")
        .collect();
    let ok = connects
        .iter()
        .find(|r| fields(r, "outcome") == "ok")
        .expect("a connect record of the good session");
    assert_eq!(fields(ok, "principal"), "tester");
    assert_eq!(fields(ok, "role"), "read_write");
    assert_eq!(fields(ok, "client"), "127.0.0.1");
    assert_eq!(fields(ok, "worker"), 0);
    assert!(fields(ok, "node").is_string());
    assert!(
        connects
            .iter()
            .any(|r| fields(r, "outcome") == "auth" && fields(r, "principal").is_null()),
        "the wrong token's connect: {connects:?}"
    );
    let digest = hex::encode(Sha256::digest(sql.as_bytes()));
    let statement = all
        .iter()
        .find(|r| fields(r, "statement_sha256") == digest.as_str())
        .unwrap_or_else(|| panic!("no statement record for {digest}: {all:?}"));
    assert_eq!(fields(statement, "event"), "statement");
    assert_eq!(fields(statement, "principal"), "tester");
    assert_eq!(fields(statement, "outcome"), "ok");
    assert_eq!(
        fields(statement, "session").as_str().map(str::len),
        Some(16)
    );
    assert!(
        fields(statement, "sql").is_null(),
        "SQL only with log.audit_sql"
    );

    // A statement on a made-up id, which anyone can send, leaves no record; one on a real
    // session that has ended does.
    let bogus = crate::support::prepare_with_id(b"q2.made-up-id-of-nobody");
    let (_, answer) = crate::support::quack_post(gw.plain, bogus);
    assert_eq!(crate::support::msg_type(&answer), 100);
    let id = crate::support::open_session(&gw);
    let (_, bye) =
        crate::support::quack_post(gw.plain, quack_codec::encode_disconnect(&id).to_vec());
    assert_eq!(crate::support::msg_type(&bye), 10, "{bye:?}");
    let (_, ended) = crate::support::quack_post(gw.plain, crate::support::prepare_with_id(&id));
    assert_eq!(crate::support::msg_type(&ended), 100);
    crate::support::wait_until(
        "the ended session's record",
        std::time::Duration::from_secs(10),
        || {
            records(&audit)
                .iter()
                .any(|r| fields(r, "event") == "statement" && fields(r, "outcome") != "ok")
        },
    );
    let refused: Vec<_> = records(&audit)
        .into_iter()
        .filter(|r| fields(r, "event") == "statement" && fields(r, "outcome") != "ok")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]["fields"]["session"].is_string(), "{refused:?}");

    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [gw.token.as_str(), "not-the-token", "audited"] {
        assert!(!text.contains(secret), "{secret:?} in the audit file");
    }
    assert!(!text.contains("q2."), "a connection id in the audit file");
    assert!(
        !gw.log().contains("audit: "),
        "audit records went to the log too"
    );
    assert!(
        gw.log().contains("quack request"),
        "the log lost its own events beside the audit file"
    );
}

#[test]
fn a_statement_and_the_fetches_of_its_result_record_every_row_the_client_read() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_toml: format!("[log]\naudit_file = \"{}\"\n", audit.display()),
        ..GatewayOptions::default()
    });
    // Many answers (a PREPARE and several FETCHes, which the CLI sends in parallel), every
    // kind of column the counter walks, and a statement that fails.
    let big = "SELECT range AS i, range::VARCHAR AS s FROM range(300000)";
    let types = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/quack/result_types_300_rows.sql"
    ))
    .unwrap();
    // Workers load no JSON extension.
    let types = types
        .trim()
        .replace(", '{\"a\":1}'::JSON AS js", "")
        .replace("range(300)", "range(5000)")
        .replace('\'', "''");
    let failing = "SELECT 1 / 0 AS x FROM nowhere";
    let out = gw.cli_ok(&format!(
        "SELECT count(*) FROM r.query('{big}'); SELECT count(*) FROM r.query('{types}');"
    ));
    assert_eq!(out, ["300000", "5000"]);
    let failed = gw.cli(&format!("FROM r.query('{failing}');"));
    assert!(!failed.status.success());

    let all = records(&audit);
    let fields = |r: &serde_json::Value, k: &str| r["fields"][k].clone();
    let statement = |sql: &str| {
        let digest = hex::encode(Sha256::digest(sql.as_bytes()));
        all.iter()
            .find(|r| fields(r, "statement_sha256") == digest.as_str())
            .unwrap_or_else(|| panic!("no statement record for {sql}: {all:?}"))
            .clone()
    };
    let rows_read = |record: &serde_json::Value| {
        let result = fields(record, "result");
        assert!(result.is_string(), "no result fingerprint: {record}");
        let fetches: Vec<_> = all
            .iter()
            .filter(|r| fields(r, "event") == "fetch" && fields(r, "result") == result)
            .collect();
        for f in &fetches {
            assert_eq!(fields(f, "session"), fields(record, "session"));
            assert_eq!(fields(f, "outcome"), "ok", "{f}");
        }
        let counted = |r: &serde_json::Value| {
            fields(r, "rows")
                .as_u64()
                .unwrap_or_else(|| panic!("no row count: {r}"))
        };
        (
            counted(record) + fetches.iter().map(|f| counted(f)).sum::<u64>(),
            fetches.len(),
        )
    };
    let (rows, fetches) = rows_read(&statement(big));
    assert_eq!(rows, 300_000);
    assert!(fetches >= 2, "{fetches} FETCHes");
    let (rows, _) = rows_read(&statement(&types.replace("''", "'")));
    assert_eq!(rows, 5000);
    let failed = statement(failing);
    assert_eq!(fields(&failed, "outcome"), "ok", "a SQL error is answered");
    assert!(
        fields(&failed, "rows").is_null(),
        "a SQL error has no rows: {failed}"
    );
}
