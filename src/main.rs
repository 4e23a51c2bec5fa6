//! The `quackgate` binary: parses the command line and hands over to the library.
//!
//! Exit codes: 0 after a clean drain, 64 for a bad command line or config, 1 when the gateway
//! cannot start (bind, TLS, a worker), 78 when a worker cannot start inside its process.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use quackgate::config::Config;
use quackgate::role::Role;

const EXIT_CONFIG: u8 = 64;
const EXIT_STARTUP: u8 = 1;
#[cfg(feature = "worker")]
const EXIT_WORKER: u8 = 78;

#[derive(Parser)]
#[command(
    version,
    about = "A gateway for DuckDB's Quack protocol, with embedded DuckDB workers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `serve` and `catalog` take.
#[derive(clap::Args)]
struct RunArgs {
    /// The TOML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Override gateway.listen (HTTPS).
    #[arg(long)]
    listen: Option<String>,
    /// Override gateway.plain_listen (loopback HTTP).
    #[arg(long)]
    plain_listen: Option<String>,
    /// Override gateway.admin_listen.
    #[arg(long)]
    admin_listen: Option<String>,
}

/// What `token` takes. `--config` fills issuer, audience and role claim from `[auth.jwt]`.
#[derive(clap::Args)]
struct TokenArgs {
    /// PEM private key (RS256, ES256, EdDSA), or a file holding the HS256 secret.
    #[arg(long)]
    key: PathBuf,
    /// HS256, RS256, ES256 or EdDSA.
    #[arg(long, default_value = "ES256")]
    alg: String,
    /// The key's id in the JWKS.
    #[arg(long)]
    kid: Option<String>,
    /// The principal (`sub`).
    #[arg(long)]
    subject: String,
    /// read_write or read_only.
    #[arg(long)]
    role: String,
    /// Lifetime: 90s, 15m, 12h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// The gateway config whose [auth.jwt] names issuer, audience and role claim.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// `iss` (overrides the config).
    #[arg(long)]
    issuer: Option<String>,
    /// `aud` (overrides the config).
    #[arg(long)]
    audience: Option<String>,
    /// host:port for the printed ATTACH.
    #[arg(long, default_value = "127.0.0.1:8443")]
    host: String,
    /// CA certificate the client should trust, for the printed snippet.
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway and its workers.
    Serve(RunArgs),
    /// Run an edge: TLS, auth and limits for clients, placing each session on the least-loaded
    /// node of `[cluster]` and routing by its id. No workers; run as many as you like.
    Edge(RunArgs),
    /// Run a node: workers behind `cluster.peer_listen`, for sessions that edges place on it.
    /// No client listener.
    Node(RunArgs),
    /// Run the DuckLake catalog: one worker serving `[catalog] file` over Quack, behind the
    /// same TLS and token front as the gateway.
    Catalog(RunArgs),
    /// Check a config file and exit: 0 when valid, 64 with every problem listed otherwise.
    CheckConfig {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The subcommand it is for: serve, edge or node.
        #[arg(long, default_value = "serve")]
        role: String,
    },
    /// Print the SHA-256 of a token read from stdin, for auth.static_tokens[].sha256.
    HashToken,
    /// Make a local CA, certificate, token and config for trying quackgate on this machine.
    DevInit {
        /// Folder for the files.
        #[arg(long)]
        dir: PathBuf,
        /// DuckDB extension folder (scripts/fetch-duckdb prints it).
        #[arg(long)]
        extension_dir: PathBuf,
        /// HTTPS listen address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Number of workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Sign a JWT with a local key and print it, then the SQL a client runs to use it.
    Token(TokenArgs),
    /// Run one embedded DuckDB worker (started by `serve`; reads its spec on stdin). Only in
    /// builds with the `worker` feature (the default), the one part that links DuckDB.
    #[cfg(feature = "worker")]
    #[command(hide = true)]
    Worker,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => match load(Role::Gateway, args) {
            Ok(config) => serve(config),
            Err(code) => code,
        },
        Command::Edge(args) => match load(Role::Edge, args) {
            Ok(config) => serve(config),
            Err(code) => code,
        },
        Command::Node(args) => match load(Role::Node, args) {
            Ok(config) => serve(config),
            Err(code) => code,
        },
        Command::Catalog(args) => match load(Role::Gateway, args).and_then(|config| {
            config.into_catalog_role().map_err(|e| {
                eprintln!("quackgate: {e}");
                ExitCode::from(EXIT_CONFIG)
            })
        }) {
            Ok(config) => serve(config),
            Err(code) => code,
        },
        Command::CheckConfig { config, role } => match check_role(&role).and_then(|role| {
            Config::load_as(role, &config, std::env::vars()).map_err(|e| e.to_string())
        }) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("quackgate: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::HashToken => {
            let mut token = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut token) {
                eprintln!("quackgate: reading the token from stdin: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            println!(
                "{}",
                quackgate::auth::hash_token(token.trim_end_matches(['\r', '\n']))
            );
            ExitCode::SUCCESS
        }
        Command::DevInit {
            dir,
            extension_dir,
            listen,
            workers,
        } => match quackgate::dev_init::init(&dir, &extension_dir, &listen, workers) {
            Ok(stack) => {
                println!("config={}", stack.config.display());
                println!("catalog_config={}", stack.catalog_config.display());
                println!("ca={}", stack.tls.ca_cert.display());
                println!("jwt_key={}", stack.jwt_key.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("quackgate dev-init: {e}");
                ExitCode::from(EXIT_STARTUP)
            }
        },
        Command::Token(args) => token(args),
        #[cfg(feature = "worker")]
        Command::Worker => match quackgate_duckdb::run_worker() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("quackgate worker: {e}");
                ExitCode::from(EXIT_WORKER)
            }
        },
    }
}

