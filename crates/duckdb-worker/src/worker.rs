//! The code that runs inside a worker process: open DuckDB, load the Quack extension from a
//! local folder, serve on loopback, and live exactly as long as the supervisor does.

use std::io::{BufRead, Write};
use std::path::Path;

use duckdb::{Config, Connection};

use crate::client_hook;
use crate::ducklake;
use crate::error::WorkerError;
use crate::file_access;
use crate::maintenance;
use crate::private_dir::PrivateDir;
use crate::sandbox;
use crate::session_roles;
use crate::session_settings::SESSION_SETTINGS;
use crate::spec::{
    AzureCredentials, WorkerSpec, WorkerStatus, EXIT_SERVER_STOPPED, EXTENSIONS_OPTIONAL,
    EXTENSIONS_REQUIRED, LAKE_COMMIT_EXTENSIONS, MAINTAIN_LINE,
};
use crate::sql::sql_literal;

/// How often a worker checks that its own Quack server still runs.
const SERVER_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a worker: reads its spec from stdin, serves, and returns when stdin closes.
///
/// # Errors
/// Any failure before serving is also reported on stdout as a `QUACKGATE-WORKER FAILED` line,
/// so the supervisor can tell the operator exactly what is missing.
pub fn run_worker() -> Result<(), WorkerError> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let spec = match lines.next() {
        Some(Ok(line)) => {
            serde_json::from_str::<WorkerSpec>(&line).map_err(|e| WorkerError::Spec(e.to_string()))
        }
        Some(Err(e)) => Err(WorkerError::Spec(e.to_string())),
        None => Err(WorkerError::Spec(
            "stdin closed before the spec arrived".into(),
        )),
    };
    // The catalog's maintenance thread starts before the worker confines its file access, so
    // the maintenance instance it opens may write the lake's data folder, which the catalog
    // learns only from the lake's metadata. It runs only the catalog's own statements; client
    // SQL runs in the serving instance, whose threads all start after the confinement.
    let mut maintenance_start = None;
    let maintain = match &spec {
        Ok(spec) => spec.maintenance.map(|schedule| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (start_tx, start_rx) = std::sync::mpsc::channel::<Connection>();
            maintenance_start = Some(start_tx);
            let spec = spec.clone();
            std::thread::spawn(move || {
                // Gone unsent: the worker did not start.
                let Ok(local) = start_rx.recv() else { return };
                let config = || maintenance_config(&spec);
                maintenance::run(schedule, local, config, spec.port, &spec.token, rx)
            });
            tx
        }),
        Err(_) => None,
    };
    let served = spec.and_then(|spec| {
        // DuckDB errors may quote the statement, which names a token: scrub both.
        serve(&spec).map_err(|e| WorkerError::Start(scrub(&e.to_string(), &spec)))
    });
    let (conn, private) = match served {
        Ok(Served {
            conn,
            private,
            port,
            watch,
            server_watch,
            maintenance,
        }) => {
            if let Some((probe_conn, probe, catalog)) = watch {
                std::thread::spawn(move || ducklake::watch_catalog(probe_conn, probe, catalog));
            }
            std::thread::spawn(move || watch_server(server_watch, port));
            report(&WorkerStatus::Ready { port })?;
            if let (Some(local), Some(start)) = (maintenance, maintenance_start) {
                // The thread waits for nothing else; it cannot have ended.
                let _ = start.send(local);
            }
            (conn, private)
        }
        Err(e) => {
            report(&WorkerStatus::Failed(e.to_string()))?;
            return Err(e);
        }
    };
    // Serve until the supervisor closes our stdin, on purpose or by dying.
    for line in lines {
        match line {
            Err(_) => break,
            Ok(line) if line.trim() == MAINTAIN_LINE => {
                if let Some(tx) = &maintain {
                    // A maintenance thread that has ended takes no more requests.
                    let _ = tx.send(());
                }
            }
            Ok(_) => {}
        }
    }
    drop(conn);
    drop(private);
    Ok(())
}

fn scrub(message: &str, spec: &WorkerSpec) -> String {
    let mut message = message.replace(&spec.token, "<token>");
    if let Some(token) = &spec.read_only_token {
        message = message.replace(token, "<read-only token>");
    }
    if let Some(lake) = &spec.ducklake {
        message = message.replace(&lake.catalog_token, "<catalog token>");
        if let Some(AzureCredentials::ConnectionString(cs)) = &lake.azure {
            message = message.replace(cs, "<azure connection string>");
        }
    }
    message
}

fn report(status: &WorkerStatus) -> Result<(), WorkerError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", status.to_line())?;
    out.flush()?;
    Ok(())
}

