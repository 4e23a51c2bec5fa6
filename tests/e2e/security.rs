//! Authentication and authorization through the gateway with the real DuckDB client: JWTs of
//! every supported algorithm and every way a token can be wrong, read-only principals on
//! read-only workers, key rotation, session expiry, and the limits.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::ducklake::data_dir;
use crate::support::{
    connection_request, https_attach_sql, python_attach, quack_post, random_hex, run_cli,
    wait_until, Gateway, GatewayOptions, Toolchain,
};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "quackgate-test";

/// Signing keys of every supported kind, and a JWKS with their public halves.
struct Keys {
    dir: tempfile::TempDir,
    jwks: PathBuf,
    /// The public JWK of every key.
    public: Vec<serde_json::Value>,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        // 48 bytes: HS256 keys under 32 bytes are refused.
        std::fs::write(p("hs.secret"), random_hex() + &random_hex()).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let rsa = p("rsa.pem").display().to_string();
        openssl(&["genrsa", "-traditional", "-out", &rsa, "2048"]);
        let rsa_pub = p("rsa-pub.pem").display().to_string();
        openssl(&["rsa", "-in", &rsa, "-pubout", "-out", &rsa_pub]);
        let modulus = openssl(&["rsa", "-in", &rsa, "-noout", "-modulus"]);
        let modulus = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
        let mut jwks = vec![
            serde_json::json!({"kty": "oct", "kid": "hs", "alg": "HS256",
                "k": b64(std::fs::read_to_string(p("hs.secret")).unwrap().as_bytes())}),
            serde_json::json!({"kty": "RSA", "kid": "rsa", "n": b64(&modulus), "e": "AQAB"}),
        ];
        for (name, alg) in [
            ("es", &rcgen::PKCS_ECDSA_P256_SHA256),
            ("ed", &rcgen::PKCS_ED25519),
        ] {
            let pair = rcgen::KeyPair::generate_for(alg).unwrap();
            std::fs::write(p(&format!("{name}.pem")), pair.serialize_pem()).unwrap();
            jwks.push(quackgate::dev_init::public_jwk(&pair, name).unwrap());
        }
        // A key the JWKS does not hold, for the wrong-signature case.
        let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(p("stranger.pem"), stranger.serialize_pem()).unwrap();
        let keys = Keys {
            jwks: p("jwks.json"),
            dir,
            public: jwks,
        };
        keys.write_jwks(&keys.public);
        keys
    }

    /// The public JWK of key `kid`.
    fn jwk(&self, kid: &str) -> serde_json::Value {
        self.public
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()
            .clone()
    }

    /// A JWKS document with only the keys `kids`.
    fn jwks_of(&self, kids: &[&str]) -> String {
        let keys: Vec<_> = kids.iter().map(|kid| self.jwk(kid)).collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_jwks(&self, keys: &[serde_json::Value]) {
        // Written aside and renamed, as an operator's tooling would, so no read sees half.
        let tmp = self.path("jwks.json.tmp");
        std::fs::write(&tmp, serde_json::json!({ "keys": keys }).to_string()).unwrap();
        std::fs::rename(tmp, &self.jwks).unwrap();
    }

    fn jwt_toml(&self, extra: &str) -> String {
        format!(
            "[auth.jwt]\njwks_file = \"{}\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{extra}\n",
            self.jwks.display()
        )
    }

    /// A token made by `quackgate token`, the way an operator makes one.
    fn cli_token(&self, key: &str, alg: &str, kid: &str, role: &str, ttl: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_quackgate"))
            .args(["token", "--key"])
            .arg(self.path(key))
            .args([
                "--alg",
                alg,
                "--kid",
                kid,
                "--subject",
                "alice",
                "--role",
                role,
            ])
            .args(["--ttl", ttl, "--issuer", ISSUER, "--audience", AUDIENCE])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.contains("CREATE SECRET (TYPE quack"), "{stdout}");
        stdout.lines().next().unwrap().to_string()
    }

    /// A token signed here, with any header and claims.
    fn signed(
        &self,
        alg: Algorithm,
        key: EncodingKey,
        kid: &str,
        claims: serde_json::Value,
    ) -> String {
        let header = Header {
            kid: Some(kid.into()),
            ..Header::new(alg)
        };
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    fn es_key(&self, name: &str) -> EncodingKey {
        EncodingKey::from_ec_pem(&std::fs::read(self.path(name)).unwrap()).unwrap()
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(role: &str) -> serde_json::Value {
    serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "role": role})
}

/// Attaches with `token` and runs `sql`; returns the CLI's stderr when it fails.
fn attach_error(gw: &Gateway, token: &str) -> Option<String> {
    let out = gw.cli_with_token(token, "FROM r.query('SELECT 42');");
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_bad_token_is_refused_with_a_clear_error_and_every_algorithm_is_accepted() {
    let keys = Keys::new();
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        // Many failures from one address on purpose: the backoff is tested elsewhere.
        extra_toml: format!(
            "{}[limits]\nfailed_auth_burst = 10000\n",
            keys.jwt_toml("max_lifetime_secs = 3600")
        ),
        ..Default::default()
    });

    for (key, alg, kid) in [
        ("hs.secret", "HS256", "hs"),
        ("rsa.pem", "RS256", "rsa"),
        ("es.pem", "ES256", "es"),
        ("ed.pem", "EdDSA", "ed"),
    ] {
        let token = keys.cli_token(key, alg, kid, "read_write", "10m");
        assert_eq!(
            gw.cli_with_token(&token, "FROM r.query('SELECT 42');")
                .stdout,
            b"42\n",
            "a valid {alg} token was refused: {:?}",
            attach_error(&gw, &token)
        );
    }
    assert_eq!(
        gw.cli_ok("FROM r.query('SELECT 42');"),
        vec!["42"],
        "static tokens keep working"
    );

    let es = |c: serde_json::Value| keys.signed(Algorithm::ES256, keys.es_key("es.pem"), "es", c);
    let with = |k: &str, v: serde_json::Value| {
        let mut c = claims("read_write");
        c[k] = v;
        c
    };
    let rsa_public = std::fs::read(keys.path("rsa-pub.pem")).unwrap();
    let good = es(claims("read_write"));
    let mut one_changed = gw.token.clone().into_bytes();
    let last = one_changed.len() - 1;
    one_changed[last] = if one_changed[last] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let payload = b64(claims("read_write").to_string().as_bytes());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            es(with("exp", (now() - 3600).into())),
            "token expired",
        ),
        (
            "not yet valid",
            es(with("nbf", (now() + 3600).into())),
            "not yet valid",
        ),
        (
            "wrong audience",
            es(with("aud", "someone-else".into())),
            "wrong token audience",
        ),
        (
            "wrong issuer",
            es(with("iss", "https://evil.test".into())),
            "wrong token issuer",
        ),
        (
            "unknown role",
            es(with("role", "admin".into())),
            "unknown role",
        ),
        (
            "unknown kid",
            keys.signed(
                Algorithm::ES256,
                keys.es_key("es.pem"),
                "nope",
                claims("read_write"),
            ),
            "unknown signing key",
        ),
        (
            "wrong signature",
            keys.signed(
                Algorithm::ES256,
                keys.es_key("stranger.pem"),
                "es",
                claims("read_write"),
            ),
            "invalid token signature",
        ),
        (
            "alg=none",
            format!(
                "{}.{payload}.",
                b64(br#"{"alg":"none","typ":"JWT","kid":"es"}"#)
            ),
            "algorithm not allowed",
        ),
        (
            "HS256 signed with the RSA public key",
            keys.signed(
                Algorithm::HS256,
                EncodingKey::from_secret(&rsa_public),
                "rsa",
                claims("read_write"),
            ),
            "algorithm not allowed",
        ),
        (
            "truncated",
            good[..good.len() - 12].to_string(),
            // A cut signature is either bad base64 (malformed) or fails to verify.
            "Authentication failed: ",
        ),
        ("garbage JWT", "eyJ%%%.garbage.x".into(), "malformed token"),
        (
            // CVE-2026-25537: jsonwebtoken 9 alone would treat this nbf as absent.
            "nbf as a string",
            es(with("nbf", (now() + 3600).to_string().into())),
            "malformed token",
        ),
        (
            "valid for longer than auth.jwt.max_lifetime_secs",
            es(with("exp", (now() + 7200).into())),
            "max_lifetime_secs",
        ),
        (
            "typ of another kind of token",
            jsonwebtoken::encode(
                &Header {
                    kid: Some("es".into()),
                    typ: Some("dpop+jwt".into()),
                    ..Header::new(Algorithm::ES256)
                },
                &claims("read_write"),
                &keys.es_key("es.pem"),
            )
            .unwrap(),
            "not a JWT (typ)",
        ),
        (
            "garbage",
            "not-a-token-at-all".into(),
            "Authentication failed",
        ),
        (
            "static token with one character changed",
            String::from_utf8(one_changed).unwrap(),
            "Authentication failed",
        ),
    ];
    for (case, token, expected) in &cases {
        let error =
            attach_error(&gw, token).unwrap_or_else(|| panic!("{case}: the token was accepted"));
        assert!(
            error.contains(expected),
            "{case}: expected {expected:?}, got: {error}"
        );
    }
    assert_eq!(
        gw.log().matches("quack request refused").count(),
        0,
        "refusals are logged at debug only"
    );
}

