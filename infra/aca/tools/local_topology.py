#!/usr/bin/env python3
"""The local stand-in for the Azure Container Apps deployment, built from the template itself.

  local_topology.py up --dir D --bin QUACKGATE --ext EXT_DIR [--nodes 2] [--edges 2]
                       [--request-timeout 240]
                       [--ingress-mode http|tcp] [--image ROOTFS]
  local_topology.py restart --dir D --node n1      (stops node n1, starts it again)
  local_topology.py check-image --dir D           (--image: each app's uid, capabilities, root)
  local_topology.py down --dir D

It reads each app's container settings out of infra/aca/modules/*-app.bicep (bicep_check.py:
args, env, secret names, the secret volume's files, ports), takes the config files the image
bakes in (infra/aca/config/*.toml), and runs on loopback:
  - the catalog, behind an nginx "internal ingress" (TLS, plain to the app);
  - NODES node apps, each behind its own nginx "internal ingress";
  - EDGES edge replicas of one app, behind an nginx "public ingress" that round-robins every
    request with no stickiness, adds X-Forwarded-For and cuts requests at --request-timeout;
    with --ingress-mode tcp (INGRESS_MODE=tcp), the edges terminate TLS themselves with the
    certificate from the "vault" and a TCP proxy round-robins connections to them, with no
    timeout (as ACA's TCP ingress).
What differs from Azure, and only this:
  - Key Vault: each secret main.bicep writes (evaluated from its kv-secret module calls) is a
    file under D/vault; an app's secret volume (a folder of its own) holds only the secrets its
    Bicep volume lists, and `secretRef` env vars get the file's text.
  - Listeners bind 127.0.0.1:0 (QUACKGATE__GATEWAY__*_LISTEN, QUACKGATE__CLUSTER__PEER_LISTEN)
    and the ingresses are nginx on free ports; names are `localhost`, so the peer and catalog
    ingresses are reached by port rather than by host name (SNI routing is tested in
    tests/e2e/timeouts.rs).
  - The ingresses' certificate comes from a local CA, given as cluster.peer_ca_file and
    workers.ducklake.catalog_ca_file (ACA's is publicly trusted, so neither is set there).
  - The lake's data is a local folder, D/lake (the managed-identity Blob access needs Azure):
    [workers.ducklake.azure] and ..._AZURE__ACCOUNT_NAME are left out.
  - Without --image, paths (/run/secrets/quackgate, /opt/quackgate/extensions,
    /var/lib/quackgate/catalog, /tmp) are mapped under D and the apps run as this user. With
    --image ROOTFS (image_rootfs.py build), each app runs in the image's layout as its user
    (10001) on a read-only root, with the template's volumes mounted at the template's paths
    and the configs the image bakes in; the node's config, without its
    [workers.ducklake.azure] section, is mounted over the baked one.
On success it writes D/topology.env (ENDPOINT, TOKEN_FILE, CA_FILE, ADMIN_URLS, ...), which the
operator scripts' --local mode reads with --topology D/topology.env.
"""
import argparse
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bicep_check  # noqa: E402
import image_rootfs  # noqa: E402

ACA = Path(__file__).resolve().parent.parent
# The image's USER (Dockerfile): the owner of what the apps write, in --image mode.
IMAGE_UID = 10001
# Where --image mode mounts the lake's folder and the ingresses' CA.
IMAGE_LAKE = "/var/lib/quackgate/lake"
IMAGE_CA_DIR = "/run/local-ca"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=30, host="127.0.0.1"):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"local_topology: {what} never listened on {port}")


