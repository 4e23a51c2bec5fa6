#!/usr/bin/env python3
"""Checks the metrics path of the ACA template and the Grafana dashboard against real quackgate
processes: the Prometheus agent sidecars' own configs (evaluated from the Bicep), real /metrics,
and every dashboard query evaluated by a real Prometheus.

  metrics_check.py run --topology D/topology.env --dashboard infra/grafana/quackgate.json
                       --work W [--scrape-interval 2s] [--prometheus prometheus]

With a local topology up (local_topology.py up ... writes D/topology.env):
 1. Each app of the topology (edge-1.., n1.., catalog) gets the Prometheus config its metrics
    sidecar gets from infra/aca/modules/<kind>-app.bicep with PROMETHEUS_METRICS on
    (bicep_check.settings); the check fails unless its scrape target is 127.0.0.1:<the admin
    port of the config the image bakes in>. What is changed to run here, and only this: the
    target's port becomes the local app's admin port (every app binds its own on loopback),
    and remote_write goes to a local Prometheus (the remote-write receiver) without `azuread`
    (no Azure AD here; Debian's Prometheus 2.42 does not even parse it). The external labels
    (app, role, replica from $CONTAINER_APP_REPLICA_NAME) are kept, so the queries see the
    labels Azure Monitor would hold.
 2. The sidecar's own shell step writes each config from PROMETHEUS_CONFIG to its file; one
    Prometheus agent per app (--enable-feature=agent,expand-external-labels: the 2.x spelling
    of the sidecar's Prometheus 3 `--agent`) reads it, scrapes the app and remote-writes to the
    receiver, as on ACA.
 3. Traffic, before the agents start (so every counter exists at their first scrape) and again
    while they run: check-multi-replica.sh (sessions, probes across both edges and nodes) and
    one wrong token (an auth failure, an error).
 4. Every metric name a dashboard query names exists in some app's real /metrics (`up` is the
    scraper's), every label in a `by (...)` exists on the series the receiver holds, every
    template variable's label_values() has values, and every query, evaluated by the receiver's
    HTTP API ($__rate_interval as 2m, $app/$replica as .*), succeeds with a non-empty result;
    every query over rate() has a finite value > 0 (the traffic of step 3 is in its window).
"""
import argparse
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bicep_check  # noqa: E402