/// A catalog plus a gateway with one read-write and one read-only worker on one lake, a
/// read-only static token, and JWTs.
pub(crate) struct RoStack {
    pub(crate) gateway: Gateway,
    catalog: Gateway,
    _shared: tempfile::TempDir,
    /// A read-only principal's token.
    pub(crate) reader: String,
    keys: Keys,
}

fn ro_stack() -> RoStack {
    ro_stack_on(|shared| (data_dir(shared).display().to_string(), String::new()))
}

fn ro_stack_on(lake: impl FnOnce(&Path) -> (String, String)) -> RoStack {
    lake_stack(1, "", lake)
}

/// `lake(shared folder)` gives the data path and TOML appended to `[workers.ducklake]`;
/// `workers_toml` goes into `[workers]`.
pub(crate) fn lake_stack(
    read_only_count: usize,
    workers_toml: &str,
    lake: impl FnOnce(&Path) -> (String, String),
) -> RoStack {
    let shared = tempfile::tempdir().unwrap();
    let (data_path, extra_lake_toml) = lake(shared.path());
    let catalog_token = format!("cat-{}", random_hex());
    std::fs::write(shared.path().join("catalog-token"), &catalog_token).unwrap();
    // The catalog also takes a read-only token, which the read-only worker uses.
    let catalog_reader = format!("cat-ro-{}", random_hex());
    std::fs::write(shared.path().join("catalog-ro-token"), &catalog_reader).unwrap();
    let catalog = Gateway::start_with(GatewayOptions {
        workers: 1,
        subcommand: "catalog",
        token: Some(catalog_token),
        extra_toml: format!(
            "[[auth.static_tokens]]\nname = \"lake-readers\"\nsha256 = \"{}\"\nrole = \"read_only\"\n[catalog]\nfile = \"{}\"\n",
            quackgate::auth::hash_token(&catalog_reader),
            shared.path().join("catalog.duckdb").display()
        ),
        ..Default::default()
    });
    let keys = Keys::new();
    let reader = format!("reader-{}", random_hex());
    let gateway = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_workers_toml: format!(
            "{workers_toml}read_only_count = {read_only_count}\n[workers.ducklake]\ncatalog = \"127.0.0.1:{port}\"\ncatalog_token_file = \"{token}\"\nread_only_catalog_token_file = \"{ro_token}\"\ndata_path = \"{data_path}\"\n{extra_lake_toml}",
            port = catalog.plain.port(),
            token = shared.path().join("catalog-token").display(),
            ro_token = shared.path().join("catalog-ro-token").display(),
        ),
        extra_toml: format!(
            "{}{}",
            if read_only_count > 0 {
                format!(
                    "[[auth.static_tokens]]\nname = \"reader\"\nsha256 = \"{}\"\nrole = \"read_only\"\n",
                    quackgate::auth::hash_token(&reader)
                )
            } else {
                String::new()
            },
            keys.jwt_toml("")
        ),
        ..Default::default()
    });
    RoStack {
        gateway,
        catalog,
        _shared: shared,
        reader,
        keys,
    }
}