def spawn(d, name, argv, env):
    log = open(d / "logs" / f"{name}.log", "ab")
    out = open(d / "logs" / f"{name}.out", "wb")
    p = subprocess.Popen(argv, env=env, stdout=out, stderr=log, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    pids = json.loads((d / "pids.json").read_text()) if (d / "pids.json").exists() else {}
    pids[name] = p.pid
    (d / "pids.json").write_text(json.dumps(pids))
    return p


def await_ready(d, name, p, timeout=180):
    out = d / "logs" / f"{name}.out"
    end = time.time() + timeout
    while time.time() < end:
        text = out.read_text() if out.exists() else ""
        m = re.search(r"^QUACKGATE READY (.*)$", text, re.M)
        if m:
            return dict(kv.split("=", 1) for kv in m.group(1).split())
        if p.poll() is not None:
            raise SystemExit(f"local_topology: {name} exited ({p.returncode}); log:\n" + (d / "logs" / f"{name}.log").read_text()[-4000:])
        time.sleep(0.2)
    raise SystemExit(f"local_topology: {name} never became ready")


def ingress_host():
    """A name for the ingresses that resolves to loopback but is not `localhost`: DuckDB's Quack
    client speaks plain HTTP to localhost, and the nodes must reach the catalog's ingress over
    HTTPS, as on Azure. The machine's host name, which Debian maps to 127.0.x.1."""
    name = os.environ.get("QUACKGATE_LOCAL_INGRESS_HOST") or socket.gethostname()
    try:
        addr = socket.gethostbyname(name)
    except OSError:
        addr = ""
    if not addr.startswith("127.") or name == "localhost":
        raise SystemExit(f"local_topology: the host name {name!r} does not resolve to a loopback address ({addr or 'no address'}); set QUACKGATE_LOCAL_INGRESS_HOST to a name that does (e.g. one added to /etc/hosts)")
    return name, addr


def tls(d):
    t = d / "tls"
    if (t / "cert.pem").exists():
        return t
    t.mkdir(parents=True)
    run = lambda *a: subprocess.run(a, check=True, cwd=t, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "30", "-subj", "/CN=quackgate-local-ingress-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", "ca.key", "-out", "ca.pem")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=localhost", "-addext", f"subjectAltName=DNS:localhost,DNS:{ingress_host()[0]},IP:127.0.0.1",
        "-addext", "keyUsage=critical,digitalSignature", "-addext", "extendedKeyUsage=serverAuth",
        "-keyout", "key.pem", "-out", "req.csr")
    run("openssl", "x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "30",
        "-copy_extensions", "copy", "-out", "cert.pem")
    return t


def vault(d):
    """Key Vault: the secrets main.bicep writes (its kv-secret module calls, evaluated), from
    values made as the preprovision hook makes them."""
    v = d / "vault"
    if v.exists():
        return v
    v.mkdir(parents=True)
    import base64
    client, catalog, id_secret = secrets.token_hex(32), secrets.token_hex(32), secrets.token_hex(32)
    sha = lambda s: hashlib.sha256(s.encode()).hexdigest()
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()
    files = bicep_check.kv_secrets({
        "quackToken": client, "quackTokenSha256": sha(client),
        "catalogQuackToken": catalog, "catalogQuackTokenSha256": sha(catalog),
        "idSecret": id_secret, "idSecretPrevious": id_secret,
        "edgeTlsCertB64": b64(d / "tls" / "cert.pem"), "edgeTlsKeyB64": b64(d / "tls" / "key.pem"),
    })
    for k, (val, _readers, _operator) in files.items():
        (v / k).write_text(val)
        os.chmod(v / k, 0o600)
    return v


def app_env(d, app, settings, v, overrides, image):
    """The container's env from the template, Key Vault references read from the vault."""
    env = {} if image else {k: val for k, val in os.environ.items() if not k.startswith("QUACKGATE__")}
    for e in settings["env"]:
        if "secretRef" in e:
            env[e["name"]] = (v / e["secretRef"]).read_text()
        else:
            env[e["name"]] = str(e["value"]) if image else map_paths(d, app, str(e["value"]))
    env.update(overrides)
    if not image:
        env["TMPDIR"] = str(d / "apps" / app / "tmp")
    return env


def app_command(d, app, settings, v, args, overrides, drop_sections=()):
    """How the app is started: the binary with paths mapped under D, or (--image) the image's
    layout run as its user on a read-only root, with the template's volumes mounted where the
    template mounts them."""
    image = args.image
    role, cfg = prepare_app(d, app, settings, v, args.ext, drop_sections, image)
    env = app_env(d, app, settings, v, overrides, image)
    if not image:
        return [args.bin, role, "--config", str(cfg)], env
    a = d / "apps" / app
    sources = {"secrets": (a / "secrets", "ro"), "tmp": (a / "tmp", ""), "catalog": (a / "catalog", "")}
    volumes = []
    for m in settings["volumeMounts"]:
        src, mode = sources[m["volumeName"]]
        volumes.append(f"{src}:{m['mountPath']}" + (f":{mode}" if mode else ""))
    # The local substitutes: the lake's folder and the ingresses' CA.
    volumes += [f"{d / 'lake'}:{IMAGE_LAKE}", f"{d / 'tls'}:{IMAGE_CA_DIR}:ro"]
    if drop_sections:
        volumes.append(f"{cfg}:{settings['args'][2]}:ro")
    for path in [a / "tmp", a / "catalog", d / "lake", *(a / "secrets").iterdir()]:
        os.chown(path, IMAGE_UID, IMAGE_UID)
    return image_rootfs.run_argv(image, volumes, env, settings["args"]), dict(os.environ)


