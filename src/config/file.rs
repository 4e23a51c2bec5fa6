//! The shape of the config file, as serde reads it: every key optional where it has a
//! default, unknown keys refused so that a typo never goes unnoticed. Only `config` sees it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) gateway: FileGateway,
    pub(super) tls: Option<FileTls>,
    #[serde(default)]
    pub(super) auth: FileAuth,
    #[serde(default)]
    pub(super) workers: FileWorkers,
    #[serde(default)]
    pub(super) limits: FileLimits,
    #[serde(default)]
    pub(super) log: FileLog,
    pub(super) catalog: Option<FileCatalog>,
    pub(super) cluster: Option<FileCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCluster {
    pub(super) peer_listen: Option<String>,
    pub(super) peer_tls_cert: Option<PathBuf>,
    pub(super) peer_tls_key: Option<PathBuf>,
    pub(super) private_network: Option<bool>,
    #[serde(default)]
    pub(super) peers: BTreeMap<String, String>,
    pub(super) peers_file: Option<PathBuf>,
    pub(super) peers_dns: Option<String>,
    pub(super) peer_tls: Option<bool>,
    pub(super) peer_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCatalog {
    pub(super) file: PathBuf,
    pub(super) maintenance_interval_secs: Option<u64>,
    pub(super) snapshot_retention_secs: Option<u64>,
    pub(super) bind_sessions_to_address: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDuckLake {
    pub(super) catalog: String,
    pub(super) catalog_token_file: PathBuf,
    pub(super) read_only_catalog_token_file: Option<PathBuf>,
    pub(super) data_path: String,
    pub(super) catalog_ca_file: Option<PathBuf>,
    pub(super) azure: Option<FileAzure>,
    pub(super) commit_max_retries: Option<u64>,
    pub(super) commit_retry_wait_ms: Option<u64>,
    pub(super) commit_retry_backoff: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAzure {
    pub(super) connection_string_file: Option<PathBuf>,
    pub(super) read_only_connection_string_file: Option<PathBuf>,
    pub(super) account_name: Option<String>,
    pub(super) credential_chain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileGateway {
    pub(super) node_id: Option<String>,
    pub(super) listen: Option<String>,
    pub(super) plain_listen: Option<String>,
    pub(super) admin_listen: Option<String>,
    pub(super) health_listen: Option<String>,
    pub(super) id_secret_file: Option<PathBuf>,
    pub(super) previous_id_secret_files: Option<Vec<PathBuf>>,
    pub(super) max_connections: Option<usize>,
    pub(super) listen_backlog: Option<u32>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) max_prepare_bytes: Option<u64>,
    pub(super) tls_handshake_timeout_secs: Option<u64>,
    pub(super) shutdown_grace_secs: Option<u64>,
    pub(super) session_idle_secs: Option<u64>,
    pub(super) threads: Option<usize>,
    pub(super) trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileWorkers {
    pub(super) count: Option<usize>,
    pub(super) read_only_count: Option<usize>,
    pub(super) extension_dir: Option<PathBuf>,
    pub(super) database_dir: Option<PathBuf>,
    pub(super) threads: Option<u32>,
    pub(super) memory_limit: Option<String>,
    pub(super) init_sql: Option<Vec<String>>,
    pub(super) fetch_batch_chunks: Option<u64>,
    pub(super) external_access: Option<bool>,
    pub(super) accept_external_access_risk: Option<bool>,
    pub(super) accept_unconfined_risk: Option<bool>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) ducklake: Option<FileDuckLake>,
    pub(super) startup_timeout_secs: Option<u64>,
    pub(super) health_interval_ms: Option<u64>,
    pub(super) isolation: Option<String>,
    pub(super) max_per_principal: Option<usize>,
    pub(super) readable_dirs: Option<Vec<PathBuf>>,
    pub(super) writable_dirs: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLog {
    pub(super) filter: Option<String>,
    pub(super) format: Option<String>,
    pub(super) audit_file: Option<PathBuf>,
    pub(super) audit_sql: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuth {
    #[serde(default)]
    pub(super) static_tokens: Vec<FileStaticToken>,
    pub(super) static_tokens_file: Option<PathBuf>,
    pub(super) jwt: Option<FileJwt>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileJwt {
    pub(super) jwks_file: Option<PathBuf>,
    pub(super) jwks_url: Option<String>,
    pub(super) jwks_refresh_secs: Option<u64>,
    pub(super) jwks_stale_secs: Option<u64>,
    pub(super) jwks_ca_file: Option<PathBuf>,
    pub(super) issuer: String,
    pub(super) audience: String,
    pub(super) leeway_secs: Option<u64>,
    pub(super) role_claim: Option<String>,
    pub(super) session_expiry: Option<String>,
    pub(super) max_lifetime_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    pub(super) max_sessions: Option<usize>,
    pub(super) max_sessions_per_principal: Option<usize>,
    pub(super) max_connections_per_address: Option<usize>,
    pub(super) max_requests_per_principal: Option<usize>,
    pub(super) failed_auth_burst: Option<u32>,
    pub(super) failed_auth_window_secs: Option<u64>,
    pub(super) failed_auth_backoff_secs: Option<u64>,
    pub(super) failed_auth_backoff_max_secs: Option<u64>,
    pub(super) statement_timeout_secs: Option<u64>,
    pub(super) read_only_statement_timeout_secs: Option<u64>,
    pub(super) max_held_append_bytes: Option<u64>,
    pub(super) max_held_append_bytes_per_principal: Option<u64>,
    pub(super) append_memory_bytes: Option<u64>,
    pub(super) append_spill_dir: Option<PathBuf>,
    pub(super) max_spilled_append_bytes: Option<u64>,
    pub(super) max_spilled_append_bytes_per_principal: Option<u64>,
    pub(super) min_append_rate: Option<u64>,
    pub(super) append_rate_under_pressure: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileStaticToken {
    pub(super) name: String,
    pub(super) sha256: String,
    pub(super) role: Option<String>,
}
