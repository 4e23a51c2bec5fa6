#!/usr/bin/env python3
"""Checks the Bicep under infra/ with pycep-parser (the one Bicep parser on PyPI), and reads the
container settings out of the app modules, so that what runs locally is what the template says.

  bicep_check.py parse FILE...        every file parses (pycep-parser)
  bicep_check.py params DIR           every module call passes only declared parameters, and
                                      every parameter without a default
  bicep_check.py paramfile MAIN PARAMS.json
                                      the parameters file names only parameters MAIN declares,
                                      and every one without a default
  bicep_check.py shape                the apps' settings agree with what the deployment needs
                                      and with the configs baked into the image (ports, probes,
                                      secrets as Key Vault references, ingress, replicas); the
                                      metrics sidecar (PROMETHEUS_METRICS) is absent by default
                                      and, when on, scrapes the baked config's admin port and
                                      remote-writes with the app's identity
  bicep_check.py models               every property the Container Apps resources set is one
                                      that azure-mgmt-appcontainers' models know (a misspelt
                                      property would be ignored or refused by ARM)
  bicep_check.py access               least privilege, from main.bicep: each app reads exactly
                                      the Key Vault secrets it references (no fewer: ACA could
                                      not resolve them; no more), only nodes write the data
                                      container, the three identities pull from the registry and
                                      publish metrics (Monitoring Metrics Publisher on the data
                                      collection rule of modules/prometheus.bicep, nothing else)
  bicep_check.py settings APP [k=v]   the container settings of infra/aca/modules/APP-app.bicep
                                      (APP: edge, node, catalog) as JSON: args, env, probes,
                                      ports, secrets, volume mounts; k=v sets a parameter
                                      (values are JSON, else strings)

pycep represents an identifier and a string literal alike (both as a Python str), so the small
evaluator here treats a string as a reference when it names a parameter or variable of the
module (or a loop variable); our modules name no literal after one of their own symbols.
"""
import json
import re
import sys
from pathlib import Path

from pycep import BicepParser

MODULES = Path(__file__).resolve().parent.parent / "modules"


_PARSED = {}


def parse(path):
    """pycep's tree of a file, parsed once per process (building the parser takes seconds)."""
    key = Path(path).resolve()
    if key not in _PARSED:
        global _PARSER
        if "_PARSER" not in globals():
            _PARSER = BicepParser()
        _PARSED[key] = _PARSER.parse(file_path=key)
    return _PARSED[key]


COMPARISONS = ("equals", "not_equals", "greater_than", "less_than", "greater_than_or_equals", "less_than_or_equals")


class Unknown(str):
    """A value the evaluator cannot know here (a resource property, a runtime output)."""