def map_paths(d, app, text, ext=None):
    a = d / "apps" / app
    text = text.replace("/run/secrets/quackgate", str(a / "secrets"))
    text = text.replace("/var/lib/quackgate/catalog", str(a / "catalog"))
    if ext:
        text = text.replace("/opt/quackgate/extensions", str(ext))
    return text


def prepare_app(d, app, settings, v, ext, drop_sections, image):
    """The app's folders, its secret volume (only the listed secrets) and its config file."""
    a = d / "apps" / app
    for sub in ("secrets", "tmp", "catalog"):
        (a / sub).mkdir(parents=True, exist_ok=True)
    for vol in settings["volumes"]:
        if vol.get("storageType") == "Secret":
            for s in vol["secrets"]:
                shutil.copy(v / s["secretRef"], a / "secrets" / s["path"])
    role, _, config = settings["args"]
    text = (ACA / "config" / Path(config).name).read_text()
    for section in drop_sections:
        text = re.sub(rf"(?ms)^\[{re.escape(section)}\]\n.*?(?=^\[|\Z)", "", text)
    cfg = a / Path(config).name
    cfg.write_text(text if image else map_paths(d, app, text, ext))
    return role, cfg


def nginx(d, name, upstreams, port, timeout, host="127.0.0.1", ssl=True):
    n = d / "nginx" / name
    n.mkdir(parents=True, exist_ok=True)
    t = d / "tls"
    # max_fails=0: ACA's ingress does not take a replica out of rotation because one request
    # of it timed out; nginx's default (1 failure, 10 s out) would, and then a check of how
    # requests spread over the replicas right after the long-statement check saw only one.
    servers = "".join(f"    server {u} max_fails=0;\n" for u in upstreams)
    (n / "nginx.conf").write_text(f"""daemon off;
user root;
worker_processes 1;
pid {n}/nginx.pid;
error_log {n}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {n}/body;
  proxy_temp_path {n}/proxy;
  fastcgi_temp_path {n}/fastcgi;
  uwsgi_temp_path {n}/uwsgi;
  scgi_temp_path {n}/scgi;
  upstream app {{
{servers}    keepalive 16;
  }}
  server {{
    listen {host}:{port}{" ssl" if ssl else ""};
    ssl_certificate {t}/cert.pem;
    ssl_certificate_key {t}/key.pem;
    client_max_body_size 256m;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header Connection "";
      proxy_read_timeout {timeout}s;
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
}}
""")
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    p = spawn(d, f"nginx-{name}", [binary, "-p", str(n), "-c", str(n / "nginx.conf")], dict(os.environ))
    wait_port(port, f"nginx {name}", host=host)
    return p