fn find_parquet(dir: &Path) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_parquet(&path) {
                return Some(found);
            }
        } else if path.extension().is_some_and(|e| e == "parquet") {
            return Some(path);
        }
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_read_only_principal_cannot_change_anything_and_the_worker_enforces_it() {
    let stack = ro_stack();
    let gw = &stack.gateway;
    gw.cli_ok("CREATE TABLE r.facts AS SELECT range AS id FROM range(100);");
    let census = "FROM r.query('SELECT count(*), sum(id) FROM facts');";
    assert_eq!(gw.cli_ok(census), vec!["100,4950"]);

    let jwt_reader = stack
        .keys
        .cli_token("es.pem", "ES256", "es", "read_only", "10m");
    for token in [&stack.reader, &jwt_reader] {
        let out = gw.cli_with_token(
            token,
            &format!("FROM r.query('SELECT quackgate.worker_id()');\n{census}"),
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "n0.w1\n100,4950\n",
            "a read-only session reads, on the read-only worker: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let lake_data = data_dir(stack._shared.path());
    let lake_file = find_parquet(&lake_data).expect("the lake holds a Parquet file");
    let lake_bytes = std::fs::read(&lake_file).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let attached = outside.path().join("other.duckdb");
    let copied = outside.path().join("out.csv");
    let port = free_port();
    let attempts = [
        "CREATE TABLE r.intruder (i INTEGER);".to_string(),
        "INSERT INTO r.facts VALUES (1000);".into(),
        "FROM r.query('CREATE TABLE intruder (i INTEGER)');".into(),
        "FROM r.query('INSERT INTO facts VALUES (1000)');".into(),
        "FROM r.query('UPDATE facts SET id = 0');".into(),
        "FROM r.query('DELETE FROM facts');".into(),
        "FROM r.query('DROP TABLE facts');".into(),
        format!(
            "FROM r.query('ATTACH ''{}'' AS other');",
            attached.display()
        ),
        format!(
            "FROM r.query('COPY (SELECT 1) TO ''{}''');",
            copied.display()
        ),
        // Inside the lake's data folder, which a locked-down worker may read.
        format!(
            "FROM r.query('COPY (SELECT 1) TO ''{}''');",
            lake_data.join("planted.csv").display()
        ),
        format!(
            "FROM r.query('COPY (SELECT 42 AS id) TO ''{}'' (FORMAT parquet)');",
            lake_file.display()
        ),
        "FROM r.query('INSTALL spatial');".into(),
        "FROM r.query('LOAD spatial');".into(),
        "FROM r.query('SET GLOBAL threads = 1');".into(),
        "FROM r.query('SET access_mode = ''READ_WRITE''');".into(),
        format!(
            "FROM r.query('CALL quack_serve(''quack:127.0.0.1:{port}'', token => ''abcd1234'')');"
        ),
        // Past the worker, at the catalog that holds the lake's metadata.
        format!(
            "FROM r.query('SELECT * FROM quack_query(''quack:127.0.0.1:{}'', ''CREATE TABLE planted AS SELECT 1 AS x'')');",
            stack.catalog.plain.port()
        ),
        "FROM r.query('SELECT * FROM \"__ducklake_metadata_quack:127\".query(''CREATE TABLE planted AS SELECT 1 AS x'')');".into(),
        "FROM r.query('SELECT * FROM \"__ducklake_metadata_quack:127\".query(''DELETE FROM ducklake_snapshot'')');".into(),
        // A line comment that DuckDB ends at a carriage return, hiding a second statement.
        format!(
            "FROM r.query('SELECT * FROM quack_query(''quack:127.0.0.1:{}'', E''SELECT 1 --\\r; CREATE TABLE planted AS SELECT 1'')');",
            stack.catalog.plain.port()
        ),
    ];
    for sql in &attempts {
        let out = gw.cli_with_token(&stack.reader, sql);
        assert!(
            !out.status.success(),
            "a read-only token ran {sql}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(
        !attached.exists() && !copied.exists(),
        "a read-only session wrote a file"
    );
    assert!(
        !lake_data.join("planted.csv").exists(),
        "a read-only session wrote into the lake folder"
    );
    assert_eq!(
        std::fs::read(&lake_file).unwrap(),
        lake_bytes,
        "a lake file was overwritten"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "quack_serve opened a server for a read-only session"
    );
    assert_eq!(gw.cli_ok(census), vec!["100,4950"], "the lake changed");
    assert_eq!(
        stack.catalog.cli_ok(
            "FROM r.query('SELECT count(*) FROM duckdb_tables() WHERE table_name = ''planted''');"
        ),
        vec!["0"],
        "a read-only session wrote into the catalog"
    );

    // The same writes with a read-write token succeed.
    gw.cli_ok(
        "FROM r.query('CREATE TABLE scratch (i INTEGER)');\n\
         FROM r.query('INSERT INTO facts VALUES (1000)');\n\
         FROM r.query('UPDATE facts SET id = id + 1 WHERE id = 1000');\n\
         FROM r.query('DELETE FROM facts WHERE id = 1001');\n\
         FROM r.query('DROP TABLE scratch');",
    );
    assert_eq!(gw.cli_ok(census), vec!["100,4950"]);
    // Client SQL may not name the lake's metadata database nor call Quack's functions: the
    // worker refuses the text, and says why.
    let catalog_port = stack.catalog.plain.port();
    for (sql, why) in [
        (
            format!("FROM r.query('SELECT * FROM quack_query(''quack:127.0.0.1:{catalog_port}'', ''SELECT 1'')');"),
            "it calls one of Quack's functions",
        ),
        (
            "FROM r.query('SELECT * FROM \"__ducklake_metadata_quack:127\".query(''SELECT listen_uri FROM quack_server_list()'')');".into(),
            "it names the lake's metadata database",
        ),
        (
            "FROM r.query('SELECT count(*) FROM \"__ducklake_metadata_quack:127\".main.ducklake_snapshot');".into(),
            "it names the lake's metadata database",
        ),
        (
            "FROM r.query('SET search_path = ''__duck'' || ''lake_metadata_quack:127.main''');".into(),
            "the search path and schema may be set only to plain names",
        ),
        (
            "FROM r.query('FROM query_table(''__duck'' || ''lake_metadata_quack:127.main.ducklake_snapshot'')');".into(),
            "it runs SQL from a string",
        ),
        (
            format!("FROM r.query('CALL quack_serve(''quack:127.0.0.1:{port}'', token => ''abcd1234'')');"),
            "it calls one of Quack's functions",
        ),
        // Found by a hostile review: DuckDB's histogram_values table macro runs query_table on
        // its argument, and with the optimizer off Quack's guard against a second scan of a
        // remote table does not run.
        (
            "FROM r.query('PRAGMA disable_optimizer');".into(),
            "this PRAGMA could change the session past the configuration lock",
        ),
        (
            "FROM r.query('FROM histogram_values(''__duck'' || ''lake_metadata_'' || current_database() || ''.main.ducklake_snapshot'', snapshot_id, technique := ''sample'')');".into(),
            "it runs SQL from a string",
        ),
        (
            "FROM r.query('FROM histogram(''__duck'' || ''lake_metadata_'' || current_database() || ''.main.ducklake_snapshot'', snapshot_id)');".into(),
            "it runs SQL from a string",
        ),
        // Found by a third review: logging switched on by function (the configuration lock
        // does not cover it) showed every statement of the worker, DuckLake's included.
        (
            "FROM r.query('CALL enable_logging(level := ''trace'')');".into(),
            "it reads or switches the worker's logs",
        ),
        (
            "FROM r.query('SELECT count(*) FROM duckdb_logs()');".into(),
            "it reads or switches the worker's logs",
        ),
        // Found by a fourth review: what changes the whole worker or the whole lake.
        (
            "FROM r.query('DETACH \"quack:127\"');".into(),
            "ATTACH and DETACH change the databases of every session",
        ),
        (
            "FROM r.query('ATTACH '':memory:'' AS evil');".into(),
            "ATTACH and DETACH change the databases of every session",
        ),
        (
            "FROM r.query('CALL ducklake_delete_orphaned_files(current_database(), cleanup_all => true)');".into(),
            "the lake's maintenance and options are the catalog's",
        ),
        (
            "FROM r.query('CALL ducklake_set_option(current_database(), ''require_commit_message'', true)');".into(),
            "the lake's maintenance and options are the catalog's",
        ),
        (
            "FROM r.query('CHECKPOINT');".into(),
            "the lake's maintenance and options are the catalog's",
        ),
        (
            "FROM r.query('CREATE SECRET s (TYPE s3, KEY_ID ''a'', SECRET ''b'')');".into(),
            "secrets are shared by every session",
        ),
        // Found by a fifth review: a lake macro named like a built-in (duckdb_functions, which
        // the worker read its list of refused calls from), and DuckLake's own aliases.
        (
            "FROM r.query('CREATE MACRO duckdb_functions() AS TABLE SELECT 1 AS function_name');".into(),
            "it names something of the lake like a built-in",
        ),
        (
            "FROM r.query('CALL set_option(''require_commit_message'', true)');".into(),
            "the lake's maintenance and options are the catalog's",
        ),
        // Found by a sixth review: lake objects that hid the system's for every session.
        (
            "FROM r.query('CREATE MACRO \"~~\"(a, b) AS true');".into(),
            "it names something of the lake like a built-in",
        ),
        (
            "FROM r.query('CREATE SCHEMA quackgate');".into(),
            "it names something of the lake like a built-in",
        ),
        (
            "FROM r.query('CREATE VIEW duckdb_tables AS SELECT 1 AS table_name');".into(),
            "it names something of the lake like a built-in",
        ),
        // And a seventh, past the first version of that rule: a comment or a literal for the
        // name, or a word between CREATE and the kind.
        (
            "FROM r.query('CREATE SCHEMA /**/ quackgate');".into(),
            "it names something of the lake like a built-in",
        ),
        (
            "FROM r.query('CREATE UNLOGGED TABLE duckdb_views (view_name VARCHAR)');".into(),
            "it names something of the lake like a built-in",
        ),
        // Found by a ninth review: COPY over one of the lake's Parquet files destroyed a table
        // at every snapshot (the worker may write the lake's folder for DuckLake's own writes).
        (
            format!(
                "FROM r.query('COPY (SELECT 42 AS id) TO ''{}'' (FORMAT parquet)');",
                lake_file.display()
            ),
            "COPY ... TO and EXPORT DATABASE write files",
        ),
        // Found by an eighth review: a table looked up by a computed string (the metadata
        // tables' columns), and lake objects made with no CREATE for the name rules to see.
        (
            "FROM r.query('FROM pragma_table_info(''__duck'' || ''lake_metadata_'' || current_database() || ''.main.ducklake_snapshot'')');".into(),
            "it names a table with a value computed at run time",
        ),
        (
            "FROM r.query('COPY FROM DATABASE quackgate TO \"quack:127\"');".into(),
            "COPY FROM DATABASE makes objects",
        ),
        // Found by a second review: a client's macro passed the computed name to histogram
        // through a plain parameter name.
        (
            "FROM r.query('CREATE TEMP MACRO m2(s, c) AS TABLE FROM histogram(s, c)');".into(),
            "it runs SQL from a string",
        ),
        // Found by a tenth review: DuckDB joins two literals split by a line break into one,
        // and USE takes a literal; the session then stayed in the metadata database, where it
        // read every table, inserted data files into another principal's table and dropped
        // DuckLake's own tables (every commit on the lake failed after).
        (
            "FROM r.query('USE ''__duck''\n''lake_metadata_quack:127''');".into(),
            "it joins two string literals across a line break",
        ),
        (
            "FROM r.query('USE ''__duck'' -- a comment\n''lake_metadata_quack:127''');".into(),
            "it joins two string literals across a line break",
        ),
        // Found by a twelfth review: DuckLake 1.5.5 fills its {PLACEHOLDERS} in after the
        // commit's author and message are in its metadata SQL, so `{AUTHOR}` in the message
        // made the author code: it read and updated the metadata tables.
        (
            "FROM r.query('BEGIN; CALL ducklake_set_commit_message(''quack:127'', '', NULL); UPDATE {METADATA_CATALOG}.ducklake_snapshot_changes SET author = chr(80) WHERE snapshot_id = 1; SELECT ('', ''{AUTHOR}''); CREATE TABLE cm_t4 (i INT); COMMIT; SELECT 1 AS done');".into(),
            "it holds a word in braces",
        ),
        (
            "FROM r.query('CALL ducklake_set_commit_message(''quack:127'', ''me'', ''hi'')');".into(),
            "DuckLake 1.5.5 puts a commit's author and message into its metadata SQL",
        ),
        // Found by a fourteenth: DuckLake stores a view as DuckDB writes it back out, which
        // leaves a star's quoted qualifier bare, and fills its placeholders into it. The
        // qualifier then ran as code for everyone who read the view: the metadata tables
        // read and written, Quack's functions called (a read-only principal stopped a worker).
        (
            "FROM r.query('CREATE VIEW pv2 AS SELECT \"s.* FROM {METADATA_CATALOG_NAME_IDENTIFIER}.main.ducklake_snapshot AS s --\".* FROM (SELECT 1) AS \"s.* FROM {METADATA_CATALOG_NAME_IDENTIFIER}.main.ducklake_snapshot AS s --\"');".into(),
            "it holds a word in braces",
        ),
        (
            "FROM r.query('CREATE VIEW qf_conns AS SELECT \"q.* FROM quack_active_connections /*\".* -- /*\n, \"*/ () AS q --\".* FROM (SELECT 1) AS \"q.* FROM quack_active_connections /*\" -- /*\n, (SELECT 1) AS \"*/ () AS q --\" -- */ */ */ */ */\n');".into(),
            "a view, macro or sort key the lake stores may use only plain quoted names",
        ),
        (
            "FROM r.query('CREATE VIEW qf_list AS SELECT \"q.* FROM range(3) AS q, (SELECT 1) AS x\".* FROM (SELECT 1) AS \"q.* FROM range(3) AS q, (SELECT 1) AS x\"');".into(),
            "a view, macro or sort key the lake stores may use only plain quoted names",
        ),
        // Found by a sixteenth: a lake macro whose stored text does not parse (a keyword as a
        // star's qualifier, which DuckDB writes back out unquoted) locked every principal out
        // of the lake and kept workers from starting; an inlined TIME_NS row failed every
        // maintenance run of the lake.
        (
            "FROM r.query('CREATE MACRO tm() AS TABLE SELECT \"from\".* FROM range(3) AS \"from\"');".into(),
            "a macro may only be TEMP",
        ),
        (
            "FROM r.query('CREATE TABLE tn(a TIME_NS)');".into(),
            "TIME_NS is refused",
        ),
        // And a seventeenth carried the type in a variable past that first fix.
        (
            "FROM r.query('SET VARIABLE v = ''01:02:03''::TIME_NS');".into(),
            "TIME_NS is refused",
        ),
        // Found by a fifteenth: a sort key's subquery bound nowhere in the catalog's
        // maintenance, so every maintenance run of the lake failed, for every principal.
        (
            "FROM r.query('ALTER TABLE sk SET SORTED BY ((SELECT count(*) FROM helper) + a)');".into(),
            "a sort key may list only columns",
        ),
        // Found by a thirteenth: a remote table whose default is an expression makes every
        // DuckDB 1.5.5 client's ATTACH fail ("Catalog does not exist"), so one such table
        // locked every principal out of the lake.
        (
            "FROM r.query('CREATE TABLE t5 (n INT DEFAULT 1 + 2)');".into(),
            "a column DEFAULT must be one constant",
        ),
        // And an eleventh, past the first fix: a dollar quote whose tag is not ASCII turned
        // that fix's reading of quotes inside out, and a zero-width space hid the USE.
        (
            "FROM r.query('SELECT $\u{e9}$''$\u{e9}$ AS x;\u{200b}USE ''__duck''\n''lake_metadata_quack:127''');".into(),
            "it joins two string literals across a line break",
        ),
        (
            "FROM r.query('USE ''memory''');".into(),
            "USE takes plain names",
        ),
        (
            "FROM r.query('USE E''\\x5f_ducklake_metadata_quack:127''');".into(),
            "it spells a string or a name with escapes",
        ),
    ] {
        let out = gw.cli(&sql);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && said.contains(&format!("quackgate: this statement was refused: {why}")),
            "{sql}: {said}"
        );
    }
    // The worker's identity database is READ_ONLY (a fifth review rewrote worker_id() for the
    // worker's other sessions, and kept tables there that every session shared).
    let out = gw.cli("FROM r.query('CREATE TABLE quackgate.main.kept AS SELECT ''pwned'' AS v');");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("read-only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What the check must not refuse: the histogram aggregate, a table whose name starts like
    // Quack's functions, a text with `u&` in it.
    assert_eq!(
        gw.cli_ok(
            "FROM r.query('CREATE TABLE quack_events (id INT)');\n\
             FROM r.query('INSERT INTO quack_events VALUES (1), (2)');\n\
             FROM r.query('SELECT cardinality(histogram(id)), ''tofu&n'' FROM quack_events');\n\
             FROM r.query('UPDATE quack_events SET id = 3 WHERE id = 2');"
        ),
        vec!["2", "2,tofu&n", "1"]
    );
    assert_eq!(
        gw.cli_ok(census),
        vec!["100,4950"],
        "the catalog still serves the lake"
    );
}

/// What holds behind the workers' check on client SQL, were a way past it found: operator-made
/// macros (`workers.init_sql`, which the check does not see into) stand in for one.
#[test]
fn behind_the_client_check_the_catalog_and_the_sandbox_still_hold() {
    let stand_ins = r#"init_sql = [
  "ATTACH ':memory:' AS standins",
  "CREATE MACRO standins.main.catalog_sql(s) AS TABLE FROM \"__ducklake_metadata_quack:127\".query(s)",
  "CREATE MACRO standins.main.remote_query_here(u, s) AS TABLE FROM quack_query(u, s)",
  "CREATE MACRO standins.main.serve_here(u) AS TABLE FROM quack_serve(u, token => 'abcd1234')",
  "CREATE MACRO standins.main.secrets_here() AS TABLE FROM duckdb_secrets()",
  "CREATE MACRO standins.main.metadata_files() AS TABLE FROM \"__ducklake_metadata_quack:127\".ducklake_data_file",
]
"#;
    let stack = lake_stack(0, stand_ins, |shared| {
        (data_dir(shared).display().to_string(), String::new())
    });
    let gw = &stack.gateway;
    let census = "FROM r.query('SELECT count(*), sum(id) FROM facts');";
    gw.cli_ok("FROM r.query('CREATE TABLE facts AS SELECT range AS id FROM range(100)');");
    // The catalog's token is not in the worker's secrets once the lake is open, so a
    // read-write session cannot run SQL on the catalog through quack_query.
    assert_eq!(
        gw.cli_ok("FROM r.query('SELECT count(*) FROM standins.secrets_here()');"),
        vec!["0"]
    );
    let out = gw.cli(&format!(
        "FROM r.query('FROM standins.remote_query_here(''quack:127.0.0.1:{}'', ''SELECT 1'')');",
        stack.catalog.plain.port()
    ));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Could not find a Quack authentication token"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Nor through the lake's own metadata connection: the catalog lets the workers' sessions
    // run nothing of Quack's (here: find its listener, which quack_stop would then stop), with
    // the names put together where the worker's check cannot see them.
    let catalog_refuses = |sql: &str| {
        let out = gw.cli(sql);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("Authorization failed") && out.stdout.is_empty(),
            "{sql}: {said}"
        );
    };
    catalog_refuses(
        "FROM r.query('FROM standins.catalog_sql(''SELECT listen_uri FROM quack'' || ''_server_list()'')');",
    );
    // Nor read the metadata tables as tables: the Quack client scans them in a form DuckLake
    // never sends (`SELECT #1 FROM ducklake_data_file`).
    catalog_refuses("FROM r.query('SELECT count(*) FROM standins.metadata_files()');");
    let out = gw.cli(&format!(
        "FROM r.query('FROM standins.catalog_sql(''CALL quack'' || ''_stop(quack:127.0.0.1:{})'')');",
        stack.catalog.plain.port()
    ));
    assert!(!out.status.success());
    // Nor switch on its logs, which would hold every worker's metadata SQL (other principals'
    // inlined rows among it), nor read them.
    catalog_refuses(
        "FROM r.query('FROM standins.catalog_sql(''CALL enable_'' || ''logging()'')');",
    );
    catalog_refuses(
        "FROM r.query('FROM standins.catalog_sql(''SELECT count(*) FROM duckdb_'' || ''logs()'')');",
    );
    // Nor change a setting there: a global one would reach the catalog's own connections
    // (`max_expression_depth = 3` made every query on it fail, its hooks' included).
    for set in [
        "SET GLOBAL max_expression_depth = 3",
        "SET GLOBAL pivot_limit = 5",
    ] {
        let out = gw.cli(&format!(
            "FROM r.query('FROM standins.catalog_sql(''{set}'')');"
        ));
        assert!(!out.status.success(), "{set} was accepted by the catalog");
    }
    assert_eq!(
        gw.cli_ok(census),
        vec!["100,4950"],
        "the catalog still serves the lake"
    );
    // Nor open a server (seccomp in every worker).
    let port = free_port();
    let out = gw.cli(&format!(
        "FROM r.query('FROM standins.serve_here(''quack:127.0.0.1:{port}'')');"
    ));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Failed to bind"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Client SQL that got past the worker's check could name the metadata database as a database
/// (the tenth review did, with `USE`). The Quack client then reaches the catalog on the worker's
/// catalog session in forms of its own: a scan, an APPEND, DDL. DuckLake never sends those, and
/// the catalog refuses them, for the workers' token (a session here with it stands in for a
/// worker's) and the read-only workers' alike; the lake serves on.
#[test]
fn the_catalog_refuses_the_metadata_tables_in_every_form_but_ducklakes_own() {
    let stack = lake_stack(1, "", |shared| {
        (data_dir(shared).display().to_string(), String::new())
    });
    let gw = &stack.gateway;
    let census = "FROM r.query('SELECT count(*), sum(id) FROM facts');";
    gw.cli_ok("FROM r.query('CREATE TABLE facts AS SELECT range AS id FROM range(100)');");
    let lake_reader =
        std::fs::read_to_string(stack._shared.path().join("catalog-ro-token")).unwrap();
    for (token, whose) in [
        (None, "workers'"),
        (Some(lake_reader.as_str()), "read-only workers'"),
    ] {
        for sql in [
            "SELECT count(*) FROM r.ducklake_data_file;",
            "SELECT path FROM r.main.ducklake_data_file;",
            "SELECT * FROM r.ducklake_snapshot;",
            "INSERT INTO r.ducklake_tag VALUES (1, 1, NULL, 'planted', 'x');",
            "INSERT INTO r.ducklake_tag SELECT 2, 1, NULL, 'planted', 'y';",
            "DROP TABLE r.ducklake_snapshot_changes;",
            "CREATE TABLE r.ducklake_planted (i INT);",
        ] {
            let out = match token {
                None => stack.catalog.cli(sql),
                Some(token) => stack.catalog.cli_with_token(token, sql),
            };
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !out.status.success() && said.contains("Authorization failed"),
                "the catalog let the {whose} token run {sql}: {said}"
            );
        }
    }
    assert_eq!(gw.cli_ok(census), vec!["100,4950"]);
    gw.cli_ok("INSERT INTO r.facts SELECT range + 100 FROM range(10);");
    assert_eq!(gw.cli_ok(census), vec!["110,5995"]);
    // A user's column may still be called like DuckLake's tables (a seventeenth review found
    // the first version of this wall refused it).
    assert_eq!(
        gw.cli_ok(
            "FROM r.query('CREATE TABLE dl_cols (ducklake_x INTEGER, b VARCHAR)');\n\
             FROM r.query('INSERT INTO dl_cols VALUES (7, ''a'')');\n\
             FROM r.query('SELECT ducklake_x, b FROM dl_cols');"
        )
        .last()
        .map(String::as_str),
        Some("7,a")
    );
    let out = gw.cli_with_token(&stack.reader, census);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "110,5995",
        "the read-only worker still reads the lake: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // DuckLake reads inlined rows naming each column, bare when the name is no DuckDB keyword:
    // a read-only principal still reads columns called like the functions the catalog refuses
    // (an eighteenth review's could not read one called `query`).
    gw.cli_ok(
        "FROM r.query('CREATE TABLE meter (id INT, \"load\" DOUBLE, query VARCHAR, quack_n INT, nextval INT, \"execute\" INT, enable_logging INT)');\n\
         FROM r.query('INSERT INTO meter VALUES (1, 2.5, ''x'', 3, 4, 5, 6)');",
    );
    let out = gw.cli_with_token(&stack.reader, "SELECT * FROM r.meter;");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1,2.5,x,3,4,5,6",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Python client that attaches, runs one query, then a second once `go` exists; prints the
/// result or the error of each.
fn spawn_python_session(
    gw: &Gateway,
    token: &str,
    go: &Path,
    wait_secs: u64,
) -> std::process::Child {
    let script = format!(
        r#"{attach}
import os, sys, time
def run(sql):
    try:
        print(con.execute(sql).fetchall()[0][0], flush=True)
    except Exception as e:
        print("ERROR", str(e).replace("\n", " "), flush=True)
run("FROM r.query('SELECT 1')")
deadline = time.time() + {wait_secs}
while not os.path.exists("{go}"):
    if time.time() > deadline:
        sys.exit("never told to go on")
    time.sleep(0.05)
run("FROM r.query('SELECT 2')")
"#,
        attach = python_attach(&gw.toolchain, &gw.ca, token, gw.https.port()),
        go = go.display(),
    );
    Command::new(gw.toolchain.python())
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn read_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    let stdout = child.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(stdout);
    reader.read_line(&mut line).unwrap();
    if line.is_empty() {
        let mut err = String::new();
        child
            .stderr
            .as_mut()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        panic!("the Python client ended early: {err}");
    }
    line.trim().to_string()
}

#[test]
fn keys_rotate_without_a_restart_and_sessions_end_with_their_token() {
    let keys = Keys::new();
    let (es, ed) = (keys.jwk("es"), keys.jwk("ed"));
    keys.write_jwks(std::slice::from_ref(&es));
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_toml: keys.jwt_toml("leeway_secs = 0\n"),
        ..Default::default()
    });
    let old = keys.cli_token("es.pem", "ES256", "es", "read_write", "10m");
    let new = keys.cli_token("ed.pem", "EdDSA", "ed", "read_write", "10m");
    assert!(attach_error(&gw, &new).is_some_and(|e| e.contains("unknown signing key")));

    let go = gw.dir.path().join("go");
    let mut session = spawn_python_session(&gw, &old, &go, 120);
    assert_eq!(read_line(&mut session), "1");

    // Rotate: add the new key, remove the old one; no restart.
    keys.write_jwks(std::slice::from_ref(&ed));
    wait_until(
        "the JWKS reload to refuse the old key",
        Duration::from_secs(30),
        || attach_error(&gw, &old).is_some_and(|e| e.contains("unknown signing key")),
    );
    assert_eq!(
        attach_error(&gw, &new),
        None,
        "the new key must be accepted"
    );
    assert!(gw.log().contains("JWKS reloaded"), "{}", gw.log());
    // Documented rule: an open session lives until its own token expires, whatever the keys.
    std::fs::write(&go, "").unwrap();
    assert_eq!(read_line(&mut session), "2");
    assert!(session.wait().unwrap().success());

    // A session ends when its token does (auth.jwt.session_expiry = "end", the default).
    let short = keys.cli_token("ed.pem", "EdDSA", "ed", "read_write", "4s");
    let exp: u64 = {
        use base64::Engine;
        let payload = short.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["exp"].as_u64().unwrap()
    };
    let go_late = gw.dir.path().join("go-late");
    let mut session = spawn_python_session(&gw, &short, &go_late, 120);
    assert_eq!(read_line(&mut session), "1");
    wait_until("the short token to expire", Duration::from_secs(30), || {
        now() > exp + 1
    });
    std::fs::write(&go_late, "").unwrap();
    let after = read_line(&mut session);
    assert!(
        after.contains("has expired") && after.contains("ATTACH again"),
        "{after}"
    );

    // Revocation: a JWKS with no usable key refuses every JWT at once, with no restart.
    std::fs::write(keys.path("empty.json"), r#"{"keys":[]}"#).unwrap();
    std::fs::rename(keys.path("empty.json"), &keys.jwks).unwrap();
    wait_until(
        "the emptied JWKS to refuse the key in use",
        Duration::from_secs(30),
        || attach_error(&gw, &new).is_some_and(|e| e.contains("unknown signing key")),
    );
    assert_eq!(
        gw.cli_ok("FROM r.query('SELECT 42');"),
        vec!["42"],
        "static tokens still work"
    );
}

/// A raw Quack POST from source address `from`, as a client on another host would send it.
fn quack_post_from(from: &str, to: SocketAddr, body: &[u8]) -> Vec<u8> {
    quack_post_from_with(from, to, body, "")
}

/// A raw POST of `body` from the local address `from`, with `extra_headers` (whole lines).
fn quack_post_from_with(from: &str, to: SocketAddr, body: &[u8], extra_headers: &str) -> Vec<u8> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /quack HTTP/1.1\r\nHost: {to}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    response[split + 4..].to_vec()
}