ACA = Path(__file__).resolve().parent.parent
REPO = ACA.parent.parent


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def query(base, expr):
    out = json.loads(get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    if out.get("status") != "success":
        raise RuntimeError(f"{expr}: {out}")
    return out["data"]["result"]


def wait(what, cond, timeout):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def topology(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        k, _, v = line.partition("=")
        env[k] = shlex.split(v)[0] if v else ""
    return env


def app_of(local):
    """A local app name (edge-1, n1, catalog) -> (kind, ACA app name, replica name)."""
    if local.startswith("edge-"):
        return "edge", "qg-edge", f"qg-edge--local-{local}"
    if local == "catalog":
        return "catalog", "qg-catalog", "qg-catalog--local"
    return "node", f"qg-{local}", f"qg-{local}--local"


def sidecar_configs(admin_urls, interval, receiver):
    """Each app's sidecar config from the Bicep, checked against its baked admin port, then
    pointed at the local admin listener and the local receiver."""
    problems, out = [], {}
    for local, url in admin_urls.items():
        kind, name, replica = app_of(local)
        given = {**bicep_check.SAMPLE[kind], **bicep_check.METRICS, "name": name, "metricsScrapeInterval": interval}
        s = bicep_check.settings(kind, given)
        if len(s["sidecars"]) != 1:
            problems.append(f"{local}: {kind}-app.bicep gives no metrics sidecar with PROMETHEUS_METRICS on")
            continue
        cfg = bicep_check.sidecar_config(s)
        baked = tomllib.loads((ACA / "config" / Path(s["args"][2]).name).read_text())
        admin_port = int(baked["gateway"]["admin_listen"].rsplit(":", 1)[1])
        (job,) = cfg["scrape_configs"]
        (sc,) = job["static_configs"]
        if sc["targets"] != [f"127.0.0.1:{admin_port}"]:
            problems.append(f"{local}: the sidecar scrapes {sc['targets']}, the app's admin listener is on port {admin_port}")
            continue
        local_admin = urllib.parse.urlparse(url).netloc
        sc["targets"] = [local_admin]
        cfg["remote_write"] = [{"url": f"{receiver}/api/v1/write"}]
        out[local] = (cfg, replica, s["sidecars"][0]["command"])
        print(f"metrics_check: {local}: {kind}-app.bicep's sidecar scrapes 127.0.0.1:{admin_port}{job.get('metrics_path', '/metrics')} "
              f"(the baked admin port); here {local_admin}, replica {replica}")
    return out, problems


def exprs_of(dashboard):
    out = []
    for p in dashboard["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return out


def substitute(expr):
    return expr.replace("$__rate_interval", "2m").replace("$app", ".*").replace("$replica", ".*")


def raw_metrics(admin_urls):
    """Metric names and their label names, from every app's real /metrics."""
    names = {}
    for url in admin_urls.values():
        for line in get(f"{url}/metrics").splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?", line)
            labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
            names.setdefault(m.group(1), set()).update(labels)
    return names


def check_dashboard(dashboard, receiver, admin_urls):
    problems = []
    raw = raw_metrics(admin_urls)
    added = {"app", "role", "replica", "job", "instance"}  # the sidecar's external labels, the scrape's
    ds = {"type": "prometheus", "uid": "${datasource}"}
    for p in dashboard["panels"]:
        if p["type"] != "row" and (p.get("datasource") != ds or any(t.get("datasource") != ds for t in p["targets"])):
            problems.append(f"panel {p['title']!r}: its data source is not the ${{datasource}} variable")
    for title, expr in exprs_of(dashboard):
        e = substitute(expr)
        used = set(re.findall(r"\b(quackgate_[a-z_]+)\b", e))
        if re.search(r"\bup\{", e):
            used.add("up")
        labels = set()
        for metric in used:
            if metric == "up":
                labels |= added
                continue
            if metric not in raw:
                problems.append(f"{title!r}: {metric} is not in any app's /metrics")
                continue
            labels |= raw[metric] | added
        if not used <= set(raw) | {"up"}:
            labels = None  # reported above; its labels are unknown
        for group in re.findall(r"\bby \(([^)]*)\)", e) if labels is not None else []:
            for label in (x.strip() for x in group.split(",")):
                if label not in labels:
                    problems.append(f"{title!r}: `by ({group})`: no series of {sorted(used)} has the label {label}")
        for label in re.findall(r'([a-z_]+)=~?"', e) if labels is not None else []:
            if label not in labels:
                problems.append(f"{title!r}: the selector's label {label} is on no series of {sorted(used)}")
        try:
            result = query(receiver, e)
        except Exception as err:  # noqa: BLE001 - the query's error is the finding
            problems.append(f"{title!r}: {e}: {err}")
            continue
        values = [float(r["value"][1]) for r in result]
        if not result:
            problems.append(f"{title!r}: {e}: empty result")
        elif "rate(" in e and not any(math.isfinite(v) and v > 0 for v in values):
            problems.append(f"{title!r}: {e}: no finite value > 0 after the traffic ({values})")
        finite = [v for v in values if math.isfinite(v)]
        print(f"metrics_check: {title}: {len(result)} series ({len(values) - len(finite)} NaN: no requests of theirs in the window), "
              f"max {max(finite) if finite else float('nan'):.4g}")
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", var["query"]["query"])
        values = json.loads(get(f"{receiver}/api/v1/label/{m.group(2)}/values?" +
                                urllib.parse.urlencode({"match[]": substitute(m.group(1))})))["data"]
        if not values:
            problems.append(f"variable {var['name']}: {var['query']['query']} has no values")
        print(f"metrics_check: variable {var['name']}: {', '.join(values)}")
    return problems


def wrong_token(topology):
    t = shlex.quote(topology)
    cmd = (f". {REPO}/infra/aca/lib.sh; parse_common_args --topology {t}; duckdb_home; "
           f"out=$(duck \"FROM r.query('SELECT 1');\" wrong-token || true); grep -q 'Authentication failed' <<<\"$out\"")
    return subprocess.run(["bash", "-c", cmd], cwd=REPO).returncode == 0


def traffic(topology, edge_admin_urls=None):
    """Sessions and probes across both edges and nodes, and a wrong token (an auth failure and
    an error on an edge). With edge_admin_urls: wrong tokens until every edge has counted one
    (the public ingress picks the edge), so that a later one adds to an existing counter."""
    cmd = f"{REPO}/infra/aca/check-multi-replica.sh --topology {shlex.quote(topology)} --sessions 4 --probes 4 >/dev/null"
    if subprocess.run(["bash", "-c", cmd], cwd=REPO).returncode != 0:
        print(f"metrics_check: traffic failed: {cmd}", file=sys.stderr)
        return False
    for _ in range(10):
        if not wrong_token(topology):
            print("metrics_check: a wrong token did not fail with Authentication failed", file=sys.stderr)
            return False
        if not edge_admin_urls or all("quackgate_auth_failures_total{" in get(f"{u}/metrics") for u in edge_admin_urls):
            return True
    print("metrics_check: 10 wrong tokens did not reach every edge", file=sys.stderr)
    return False


def run(args):
    topo = topology(args.topology)
    admin_urls = dict(x.split("=", 1) for x in topo["ADMIN_URLS"].split(","))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    procs = []

    def start(name, argv, env=None):
        log = open(work / f"{name}.log", "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=work)
        procs.append(p)
        return p

    try:
        port = free_port()
        receiver = f"http://127.0.0.1:{port}"
        configs, problems = sidecar_configs(admin_urls, args.scrape_interval, receiver)
        if problems:
            return problems
        # Once before the agents start, so that every counter exists at their first scrape (a
        # series' first sample is no increase to rate()), and once while they run.
        if not traffic(args.topology, [u for k, u in admin_urls.items() if k.startswith("edge-")]):
            return ["traffic failed (see above)"]
        (work / "receiver.yml").write_text("{}\n")
        start("receiver", [args.prometheus, "--config.file=receiver.yml", "--storage.tsdb.path=receiver-data",
                           f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver"])
        wait("the receiver", lambda: get(f"{receiver}/-/ready").strip() != "", 60)
        for local, (cfg, replica, command) in configs.items():
            # The config file as the sidecar's own command writes it from PROMETHEUS_CONFIG (its
            # shell step, with /prometheus as a folder here), then read back as the agent will.
            shell, flag, script = command
            write = script.split(" && exec ")[0].replace("/prometheus/prometheus.yml", f"agent-{local}.yml")
            subprocess.run([shell, flag, write], cwd=work, check=True, env={**os.environ, "PROMETHEUS_CONFIG": json.dumps(cfg)})
            if json.loads((work / f"agent-{local}.yml").read_text()) != cfg:
                return [f"{local}: the sidecar's command does not write PROMETHEUS_CONFIG to its config file unchanged"]
            start(f"agent-{local}", [args.prometheus, "--enable-feature=agent,expand-external-labels",
                                     f"--config.file=agent-{local}.yml", f"--storage.agent.path=agent-{local}",
                                     f"--web.listen-address=127.0.0.1:{free_port()}"],
                  {"CONTAINER_APP_REPLICA_NAME": replica})
        n = len(configs)
        wait(f"{n} apps scraped and remote-written (up == 1)",
             lambda: [r["value"][1] for r in query(receiver, 'count(up{job="quackgate"} == 1)')] == [str(n)], 90)
        print(f"metrics_check: {n} agents scrape their app and remote-write to {receiver}")
        if not traffic(args.topology):
            return ["traffic failed (see above)"]
        # A few scrapes and a remote-write flush (5 s batches) after the traffic.
        secs = float(args.scrape_interval.rstrip("s"))
        time.sleep(3 * secs + 7)
        dashboard = json.loads(Path(args.dashboard).read_text())
        return check_dashboard(dashboard, receiver, admin_urls)
    finally:
        # The agents before the receiver: an agent flushes to it on the way out.
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--topology", required=True)
    r.add_argument("--dashboard", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--scrape-interval", default="2s")
    r.add_argument("--prometheus", default="prometheus")
    args = ap.parse_args(argv)
    problems = run(args)
    for p in problems:
        print(f"metrics_check: {p}", file=sys.stderr)
    print(f"metrics_check: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
