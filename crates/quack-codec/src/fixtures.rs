//! The captured DuckDB 1.5.5 messages the tests check the codec against, read from the
//! repository's `tests/data/quack/` (shared with the gateway's end-to-end tests).

pub(crate) const CID: &[u8] = b"A424FCD8ACB5D3BB949C46D82A8E0530";

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../tests/data/quack/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}
