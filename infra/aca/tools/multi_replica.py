"""The multi-replica check: SESSIONS concurrent DuckDB sessions x PROBES probes through the
public endpoint. Each session must stay on one worker for all its probes (the worker's id, a
variable and a temp table made at its start, a transaction across statements), and the
sessions together must be placed on at least MIN_NODES nodes. On the earlier one-replica
deployment scaled to two, this fails at the first ATTACH or probe with `Invalid connection id`.

Run by check-multi-replica.sh with the DuckDB 1.5.5 venv's python; reads its settings from the
environment: ENDPOINT, TOKEN, CA_FILE (optional), DUCKDB_EXT, SESSIONS, PROBES, MIN_NODES.
Prints one JSON line of results last.
"""
import json
import os
import sys
import threading
import time

import duckdb

ENDPOINT = os.environ["ENDPOINT"]
TOKEN = os.environ["TOKEN"]
CA = os.environ.get("CA_FILE", "")
EXT = os.environ["DUCKDB_EXT"]
SESSIONS = int(os.environ.get("SESSIONS", "16"))
PROBES = int(os.environ.get("PROBES", "8"))
MIN_NODES = int(os.environ.get("MIN_NODES", "2"))

results = {}
lock = threading.Lock()
start = threading.Barrier(SESSIONS)


def session(i):
    seen, errors = [], []
    try:
        con = duckdb.connect(config={"extension_directory": EXT, "autoinstall_known_extensions": "false"})
        con.execute("SET enable_progress_bar = false")
        con.execute("LOAD quack")
        if CA:
            con.execute(f"SET ca_cert_file = '{CA}'")
        con.execute(f"CREATE SECRET (TYPE quack, TOKEN '{TOKEN}', SCOPE 'quack:{ENDPOINT}')")
        start.wait(timeout=60)
        con.execute(f"ATTACH 'quack:{ENDPOINT}' AS r (DISABLE_SSL false)")
        marker = f"s{i}-{os.getpid()}-{time.time_ns()}"
        # State that lives only in this session on its worker.
        con.execute(f"FROM r.query('SET VARIABLE probe_marker = ''{marker}''')").fetchall()
        con.execute(f"FROM r.query('CREATE TEMP TABLE probe_rows AS SELECT range AS i FROM range({i + 1})')").fetchall()
        for p in range(PROBES):
            worker, var, rows = con.execute(
                "FROM r.query('SELECT quackgate.worker_id(), getvariable(''probe_marker''), (SELECT count(*) FROM probe_rows)')"
            ).fetchone()
            seen.append(worker)
            if var != marker:
                errors.append(f"probe {p}: variable {var!r}, expected {marker!r}")
            if rows != i + 1:
                errors.append(f"probe {p}: temp table has {rows} rows, expected {i + 1}")
        con.execute("DETACH r")
        con.close()
    except Exception as e:  # the client's error is the finding
        errors.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    with lock:
        results[i] = {"workers": sorted(set(seen)), "probes": len(seen), "errors": errors}


threads = [threading.Thread(target=session, args=(i,)) for i in range(SESSIONS)]
t0 = time.time()
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=600)

ok = True
for i in range(SESSIONS):
    r = results.get(i, {"workers": [], "probes": 0, "errors": ["did not finish"]})
    line = f"session {i:2}: {r['probes']} probes on {','.join(r['workers']) or '-'}"
    if r["errors"] or len(r["workers"]) != 1 or r["probes"] != PROBES:
        ok = False
        line += "  FAILED " + "; ".join(r["errors"][:3])
    print(line)
nodes = sorted({w.split(".")[0] for r in results.values() for w in r["workers"]})
print(json.dumps({
    "sessions": SESSIONS, "probes": PROBES, "each_on_one_worker": ok, "nodes": nodes,
    "errors": sum(len(r["errors"]) for r in results.values()), "seconds": round(time.time() - t0, 1),
}))
sys.exit(0 if ok and len(nodes) >= MIN_NODES else 1)