def evaluate(node, scope):
    if isinstance(node, str):
        if node in scope:
            return scope[node]
        if "${" in node:
            def interp(m):
                v = evaluate_expr_text(m.group(1), scope)
                return v if isinstance(v, str) else json.dumps(v)
            return re.sub(r"\$\{([^}]*)\}", interp, node)
        return node
    if isinstance(node, list):
        return [evaluate(n, scope) for n in node]
    if not isinstance(node, dict):
        return node
    if "loop_type" in node:
        loop = node["loop_type"]
        d = loop["detail"]
        if loop["type"] == "range":
            items = list(range(int(evaluate(d["start_index"], scope)), int(evaluate(d["start_index"], scope)) + int(evaluate(d["count"], scope))))
            name = d.get("item_name") or d.get("index_name")
            return [evaluate(node["config"], {**scope, name: i}) for i in items]
        arr = evaluate(d["array_name"], scope)
        if not isinstance(arr, list):
            return Unknown(f"<loop over {d['array_name']}>")
        out = []
        for i, item in enumerate(arr):
            inner = {**scope, d["item_name"]: item}
            if d.get("index_name"):
                inner[d["index_name"]] = i
            out.append(evaluate(node["config"], inner))
        return out
    if "operator" in node:
        op = node["operator"]
        t, o = op["type"], op["operands"]
        if t == "conditional":
            c = evaluate(o["condition"], scope)
            if isinstance(c, Unknown):
                return Unknown("<conditional>")
            return evaluate(o["true_value"] if c else o["false_value"], scope)
        if t == "property_accessor":
            base = evaluate(o["operand_1"], scope)
            key = o["operand_2"]
            if isinstance(key, dict):
                return Unknown("<property>")
            if isinstance(base, dict) and key in base:
                return base[key]
            return Unknown(f"<{o['operand_1']}.{key}>")
        # pycep 0.5 parses `a == b ? x : y` as `a == (b ? x : y)`: put the comparison back
        # in the condition, where Bicep has it.
        o2 = o.get("operand_2")
        if t in COMPARISONS and isinstance(o2, dict) and o2.get("operator", {}).get("type") == "conditional":
            c = o2["operator"]["operands"]
            cond = {"operator": {"type": t, "operands": {"operand_1": o["operand_1"], "operand_2": c["condition"]}}}
            return evaluate({"operator": {"type": "conditional", "operands": {"condition": cond, "true_value": c["true_value"], "false_value": c["false_value"]}}}, scope)
        if t in ("greater_than", "less_than", "greater_than_or_equals", "less_than_or_equals"):
            a, b = evaluate(o["operand_1"], scope), evaluate(o["operand_2"], scope)
            return {"greater_than": a > b, "less_than": a < b, "greater_than_or_equals": a >= b, "less_than_or_equals": a <= b}[t]
        if t in ("equals", "not_equals"):
            a, b = evaluate(o["operand_1"], scope), evaluate(o["operand_2"], scope)
            return (a == b) if t == "equals" else (a != b)
        if t in ("and", "or"):
            a, b = evaluate(o["operand_1"], scope), evaluate(o["operand_2"], scope)
            if isinstance(a, Unknown) or isinstance(b, Unknown):
                return Unknown(f"<{t}>")
            return (a and b) if t == "and" else (a or b)
        if t in ("logical_not", "not"):
            v = evaluate(o.get("bool_value", o.get("operand_1")), scope)
            return Unknown("<not>") if isinstance(v, Unknown) else not v
        if t in ("add", "plus"):
            return evaluate(o["operand_1"], scope) + evaluate(o["operand_2"], scope)
        return Unknown(f"<{t}>")
    if "function" in node:
        f = node["function"]
        t, p = f["type"], f.get("parameters") or {}
        args = [evaluate(v, scope) for v in p.values()]
        if t == "empty":
            return not args[0]
        if t == "string":
            return args[0] if isinstance(args[0], str) else json.dumps(args[0], separators=(",", ":"))
        if t == "concat":
            if all(isinstance(a, list) for a in args):
                return [x for a in args for x in a]
            return "".join(str(a) for a in args)
        if t == "union":
            if all(isinstance(a, dict) for a in args):
                out = {}
                for a in args:
                    out.update(a)
                return out
            return [x for a in args for x in a]
        if t == "to_upper":
            return args[0].upper()
        if t == "json":
            return json.loads(args[0])
        if t == "base64_to_string":
            import base64
            return base64.b64decode(args[0]).decode() if not isinstance(args[0], Unknown) else Unknown("<base64ToString>")
        if t == "int":
            return int(args[0])
        return Unknown(f"<{t}()>")
    return {k: evaluate(v, scope) for k, v in node.items()}


def evaluate_expr_text(text, scope):
    text = text.strip()
    if text in scope:
        return scope[text]
    m = re.fullmatch(r"(\w+) \+ (\d+)", text)
    if m and m.group(1) in scope:
        return str(scope[m.group(1)] + int(m.group(2)))
    m = re.fullmatch(r"toUpper\((.*)\)", text)
    if m:
        v = evaluate_expr_text(m.group(1), scope)
        return v.upper() if not isinstance(v, Unknown) else v
    m = re.fullmatch(r"(\w+)\.(\w+)", text)
    if m and isinstance(scope.get(m.group(1)), dict):
        return scope[m.group(1)].get(m.group(2), Unknown(text))
    return Unknown("${" + text + "}")