fn error_text(body: &[u8]) -> String {
    quack_codec::error_message(body)
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default()
}

#[test]
fn limits_refuse_the_extra_connection_and_a_burst_of_bad_tokens_from_one_address() {
    let other = format!("other-{}", random_hex());
    let gw = Gateway::start_with(GatewayOptions {
        workers: 2,
        extra_workers_toml: "max_per_principal = 1\n".into(),
        extra_toml: format!(
            "[[auth.static_tokens]]\nname = \"other\"\nsha256 = \"{}\"\n[limits]\nmax_sessions_per_principal = 2\nfailed_auth_burst = 3\nfailed_auth_backoff_secs = 120\n",
            quackgate::auth::hash_token(&other)
        ),
        ..Default::default()
    });
    let connect = |token: &str| quack_post(gw.plain, connection_request(token)).1;
    let first = connect(&gw.token);
    let second = connect(&gw.token);
    assert_eq!(error_text(&first), "");
    assert_eq!(error_text(&second), "");
    // The third session of the principal is refused, also for the real client, with the reason.
    assert!(error_text(&connect(&gw.token)).contains("max_sessions_per_principal"));
    let refused = attach_error(&gw, &gw.token).expect("the third session was admitted");
    assert!(refused.contains("max_sessions_per_principal"), "{refused}");
    // Another principal is unaffected.
    assert_eq!(
        gw.cli_with_token(&other, "FROM r.query('SELECT 42');")
            .stdout,
        b"42\n"
    );
    // A DISCONNECT frees a place.
    let id = quack_codec::decode_header(&first)
        .unwrap()
        .connection_id(&first)
        .unwrap()
        .to_vec();
    let disconnect = {
        use quack_codec as codec;
        let buf = crate::support::fixture("disconnect_request.bin");
        let header = codec::decode_header(&buf).unwrap();
        let mut out = codec::rewrite_header(&buf, &header, &id).to_vec();
        out.extend_from_slice(&buf[header.len..]);
        out
    };
    assert_eq!(quack_post(gw.plain, disconnect).0, 200);
    assert_eq!(gw.cli_ok("FROM r.query('SELECT 42');"), vec!["42"]);

    // Failed authentications from 127.0.0.2 trip its backoff ...
    for _ in 0..3 {
        let body = quack_post_from("127.0.0.2", gw.plain, &connection_request("guess-1234"));
        assert_eq!(error_text(&body), "Authentication failed");
    }
    let body = quack_post_from("127.0.0.2", gw.plain, &connection_request(&other));
    assert!(
        error_text(&body).contains("too many failed authentications"),
        "even a good token waits out the backoff: {}",
        error_text(&body)
    );
    // ... while clients on other addresses carry on.
    assert_eq!(
        gw.cli_with_token(&other, "FROM r.query('SELECT 42');")
            .stdout,
        b"42\n"
    );
    wait_until("the backoff to be logged", Duration::from_secs(10), || {
        gw.log().contains("this address backs off")
    });

    // The same story in the metrics.
    let (status, metrics) = gw.admin_get("/metrics");
    assert_eq!(status, 200);
    for line in [
        "quackgate_auth_failures_total{reason=\"unknown\"} 3",
        "quackgate_request_errors_total{kind=\"auth_throttled\"} 1",
        "quackgate_request_errors_total{kind=\"principal_session_limit\"} 2",
        "quackgate_worker_ready{access=\"read_write\",worker=\"n0.w0\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
    let opened = metrics
        .lines()
        .find_map(|l| l.strip_prefix("quackgate_sessions_opened_total{access=\"read_write\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(opened.is_some_and(|n| n >= 4), "{metrics}");
    assert!(metrics.contains("quackgate_requests_total{msg_type=\"prepare\",origin=\"client\"}"));
    assert!(!metrics.contains(&gw.token) && !metrics.contains(&other));
}

#[test]
fn behind_a_trusted_proxy_the_backoff_keys_on_the_address_the_proxy_reports() {
    let other = format!("other-{}", random_hex());
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_gateway_toml: "trusted_proxies = [\"127.0.0.1/32\"]\n".into(),
        extra_toml: format!(
            "[[auth.static_tokens]]\nname = \"other\"\nsha256 = \"{}\"\n[limits]\nfailed_auth_burst = 3\nfailed_auth_backoff_secs = 120\n",
            quackgate::auth::hash_token(&other)
        ),
        ..Default::default()
    });
    // A real nginx in front; it reaches the gateway from 127.0.0.1, the one trusted address.
    let dir = tempfile::tempdir().unwrap();
    let tls = quackgate::dev_init::write_tls(dir.path(), &[]).unwrap();
    let nginx = crate::cluster::Nginx::start(&[gw.plain], &tls.cert, &tls.key);
    let via_nginx = SocketAddr::from(([127, 0, 0, 1], nginx.plain_port));
    let connect_via_nginx = |from: &str, token: &str| {
        error_text(&quack_post_from(
            from,
            via_nginx,
            &connection_request(token),
        ))
    };

    // Three bad tokens from 127.0.0.3, all arriving from nginx's one address, each claiming to
    // come from 127.0.0.9 (nginx appends the real address after the claim) ...
    for _ in 0..3 {
        let body = quack_post_from_with(
            "127.0.0.3",
            via_nginx,
            &connection_request("guess-1234"),
            "X-Forwarded-For: 127.0.0.9\r\n",
        );
        assert_eq!(error_text(&body), "Authentication failed");
    }
    // ... lock out 127.0.0.3, even with a good token ...
    assert!(
        connect_via_nginx("127.0.0.3", &other).contains("too many failed authentications"),
        "the client behind nginx was not held back"
    );
    // The log is written after the answer, so it may trail it a little.
    wait_until(
        "the backoff of 127.0.0.3 to be logged",
        Duration::from_secs(10),
        || gw.log().contains("127.0.0.3"),
    );
    // ... and nobody else behind the same nginx: not the address it claimed, not another
    // one, not the real CLI over TLS.
    assert_eq!(connect_via_nginx("127.0.0.9", &other), "");
    assert_eq!(connect_via_nginx("127.0.0.4", &other), "");
    let script = format!(
        ".output /dev/null\n{}.output\nFROM r.query('SELECT 42');\n",
        https_attach_sql(&Toolchain::get(), nginx.port, &tls.ca_cert, &other)
    );
    let out = run_cli(&Toolchain::get(), &script);
    assert_eq!(
        out.stdout,
        b"42\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A peer that is not trusted cannot pick the address it is judged by: 127.0.0.5 claims to
    // be 127.0.0.6 and is locked out as itself, while 127.0.0.6 carries on.
    for _ in 0..3 {
        let body = quack_post_from_with(
            "127.0.0.5",
            gw.plain,
            &connection_request("guess-1234"),
            "X-Forwarded-For: 127.0.0.6\r\n",
        );
        assert_eq!(error_text(&body), "Authentication failed");
    }
    let body = quack_post_from_with(
        "127.0.0.5",
        gw.plain,
        &connection_request(&other),
        "X-Forwarded-For: 127.0.0.7\r\n",
    );
    assert!(error_text(&body).contains("too many failed authentications"));
    assert_eq!(connect_via_nginx("127.0.0.6", &other), "");
}

#[test]
fn no_jwt_appears_in_the_log_even_at_debug() {
    let keys = Keys::new();
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        rust_log: Some("debug"),
        extra_toml: keys.jwt_toml(""),
        ..Default::default()
    });
    let token = keys.cli_token("es.pem", "ES256", "es", "read_write", "10m");
    assert_eq!(
        gw.cli_with_token(&token, "FROM r.query('SELECT 42');")
            .stdout,
        b"42\n"
    );
    let expired = keys.signed(
        Algorithm::ES256,
        keys.es_key("es.pem"),
        "es",
        serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now() - 3600, "role": "read_write"}),
    );
    assert!(attach_error(&gw, &expired).is_some());
    let log = gw.log();
    assert!(
        log.contains("session opened"),
        "debug logging was not on:\n{log}"
    );
    for secret in [&token, &expired] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !log.contains(signature),
            "a JWT leaked into the log:\n{log}"
        );
    }
    assert!(
        !log.contains("eyJ"),
        "something JWT-shaped is in the log:\n{log}"
    );
}