/// Opens the database and starts `quack_serve`. The returned connection must stay alive:
/// dropping the last connection stops the server.
/// A serving worker: the connection that keeps the server alive, its port, and, with a
/// lake, what the catalog watch needs.
struct Served {
    conn: Connection,
    /// Kept until the worker ends: the worker spills into it.
    private: PrivateDir,
    port: u16,
    watch: Option<(Connection, String, String)>,
    server_watch: Connection,
    /// The catalog's: a connection to its database, for the maintenance counts.
    maintenance: Option<Connection>,
}

/// The maintenance instance's DuckDB configuration: the worker's extensions and threads.
fn maintenance_config(spec: &WorkerSpec) -> Result<Config, WorkerError> {
    let step = |step| move |source| WorkerError::DuckDb { step, source };
    let mut config = Config::default()
        .with("extension_directory", spec.extension_dir.to_string_lossy())
        .and_then(|c| c.with("autoinstall_known_extensions", "false"))
        .map_err(step("configuring the maintenance database"))?;
    if let Some(threads) = spec.threads {
        config = config
            .with("threads", threads.to_string())
            .map_err(step("setting threads"))?;
    }
    Ok(config)
}

/// Exits when this worker's Quack server is gone. Client SQL can call `quack_stop` on it (no
/// DuckDB setting forbids that); exiting lets the supervisor start a fresh worker instead of
/// leaving a process that serves nothing.
fn watch_server(conn: Connection, port: u16) -> ! {
    // Named in the system catalog: a lake macro of the same name must not answer instead.
    let sql = "SELECT count(*) FROM system.main.quack_server_list() WHERE port = ?";
    loop {
        std::thread::sleep(SERVER_WATCH_INTERVAL);
        match conn.query_row(sql, [port], |row| row.get::<_, i64>(0)) {
            Ok(0) => {
                eprintln!(
                    "quackgate worker: its Quack server on port {port} was stopped (quack_stop); exiting so the supervisor starts a new worker"
                );
                crate::exit::exit_now(EXIT_SERVER_STOPPED);
            }
            Ok(_) => {}
            Err(e) => eprintln!("quackgate worker: checking the Quack server: {e}"),
        }
    }
}

/// Confines this process's file access to what the worker needs. A read-only worker does not
/// start without full enforcement; a read-write one runs on with a warning where the kernel
/// enforces less, as it was before confinement existed.
fn confine(spec: &WorkerSpec, private: &PrivateDir) -> Result<(), WorkerError> {
    let rules = file_access::rules(spec, private.path());
    // A folder that does not exist yet gets no rule, and DuckDB could then never create it.
    let mut made = spec
        .database
        .iter()
        .filter_map(|db| db.parent())
        .map(Path::to_path_buf)
        .collect::<Vec<_>>();
    if let Some(folder) = spec
        .ducklake
        .as_ref()
        .and_then(|l| file_access::local_data_folder(&l.data_path))
    {
        made.push(folder);
    }
    for folder in made.iter().filter(|f| !f.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|source| WorkerError::Io {
            what: "creating the worker's data folder",
            source,
        })?;
    }
    match confinement_verdict(sandbox::confine_files(&rules), spec) {
        Ok(None) => Ok(()),
        Ok(Some(warning)) => {
            eprintln!("quackgate worker: {warning}");
            Ok(())
        }
        Err(refusal) => Err(WorkerError::Start(refusal)),
    }
}

/// Whether a worker serves after confining its files: `Ok(None)` fully confined,
/// `Ok(Some(warning))` unconfined with the risk accepted, `Err` the reason it may not start.
fn confinement_verdict(
    confined: Result<sandbox::Enforcement, String>,
    spec: &WorkerSpec,
) -> Result<Option<String>, String> {
    let why = match confined {
        Ok(sandbox::Enforcement::Full) => return Ok(None),
        Ok(sandbox::Enforcement::Partial(why) | sandbox::Enforcement::None(why)) | Err(why) => why,
    };
    if spec.read_only {
        Err(format!(
            "a read-only worker confines its file access with Landlock and cannot start without it: {why}"
        ))
    } else if spec.accept_unconfined {
        Ok(Some(format!(
            "{why}; client SQL on this worker is not confined to the files it needs (workers.accept_unconfined_risk)"
        )))
    } else {
        Err(format!(
            "a worker confines its file access with Landlock and does not start without it: {why}; without it, one DuckDB escape reads the gateway's secrets. To run unconfined anyway, set workers.accept_unconfined_risk = true"
        ))
    }
}