def module_scope(tree, given):
    scope = {}
    for name, p in tree.get("parameters", {}).items():
        if name in given:
            scope[name] = given[name]
        elif p.get("default") is not None:
            scope[name] = evaluate(p["default"], scope)
        else:
            scope[name] = Unknown(f"<param {name}>")
    # Variables in order; a variable may use an earlier one.
    for name, v in tree.get("variables", {}).items():
        scope[name] = evaluate(v["value"], scope)
    return scope


def settings(app, given):
    tree = parse(MODULES / f"{app}-app.bicep")
    scope = module_scope(tree, given)
    (res,) = tree["resources"].values()
    props = evaluate(res["config"]["properties"], scope)
    # The app's own container first; with metrics on, the Prometheus agent sidecar after it.
    container, *sidecars = props["template"]["containers"]
    cfg = props["configuration"]
    return {
        "app": app,
        "args": container.get("args"),
        "env": container.get("env"),
        "probes": container.get("probes"),
        "volumeMounts": container.get("volumeMounts"),
        "volumes": props["template"].get("volumes"),
        "secrets": [s["name"] for s in cfg.get("secrets", [])],
        "ingress": {k: cfg["ingress"].get(k) for k in ("external", "transport", "targetPort", "exposedPort", "stickySessions")},
        "scale": props["template"].get("scale"),
        "sidecars": sidecars,
    }


SAMPLE = {
    "edge": {"image": "img", "nodePeers": [{"id": "n1", "address": "n1.internal.x:443"}], "trustedProxies": ["10.0.0.0/8"]},
    "node": {"image": "img", "nodeId": "n1", "catalogAddress": "c.internal.x:443", "dataPath": "az://lakehouse/data/",
             "storageAccountName": "acct"},
    "catalog": {"image": "img", "trustedProxies": ["10.0.0.0/8"], "storageName": "catalog"},
}
# PROMETHEUS_METRICS=true, as main.bicep passes it to each app (the URL is the shape
# modules/prometheus.bicep outputs).
METRICS = {"metricsRemoteWriteUrl": "https://dce-x.westeurope-1.metrics.ingest.monitor.azure.com/dataCollectionRules/dcr-0/streams/"
                                     "Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24",
           "metricsImage": "quay.io/prometheus/prometheus:v3.5.0", "identityClientId": "cid"}


def sidecar_config(s):
    """The Prometheus config the metrics sidecar of settings() `s` gets (its PROMETHEUS_CONFIG)."""
    (side,) = s["sidecars"]
    env = {e["name"]: e.get("value") for e in side.get("env", [])}
    return json.loads(env["PROMETHEUS_CONFIG"])