fn token(args: TokenArgs) -> ExitCode {
    use quackgate::auth::{mint, Access};
    let fail = |message: String| {
        eprintln!("quackgate token: {message}");
        ExitCode::from(EXIT_CONFIG)
    };
    let jwt = match &args.config {
        Some(path) => match Config::load(path, std::env::vars()) {
            Ok(config) => config.jwt.map(|(jwt, _)| jwt),
            Err(e) => return fail(e.to_string()),
        },
        None => None,
    };
    let (Some(issuer), Some(audience)) = (
        args.issuer
            .or_else(|| jwt.as_ref().map(|j| j.issuer.clone())),
        args.audience
            .or_else(|| jwt.as_ref().map(|j| j.audience.clone())),
    ) else {
        return fail(
            "set --issuer and --audience, or --config of a gateway with [auth.jwt]".into(),
        );
    };
    let Some(access) = Access::parse(&args.role) else {
        return fail(format!(
            "--role must be read_write or read_only, got {:?}",
            args.role
        ));
    };
    let Some(ttl) = mint::parse_ttl(&args.ttl) else {
        return fail(format!(
            "--ttl must look like 90s, 15m, 12h or 7d, got {:?}",
            args.ttl
        ));
    };
    let algorithm = match mint::parse_algorithm(&args.alg) {
        Ok(alg) => alg,
        Err(e) => return fail(e.to_string()),
    };
    let role_claim = jwt.as_ref().map_or("role", |j| j.role_claim.as_str());
    let request = mint::TokenRequest {
        key_file: &args.key,
        algorithm,
        kid: args.kid.as_deref(),
        issuer: &issuer,
        audience: &audience,
        subject: &args.subject,
        access,
        role_claim,
        ttl,
    };
    match mint::mint(&request) {
        Ok((token, exp)) => {
            // DuckDB speaks plain HTTP to loopback names unless told otherwise.
            let loopback = ["localhost", "127.", "[::1]"]
                .iter()
                .any(|p| args.host.starts_with(p));
            let tls = if loopback { " (DISABLE_SSL false)" } else { "" };
            let mut text = format!(
                "{token}\n\n-- {} token for {:?}, valid for {} s (exp {exp}); in the DuckDB 1.5 CLI:\nLOAD quack;\n",
                access.as_str(),
                args.subject,
                ttl.as_secs()
            );
            if let Some(ca) = &args.ca {
                text.push_str(&format!("SET ca_cert_file = '{}';\n", ca.display()));
            }
            text.push_str(&format!(
                "CREATE SECRET (TYPE quack, TOKEN '{token}', SCOPE 'quack:{host}');\nATTACH 'quack:{host}' AS r{tls};\n",
                host = args.host
            ));
            // A reader that stops early (`| head -1`) is not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}

/// Loads the config with the listen-address flags applied as overrides.
fn check_role(name: &str) -> Result<Role, String> {
    match name {
        "serve" => Ok(Role::Gateway),
        "edge" => Ok(Role::Edge),
        "node" => Ok(Role::Node),
        other => Err(format!("--role must be serve, edge or node, got {other:?}")),
    }
}

fn load(role: Role, args: RunArgs) -> Result<Config, ExitCode> {
    let flags = [
        ("LISTEN", args.listen),
        ("PLAIN_LISTEN", args.plain_listen),
        ("ADMIN_LISTEN", args.admin_listen),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((format!("QUACKGATE__GATEWAY__{key}"), value?)));
    Config::load_as(role, &args.config, std::env::vars().chain(flags)).map_err(|e| {
        eprintln!("quackgate: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Runtime threads when the config names none: half the cores. The gateway shares its machine
/// with its DuckDB workers, which use every core for queries, and a relay thread carries
/// thousands of requests a second.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1))
}

fn serve(config: Config) -> ExitCode {
    if let Err(e) = quackgate::telemetry::init(
        &config.log_filter,
        config.log_format,
        config.audit_file.as_deref(),
    ) {
        eprintln!(
            "quackgate: log.audit_file {}: {e}",
            config
                .audit_file
                .as_deref()
                .map_or_else(String::new, |p| p.display().to_string())
        );
        return ExitCode::from(2);
    }
    // One thread needs no work stealing: a current-thread runtime spares the cross-thread
    // wakeups (on 2 cores, one thread cost 10-16% less CPU per request than two, and this
    // flavour about 4% less than a one-worker multi-thread runtime; bench/RESULTS.md).
    let mut builder = match config.threads.unwrap_or_else(default_threads) {
        1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("quackgate: starting the runtime: {e}");
            return ExitCode::from(EXIT_STARTUP);
        }
    };
    runtime.block_on(async {
        let shutdown = match quackgate::shutdown::on_signal() {
            Ok(token) => token,
            Err(e) => {
                eprintln!("quackgate: installing signal handlers: {e}");
                return ExitCode::from(EXIT_STARTUP);
            }
        };
        match quackgate::app::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "quackgate could not start");
                eprintln!("quackgate: {e}");
                ExitCode::from(EXIT_STARTUP)
            }
        }
    })
}
