#!/usr/bin/env bash
# Validates a deployment: the Azure shape, then what a client and an operator see.
#
#   infra/aca/validate-deployment.sh                 # the active azd environment
#   infra/aca/validate-deployment.sh --local --topology D/topology.env
#
# Azure shape (with --local: "skipped: needs Azure"):
#   every app exists and runs an image from the deployment's registry; the edge scales
#   QUERY_MIN_REPLICAS..QUERY_MAX_REPLICAS, every node app and the catalog exactly 1..1; node
#   and catalog ingress is internal, the edge's external; no app has sticky sessions; each app
#   has one active, healthy revision; every app secret is a Key Vault reference (no value);
#   the registry's admin user is off; the data account allows no shared key and no anonymous
#   access.
# Both modes:
#   the public endpoint serves no /readyz, /status, /metrics (no platform metadata in public),
#   while every app's own readiness is true (Azure: the revision's health, from the probes;
#   local: GET /readyz on each admin listener); a valid token works and a wrong one fails with
#   "Authentication failed"; a DuckLake write adds a snapshot to the catalog and data files to
#   the lake (Azure: blobs under DUCKLAKE_DATA_PATH; local: files under --lake-dir); a
#   committed row survives a node restart; the logs hold neither token (Azure: Log Analytics,
#   the last 30 min; local: --log-dir).
. "$(dirname "$0")/lib.sh"
parse_common_args "$@"

az_json() { az "$@" -o json; }

azure_shape() {
    local rg=$AZURE_RESOURCE_GROUP registry=$AZURE_CONTAINER_REGISTRY_ENDPOINT
    local apps=("$EDGE_APP_NAME" "$CATALOG_APP_NAME") app j n
    IFS=, read -r -a nodes <<<"$NODE_APP_NAMES"
    apps+=("${nodes[@]}")
    check "${#nodes[@]} node apps (NODE_COUNT=${NODE_COUNT:-2}), at least 2" [ "${#nodes[@]}" -ge 2 ]
    for app in "${apps[@]}"; do
        if ! j=$(az_json containerapp show -g "$rg" -n "$app" 2>/dev/null); then
            fail "app $app exists"; continue
        fi
        pass "app $app exists"
        check "$app runs an image from $registry" \
            jqtest '.properties.template.containers | all(.image | startswith($r))' --arg r "$registry/" <<<"$j"
        check "$app: no sticky sessions" \
            jqtest '(.properties.configuration.ingress.stickySessions.affinity // "none") == "none"' <<<"$j"
        check "$app: every secret is a Key Vault reference" \
            jqtest '(.properties.configuration.secrets // []) | all(.keyVaultUrl != null and .value == null)' <<<"$j"
        local scale external
        scale=$(jq -r '"\(.properties.template.scale.minReplicas)..\(.properties.template.scale.maxReplicas)"' <<<"$j")
        external=$(jq -r '.properties.configuration.ingress.external' <<<"$j")
        if [ "$app" = "$EDGE_APP_NAME" ]; then
            check "$app scales ${QUERY_MIN_REPLICAS:-2}..${QUERY_MAX_REPLICAS:-4} (got $scale)" [ "$scale" = "${QUERY_MIN_REPLICAS:-2}..${QUERY_MAX_REPLICAS:-4}" ]
            check "$app: public ingress" [ "$external" = true ]
        else
            check "$app: exactly one replica (got $scale)" [ "$scale" = "1..1" ]
            check "$app: internal ingress only" [ "$external" = false ]
        fi
        n=$(az_json containerapp revision list -g "$rg" -n "$app" |
            jq '[.[] | select(.properties.active and .properties.healthState == "Healthy")] | length')
        check "$app: one active healthy revision (got $n)" [ "$n" = 1 ]
    done
    check "registry admin user is off" \
        [ "$(az acr show -n "$AZURE_CONTAINER_REGISTRY_NAME" --query adminUserEnabled -o tsv)" = false ]
    j=$(az_json storage account show -g "$rg" -n "$DATA_STORAGE_ACCOUNT")
    check "data account: no shared key, no anonymous access" \
        jqtest '.allowSharedKeyAccess == false and .allowBlobPublicAccess == false' <<<"$j"
}

if [ "$MODE" = azure ]; then
    command -v jq >/dev/null || die "jq is needed (apt-get install -y jq)"
    azure_shape
else
    for what in "apps exist and pull from the deployment's registry" "scale: edge QUERY_MIN..MAX, nodes and catalog 1..1" \
        "node and catalog ingress internal" "no sticky sessions (ingress setting)" "one healthy revision per app" \
        "app secrets are Key Vault references" "registry admin user off" "data account: no shared key, no anonymous access"; do
        skip "$what"
    done
fi

# No platform metadata on the public endpoint.
curl_public() {
    local ca=()
    [ -z "$CA_FILE" ] || ca=(--cacert "$CA_FILE")
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 "${ca[@]}" "https://$ENDPOINT$1"
}
for path in /readyz /healthz /status /metrics; do
    code=$(curl_public "$path") || true
    check "public $path is not served (HTTP $code)" [ "$code" != 200 ]
done
if [ "$MODE" = local ]; then
    for name in $(admin_names); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$(admin_url "$name")/readyz") || true
        check "$name is ready on its admin listener (HTTP $code)" [ "$code" = 200 ]
    done
