//! DuckLake behind the gateway: workers share one lake whose metadata is served over Quack by
//! `quackgate catalog`, with Parquet files in a local folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{run_cli, wait_for_exit, wait_until, Gateway, GatewayOptions, Toolchain};

/// A catalog process plus a gateway whose workers attach the lake.
struct Stack {
    gateway: Gateway,
    catalog: Gateway,
    /// Holds the catalog file, the data folder and the catalog token.
    shared: tempfile::TempDir,
}

impl Stack {
    fn start(workers: usize) -> Stack {
        Stack::start_with(workers, |shared| {
            (data_dir(shared).display().to_string(), String::new())
        })
    }

    /// `lake(shared folder)` gives the data path and extra `[workers.ducklake]` TOML.
    fn start_with(workers: usize, lake: impl FnOnce(&Path) -> (String, String)) -> Stack {
        let shared = tempfile::tempdir().unwrap();
        let (data_path, extra_lake_toml) = lake(shared.path());
        let catalog_token = format!("cat-{}", crate::support::random_hex());
        std::fs::write(shared.path().join("catalog-token"), &catalog_token).unwrap();
        let catalog = start_catalog(shared.path(), &catalog_token, None);
        let gateway = Gateway::start_with(GatewayOptions {
            workers,
            // Shared: these tests move one principal's sessions, one after another, between
            // the workers (isolated, an idle principal's next session goes back to its own).
            extra_workers_toml: format!(
                "isolation = \"shared\"\n[workers.ducklake]\ncatalog = \"127.0.0.1:{port}\"\ncatalog_token_file = \"{token}\"\ndata_path = \"{data_path}\"\n{extra_lake_toml}",
                port = catalog.plain.port(),
                token = shared.path().join("catalog-token").display(),
            ),
            ..Default::default()
        });
        Stack {
            gateway,
            catalog,
            shared,
        }
    }
}

pub(crate) fn data_dir(shared: &Path) -> PathBuf {
    shared.join("data")
}

pub(crate) fn start_catalog(shared: &Path, token: &str, port: Option<u16>) -> Gateway {
    start_catalog_with(shared, token, port, "")
}

/// `start_catalog` with more `[catalog]` keys.
pub(crate) fn start_catalog_with(
    shared: &Path,
    token: &str,
    port: Option<u16>,
    extra_catalog_toml: &str,
) -> Gateway {
    let mut args = Vec::new();
    if let Some(port) = port {
        args = vec!["--plain-listen".into(), format!("127.0.0.1:{port}")];
    }
    Gateway::start_with(GatewayOptions {
        workers: 1,
        subcommand: "catalog",
        token: Some(token.to_string()),
        extra_toml: format!(
            "[catalog]\nfile = \"{}\"\n{extra_catalog_toml}\n",
            shared.join("catalog.duckdb").display()
        ),
        args,
        ..Default::default()
    })
}

/// The worker id and the `events` count and sum seen by a new session.
fn census(gw: &Gateway) -> (String, String) {
    let out = gw.cli_ok(
        "FROM r.query('SELECT quackgate.worker_id()');\n\
         FROM r.query('SELECT count(*), sum(id) FROM events');\n",
    );
    assert_eq!(out.len(), 2, "{out:?}");
    (out[0].clone(), out[1].clone())
}

/// Runs `census` until it lands on a worker other than `not`.
fn census_elsewhere(gw: &Gateway, not: &str) -> (String, String) {
    for _ in 0..8 {
        let (worker, rows) = census(gw);
        if worker != not {
            return (worker, rows);
        }
    }
    panic!("every session landed on {not}");
}

fn parquet_files(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            n += parquet_files(&path);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            n += 1;
        }
    }
    n
}