#[test]
fn a_client_that_stops_its_workers_server_gets_a_fresh_worker() {
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        // Quack's functions under names the client check lets through: a stand-in for a way
        // past that check, so that the supervisor's answer to a stopped server is tested.
        extra_workers_toml: r#"init_sql = [
  "CREATE MACRO listener_here() AS TABLE SELECT listen_uri FROM quack_server_list()",
  "CREATE MACRO stop_here(u) AS TABLE SELECT * FROM quack_stop(u)",
]
"#
        .into(),
        ..Default::default()
    });
    for direct in [
        "FROM r.query('SELECT listen_uri FROM quack_server_list()');",
        "FROM r.query('CALL quack_stop(''quack:127.0.0.1:1'')');",
    ] {
        let out = gw.cli(direct);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && said.contains("quackgate: this statement was refused: it calls one of Quack"),
            "{direct}: {said}"
        );
    }
    let uri = gw.cli_ok("FROM r.query('FROM listener_here()');");
    assert_eq!(uri.len(), 1, "{uri:?}");
    // The answer may or may not arrive: the server stops under the request.
    let _ = gw.cli(&format!("FROM r.query('FROM stop_here(''{}'')');", uri[0]));
    wait_until(
        "the supervisor to replace the worker",
        Duration::from_secs(30),
        || gw.log().contains("quack_stop from client SQL"),
    );
    wait_until("a new session to work", Duration::from_secs(60), || {
        gw.cli("FROM r.query('SELECT 42');").stdout == b"42\n"
    });
}

