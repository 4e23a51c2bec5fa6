//! How fast the DataChunk walk (`RowCounter`) goes over the captured answers and APPENDs, fed
//! in 16 KiB pieces as they come off a socket: the per-message cost the audit trail's row
//! counts and the gateway's APPEND check add; and for the APPENDs, the walk that rewrites
//! their compressed vectors flat as well (`FlatAppend`), which is what the gateway runs.
//! `cargo run --release -p quack-codec --example walk_speed` from the repository's root.

use std::time::Instant;

use bytes::Bytes;
use quack_codec::{FlatAppend, RowCounter};

const PIECE: usize = 16 * 1024;
const ROUNDS: u32 = 2000;

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/quack");
    for name in [
        "result_types_300_rows_prepare.bin",
        "result_30000_ints_prepare.bin",
        "result_30000_ints_fetch.bin",
        "append_request_cli_compressed.bin",
        "append_request_cli_dictionary.bin",
    ] {
        let bytes = std::fs::read(format!("{dir}/{name}")).expect("a captured message");
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let mut counter = RowCounter::new();
            bytes.chunks(PIECE).for_each(|p| counter.feed(p));
            assert!(counter.finish().is_some(), "{name} is whole");
        }
        report(name, bytes.len(), started);
        if !name.starts_with("append") {
            continue;
        }
        let bytes = Bytes::from(bytes);
        let mut sent = 0;
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let mut append = FlatAppend::new();
            sent = 0;
            for p in (0..bytes.len()).step_by(PIECE) {
                append
                    .push(bytes.slice(p..(p + PIECE).min(bytes.len())))
                    .expect("whole");
                while let Some(out) = append.next_out().expect("rows") {
                    sent += out.len();
                }
            }
            append.finish().expect("whole");
            while let Some(out) = append.next_out().expect("rows") {
                sent += out.len();
            }
        }
        report(
            &format!("  rewritten ({sent} bytes sent)"),
            bytes.len(),
            started,
        );
    }
}

fn report(name: &str, len: usize, started: Instant) {
    let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
    println!(
        "{name:<40} {len:>7} bytes {micros:>8.1} us {:>7.0} MB/s",
        len as f64 / micros
    );
}
