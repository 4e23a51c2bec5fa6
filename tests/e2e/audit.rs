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