#[test]
fn idle_sessions_are_ended_at_their_worker() {
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_gateway_toml: "session_idle_secs = 2".into(),
        ..Default::default()
    });
    let id = crate::support::open_session(&gw);
    let (_, body) = quack_post(gw.plain, crate::support::prepare_with_id(&id));
    assert_eq!(
        crate::support::msg_type(&body),
        4,
        "the fresh session works"
    );
    wait_until(
        "the idle session to be ended",
        Duration::from_secs(30),
        || gw.log().contains("ending idle sessions"),
    );
    // The worker itself no longer knows the session: the gateway sent it a DISCONNECT.
    let (_, body) = quack_post(gw.plain, crate::support::prepare_with_id(&id));
    assert_eq!(error_text(&body), "Invalid connection id");
    let (_, metrics) = gw.admin_get("/metrics");
    assert!(metrics.contains("quackgate_sessions_open 0"), "{metrics}");
}

/// A Python HTTPS file server on an ephemeral loopback port, for a JWKS URL.
struct HttpsFiles {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl HttpsFiles {
    fn start(toolchain: &crate::support::Toolchain) -> HttpsFiles {
        let dir = tempfile::tempdir().unwrap();
        let tls = quackgate::dev_init::write_tls(dir.path(), &[]).unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir(&root).unwrap();
        let script = format!(
            r#"import functools, http.server, ssl
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="{root}")
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("{cert}", "{key}")
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"#,
            root = root.display(),
            cert = tls.cert.display(),
            key = tls.key.display(),
        );
        let mut child = Command::new(toolchain.python())
            .arg("-c")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let port = read_line(&mut child).parse().unwrap();
        HttpsFiles {
            child,
            port,
            dir,
            ca: tls.ca_cert,
        }
    }