def metrics_problems(app, tag, given, admin):
    """The metrics sidecar, off by default and, when on, scraping the admin port the app's baked
    config really uses, labelled with the app, remote-writing with the app's identity."""
    problems = []
    expect = lambda cond, what: cond or problems.append(f"{tag}: metrics: {what}")
    off = settings(app, given)
    expect(off["sidecars"] == [], f"a sidecar without PROMETHEUS_METRICS: {off['sidecars']}")
    placeholder = settings(app, {**given, **METRICS, "image": ""})
    expect(placeholder["sidecars"] == [], "a sidecar on the placeholder image (no /metrics to scrape)")
    s = settings(app, {**given, **METRICS, "name": f"qg-{app}"})
    if len(s["sidecars"]) != 1:
        return problems + [f"{tag}: metrics: {len(s['sidecars'])} sidecars with PROMETHEUS_METRICS=true"]
    side = s["sidecars"][0]
    cfg = sidecar_config(s)
    (job,) = cfg["scrape_configs"]
    (sc,) = job["static_configs"]
    expect(sc["targets"] == [f"127.0.0.1:{admin}"], f"scrapes {sc['targets']}, not the admin listener 127.0.0.1:{admin} of the baked config")
    expect(job.get("metrics_path", "/metrics") == "/metrics", f"metrics_path {job.get('metrics_path')}")
    labels = cfg["global"]["external_labels"]
    expect(labels.get("app") == f"qg-{app}" and labels.get("role") == app and labels.get("replica") == "$CONTAINER_APP_REPLICA_NAME",
           f"external labels {labels}")
    (rw,) = cfg["remote_write"]
    expect(rw["url"] == METRICS["metricsRemoteWriteUrl"], f"remote_write url {rw['url']}")
    expect(rw.get("azuread") == {"cloud": "AzurePublic", "managed_identity": {"client_id": METRICS["identityClientId"]}},
           f"remote_write auth {rw.get('azuread')} is not the app identity's managed identity")
    cmd = " ".join(side.get("command", []))
    expect(side["image"] == METRICS["metricsImage"] and "--agent" in cmd and "--config.file=/prometheus/prometheus.yml" in cmd
           and 'echo "$PROMETHEUS_CONFIG" > /prometheus/prometheus.yml' in cmd, f"sidecar command {cmd}")
    expect("secretRef" not in json.dumps(side) and "volumeMounts" not in side, "the sidecar reads a secret or a volume")
    print(f"shape {tag}: metrics sidecar scrapes {sc['targets'][0]}{job.get('metrics_path', '/metrics')} every "
          f"{cfg['global']['scrape_interval']}, labels {sorted(labels)}, remote write with managed identity")
    return problems


