//! `[workers]` and `[workers.ducklake]`: how many DuckDB workers run, what each opens, and
//! the credentials of the lake they share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quackgate_duckdb::{AzureCredentials, CommitRetry};

use crate::config::file::FileWorkers;
use crate::config::problems::Problems;
use crate::workers::config::{DuckLakeConfig, Isolation, WorkersConfig};

/// Default number of embedded DuckDB workers.
pub const DEFAULT_WORKER_COUNT: usize = 2;
/// More tries than this only hide a commit that can never succeed.
const MAX_COMMIT_RETRIES: u64 = 1_000;
/// Most workers one node may run.
pub const MAX_WORKER_COUNT: usize = 256;
/// DuckDB chunks per Quack answer when `workers.fetch_batch_chunks` is unset. Quack's own
/// default is 12; a 10M-row result through the gateway took 0.35 s instead of 0.70 over TLS
/// with 48 (bench/RESULTS.md), at up to 4x the memory per answer.
pub const DEFAULT_FETCH_BATCH_CHUNKS: u64 = 48;
/// Upper bound on `workers.fetch_batch_chunks`: 1,024 chunks is 2M rows in one answer.
pub const MAX_FETCH_BATCH_CHUNKS: u64 = 1024;
/// Default time a worker gets from spawn to serving.
pub const DEFAULT_WORKER_STARTUP_TIMEOUT_SECS: u64 = 60;
/// Default period of worker health probes.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 1_000;

