//! Any bytes as a config file and its environment overrides, through the loader
//! (`Config::from_toml`): TOML parse, `QUACKGATE__*` overrides, typed deserialisation and the
//! validation of every section (which reads the files the config names, relative to a
//! scratch folder that holds the extension files a valid config needs). The input is the TOML
//! text, then optionally a NUL byte and override lines `SECTION__KEY=value` (the
//! `QUACKGATE__` prefix is added). Nothing may panic: every problem is an error value.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use quackgate::config::Config;

/// `<scratch>/c.toml`, the config's path; `<scratch>/ext` holds empty stand-ins for the
/// extensions a worker loads, as in the config tests.
static CONFIG_PATH: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a scratch folder").keep();
    let ext = dir.join("ext");
    for name in quackgate_duckdb::EXTENSIONS_REQUIRED {
        let file = quackgate_duckdb::extension_path(&ext, name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, b"").unwrap();
    }
    dir.join("c.toml")
});

fuzz_target!(|data: &[u8]| {
    let (text, env) = match data.iter().position(|b| *b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (format!("QUACKGATE__{k}"), v.to_string()))
        .collect();
    let _ = Config::from_toml(text, &CONFIG_PATH, env);
});
