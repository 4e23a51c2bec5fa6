//! What users do: the DuckDB CLI, Python duckdb and adbc-driver-quack through the gateway.

use crate::support::{python_attach, Gateway, GatewayOptions};

#[test]
fn cli_over_https_runs_queries_ddl_appends_and_a_2m_row_result() {
    let gw = Gateway::start();
    let out = gw.cli_ok(
        "FROM r.query('SELECT 42');\n\
         CREATE TABLE r.t (i INTEGER, s VARCHAR);\n\
         INSERT INTO r.t SELECT range, 'x' || range FROM range(5000);\n\
         INSERT INTO r.t VALUES (-1, 'appended'), (-2, 'appended');\n\
         SELECT count(*), sum(i) FROM r.t;\n\
         FROM r.query('CREATE TABLE t2 AS SELECT * FROM t WHERE i >= 0');\n\
         FROM r.query('SELECT count(*) FROM t2');\n\
         SELECT count(*), sum(i) FROM r.query('SELECT range::BIGINT AS i FROM range(2000000)');\n",
    );
    assert_eq!(
        out,
        vec![
            "42",
            "5002,12497497", // sum(0..5000) - 3
            "5000",          // CREATE TABLE ... AS through query() reports its row count
            "5000",
            "2000000,1999999000000",
        ],
        "gateway log:\n{}",
        gw.log()
    );
}

#[test]
fn transactions_and_temp_tables_live_for_one_attach() {
    let gw = Gateway::start();
    let out = gw
        .cli_ok(
            "FROM r.query('CREATE TABLE acct (v INTEGER)');\n\
         FROM r.query('CREATE TEMP TABLE scratch AS SELECT 7 AS x');\n\
         FROM r.query('BEGIN TRANSACTION');\n\
         FROM r.query('INSERT INTO acct VALUES (1)');\n\
         FROM r.query('ROLLBACK');\n\
         FROM r.query('SELECT count(*) FROM acct');\n\
         FROM r.query('BEGIN TRANSACTION');\n\
         FROM r.query('INSERT INTO acct VALUES (2)');\n\
         FROM r.query('INSERT INTO acct VALUES (3)');\n\
         FROM r.query('COMMIT');\n\
         FROM r.query('SELECT count(*), sum(v) FROM acct');\n\
         FROM r.query('SELECT x FROM scratch');\n",
        )
        .into_iter()
        .filter(|l| l != "true")
        .collect::<Vec<_>>();
    // BEGIN, COMMIT, ROLLBACK and CREATE print "true"; the rest are row counts and results.
    // The rolled-back insert left no row; the committed two are there; the temp table lives on.
    assert_eq!(out, ["1", "1", "0", "1", "1", "2,5", "7"], "{}", gw.log());
    // A second ATTACH is a new session: it sees the table but not the temp table.
    let other = gw.cli("FROM r.query('SELECT x FROM scratch');");
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("scratch"));
}

#[test]
fn python_duckdb_works_through_the_gateway() {
    let gw = Gateway::start();
    let script = python_attach(&gw.toolchain, &gw.ca, &gw.token, gw.https.port())
        + "print(con.sql(\"FROM r.query('SELECT 42')\").fetchall())\n\
           print(con.sql(\"SELECT count(*) FROM r.query('SELECT * FROM range(300000)')\").fetchall())\n";
    assert_eq!(gw.python_lines(&script, &[]), ["[(42,)]", "[(300000,)]"]);
}

#[test]
fn adbc_driver_quack_connects_over_https() {
    let gw = Gateway::start();
    let script = format!(
        r#"
import adbc_driver_quack.dbapi as dbapi
with dbapi.connect("quack://localhost:{port}", db_kwargs={{"adbc.quack.token": "{token}", "adbc.quack.tls": "true"}}, autocommit=True) as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT 42 AS answer")
        print(cur.fetchall())
        cur.execute("SELECT * FROM range(300000)")
        print(cur.fetch_arrow_table().num_rows)
"#,
        token = gw.token,
        port = gw.https.port()
    );
    // The driver is Go: it trusts the CA named by SSL_CERT_FILE.
    let ca = gw.ca.display().to_string();
    let lines = gw.python_lines(&script, &[("SSL_CERT_FILE", &ca)]);
    assert_eq!(lines, ["[(42,)]", "300000"]);
}