pub(super) fn validate(
    w: FileWorkers,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    problems: &mut Problems,
) -> WorkersConfig {
    let count = w.count.unwrap_or(DEFAULT_WORKER_COUNT);
    if count == 0 || count > MAX_WORKER_COUNT {
        problems.push(format!(
            "workers.count: must be 1-{MAX_WORKER_COUNT}, got {count}"
        ));
    }
    let extension_dir = match w.extension_dir.map(resolve) {
        Some(dir) => {
            for name in quackgate_duckdb::EXTENSIONS_REQUIRED {
                let file = quackgate_duckdb::extension_path(&dir, name);
                if !file.is_file() {
                    problems.push(format!(
                        "workers.extension_dir: missing {}; run scripts/fetch-duckdb, or unzip the duckdb-extension-{name}==1.5.5 wheel from PyPI and copy its {name}.duckdb_extension there",
                        file.display()
                    ));
                }
            }
            dir
        }
        None => {
            problems.push(
                "workers.extension_dir: required (the folder scripts/fetch-duckdb prints as ext/)"
                    .into(),
            );
            PathBuf::new()
        }
    };
    if let Some(threads) = w.threads {
        problems.positive("workers.threads", u64::from(threads));
    }
    let fetch_batch_chunks = w.fetch_batch_chunks.unwrap_or(DEFAULT_FETCH_BATCH_CHUNKS);
    if !(1..=MAX_FETCH_BATCH_CHUNKS).contains(&fetch_batch_chunks) {
        problems.push(format!(
            "workers.fetch_batch_chunks: must be 1-{MAX_FETCH_BATCH_CHUNKS}, got {fetch_batch_chunks}"
        ));
    }
    let token = w
        .token_file
        .and_then(|path| problems.token_file("workers.token_file", &resolve(path)));
    let ducklake = w.ducklake.and_then(|lake| {
        let token = problems.token_file("workers.ducklake.catalog_token_file",
            &resolve(lake.catalog_token_file),
        )?;
        let read_only_catalog_token = lake.read_only_catalog_token_file.and_then(|path| {
            problems.token_file("workers.ducklake.read_only_catalog_token_file",
                &resolve(path),
            )
        });
        if lake.catalog.parse::<SocketAddr>().is_err() && !lake.catalog.contains(':') {
            problems.push(format!(
                "workers.ducklake.catalog: must be host:port of `quackgate catalog`, got {:?}",
                lake.catalog
            ));
        }
        let data_path = if lake.data_path.contains("://") {
            lake.data_path
        } else {
            let mut local = resolve(PathBuf::from(&lake.data_path)).display().to_string();
            if !local.ends_with('/') {
                local.push('/');
            }
            local
        };
        let on_azure = data_path.starts_with("az://") || data_path.starts_with("azure://");
        let mut read_only_azure = None;
        let azure = match lake.azure {
            None => {
                if on_azure {
                    problems.push(format!(
                        "workers.ducklake.azure: data_path {data_path:?} is on Azure Blob storage and needs [workers.ducklake.azure] credentials"
                    ));
                }
                None
            }
            Some(mut azure) => {
                read_only_azure = azure.read_only_connection_string_file.take().and_then(|file| {
                    problems.connection_string_file("workers.ducklake.azure.read_only_connection_string_file",
                        &resolve(file),
                    )
                });
                if !on_azure {
                    problems.push(format!(
                        "workers.ducklake.azure: set, but data_path {data_path:?} is not an az:// path"
                    ));
                }
                match (azure.connection_string_file, azure.account_name, azure.credential_chain) {
                    (Some(file), None, None) => problems.connection_string_file("workers.ducklake.azure.connection_string_file",
                        &resolve(file),
                    ),
                    (None, Some(account_name), chain) => Some(AzureCredentials::CredentialChain {
                        account_name,
                        chain: chain.unwrap_or_else(|| "managed_identity".into()),
                    }),
                    _ => {
                        problems.push(
                            "workers.ducklake.azure: set either connection_string_file, or account_name (with an optional credential_chain)".into(),
                        );
                        None
                    }
                }
            }
        };
        let defaults = CommitRetry::default();
        let commit_retry = CommitRetry {
            max_retries: lake.commit_max_retries.unwrap_or(defaults.max_retries),
            wait_ms: lake.commit_retry_wait_ms.unwrap_or(defaults.wait_ms),
            backoff: lake.commit_retry_backoff.unwrap_or(defaults.backoff),
        };
        if commit_retry.max_retries > MAX_COMMIT_RETRIES {
            problems.push(format!(
                "workers.ducklake.commit_max_retries: must be at most {MAX_COMMIT_RETRIES}, got {}",
                commit_retry.max_retries
            ));
        }
        if !(1.0..=4.0).contains(&commit_retry.backoff) {
            problems.push(format!(
                "workers.ducklake.commit_retry_backoff: must be 1.0-4.0, got {}",
                commit_retry.backoff
            ));
        }
        Some(DuckLakeConfig {
            commit_retry,
            catalog: lake.catalog,
            catalog_token: token,
            read_only_catalog_token,
            data_path,
            catalog_ca_file: lake.catalog_ca_file.map(resolve),
            azure,
            read_only_azure,
        })
    });
    if ducklake.is_some() && w.database_dir.is_some() {
        problems.push(
            "workers.database_dir: not used with [workers.ducklake], whose lake is every worker's database; remove one".into(),
        );
    }
    if let Some(lake) = &ducklake {
        let needed: &[&str] = if lake.azure.is_some() {
            &["parquet", "ducklake", "azure"]
        } else {
            &["parquet", "ducklake"]
        };
        for name in needed {
            let file = quackgate_duckdb::extension_path(&extension_dir, name);
            if !extension_dir.as_os_str().is_empty() && !file.is_file() {
                problems.push(format!(
                    "workers.extension_dir: DuckLake needs {}; run scripts/fetch-duckdb, or unzip the duckdb-extension-{name}==1.5.5 wheel from PyPI and copy its {name}.duckdb_extension there",
                    file.display()
                ));
            }
        }
    }
    let read_only_count = w.read_only_count.unwrap_or(0);
    if count + read_only_count > MAX_WORKER_COUNT {
        problems.push(format!(
            "workers.read_only_count: workers.count + workers.read_only_count must be at most {MAX_WORKER_COUNT}, got {}",
            count + read_only_count
        ));
    }
    if read_only_count > 0
        && ducklake
            .as_ref()
            .is_some_and(|l| l.read_only_catalog_token.is_none())
    {
        problems.push(
            "workers.ducklake.read_only_catalog_token_file: read-only workers need a read-only token of the catalog (a static token with role = \"read_only\" in the catalog's config), so that the catalog refuses writes that client SQL sends it through them".into(),
        );
    }
    if read_only_count > 0
        && ducklake
            .as_ref()
            .is_some_and(|l| l.azure.is_some() && l.read_only_azure.is_none())
    {
        problems.push(
            "workers.ducklake.azure.read_only_connection_string_file: read-only workers on Azure Blob storage need credentials that can only read (a SAS with read and list permissions): with the read-write ones, client SQL on them could write over the lake's files".into(),
        );
    }
    if read_only_count > 0 && ducklake.is_none() {
        problems.push(
            "workers.read_only_count: read-only workers open [workers.ducklake] READ_ONLY and need it; DuckDB cannot open one database file read-write and read-only in two processes, nor an in-memory database read-only".into(),
        );
    }
    let startup_timeout_secs = w
        .startup_timeout_secs
        .unwrap_or(DEFAULT_WORKER_STARTUP_TIMEOUT_SECS);
    problems.positive("workers.startup_timeout_secs", startup_timeout_secs);
    let health_interval_ms = w.health_interval_ms.unwrap_or(DEFAULT_HEALTH_INTERVAL_MS);
    problems.positive("workers.health_interval_ms", health_interval_ms);

    let external_access = w.external_access.unwrap_or(false);
    if external_access && w.accept_external_access_risk != Some(true) {
        problems.push(
            "workers.external_access = true lets every read-write client fetch and send to any URL the worker can reach, read and write the files the worker may touch (its lake, workers.readable_dirs and workers.writable_dirs; Landlock keeps the rest out of reach where the kernel enforces it), and change DuckDB's settings; add workers.accept_external_access_risk = true to run that way".into(),
        );
    }
    let isolation = match w.isolation.as_deref() {
        None => Isolation::default(),
        Some(name) => Isolation::parse(name).unwrap_or_else(|| {
            problems.push(format!(
                "workers.isolation: must be principal or shared, got {name:?}"
            ));
            Isolation::default()
        }),
    };
    if w.database_dir.is_some() && isolation == Isolation::Principal {
        problems.push(
            "workers.database_dir: a worker slot's database file outlives the principal it served, so with workers.isolation = \"principal\" (the default) the next principal on a freed slot would open the previous one's tables; use [workers.ducklake] or in-memory workers, or set workers.isolation = \"shared\" for a single principal".into(),
        );
    }
    if let Some(n) = w.max_per_principal {
        problems.positive("workers.max_per_principal", n as u64);
    }
    let mut dirs = |key: &str, dirs: Option<Vec<PathBuf>>| -> Vec<PathBuf> {
        let dirs: Vec<PathBuf> = dirs.unwrap_or_default().into_iter().map(resolve).collect();
        for dir in &dirs {
            // Landlock rules name existing folders; a missing one would silently grant nothing.
            if !dir.is_dir() {
                problems.push(format!("{key}: {} is not a folder", dir.display()));
            }
        }
        dirs
    };
    let readable_dirs = dirs("workers.readable_dirs", w.readable_dirs);
    let writable_dirs = dirs("workers.writable_dirs", w.writable_dirs);
    WorkersConfig {
        count,
        read_only_count,
        extension_dir,
        database_dir: w.database_dir.map(resolve),
        threads: w.threads,
        memory_limit: w.memory_limit,
        init_sql: w.init_sql.unwrap_or_default(),
        fetch_batch_chunks,
        external_access,
        accept_unconfined_risk: w.accept_unconfined_risk.unwrap_or(false),
        readable_dirs,
        writable_dirs,
        token,
        ducklake,
        database_file: None,
        lake_commits: false,
        maintenance: None,
        startup_timeout: Duration::from_secs(startup_timeout_secs),
        health_interval: Duration::from_millis(health_interval_ms),
        isolation,
        max_per_principal: w.max_per_principal,
    }
}