else
    say "(readiness: from the revisions' health above; the admin port is not reachable from outside)"
fi

# Tokens.
out=$(duck "FROM r.query('SELECT 42');") || true
check "a valid token works" [ "$(tail -n1 <<<"$out")" = 42 ]
wrong="wrong-$(random_marker)"
out=$(duck "FROM r.query('SELECT 42');" "$wrong") || true
check "a wrong token fails with Authentication failed" grep -q 'Authentication failed' <<<"$out"

# DuckLake: a write adds a snapshot (the catalog's metadata) and data files.
table=validate_$(random_marker)
before=$(duck "FROM r.query('SELECT count(*) FROM ducklake_snapshots(current_database())');" | tail -n1) || true
files_before=0
if [ "$MODE" = local ]; then
    files_before=$(find "$LAKE_DIR" -type f -name '*.parquet' | wc -l)
else
    prefix=${DUCKLAKE_DATA_PATH#az://*/}
    files_before=$(az storage blob list --auth-mode login --account-name "$DATA_STORAGE_ACCOUNT" -c "$DATA_CONTAINER" \
        --prefix "$prefix" --num-results 5000 --query 'length(@)' -o tsv 2>/dev/null || echo 0)
fi
out=$(duck "CREATE TABLE r.$table AS SELECT range AS i FROM range(10000);
SELECT count(*) FROM r.$table;
FROM r.query('SELECT count(*) FROM ducklake_snapshots(current_database())');") || true
after=$(tail -n1 <<<"$out")
check "a DuckLake write commits (10000 rows read back)" [ "$(sed -n 1p <<<"$out")" = 10000 ]
check "the write added a catalog snapshot ($before -> $after)" [ "${after:-0}" -gt "${before:-0}" ] 2>/dev/null
if [ "$MODE" = local ]; then
    files_after=$(find "$LAKE_DIR" -type f -name '*.parquet' | wc -l)
    check "the write added data files under $LAKE_DIR ($files_before -> $files_after)" [ "$files_after" -gt "$files_before" ]
else
    files_after=$(az storage blob list --auth-mode login --account-name "$DATA_STORAGE_ACCOUNT" -c "$DATA_CONTAINER" \
        --prefix "$prefix" --num-results 5000 --query 'length(@)' -o tsv 2>/dev/null || echo 0)
    check "the write added blobs under $DUCKLAKE_DATA_PATH ($files_before -> $files_after)" [ "$files_after" -gt "$files_before" ]
fi

# A committed row survives a node restart.
marker=$(random_marker)
out=$(duck "CREATE TABLE IF NOT EXISTS r.validate_restart (marker VARCHAR);
INSERT INTO r.validate_restart VALUES ('$marker');
FROM r.query('SELECT quackgate.worker_id()');") || true
node=$(tail -n1 <<<"$out" | cut -d. -f1)
if [[ $node =~ ^n[0-9]+$ ]]; then
    if [ "$MODE" = local ]; then
        [ -n "$RESTART_CMD" ] || die "--local needs --restart-cmd (or --topology) for the restart check"
        $RESTART_CMD "$node" >/dev/null
    else
        IFS=, read -r -a nodes <<<"$NODE_APP_NAMES"
        app=${nodes[$(( ${node#n} - 1 ))]}
        rev=$(az containerapp revision list -g "$AZURE_RESOURCE_GROUP" -n "$app" --query '[?properties.active].name | [0]' -o tsv)
        az containerapp revision restart -g "$AZURE_RESOURCE_GROUP" -n "$app" --revision "$rev" >/dev/null
        sleep 20
    fi
    got=
    for _ in $(seq 1 60); do
        got=$(duck "SELECT count(*) FROM r.validate_restart WHERE marker = '$marker';" | tail -n1) || true
        [ "$got" = 1 ] && break
        sleep 3
    done
    check "node $node restarted; the row committed before is there" [ "$got" = 1 ]
else
    fail "a session's worker id names its node (got: $out)"
fi

# The logs hold no token.
catalog_token=
if [ "$MODE" = local ]; then
    [ -n "$LOG_DIR" ] || die "--local needs --log-dir (or --topology) for the log check"
    [ ! -f "$(dirname "$TOKEN_FILE")/catalog-token" ] || catalog_token=$(cat "$(dirname "$TOKEN_FILE")/catalog-token")
    leaks=0
    for t in "$TOKEN" "$wrong" $catalog_token; do
        ! grep -rqF -- "$t" "$LOG_DIR" || leaks=$((leaks + 1))
    done
    check "the logs in $LOG_DIR hold no token (client, wrong, catalog)" [ "$leaks" = 0 ]
else
    sleep 5
    q="ContainerAppConsoleLogs_CL | where TimeGenerated > ago(30m) | where Log_s has '$TOKEN' or Log_s has '$wrong' | count"
    n=$(az monitor log-analytics query -w "$LOG_ANALYTICS_WORKSPACE_ID" --analytics-query "$q" --query '[0].Count' -o tsv 2>/dev/null || echo error)
    check "Log Analytics (30 min) holds neither the client token nor the wrong one (matches: $n)" [ "$n" = 0 ]
fi

summary
