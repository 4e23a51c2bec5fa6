//! Every request of a session reaches the worker that opened it.

use std::collections::BTreeSet;

use crate::support::{run_cli, Gateway};

#[test]
fn eight_concurrent_clients_each_stay_on_one_worker_and_both_workers_serve() {
    let gw = Gateway::start();
    const CLIENTS: usize = 8;
    const PROBES: usize = 25;
    let mut script = String::new();
    for i in 0..PROBES {
        script.push_str("FROM r.query('SELECT quackgate.worker_id()');\n");
        // Work between probes, with parallel FETCH, so requests of all clients interleave.
        if i % 5 == 0 {
            script.push_str("SELECT count(*) >= 0 FROM r.query('SELECT * FROM range(300000)');\n");
        }
    }
    let seen: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let sql = format!(
                    ".output /dev/null\n{}.output\n{script}",
                    gw.attach_sql(&gw.token)
                );
                let toolchain = &gw.toolchain;
                s.spawn(move || run_cli(toolchain, &sql))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let out = h.join().unwrap();
                assert!(
                    out.status.success(),
                    "client failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout)
                    .unwrap()
                    .lines()
                    .filter(|l| *l != "true")
                    .map(str::to_string)
                    .collect()
            })
            .collect()
    });
    let mut workers_used = BTreeSet::new();
    for (client, ids) in seen.iter().enumerate() {
        assert_eq!(ids.len(), PROBES, "client {client} answered {ids:?}");
        let distinct: BTreeSet<_> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "client {client} moved between workers: {distinct:?}"
        );
        assert!(
            ids[0].starts_with("n0.w"),
            "unexpected worker id {}",
            ids[0]
        );
        workers_used.insert(ids[0].clone());
    }
    assert_eq!(
        workers_used.len(),
        2,
        "placement used only {workers_used:?}"
    );
}