/// FETCH answers of the gateway's workers in one result of `rows` rows, read from /metrics.
fn fetches_for(gw: &Gateway, rows: u64) -> u64 {
    let fetches = || {
        let (_, metrics) = gw.admin_get("/metrics");
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("quackgate_requests_total{msg_type=\"fetch\",origin=\"client\"} ")
            })
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = fetches();
    let out = gw.cli_ok(&format!(
        "SELECT count(*) FROM r.query('SELECT range FROM range({rows})');"
    ));
    assert_eq!(out, vec![rows.to_string()]);
    fetches() - before
}

#[test]
fn large_results_come_in_few_large_answers() {
    // DuckDB 1.5 clients open a connection per FETCH, so workers answer with 48 chunks of
    // 2,048 rows instead of Quack's 12 by default, and workers.fetch_batch_chunks sets it.
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        ..Default::default()
    });
    let setting = "FROM r.query('SELECT current_setting(''quack_fetch_batch_chunks'')');";
    assert_eq!(gw.cli_ok(setting), vec!["48"]);
    // 1M rows are 489 chunks: about 10 answers of 48 (Quack's default would take about 41).
    let default = fetches_for(&gw, 1_000_000);
    let small = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_workers_toml: "fetch_batch_chunks = 12\n".into(),
        ..Default::default()
    });
    assert_eq!(small.cli_ok(setting), vec!["12"]);
    let twelve = fetches_for(&small, 1_000_000);
    assert!(
        (8..=14).contains(&default) && (36..=46).contains(&twelve),
        "FETCH requests for 1M rows: {default} with the default, {twelve} with 12"
    );
}

/// The CLI sends sequences, constants and (from a Parquet file) dictionaries; the gateway passes
/// each on to the worker as the flat vector DuckDB writes for the same rows. What lands is what
/// was sent, row for row, in every nested type an APPEND may carry.
#[test]
fn appends_of_compressed_vectors_land_as_the_rows_they_stand_for() {
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("d.parquet");
    let parquet = parquet.display();
    let out = gw.cli_ok(&format!(
        "CREATE TABLE r.v (i BIGINT, s VARCHAR, c INTEGER, l BIGINT[], st STRUCT(a BIGINT, b VARCHAR), n INTEGER, a INTEGER[3], m MAP(VARCHAR, INTEGER), d VARCHAR, t TINYINT);\n\
         CREATE TEMP VIEW sent AS SELECT range AS i, 'k' || (range % 3) AS s, 42 AS c, [range, range] AS l, {{'a': range, 'b': NULL}} AS st, NULL::INTEGER AS n, [1, NULL, range % 5]::INTEGER[3] AS a, MAP {{'x': (range % 100)::INTEGER}} AS m, NULL::VARCHAR AS d, (range % 100)::TINYINT AS t FROM range(5000);\n\
         INSERT INTO r.v SELECT * FROM sent;\n\
         COPY (SELECT * REPLACE (i + 5000 AS i, 'v' || (i % 7) AS d, CASE WHEN i % 11 = 0 THEN NULL ELSE s END AS s) FROM sent) TO '{parquet}';\n\
         INSERT INTO r.v SELECT * FROM '{parquet}';\n\
         CREATE TEMP VIEW everything AS FROM sent UNION ALL FROM '{parquet}';\n\
         SELECT count(*) FROM r.v;\n\
         SELECT count(*) FROM (SELECT v::VARCHAR FROM r.v v EXCEPT ALL SELECT e::VARCHAR FROM everything e);\n\
         SELECT count(*) FROM (SELECT e::VARCHAR FROM everything e EXCEPT ALL SELECT v::VARCHAR FROM r.v v);\n\
         SELECT count(*) FILTER (s IS NULL), count(DISTINCT d), sum(a[3]), sum(m['x']), sum(t) FROM r.v;\n"
    ));
    assert_eq!(
        out,
        ["10000", "0", "0", "455,7,20000,495000,495000"],
        "gateway log:\n{}",
        gw.log()
    );
}