fn serve(spec: &WorkerSpec) -> Result<Served, WorkerError> {
    let lake_extensions = match &spec.ducklake {
        Some(lake) => ducklake::extensions(lake),
        None if spec.lake_commits => LAKE_COMMIT_EXTENSIONS,
        None => &[],
    };
    for name in EXTENSIONS_REQUIRED.iter().chain(lake_extensions) {
        let path = spec.extension_path(name);
        if !path.is_file() {
            return Err(WorkerError::MissingExtension {
                name: (*name).to_string(),
                path,
            });
        }
    }
    let step = |step| move |source| WorkerError::DuckDb { step, source };
    let private = PrivateDir::create(&spec.worker_id).map_err(|source| WorkerError::Io {
        what: "creating the worker's private folder",
        source,
    })?;
    // Before DuckDB starts any thread, so that all of them inherit it.
    confine(spec, &private)?;
    let spill = private.subdir("tmp").map_err(|source| WorkerError::Io {
        what: "creating the spill folder",
        source,
    })?;
    let config = || -> Result<Config, WorkerError> {
        let mut config = Config::default()
            .with("extension_directory", spec.extension_dir.to_string_lossy())
            .and_then(|c| c.with("autoinstall_known_extensions", "false"))
            .and_then(|c| c.with("autoload_known_extensions", "true"))
            .map_err(step("configuring DuckDB"))?;
        if let Some(threads) = spec.threads {
            config = config
                .with("threads", threads.to_string())
                .map_err(step("setting threads"))?;
        }
        if let Some(limit) = &spec.memory_limit {
            config = config
                .with("memory_limit", limit)
                .map_err(step("setting memory_limit"))?;
        }
        // Spilling goes where the worker may write, not to DuckDB's default `.tmp` folder.
        if spec.database.is_none() {
            config = config
                .with("temp_directory", spill.to_string_lossy())
                .map_err(step("setting temp_directory"))?;
        }
        Ok(config)
    };
    let conn = match (&spec.ducklake, &spec.database) {
        (Some(lake), _) => ducklake::open(&private, lake, spec.read_only, config)?,
        (None, Some(path)) => {
            Connection::open_with_flags(path, config()?).map_err(step("opening the database"))?
        }
        (None, None) => Connection::open_in_memory_with_flags(config()?)
            .map_err(step("opening the database"))?,
    };
    for name in EXTENSIONS_REQUIRED {
        conn.execute_batch(&format!("LOAD {name};"))
            .map_err(step("loading an extension"))?;
    }
    // Now, while external access is on: a client's SET TimeZone would need it autoloaded.
    for name in EXTENSIONS_OPTIONAL {
        if spec.extension_path(name).is_file() {
            conn.execute_batch(&format!("LOAD {name};"))
                .map_err(step("loading an optional extension"))?;
        }
    }
    if spec.lake_commits {
        // DuckLake clients see `ducklake_commit` here and send their data commits to it.
        for name in LAKE_COMMIT_EXTENSIONS {
            conn.execute_batch(&format!("LOAD {name};"))
                .map_err(step("loading DuckLake for the lake's commits"))?;
        }
    }
    // In a database of its own, so it is per worker even when the default database is a lake
    // that all workers share; READ_ONLY, so client SQL can neither rewrite worker_id() for the
    // worker's other sessions nor keep tables there that every session shares.
    let macro_body = format!("worker_id() AS {}", sql_literal(&spec.worker_id));
    attach_read_only_identity(&conn, &private, &format!("CREATE MACRO {macro_body};"))?;
    if let Some(token) = &spec.read_only_token {
        session_roles::install(&conn, token).map_err(step("installing the session role hooks"))?;
    } else {
        client_hook::install(&conn, spec.external_access)
            .map_err(step("installing the client SQL hook"))?;
    }
    if let Some(chunks) = spec.fetch_batch_chunks {
        // Each FETCH of a DuckDB 1.5 client is a new TCP (and TLS) connection, so fewer,
        // larger answers make large results much faster (bench/RESULTS.md).
        conn.execute_batch(&format!("SET GLOBAL quack_fetch_batch_chunks = {chunks};"))
            .map_err(step("setting quack_fetch_batch_chunks"))?;
    }
    for sql in &spec.init_sql {
        conn.execute_batch(sql)
            .map_err(step("running workers.init_sql"))?;
    }
    let uri = format!("quack:127.0.0.1:{}", spec.port);
    conn.query_row(
        &format!(
            "SELECT listen_uri FROM system.main.quack_serve({}, token => {})",
            sql_literal(&uri),
            sql_literal(&spec.token)
        ),
        [],
        |row| row.get::<_, String>(0),
    )
    .map_err(step("starting quack_serve"))?;
    if !spec.external_access {
        // Client SQL runs as this process's user: without this it could read the gateway's
        // TLS key and id secret with read_text(), write files with COPY, or retune the worker.
        // The lake's own data folder stays reachable.
        let allowed = spec
            .ducklake
            .as_ref()
            .map(ducklake::allowed_directories)
            .unwrap_or_default()
            .iter()
            .map(|d| sql_literal(d))
            .collect::<Vec<_>>()
            .join(", ");
        // The catalog (the worker that checks its sessions' SQL) keeps every setting locked:
        // its clients are the nodes' workers, and a global setting would reach its hooks.
        let settings = if spec.read_only_token.is_some() || spec.lake_commits {
            String::new()
        } else {
            SESSION_SETTINGS
                .iter()
                .map(|s| sql_literal(s))
                .collect::<Vec<_>>()
                .join(", ")
        };
        conn.execute_batch(&format!(
            "SET allowed_directories = [{allowed}]; SET allowed_configs = [{settings}]; \
             SET enable_external_access = false; SET lock_configuration = true;"
        ))
        .map_err(step("locking down the worker"))?;
    }
    // A read-only worker must not let a client open a server beside it; a read-write one
    // should not either, but runs on (with a warning) where the kernel has no seccomp.
    if let Err(e) = sandbox::deny_listen() {
        if spec.read_only {
            return Err(WorkerError::Start(format!(
                "a read-only worker needs seccomp to stop client SQL from calling quack_serve: {e}"
            )));
        }
        eprintln!("quackgate worker: {e}; client SQL can call quack_serve on this worker");
    }
    let server_watch = conn
        .try_clone()
        .map_err(step("opening the server watch connection"))?;
    let watch = match &spec.ducklake {
        Some(lake) => Some((
            conn.try_clone()
                .map_err(step("opening the catalog probe connection"))?,
            ducklake::catalog_probe(&conn)?,
            lake.catalog.clone(),
        )),
        None => None,
    };
    let maintenance = match spec.maintenance {
        Some(_) => Some(
            conn.try_clone()
                .map_err(step("opening the maintenance counts connection"))?,
        ),
        None => None,
    };
    Ok(Served {
        conn,
        private,
        port: spec.port,
        watch,
        server_watch,
        maintenance,
    })
}