    /// `[auth.jwt]` with this server's `jwks.json` as the JWKS URL.
    fn jwt_toml(&self, refresh_secs: u64, stale_secs: u64) -> String {
        format!(
            "[auth.jwt]\njwks_url = \"https://localhost:{}/jwks.json\"\njwks_ca_file = \"{}\"\njwks_refresh_secs = {refresh_secs}\njwks_stale_secs = {stale_secs}\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n",
            self.port,
            self.ca.display()
        )
    }

    fn put(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.dir.path().join("www").join(name)).unwrap();
    }
}

impl Drop for HttpsFiles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn keys_from_a_jwks_url_refresh_and_go_stale_when_it_is_gone() {
    let keys = Keys::new();
    let mut idp = HttpsFiles::start(&crate::support::Toolchain::get());
    idp.put("jwks.json", &keys.jwks_of(&["es"]));
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_toml: idp.jwt_toml(1, 3),
        ..Default::default()
    });
    let es = keys.cli_token("es.pem", "ES256", "es", "read_write", "10m");
    let ed = keys.cli_token("ed.pem", "EdDSA", "ed", "read_write", "10m");
    // Fetched before the gateway reported ready.
    assert_eq!(attach_error(&gw, &es), None);
    assert!(gw.log().contains("JWKS fetched"), "{}", gw.log());

    idp.put("jwks.json", &keys.jwks_of(&["ed"]));
    wait_until(
        "the refreshed JWKS to take the new key",
        Duration::from_secs(30),
        || attach_error(&gw, &ed).is_none(),
    );
    assert!(attach_error(&gw, &es).is_some_and(|e| e.contains("unknown signing key")));

    // The provider goes away: the keys stay in force for jwks_stale_secs, then are dropped.
    let _ = idp.child.kill();
    let _ = idp.child.wait();
    wait_until("stale keys to be dropped", Duration::from_secs(60), || {
        attach_error(&gw, &ed).is_some_and(|e| e.contains("unknown signing key"))
    });
    assert!(
        gw.log().contains("longer than jwks_stale_secs"),
        "{}",
        gw.log()
    );
}