def up(args):
    d = Path(args.dir).resolve()
    if (d / "pids.json").exists():
        down(args)
    (d / "logs").mkdir(parents=True, exist_ok=True)
    (d / "lake").mkdir(exist_ok=True)
    host, host_addr = ingress_host()
    tls(d)
    v = vault(d)
    ca = str(d / "tls" / "ca.pem")
    # The CA and the lake as the apps see them.
    app_ca = f"{IMAGE_CA_DIR}/ca.pem" if args.image else ca
    app_lake = IMAGE_LAKE if args.image else str(d / "lake")
    listen0 = "127.0.0.1:0"
    run_args = {}

    # The catalog app and its internal ingress.
    cs = bicep_check.settings("catalog", {"image": "local", "trustedProxies": ["127.0.0.0/8"], "storageName": "catalog"})
    argv, env = app_command(d, "catalog", cs, v, args, {"QUACKGATE__GATEWAY__PLAIN_LISTEN": listen0, "QUACKGATE__GATEWAY__ADMIN_LISTEN": listen0, "QUACKGATE__GATEWAY__HEALTH_LISTEN": listen0})
    p = spawn(d, "catalog", argv, env)
    run_args["catalog"] = (argv, env)
    ready = await_ready(d, "catalog", p)
    catalog_admin = ready["admin"]
    catalog_port = free_port()
    # HTTPS on the ingress host name, with the local CA given to the workers
    # (workers.ducklake.catalog_ca_file), as the Kubernetes manifest does with its own CA.
    nginx(d, "catalog", [ready["plain"]], catalog_port, args.request_timeout, host_addr)

    # The node apps, each with its internal ingress.
    node_admin, peers = {}, []
    for i in range(1, args.nodes + 1):
        nid = f"n{i}"
        # Managed-identity Blob storage needs Azure: a local folder instead.
        ns = bicep_check.settings("node", {
            "image": "local", "nodeId": nid, "catalogAddress": f"{host}:{catalog_port}",
            "dataPath": "az://lakehouse/data/", "storageAccountName": "local",
            "workers": args.workers, "ingressMode": args.ingress_mode})
        ns["env"] = [e for e in ns["env"] if e["name"] not in ("QUACKGATE__WORKERS__DUCKLAKE__AZURE__ACCOUNT_NAME",)]
        argv, env = app_command(d, nid, ns, v, args, {
            "QUACKGATE__CLUSTER__PEER_LISTEN": listen0, "QUACKGATE__GATEWAY__ADMIN_LISTEN": listen0, "QUACKGATE__GATEWAY__HEALTH_LISTEN": listen0,
            "QUACKGATE__WORKERS__DUCKLAKE__DATA_PATH": app_lake + "/",
            "QUACKGATE__WORKERS__DUCKLAKE__CATALOG_CA_FILE": app_ca,
            "QUACKGATE__GATEWAY__SHUTDOWN_GRACE_SECS": "5"}, drop_sections=["workers.ducklake.azure"])
        p = spawn(d, nid, argv, env)
        run_args[nid] = (argv, env)
        (d / "run.json").write_text(json.dumps(run_args))
        ready = await_ready(d, nid, p)
        node_admin[nid] = ready["admin"]
        port = free_port()
        if args.ingress_mode == "tcp":
            # Internal TCP ingress: bytes to the peer listener, no TLS, no timeout.
            spawn(d, f"tcp-{nid}", [sys.executable, str(Path(__file__).resolve()), "tcp-proxy", "--port", str(port), ready["peer"]],
                  dict(os.environ))
            wait_port(port, f"the TCP ingress of {nid}")
        else:
            nginx(d, nid, [ready["peer"]], port, args.request_timeout, host_addr)
        peers.append({"id": nid, "address": f"{host}:{port}"})

    # The edge app: EDGES replicas of one template behind the public ingress.
    tcp = args.ingress_mode == "tcp"
    es = bicep_check.settings("edge", {"image": "local", "nodePeers": peers, "trustedProxies": ["127.0.0.0/8"],
                                       "ingressMode": args.ingress_mode})
    edge_admin, edge_plain, edge_https = {}, [], []
    for r in range(1, args.edges + 1):
        name = f"edge-{r}"
        overrides = {
            "QUACKGATE__GATEWAY__PLAIN_LISTEN": listen0, "QUACKGATE__GATEWAY__ADMIN_LISTEN": listen0, "QUACKGATE__GATEWAY__HEALTH_LISTEN": listen0,
            "QUACKGATE__CLUSTER__PEER_CA_FILE": app_ca}
        if tcp:
            overrides["QUACKGATE__GATEWAY__LISTEN"] = listen0
        argv, env = app_command(d, name, es, v, args, overrides)
        p = spawn(d, name, argv, env)
        run_args[name] = (argv, env)
        ready = await_ready(d, name, p)
        edge_admin[name] = ready["admin"]
        edge_plain.append(ready["plain"])
        edge_https.append(ready.get("https"))
    public = free_port()
    if tcp:
        spawn(d, "tcp-ingress", [sys.executable, str(Path(__file__).resolve()), "tcp-proxy", "--port", str(public), *edge_https],
              dict(os.environ))
        wait_port(public, "the TCP ingress")
    else:
        nginx(d, "public", edge_plain, public, args.request_timeout)

    (d / "run.json").write_text(json.dumps(run_args))
    admin = {**{k: f"http://{a}" for k, a in edge_admin.items()}, **{k: f"http://{a}" for k, a in node_admin.items()}, "catalog": f"http://{catalog_admin}"}
    (d / "topology.env").write_text("".join(f"{k}={shlex.quote(val)}\n" for k, val in {
        "ENDPOINT": f"localhost:{public}",
        "TOKEN_FILE": str(v / "quack-token"),
        "CA_FILE": ca,
        "EDGE_ADMIN_URLS": ",".join(f"http://{a}" for a in edge_admin.values()),
        "NODE_ADMIN_URLS": ",".join(f"{k}=http://{a}" for k, a in node_admin.items()),
        "CATALOG_ADMIN_URL": f"http://{catalog_admin}",
        "ADMIN_URLS": ",".join(f"{k}={u}" for k, u in admin.items()),
        "LAKE_DIR": str(d / "lake"),
        "LOG_DIR": str(d / "logs"),
        "RESTART_CMD": f"{sys.executable} {Path(__file__).resolve()} restart --dir {d} --node",
    }.items()))
    print(f"local_topology: up ({args.ingress_mode} ingress): https://localhost:{public} -> {args.edges} edges -> {args.nodes} nodes -> catalog; {d}/topology.env")


