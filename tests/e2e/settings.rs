//! Per-session settings that widen no access work on a locked worker, per session; settings
//! that would widen access stay locked.

use crate::support::Gateway;

#[test]
fn harmless_settings_change_per_session_and_the_rest_stay_locked() {
    let gw = Gateway::start();
    let script = format!(
        r#"{attach}
def run(sql):
    try:
        con.execute(f"FROM r.query('{{sql}}')").fetchall()
        return "ok"
    except Exception as e:
        if "configuration has been locked" in str(e):
            return "locked"
        if "SET GLOBAL and RESET GLOBAL reach every session" in str(e):
            return "refused global"
        return "error: " + str(e).splitlines()[0]
for sql in [
    "SET TimeZone = ''America/New_York''",
    "SET Calendar = ''gregorian''",
    "SET enable_progress_bar = false",
    "SET search_path = ''main''",
    "SET explain_output = ''all''",
    "SET VARIABLE v = 7",
    "SET SESSION max_expression_depth = 5000",
    "SET default_order = ''DESC''",
    "SET enable_profiling = ''json''",
    "SET threads = 1",
    "SET memory_limit = ''100GB''",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SET allowed_configs = [''threads'']",
    "SET allowed_directories = [''/'']",
    "SET profiling_output = ''/tmp/quackgate-profile''",
    "SET enable_http_logging = true",
    "SET catalog_error_max_schemas = 7",
    "SET GLOBAL TimeZone = ''Asia/Tokyo''",
    "SET GLOBAL Calendar = ''japanese''",
    "RESET GLOBAL pivot_limit",
]:
    print(sql.replace("''", "'"), "->", run(sql))
print("zone", con.execute("FROM r.query('SELECT current_setting(''TimeZone'')')").fetchone()[0])
print("var", con.execute("FROM r.query('SELECT getvariable(''v'')')").fetchone()[0])
other = duckdb.connect(config={{"extension_directory": "{ext}", "autoinstall_known_extensions": "false"}})
for stmt in ["LOAD quack", "SET ca_cert_file='{ca}'", "CREATE SECRET (TYPE quack, TOKEN '{token}', SCOPE 'quack:localhost:{port}')", "ATTACH 'quack:localhost:{port}' AS r (DISABLE_SSL false)"]:
    other.execute(stmt)
print("other zone", other.execute("FROM r.query('SELECT current_setting(''TimeZone'')')").fetchone()[0])
"#,
        attach = crate::support::python_attach(&gw.toolchain, &gw.ca, &gw.token, gw.https.port()),
        ext = gw.toolchain.ext_dir().display(),
        ca = gw.ca.display(),
        token = gw.token,
        port = gw.https.port(),
    );
    let lines = gw.python_lines(&script, &[]);
    let answer = |sql: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{sql} -> ")))
            .unwrap_or_else(|| panic!("no answer for {sql}: {lines:?}"))
    };
    for sql in [
        "SET TimeZone = 'America/New_York'",
        "SET Calendar = 'gregorian'",
        "SET enable_progress_bar = false",
        "SET search_path = 'main'",
        "SET explain_output = 'all'",
        "SET VARIABLE v = 7",
    ] {
        assert_eq!(answer(sql), "ok", "{sql}: {lines:?}");
    }
    // Left out on purpose (crates/duckdb-worker/src/session_settings.rs says why).
    for sql in [
        "SET SESSION max_expression_depth = 5000",
        "SET default_order = 'DESC'",
        "SET enable_profiling = 'json'",
        "SET threads = 1",
        "SET memory_limit = '100GB'",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "SET allowed_configs = ['threads']",
        "SET allowed_directories = ['/']",
        "SET profiling_output = '/tmp/quackgate-profile'",
        "SET enable_http_logging = true",
        // It has no session value: a plain SET of it reached every session of the worker.
        "SET catalog_error_max_schemas = 7",
    ] {
        assert_eq!(answer(sql), "locked", "{sql}: {lines:?}");
    }
    // A global time zone or calendar silently changed what other sessions computed.
    for sql in [
        "SET GLOBAL TimeZone = 'Asia/Tokyo'",
        "SET GLOBAL Calendar = 'japanese'",
        "RESET GLOBAL pivot_limit",
    ] {
        assert_eq!(answer(sql), "refused global", "{sql}: {lines:?}");
    }
    assert!(lines.contains(&"var 7".to_string()), "{lines:?}");
    assert!(
        lines.contains(&"zone America/New_York".to_string()),
        "{lines:?}"
    );
    // The same principal's other session keeps its own value.
    let other = lines
        .iter()
        .find_map(|l| l.strip_prefix("other zone "))
        .unwrap();
    assert_ne!(other, "America/New_York", "{lines:?}");
    assert!(!std::path::Path::new("/tmp/quackgate-profile").exists());
}

/// DuckDB 1.5.5 gives each database 80% of the machine's memory; a node's workers share that
/// instead when `workers.memory_limit` is unset, so that together they promise it once.
#[test]
fn workers_share_the_memory_duckdb_would_give_each_of_them() {
    let gw = Gateway::start();
    let out = gw.cli_ok(
        "SELECT current_setting('memory_limit');\n\
         SELECT * FROM r.query('SELECT current_setting(''memory_limit'')');\n",
    );
    // "18.7 GiB" and the like.
    let bytes = |shown: &str| -> f64 {
        let (number, unit) = shown.split_once(' ').expect("a number and a unit");
        let scale = match unit {
            "KiB" => 1u64 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => panic!("unit {other}"),
        };
        number.parse::<f64>().unwrap() * scale as f64
    };
    let (alone, each) = (bytes(&out[0]), bytes(&out[1]));
    // The test gateway runs two workers; a cgroup limit would only make the share smaller.
    assert!(
        each <= alone / 2.0 * 1.01 && each >= 64.0 * (1 << 20) as f64,
        "a worker's {} against DuckDB's own {}",
        out[1],
        out[0]
    );
}