/// A read-only DuckDB instance cannot hold a writable in-memory database, and a writable one
/// would be a place a read-only session could change. So the identity macro goes into a small
/// database file made by a separate instance, attached READ_ONLY, and unlinked at once (the
/// open file stays readable).
fn attach_read_only_identity(
    conn: &Connection,
    private: &PrivateDir,
    macro_sql: &str,
) -> Result<(), WorkerError> {
    let io = |what| move |source| WorkerError::Io { what, source };
    let dir = private
        .subdir("identity")
        .map_err(io("creating the identity folder"))?;
    let path = dir.join("quackgate.duckdb");
    let result = (|| {
        let step = |step| move |source| WorkerError::DuckDb { step, source };
        Connection::open(&path)
            .and_then(|meta| meta.execute_batch(macro_sql))
            .map_err(step("writing quackgate.worker_id()"))?;
        conn.execute_batch(&format!(
            "ATTACH {} AS quackgate (READ_ONLY);",
            sql_literal(&path.to_string_lossy())
        ))
        .map_err(step("attaching quackgate.worker_id()"))
    })();
    std::fs::remove_dir_all(&dir).map_err(io("removing the identity folder"))?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox::Enforcement;

    fn spec(read_only: bool, accept_unconfined: bool) -> WorkerSpec {
        serde_json::from_value(serde_json::json!({
            "worker_id": "n0.w0", "port": 1, "token": "t", "extension_dir": "/ext",
            "database": null, "threads": null, "memory_limit": null, "init_sql": [],
            "external_access": false, "ducklake": null,
            "read_only": read_only, "accept_unconfined": accept_unconfined,
        }))
        .unwrap()
    }

    #[test]
    fn a_worker_the_kernel_cannot_confine_serves_only_read_write_and_with_the_risk_accepted() {
        let partial = || Ok(Enforcement::Partial("ABI v2".into()));
        let none = || Ok(Enforcement::None("no landlock".into()));
        let failed = || Err("Landlock: refused".to_string());
        for kernel in [partial(), none(), failed()] {
            let refusal = confinement_verdict(kernel.clone(), &spec(false, false)).unwrap_err();
            assert!(
                refusal.contains("workers.accept_unconfined_risk = true"),
                "{refusal}"
            );
            let warning = confinement_verdict(kernel.clone(), &spec(false, true)).unwrap();
            assert!(warning.is_some_and(|w| w.contains("not confined")));
            for accepted in [false, true] {
                let refusal = confinement_verdict(kernel.clone(), &spec(true, accepted));
                assert!(refusal.unwrap_err().contains("a read-only worker"));
            }
        }
        for (read_only, accepted) in [(false, false), (false, true), (true, false)] {
            let verdict = confinement_verdict(Ok(Enforcement::Full), &spec(read_only, accepted));
            assert_eq!(verdict, Ok(None));
        }
    }
}