def shape():
    import tomllib
    problems = []

    def expect(cond, what):
        if not cond:
            problems.append(what)

    dockerfile = (MODULES.parent.parent.parent / "Dockerfile").read_text()
    expect("COPY infra/aca/config/ /etc/quackgate/aca/" in dockerfile, "Dockerfile: does not bake infra/aca/config into /etc/quackgate/aca")
    for app, mode in (("edge", "http"), ("edge", "tcp"), ("node", "http"), ("node", "tcp"), ("catalog", None)):
        given = dict(SAMPLE[app])
        if mode:
            given["ingressMode"] = mode
        s = settings(app, given)
        tag = f"{app}{'/' + mode if mode else ''}"
        role, flag, config = s["args"]
        expect(role == app and flag == "--config" and config.startswith("/etc/quackgate/aca/"), f"{tag}: args {s['args']}")
        cfg_file = MODULES.parent / "config" / Path(config).name
        if not cfg_file.is_file():
            problems.append(f"{tag}: no {cfg_file}")
            continue
        cfg = tomllib.loads(cfg_file.read_text())
        env = {e["name"]: e.get("value", e.get("secretRef")) for e in s["env"]}
        gw = cfg["gateway"]
        port_of = lambda addr: int(str(addr).rsplit(":", 1)[1])
        admin = port_of(gw["admin_listen"])
        health = port_of(gw["health_listen"])
        expect(gw["admin_listen"].startswith("127.0.0.1:"), f"{tag}: the admin listener {gw['admin_listen']} is not on loopback")
        kinds = {p["type"]: p for p in s["probes"]}
        expect(kinds.get("Liveness", {}).get("httpGet") == {"path": "/healthz", "port": health}, f"{tag}: liveness probe is not /healthz on the health port {health}")
        expect(kinds.get("Readiness", {}).get("httpGet") == {"path": "/readyz", "port": health}, f"{tag}: readiness probe is not /readyz on the health port {health}")
        problems += metrics_problems(app, tag, given, admin)
        listen = {
            "edge": env.get("QUACKGATE__GATEWAY__LISTEN") if mode == "tcp" else gw.get("plain_listen"),
            "node": cfg.get("cluster", {}).get("peer_listen"),
            "catalog": gw.get("plain_listen"),
        }[app]
        expect(s["ingress"]["targetPort"] == port_of(listen), f"{tag}: ingress targetPort {s['ingress']['targetPort']} is not the listener's port ({listen})")
        expect(s["ingress"]["external"] == (app == "edge"), f"{tag}: ingress external={s['ingress']['external']}")
        expect(s["ingress"]["stickySessions"] == {"affinity": "none"}, f"{tag}: sticky sessions {s['ingress']['stickySessions']}")
        expect(s["ingress"]["transport"] == (mode or "http"), f"{tag}: transport {s['ingress']['transport']}")
        scale = (s["scale"]["minReplicas"], s["scale"]["maxReplicas"])
        expect(scale == ((2, 4) if app == "edge" else (1, 1)), f"{tag}: replicas {scale}")
        if app == "edge" and mode == "tcp":
            expect(env.get("QUACKGATE__CLUSTER__PEER_TLS") == "false", f"{tag}: the peer leg must be plain behind the nodes' TCP ingress")
        if app == "node" and mode == "tcp":
            expect(s["ingress"]["exposedPort"] == port_of(listen), f"{tag}: TCP ingress exposedPort is not the peer port")
        if app == "edge":
            rules = s["scale"]["rules"]
            expect(rules and ("http" in rules[0] if mode == "http" else "tcp" in rules[0]), f"{tag}: scale rule {rules}")
        # Secrets: Key Vault references only, and every use names one.
        tree = parse(MODULES / f"{app}-app.bicep")
        (res,) = tree["resources"].values()
        raw = evaluate(res["config"]["properties"]["configuration"], module_scope(tree, given))["secrets"]
        for sec in raw:
            expect(set(sec) == {"name", "keyVaultUrl", "identity"} and sec["keyVaultUrl"].endswith("secrets/" + sec["name"]),
                   f"{tag}: secret {sec.get('name')} is not a Key Vault reference by name and identity: {sorted(sec)}")
        names = set(s["secrets"])
        used = {e["secretRef"] for e in s["env"] if "secretRef" in e}
        for vol in s["volumes"]:
            used |= {x["secretRef"] for x in vol.get("secrets", [])}
            for x in vol.get("secrets", []):
                expect(x["path"] == x["secretRef"], f"{tag}: secret file {x['path']} is not named after its secret")
        expect(used <= names, f"{tag}: uses undeclared secrets {sorted(used - names)}")
        expect(names <= used, f"{tag}: declares unused secrets {sorted(names - used)}")
        # Files the config names under the secret volume are there.
        mounts = {m["mountPath"]: m["volumeName"] for m in s["volumeMounts"]}
        files = {f"/run/secrets/quackgate/{x['path']}" for v in s["volumes"] for x in v.get("secrets", [])}
        wanted = [gw.get("id_secret_file"), *gw.get("previous_id_secret_files", []),
                  cfg.get("workers", {}).get("ducklake", {}).get("catalog_token_file"),
                  cfg.get("auth", {}).get("static_tokens_file"),
                  env.get("QUACKGATE__TLS__CERT"), env.get("QUACKGATE__TLS__KEY")]
        for w in filter(None, wanted):
            expect(w in files, f"{tag}: the config reads {w}, which the secret volume does not hold")
        expect(mounts.get("/tmp") == "tmp", f"{tag}: /tmp (TMPDIR) is not a volume")
        if app == "catalog":
            expect(str(Path(cfg["catalog"]["file"]).parent) in mounts, f"{tag}: the catalog file's folder is not a mounted volume")
        print(f"shape {tag}: args {' '.join(s['args'])}; ports {s['ingress']['targetPort']} (ingress) {admin} (probes); "
              f"{len(s['env'])} env, secrets {','.join(s['secrets'])}")
    return problems