#[test]
fn sessions_on_different_workers_share_one_lake() {
    let stack = Stack::start(2);
    let gw = &stack.gateway;
    let writer = gw.cli_ok(
        "FROM r.query('SELECT quackgate.worker_id()');\n\
         CREATE TABLE r.events (id BIGINT, v VARCHAR);\n\
         INSERT INTO r.events SELECT range, 'v' || range FROM range(100000);\n",
    );
    let (reader, rows) = census_elsewhere(gw, &writer[0]);
    assert_ne!(reader, writer[0]);
    assert_eq!(rows, "100000,4999950000");
    assert!(
        parquet_files(&data_dir(stack.shared.path())) >= 1,
        "no Parquet file under the data path"
    );

    // A rolled-back transaction leaves nothing; a committed one is seen from the other worker.
    let out = gw.cli_ok(
        "FROM r.query('SELECT quackgate.worker_id()');\n\
         FROM r.query('BEGIN TRANSACTION');\n\
         FROM r.query('INSERT INTO events VALUES (-1, ''rolled back'')');\n\
         FROM r.query('ROLLBACK');\n\
         FROM r.query('BEGIN TRANSACTION');\n\
         FROM r.query('INSERT INTO events VALUES (100000, ''committed'')');\n\
         FROM r.query('COMMIT');\n",
    );
    let (_, rows) = census_elsewhere(gw, &out[0]);
    assert_eq!(
        rows, "100001,5000050000",
        "the rollback leaked or the commit is missing"
    );

    // Two writers at once, on disjoint keys: every row lands exactly once.
    let toolchain = Toolchain::get();
    let outs: Vec<_> = std::thread::scope(|s| {
        [1_000_000u64, 2_000_000]
            .map(|base| {
                let sql = format!(
                    ".output /dev/null\n{}.output\nFROM r.query('SELECT quackgate.worker_id()');\nINSERT INTO r.events SELECT range, 'w' FROM range({base}, {base} + 50000);\n",
                    gw.attach_sql(&gw.token)
                );
                let toolchain = &toolchain;
                s.spawn(move || run_cli(toolchain, &sql))
            })
            .map(|h| h.join().unwrap())
            .to_vec()
    });
    let mut writers = BTreeSet::new();
    for out in &outs {
        assert!(
            out.status.success(),
            "writer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        writers.insert(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert_eq!(
        writers.len(),
        2,
        "both writers ran on the same worker: {writers:?}"
    );
    let (_, rows) = census(gw);
    let expected_sum: u64 = 4_999_950_000
        + 100_000
        + (1_000_000..1_050_000).sum::<u64>()
        + (2_000_000..2_050_000).sum::<u64>();
    assert_eq!(rows, format!("200001,{expected_sum}"));
}

#[test]
fn the_catalog_refuses_the_public_token() {
    let stack = Stack::start(1);
    let port = stack.catalog.plain.port();
    let sql = format!(
        "SET extension_directory='{ext}';\nLOAD quack;\nCREATE SECRET (TYPE quack, TOKEN '{token}', SCOPE 'quack:127.0.0.1:{port}');\nATTACH 'quack:127.0.0.1:{port}' AS c;\nFROM c.query('SELECT 1');\n",
        ext = stack.gateway.toolchain.ext_dir().display(),
        token = stack.gateway.token,
    );
    let out = run_cli(&stack.gateway.toolchain, &sql);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Authentication failed"), "{stderr}");
}

#[test]
fn committed_rows_survive_a_worker_kill_and_a_catalog_restart() {
    let mut stack = Stack::start(1);
    stack.gateway.cli_ok(
        "CREATE TABLE r.events (id BIGINT, v VARCHAR);\n\
         INSERT INTO r.events SELECT range, 'v' FROM range(1000);\n",
    );
    stack.gateway.kill_worker();
    wait_until(
        "the worker to be restarted",
        Duration::from_secs(60),
        || stack.gateway.worker_pids().len() == 2 && stack.gateway.admin_get("/readyz").0 == 200,
    );
    assert_eq!(census(&stack.gateway).1, "1000,499500");

    // The catalog goes away: the worker notices, the gateway turns not-ready, and clients get
    // a clear error instead of a hang.
    let port = stack.catalog.plain.port();
    stack.catalog.signal("TERM");
    let status = wait_for_exit(&mut stack.catalog.child, Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(0),
        "catalog log:\n{}",
        stack.catalog.log()
    );
    wait_until(
        "the gateway to turn not-ready",
        Duration::from_secs(60),
        || stack.gateway.admin_get("/readyz").0 == 503,
    );
    let out = stack
        .gateway
        .cli("FROM r.query('SELECT count(*) FROM events');");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no DuckDB worker is ready"), "{stderr}");
    assert!(
        stack.gateway.log().contains("catalog lost"),
        "{}",
        stack.gateway.log()
    );

    // The catalog comes back on its port: the worker re-attaches with no gateway restart.
    stack.catalog = start_catalog(
        stack.shared.path(),
        &std::fs::read_to_string(stack.shared.path().join("catalog-token")).unwrap(),
        Some(port),
    );
    wait_until(
        "the gateway to be ready again",
        Duration::from_secs(90),
        || stack.gateway.admin_get("/readyz").0 == 200,
    );
    assert_eq!(census(&stack.gateway).1, "1000,499500");
}

#[test]
fn a_second_catalog_on_the_same_file_refuses_to_start() {
    let stack = Stack::start(1);
    let dir = tempfile::tempdir().unwrap();
    let (config, _, _) = crate::support::write_config(
        dir.path(),
        &GatewayOptions {
            workers: 1,
            extra_toml: format!(
                "[catalog]\nfile = \"{}\"\n",
                stack.shared.path().join("catalog.duckdb").display()
            ),
            ..Default::default()
        },
        &Toolchain::get(),
    );
    let (mut child, log) = crate::support::spawn_role("catalog", &config, None, &[]);
    let status = wait_for_exit(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1));
    wait_until("the reason in the log", Duration::from_secs(5), || {
        log.lock().unwrap().contains("Conflicting lock")
    });
}

/// Azurite, the Azure Storage emulator, serving blobs in memory on an ephemeral loopback port.
pub(crate) struct Azurite {
    child: std::process::Child,
    port: u16,
}