def restart(args):
    d = Path(args.dir).resolve()
    pids = json.loads((d / "pids.json").read_text())
    run_args = json.loads((d / "run.json").read_text())
    pid = pids[args.node]
    os.kill(pid, signal.SIGTERM)
    end = time.time() + 30
    while time.time() < end:
        try:
            os.kill(pid, 0)
            time.sleep(0.2)
        except ProcessLookupError:
            break
    # The node's peer port changes: keep its ingress (nginx) pointing at it.
    argv, env = run_args[args.node]
    (d / "logs" / f"{args.node}.out").unlink(missing_ok=True)
    p = spawn(d, args.node, argv, env)
    ready = await_ready(d, args.node, p)
    conf = d / "nginx" / args.node / "nginx.conf"
    conf.write_text(re.sub(r"server 127\.0\.0\.1:\d+ ", f"server {ready['peer']} ", conf.read_text()))
    pid_ng = pids[f"nginx-{args.node}"]
    os.kill(pid_ng, signal.SIGHUP)
    # The node's admin port changed too.
    env_file = d / "topology.env"
    text = env_file.read_text()
    text = re.sub(rf"{args.node}=http://127\.0\.0\.1:\d+", f"{args.node}=http://{ready['admin']}", text)
    env_file.write_text(text)
    time.sleep(1)
    print(f"local_topology: {args.node} restarted")


def tcp_proxy(args):
    """ACA's TCP ingress: bytes passed through, connections round-robined, no timeout."""
    import asyncio
    import itertools
    upstreams = itertools.cycle(a.rsplit(":", 1) for a in args.upstreams)

    async def pipe(r, w):
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        finally:
            w.close()

    async def handle(cr, cw):
        host, port = next(upstreams)
        try:
            ur, uw = await asyncio.open_connection(host, int(port))
        except OSError:
            cw.close()
            return
        await asyncio.gather(pipe(cr, uw), pipe(ur, cw), return_exceptions=True)

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", args.port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def check_image(args):
    """In --image mode: every app runs as the image's user, with no capabilities, on a
    read-only root, writing only to its volumes."""
    d = Path(args.dir).resolve()
    bad = []
    for name, pid in json.loads((d / "pids.json").read_text()).items():
        if name.startswith(("nginx-", "tcp-")):
            continue
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        uids = status["Uid"].split()
        caps = int(status["CapEff"].strip(), 16)
        root = next(line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines() if line.split()[4] == "/")
        opts = root[5].split(",")
        print(f"local_topology: {name}: uid {uids[0]}, capabilities {caps:#x}, root mounted {root[5]}")
        if set(uids) != {str(IMAGE_UID)} or caps != 0 or "ro" not in opts:
            bad.append(name)
    if bad:
        raise SystemExit(f"local_topology: not as the image runs: {', '.join(bad)}")


def down(args):
    d = Path(args.dir).resolve()
    f = d / "pids.json"
    if not f.exists():
        return
    for name, pid in json.loads(f.read_text()).items():
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    for name, pid in json.loads(f.read_text()).items():
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    f.unlink()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--dir", required=True)
    u.add_argument("--bin", required=True)
    u.add_argument("--ext", required=True, help="DuckDB extension directory")
    u.add_argument("--nodes", type=int, default=2)
    u.add_argument("--edges", type=int, default=2)
    u.add_argument("--workers", type=int, default=2)
    u.add_argument("--request-timeout", type=int, default=240)
    u.add_argument("--ingress-mode", choices=["http", "tcp"], default="http")
    u.add_argument("--image", help="run each app in this image layout (image_rootfs.py build), as its user on a read-only root")
    t = sub.add_parser("tcp-proxy")
    t.add_argument("--port", type=int, required=True)
    t.add_argument("upstreams", nargs="+")
    r = sub.add_parser("restart")
    r.add_argument("--dir", required=True)
    r.add_argument("--node", required=True)
    ci = sub.add_parser("check-image")
    ci.add_argument("--dir", required=True)
    dn = sub.add_parser("down")
    dn.add_argument("--dir", required=True)
    a = ap.parse_args()
    if a.cmd == "up":
        try:
            up(a)
        except BaseException:
            down(a)  # nothing half-started is left running
            raise
        return
    {"restart": restart, "down": down, "tcp-proxy": tcp_proxy, "check-image": check_image}[a.cmd](a)


if __name__ == "__main__":
    main()