/// An edge's: no workers. A `[workers]` that asks for any is a mistake worth naming.
pub(super) fn none(w: FileWorkers, problems: &mut Problems) -> WorkersConfig {
    if w.count.is_some_and(|c| c > 0)
        || w.read_only_count.is_some_and(|c| c > 0)
        || w.ducklake.is_some()
        || w.isolation.is_some()
        || w.max_per_principal.is_some()
        || w.readable_dirs.is_some()
        || w.writable_dirs.is_some()
    {
        problems.push(
            "workers: an edge runs no workers (they run on the nodes it places sessions on); remove [workers]".into(),
        );
    }
    WorkersConfig {
        count: 0,
        read_only_count: 0,
        extension_dir: PathBuf::new(),
        database_dir: None,
        threads: None,
        memory_limit: None,
        init_sql: Vec::new(),
        fetch_batch_chunks: DEFAULT_FETCH_BATCH_CHUNKS,
        external_access: false,
        accept_unconfined_risk: false,
        readable_dirs: Vec::new(),
        writable_dirs: Vec::new(),
        token: None,
        ducklake: None,
        database_file: None,
        lake_commits: false,
        maintenance: None,
        startup_timeout: Duration::from_secs(DEFAULT_WORKER_STARTUP_TIMEOUT_SECS),
        health_interval: Duration::from_millis(DEFAULT_HEALTH_INTERVAL_MS),
        isolation: Isolation::Shared,
        max_per_principal: None,
    }
}