#[test]
fn a_read_only_worker_on_azure_reads_the_lake_but_cannot_write_blobs() {
    let toolchain = crate::support::Toolchain::get();
    let azurite = crate::ducklake::Azurite::start(&toolchain);
    azurite.create_container(&toolchain, "lake");
    let (rw, ro) = (
        azurite.connection_string(),
        azurite.read_only_connection_string("lake"),
    );
    let stack = ro_stack_on(|shared| {
        let (rw_file, ro_file) = (shared.join("azure-rw"), shared.join("azure-ro"));
        std::fs::write(&rw_file, &rw).unwrap();
        std::fs::write(&ro_file, &ro).unwrap();
        (
            "az://lake/data/".into(),
            format!(
                "[workers.ducklake.azure]\nconnection_string_file = \"{}\"\nread_only_connection_string_file = \"{}\"\n",
                rw_file.display(),
                ro_file.display()
            ),
        )
    });
    let gw = &stack.gateway;
    gw.cli_ok("CREATE TABLE r.facts AS SELECT range AS id FROM range(1000);");
    let census = "FROM r.query('SELECT count(*), sum(id) FROM facts');";
    let out = gw.cli_with_token(&stack.reader, census);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000,499500\n",
        "the read-only worker reads the lake's blobs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for target in ["az://lake/data/planted.parquet", "az://lake/elsewhere.csv"] {
        let out = gw.cli_with_token(
            &stack.reader,
            &format!("FROM r.query('COPY (SELECT 1 AS id) TO ''{target}''');"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a read-only session wrote {target}");
        // The check on client SQL refuses COPY ... TO first.
        assert!(
            err.contains("COPY ... TO and EXPORT DATABASE write files"),
            "{err}"
        );
    }
    assert_eq!(gw.cli_ok(census), vec!["1000,499500"]);
    // Behind the check, the wall a way past it would meet: the secret a read-only worker makes
    // (the same statement, from the same connection string) may read the lake's blobs and
    // not write them. With the read-write string the same write succeeds, so the refusal is
    // the storage's, not the statement's.
    for (cs, may_write) in [(&ro, false), (&rw, true)] {
        let out = crate::support::run_cli(
            &toolchain,
            &format!(
                "SET extension_directory = '{}'; LOAD azure; \
                 CREATE SECRET quackgate_azure (TYPE azure, CONNECTION_STRING '{cs}'); \
                 SELECT count(*) FROM 'az://lake/data/**/*.parquet'; \
                 COPY (SELECT 1 AS id) TO 'az://lake/data/planted.parquet';",
                toolchain.ext_dir().display()
            ),
        );
        let (stdout, err) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        // CREATE SECRET prints `true`, then the count.
        assert_eq!(
            stdout.lines().nth(1),
            Some("1000"),
            "reading the lake: {stdout} {err}"
        );
        if may_write {
            assert!(out.status.success(), "the read-write string: {err}");
        } else {
            assert!(
                err.contains("AuthorizationPermissionMismatch"),
                "the read-only string wrote, or failed otherwise: {err}"
            );
        }
    }
}

#[test]
fn a_token_with_a_new_kid_makes_the_gateway_fetch_the_jwks_early() {
    let keys = Keys::new();
    let idp = HttpsFiles::start(&crate::support::Toolchain::get());
    idp.put("jwks.json", &keys.jwks_of(&["es"]));
    // A refresh period far beyond this test: only the early fetch can pick the new key up.
    let gw = Gateway::start_with(GatewayOptions {
        workers: 1,
        extra_toml: idp.jwt_toml(3600, 7200),
        ..Default::default()
    });
    let ed = keys.cli_token("ed.pem", "EdDSA", "ed", "read_write", "10m");
    assert!(attach_error(&gw, &ed).is_some_and(|e| e.contains("unknown signing key")));
    idp.put("jwks.json", &keys.jwks_of(&["es", "ed"]));
    wait_until(
        "a retried token with the new kid to be accepted",
        Duration::from_secs(30),
        || attach_error(&gw, &ed).is_none(),
    );
    assert!(gw.log().contains("JWKS changed"), "{}", gw.log());
}

/// A worker's session at the catalog is named by its id alone; the catalog serves it only to
/// the address that opened it, so an id that leaks (the nineteenth review read one out of a
/// worker's heap and then wrote the lake's metadata with it) is of no use from elsewhere.
#[test]
fn a_catalog_session_is_served_only_to_the_address_that_opened_it() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Gateway::start_with(GatewayOptions {
        workers: 1,
        subcommand: "catalog",
        extra_toml: format!(
            "[catalog]\nfile = \"{}\"\n",
            dir.path().join("catalog.duckdb").display()
        ),
        ..Default::default()
    });
    let opened = quack_post_from(
        "127.0.0.1",
        catalog.plain,
        &connection_request(&catalog.token),
    );
    let header = quack_codec::decode_header(&opened).unwrap();
    assert_eq!(header.msg_type, 2, "{}", error_text(&opened));
    let id = header.connection_id(&opened).unwrap().to_vec();

    let stolen = quack_post_from(
        "127.0.0.2",
        catalog.plain,
        &crate::support::prepare_with_id(&id),
    );
    assert_eq!(
        error_text(&stolen),
        "Invalid connection id",
        "another address gets what an unknown id gets"
    );
    let own = quack_post_from(
        "127.0.0.1",
        catalog.plain,
        &crate::support::prepare_with_id(&id),
    );
    assert_eq!(
        crate::support::msg_type(&own),
        4,
        "the address that opened the session keeps it: {}",
        error_text(&own)
    );
    let log = catalog.log();
    assert!(
        log.contains("session refused")
            && log.contains("opened from 127.0.0.1 used from another address"),
        "{log}"
    );
    let (_, metrics) = catalog.admin_get("/metrics");
    assert!(metrics.contains("session_elsewhere"), "{metrics}");

    // The gateway's own clients roam (NAT pools, mobile networks): it does not bind.
    let gw = Gateway::start();
    let id = crate::support::open_session(&gw);
    let roamed = quack_post_from("127.0.0.2", gw.plain, &crate::support::prepare_with_id(&id));
    assert_eq!(
        crate::support::msg_type(&roamed),
        4,
        "{}",
        error_text(&roamed)
    );
}

/// DuckDB 1.5.5 writes a stack trace into every internal error's text, with the worker
/// binary's path and load address; the gateway cuts it from the answer. `error()` with the
/// same marker stands in for an internal error: none is known that client input still reaches.
#[test]
fn a_workers_stack_trace_never_reaches_the_client() {
    let gw = Gateway::start();
    let out = gw.cli(
        "FROM r.query('SELECT error(''boom'' || chr(10) || chr(10) || ''Stack Trace:'' || chr(10) || ''/opt/quackgate(+0x14fbdab) [0x55de884b2dab]'')');",
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("boom")
            && said.contains("the stack trace was removed")
            && !said.contains("0x55de884b2dab"),
        "{said}"
    );
    assert_eq!(gw.cli_ok("FROM r.query('SELECT 42');"), vec!["42"]);
}
