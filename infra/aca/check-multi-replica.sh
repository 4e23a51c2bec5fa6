#!/usr/bin/env bash
# The multi-replica check: 16 concurrent local DuckDB 1.5.5 sessions x 8 probes through the
# public endpoint. Each session must stay on one worker across every probe (worker id, a
# session variable, a temp table), while its requests are spread over >= 2 edge replicas by a
# balancer with no stickiness, and the sessions must land on >= 2 nodes. This is the check that
# fails on the earlier one-replica deployment scaled to two replicas (`Invalid connection id`).
#
#   infra/aca/check-multi-replica.sh [--sessions 16] [--probes 8]      # the active azd environment
#   infra/aca/check-multi-replica.sh --local --topology D/topology.env
#
# Edges: on Azure, the edge app must run >= 2 replicas (az containerapp replica list); locally,
# every edge's /status must show requests it forwarded to nodes (peer requests) during the run.
. "$(dirname "$0")/lib.sh"
SESSIONS=16 PROBES=8
parse_common_args "$@"
set -- "${REST_ARGS[@]+"${REST_ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case $1 in
        --sessions) SESSIONS=$2; shift ;;
        --probes) PROBES=$2; shift ;;
        *) die "unknown option $1" ;;
    esac
    shift
done

# Client requests each edge replica has served so far (local), from its /metrics.
edge_requests() {
    local name
    for name in $(admin_names | grep '^edge'); do
        printf '%s=%s\n' "$name" "$(curl -s --max-time 5 "$(admin_url "$name")/metrics" |
            awk '/^quackgate_requests_total/ { s += $NF } END { print s + 0 }')"
    done
}

if [ "$MODE" = azure ]; then
    n=$(az containerapp replica list -g "$AZURE_RESOURCE_GROUP" -n "$EDGE_APP_NAME" --query 'length(@)' -o tsv)
    check "the edge app runs >= 2 replicas (got $n)" [ "$n" -ge 2 ]
    skip "per-replica request counts (replicas' admin ports are not reachable; see Log Analytics)"
else
    skip "edge replica count from the platform"
    before=$(edge_requests)
fi

out=$(ENDPOINT=$ENDPOINT TOKEN=$TOKEN CA_FILE=$CA_FILE DUCKDB_EXT=$DUCKDB_EXT SESSIONS=$SESSIONS \
    PROBES=$PROBES MIN_NODES=2 "$DUCKDB_PYTHON" "$ACA_DIR/tools/multi_replica.py") && rc=0 || rc=$?
printf '%s\n' "$out" | sed '$d'
result=$(tail -n1 <<<"$out")
# field EXPR: EXPR over the result r (a dict) is true; field_value EXPR prints it.
field() { "$DUCKDB_PYTHON" -c "import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if ($1) else 1)" "$result" 2>/dev/null; }
field_value() { "$DUCKDB_PYTHON" -c "import json,sys; r=json.loads(sys.argv[1]); print($1)" "$result" 2>/dev/null || true; }
say "$result"
check "$SESSIONS sessions x $PROBES probes: each session on one worker, no error" \
    field "r['each_on_one_worker'] and r['errors'] == 0"
check "sessions placed on >= 2 nodes ($(field_value "','.join(r['nodes'])"))" \
    field "len(r['nodes']) >= 2"

if [ "$MODE" = local ]; then
    after=$(edge_requests)
    served=0
    while IFS='=' read -r name n; do
        b=$(sed -n "s/^$name=//p" <<<"$before")
        say "edge $name: $((n - ${b:-0})) requests during the run"
        [ $((n - ${b:-0})) -gt 0 ] && served=$((served + 1))
    done <<<"$after"
    check "requests were served by >= 2 edge replicas ($served)" [ "$served" -ge 2 ]
fi
summary