/// Azurite's documented development account.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Azurite {
    pub(crate) fn start(toolchain: &Toolchain) -> Azurite {
        use std::io::{BufRead, BufReader};
        let bin = toolchain
            .root
            .join("azurite/node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/fetch-duckdb --with-azurite",
            bin.display()
        );
        let mut child = Command::new(bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--inMemoryPersistence",
                "--silent",
                "--disableTelemetry",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting azurite");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listens on http://127.0.0.1:").nth(1) {
                    let _ = tx.send(rest.trim().parse::<u16>().ok());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .flatten()
            .expect("azurite did not report its port");
        Azurite { child, port }
    }

    pub(crate) fn connection_string(&self) -> String {
        Azurite::connection_string_via(self.port)
    }

    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The connection string for reaching Azurite through `port` (a [`crate::support::gate::Gate`]).
    pub(crate) fn connection_string_via(port: u16) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )
    }

    /// Creates a container with the Blob REST API (SharedKey), as an operator would beforehand.
    /// A connection string with a service SAS that may only read and list `container`.
    pub(crate) fn read_only_connection_string(&self, container: &str) -> String {
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let b64 = base64::engine::general_purpose::STANDARD;
        let (version, permissions, expiry) = ("2021-08-06", "rl", "2099-01-01T00:00:00Z");
        // The service SAS string-to-sign of version 2020-12-06 and later.
        let to_sign = [
            permissions,
            "",
            expiry,
            &format!("/blob/{AZURITE_ACCOUNT}/{container}"),
            "",
            "",
            "",
            version,
            "c",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .join("\n");
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&b64.decode(AZURITE_KEY).unwrap()).unwrap();
        mac.update(to_sign.as_bytes());
        let sig = b64.encode(mac.finalize().into_bytes());
        let escape = |s: &str| {
            s.replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
                .replace(':', "%3A")
        };
        format!(
            "BlobEndpoint=http://127.0.0.1:{}/{AZURITE_ACCOUNT};SharedAccessSignature=sv={version}&sr=c&sp={permissions}&se={}&sig={}",
            self.port,
            escape(expiry),
            escape(&sig)
        )
    }

    pub(crate) fn create_container(&self, toolchain: &Toolchain, name: &str) {
        let script = format!(
            r#"
import base64, hashlib, hmac, urllib.request
from email.utils import formatdate
a, k, path = "{AZURITE_ACCOUNT}", "{AZURITE_KEY}", "/{AZURITE_ACCOUNT}/{name}"
d, v = formatdate(usegmt=True), "2021-08-06"
sts = "PUT\n" + "\n" * 11 + f"x-ms-date:{{d}}\nx-ms-version:{{v}}\n/{{a}}{{path}}\nrestype:container"
sig = base64.b64encode(hmac.new(base64.b64decode(k), sts.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"http://127.0.0.1:{port}{{path}}?restype=container", method="PUT", data=None,
      headers={{"x-ms-date": d, "x-ms-version": v, "Authorization": f"SharedKey {{a}}:{{sig}}"}})
print(urllib.request.urlopen(req).status)
"#,
            port = self.port
        );
        let out = crate::support::run_python(toolchain, &script, &[]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "201",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn lake_data_goes_to_azure_blob_storage() {
    let toolchain = Toolchain::get();
    let azurite = Azurite::start(&toolchain);
    azurite.create_container(&toolchain, "lakehouse");
    let cs = azurite.connection_string();
    let stack = Stack::start_with(2, |shared| {
        let file = shared.join("azure-connection-string");
        std::fs::write(&file, &cs).unwrap();
        (
            "az://lakehouse/data/".to_string(),
            format!(
                "[workers.ducklake.azure]\nconnection_string_file = \"{}\"\n",
                file.display()
            ),
        )
    });
    let gw = &stack.gateway;
    let writer = gw.cli_ok(
        "FROM r.query('SELECT quackgate.worker_id()');\n\
         CREATE TABLE r.events (id BIGINT, v VARCHAR);\n\
         INSERT INTO r.events SELECT range, 'v' FROM range(10000);\n",
    );
    let (_, rows) = census_elsewhere(gw, &writer[0]);
    assert_eq!(rows, "10000,49995000");

    // The Parquet files are blobs under the prefix, listed here with DuckDB's azure extension.
    let sql = format!(
        "SET extension_directory='{ext}';\nSET autoinstall_known_extensions=false;\nLOAD azure;\n\
         .output /dev/null\nCREATE SECRET (TYPE azure, CONNECTION_STRING '{cs}');\n.output\n\
         SELECT count(*) FROM glob('az://lakehouse/data/**/*.parquet');\n",
        ext = toolchain.ext_dir().display(),
    );
    let out = run_cli(&toolchain, &sql);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blobs: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(blobs >= 1, "no Parquet blob under az://lakehouse/data/");
    assert_eq!(
        parquet_files(stack.shared.path()),
        0,
        "Parquet files were written locally"
    );
}