def unknown_properties(obj, raw, path, out):
    fields = {f._rest_name: attr for attr, f in type(obj)._attr_to_rest_field.items()}
    for k, v in raw.items():
        if k not in fields:
            out.append(f"{path}.{k}")
            continue
        val = getattr(obj, fields[k])
        if hasattr(val, "_attr_to_rest_field") and isinstance(v, dict):
            unknown_properties(val, v, f"{path}.{k}", out)
        elif isinstance(val, list) and isinstance(v, list):
            for i, (a, b) in enumerate(zip(val, v)):
                if hasattr(a, "_attr_to_rest_field") and isinstance(b, dict):
                    unknown_properties(a, b, f"{path}.{k}[{i}]", out)


def models():
    from azure.mgmt.appcontainers import models as m
    checks = [(f"{app}-app.bicep", "app", m.ContainerApp, {**SAMPLE[app], **extra}, f"{app}{tag}")
              for app, extra, tag in (("edge", {}, "/http"), ("edge", {"ingressMode": "tcp"}, "/tcp"), ("node", {}, "/http"),
                                      ("node", {"ingressMode": "tcp"}, "/tcp"), ("catalog", {}, ""),
                                      ("edge", METRICS, "/http+metrics"), ("node", METRICS, "/http+metrics"),
                                      ("catalog", METRICS, "+metrics"))]
    for given in ({}, {"infrastructureSubnetId": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/infrastructure"}):
        env = {"name": "cae", "location": "westeurope", "logAnalyticsName": "log", "catalogStorageAccountName": "st", "catalogShareName": "catalog", **given}
        checks.append(("environment.bicep", "environment", m.ManagedEnvironment, env, "environment" + ("/vnet" if given else "")))
        checks.append(("environment.bicep", "catalogStorage", m.ManagedEnvironmentStorage, env, "environment storage" + ("/vnet" if given else "")))
    problems = []
    import inspect
    from azure.mgmt.appcontainers import _configuration
    sdk_api = re.search(r'api_version: str = kwargs.pop\("api_version", "([^"]+)"\)', inspect.getsource(_configuration)).group(1)
    for file, symbol, model, given, tag in checks:
        tree = parse(MODULES / file)
        api = tree["resources"][symbol]["api_version"]
        if api != sdk_api:
            problems.append(f"{file}: {symbol} uses API version {api}, the models checked are {sdk_api}'s")
        scope = module_scope(tree, given)
        cfg = tree["resources"][symbol]["config"]
        raw = {k: evaluate(v, scope) for k, v in cfg.items() if k in ("properties", "identity", "location", "tags")}
        raw = json.loads(json.dumps(raw))  # plain JSON, as ARM gets it
        out = []
        unknown_properties(model(raw), raw, tag, out)
        problems += [f"{file}: {o}: not a property of {model.__name__} (azure-mgmt-appcontainers)" for o in out]
        print(f"models {tag}: {file} resource {symbol} ({api}) against {model.__name__} ({sdk_api}): {len(out)} unknown properties")
    return problems


MAIN = MODULES.parent / "main.bicep"


def symbols(node):
    """The module symbols an expression refers to (`edgeIdentity` in edgeIdentity.outputs.id)."""
    if isinstance(node, list):
        return [x for n in node for x in symbols(n)]
    if isinstance(node, dict) and "loop_type" in node:
        # [for i in range(...): nodeApps[i].outputs.x]
        return symbols(node["config"])
    if isinstance(node, dict) and "operator" in node and node["operator"]["type"] == "index_accessor":
        return symbols(node["operator"]["operands"]["operand_1"]) or [node["operator"]["operands"]["operand_1"]]
    if isinstance(node, dict) and "operator" in node and node["operator"]["type"] == "property_accessor":
        first = node["operator"]["operands"]["operand_1"]
        return [first] if isinstance(first, str) else symbols(first)
    return []


def kv_secrets(given=None):
    """main.bicep's Key Vault secrets: name -> (value, reader identity symbols, operator?)."""
    tree = parse(MAIN)
    scope = module_scope(tree, given or {})
    out = {}
    for name, rel, args in module_calls(tree):
        if rel.endswith("kv-secret.bicep"):
            out[args["secretName"]] = (evaluate(args["value"], scope), symbols(args.get("readerPrincipalIds", [])),
                                       "operatorPrincipalId" in args)
    return out


def access():
    tree = parse(MAIN)
    calls = {name: (rel, args) for name, rel, args in module_calls(tree)}
    problems = []
    secrets_ = kv_secrets()
    readable = {}
    for sname, (_, readers, operator) in secrets_.items():
        for r in readers:
            readable.setdefault(r, set()).add(sname)
        print(f"access: Key Vault secret {sname}: read by {', '.join(readers) or 'no app'}{' and the operator' if operator else ''}")
    used = {}
    for name, (rel, args) in calls.items():
        app = Path(rel).name.removesuffix("-app.bicep")
        if app not in SAMPLE:
            continue
        (identity,) = symbols(args["identityId"])
        modes = ("http", "tcp") if app in ("edge", "node") else (None,)
        for mode in modes:
            given = dict(SAMPLE[app])
            if mode:
                given["ingressMode"] = mode
            used.setdefault(identity, set()).update(settings(app, given)["secrets"])
    for identity in sorted(set(used) | set(readable)):
        u, r = used.get(identity, set()), readable.get(identity, set())
        if u - r:
            problems.append(f"{identity}: its app references {sorted(u - r)} but may not read them")
        if r - u:
            problems.append(f"{identity}: may read {sorted(r - u)}, which its app never uses")
        print(f"access: {identity} reads {', '.join(sorted(r))}")
    writers = symbols(calls["dataStorage"][1]["contributorPrincipalIds"]) + symbols(calls["nodeDataWriters"][1]["principalIds"])
    if writers != ["nodeApps"]:
        problems.append(f"data container writers are {writers}, not just the node apps' system identities")
    pullers = sorted(symbols(calls["registry"][1]["pullPrincipalIds"]))
    if pullers != sorted(set(used)):
        problems.append(f"registry pullers {pullers} are not the apps' identities {sorted(set(used))}")
    print(f"access: data container written by {', '.join(writers)}; registry pulled by {', '.join(pullers)}")
    # PROMETHEUS_METRICS: each app's identity publishes metrics (its sidecar remote-writes with
    # it), on the data collection rule only, with Monitoring Metrics Publisher and no other role.
    publishers = sorted(symbols(calls["prometheus"][1]["publisherPrincipalIds"]))
    if publishers != sorted(set(used)):
        problems.append(f"metrics publishers {publishers} are not the apps' identities {sorted(set(used))}")
    prom = parse(MODULES / "prometheus.bicep")
    roles = {n: r for n, r in prom["resources"].items() if r["type"] == "Microsoft.Authorization/roleAssignments"}
    for n, r in roles.items():
        cfg = r["config"]
        while "properties" not in cfg and "config" in cfg:
            cfg = cfg["config"]
        role = cfg["properties"]["roleDefinitionId"]
        role_fn = prom["variables"].get(role, {}).get("value", {}).get("function", {})
        guid = (role_fn.get("parameters") or {}).get("resource_name_1")
        if cfg.get("scope") != "rule" or prom["resources"]["rule"]["type"] != "Microsoft.Insights/dataCollectionRules" \
                or guid != "3913510d-42f4-4e42-8a64-420c390055eb":  # Monitoring Metrics Publisher
            problems.append(f"prometheus.bicep: role assignment {n} is not Monitoring Metrics Publisher on the data collection rule")
    if not roles:
        problems.append("prometheus.bicep: no role assignment for the publishers")
    for caller, (rel, args) in calls.items():
        if Path(rel).name.endswith("-app.bicep"):
            (identity,) = symbols(args["identityId"])
            client = symbols(args.get("identityClientId", []) if isinstance(args.get("identityClientId"), list) else [args.get("identityClientId")])
            if client != [identity]:
                problems.append(f"{caller}: its sidecar would remote-write as {client}, not its own identity {identity}")
    print(f"access: metrics published by {', '.join(publishers)} (Monitoring Metrics Publisher on the data collection rule only)")
    return problems


def module_calls(tree):
    for name, m in tree.get("modules", {}).items():
        if m.get("type") != "local":
            continue
        cfg = m["config"]
        while "params" not in cfg and "config" in cfg:
            cfg = cfg["config"]
        yield name, m["detail"]["path"], cfg.get("params", {})


def check_params(root):
    problems, calls = [], 0
    for caller in sorted(Path(root).rglob("*.bicep")):
        tree = parse(caller)
        for name, rel, args in module_calls(tree):
            calls += 1
            target = (caller.parent / rel).resolve()
            if not target.is_file():
                problems.append(f"{caller}: module {name}: no file {rel}")
                continue
            declared = parse(target).get("parameters", {})
            for arg in args:
                if arg not in declared:
                    problems.append(f"{caller}: module {name}: {rel} has no parameter {arg!r}")
            for p, spec in declared.items():
                if spec.get("default") is None and p not in args:
                    problems.append(f"{caller}: module {name}: required parameter {p!r} of {rel} not passed")
    return calls, problems


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "parse":
        bad = 0
        for f in rest:
            try:
                parse(f)
            except Exception as e:  # pycep raises lark's exceptions
                bad += 1
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(f"{f}: does not parse: {first}", file=sys.stderr)
        print(f"bicep parse: {len(rest) - bad} of {len(rest)} files parse")
        return 1 if bad else 0
    if cmd == "params":
        calls, problems = check_params(rest[0])
        for p in problems:
            print(p, file=sys.stderr)
        print(f"bicep params: {calls} module calls, {len(problems)} problems")
        return 1 if problems else 0
    if cmd == "access":
        problems = access()
        for p in problems:
            print(p, file=sys.stderr)
        print(f"bicep access: {len(problems)} problems")
        return 1 if problems else 0
    if cmd == "secrets":
        # For the local topology: the secret values main.bicep writes, from JSON params.
        given = json.loads(sys.stdin.read())
        print(json.dumps({k: v[0] for k, v in kv_secrets(given).items()}))
        return 0
    if cmd == "models":
        problems = models()
        for p in problems:
            print(p, file=sys.stderr)
        print(f"bicep models: {len(problems)} problems")
        return 1 if problems else 0
    if cmd == "shape":
        problems = shape()
        for p in problems:
            print(p, file=sys.stderr)
        print(f"bicep shape: {len(problems)} problems")
        return 1 if problems else 0
    if cmd == "paramfile":
        declared = parse(rest[0]).get("parameters", {})
        given = json.loads(Path(rest[1]).read_text())["parameters"]
        problems = [f"{rest[1]}: {k!r} is not a parameter of {rest[0]}" for k in given if k not in declared]
        problems += [f"{rest[1]}: required parameter {k!r} of {rest[0]} is missing" for k, spec in declared.items() if spec.get("default") is None and k not in given]
        for p in problems:
            print(p, file=sys.stderr)
        print(f"bicep paramfile: {len(given)} parameters, {len(problems)} problems")
        return 1 if problems else 0
    if cmd == "settings":
        given = {}
        for kv in rest[1:]:
            k, v = kv.split("=", 1)
            try:
                given[k] = json.loads(v)
            except json.JSONDecodeError:
                given[k] = v
        print(json.dumps(settings(rest[0], given), indent=1))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
