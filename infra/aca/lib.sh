# Sourced by the operator scripts in infra/aca/. Reads the deployment to check from the active
# azd environment (`azd env get-values`), or, with --local, from a local topology
# (tools/local_topology.py writes its topology.env; or give each value as an option).
#
# Common options:
#   --local                      local mode: no Azure; the Azure-shape checks print
#                                "skipped: needs Azure"
#   --topology FILE              (local) a topology.env from tools/local_topology.py
#   --endpoint HOST:PORT         (local) the public endpoint
#   --token-file FILE            (local) the client token
#   --ca FILE                    (local) CA of the endpoint's certificate (Azure: public roots)
#   --admin-urls a=URL,b=URL     (local) admin listeners (edge-*, n1.., catalog)
#   --lake-dir DIR               (local) the lake's data folder
#   --log-dir DIR                (local) the apps' logs
#   --restart-cmd CMD            (local) CMD <node id> restarts that node
# DuckDB 1.5.5 comes from $QUACKGATE_DUCKDB_HOME (scripts/fetch-duckdb installs it).
set -euo pipefail

ACA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$ACA_DIR/../.." && pwd)
MODE=azure
ENDPOINT= TOKEN_FILE= CA_FILE= ADMIN_URLS= LAKE_DIR= LOG_DIR= RESTART_CMD=
REST_ARGS=()
PASSED=0 FAILED=0 SKIPPED=0

say() { printf '%s\n' "$*" >&2; }
die() { say "$(basename "$0"): $*"; exit 2; }
pass() { PASSED=$((PASSED + 1)); printf 'passed: %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAILED: %s\n' "$*"; }
skip() { SKIPPED=$((SKIPPED + 1)); printf 'skipped: needs Azure: %s\n' "$*"; }
# check NAME CMD...: pass when CMD succeeds.
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
summary() {
    printf '%s: %d passed, %d failed, %d skipped\n' "$(basename "$0" .sh)" "$PASSED" "$FAILED" "$SKIPPED"
    [ "$FAILED" = 0 ]
}

parse_common_args() {
    while [ $# -gt 0 ]; do
        case $1 in
            --local) MODE=local ;;
            --topology) MODE=local; set -a; . "$2"; set +a; shift ;;
            --endpoint) ENDPOINT=$2; shift ;;
            --token-file) TOKEN_FILE=$2; shift ;;
            --ca) CA_FILE=$2; shift ;;
            --admin-urls) ADMIN_URLS=$2; shift ;;
            --lake-dir) LAKE_DIR=$2; shift ;;
            --log-dir) LOG_DIR=$2; shift ;;
            --restart-cmd) RESTART_CMD=$2; shift ;;
            *) REST_ARGS+=("$1") ;;
        esac
        shift
    done
    if [ "$MODE" = local ]; then
        [ -n "$ENDPOINT" ] || die "--local needs --endpoint (or --topology)"
        [ -n "$TOKEN_FILE" ] || die "--local needs --token-file (or --topology)"
        TOKEN=$(cat "$TOKEN_FILE")
    else
        load_azd_env
    fi
    duckdb_home
}

# The azd environment's values (main.bicep's outputs, the hook's secrets) as shell variables.
load_azd_env() {
    command -v azd >/dev/null || die "azd is not installed (or use --local)"
    command -v az >/dev/null || die "the Azure CLI (az) is not installed (or use --local)"
    local values
    values=$(azd env get-values) || die "no active azd environment (azd env select NAME)"
    set -a; eval "$values"; set +a
    [ -n "${QUACKGATE_ENDPOINT:-}" ] || die "QUACKGATE_ENDPOINT is not in the azd environment: run azd up first"
    ENDPOINT="$QUACKGATE_ENDPOINT:${QUACKGATE_PORT:-443}"
    if [ -n "${QUACK_TOKEN:-}" ]; then
        TOKEN=$QUACK_TOKEN
    else
        # Readable by OPERATOR_PRINCIPAL_ID (Key Vault Secrets User on this secret only).
        TOKEN=$(az keyvault secret show --vault-name "$AZURE_KEY_VAULT_NAME" --name quack-token --query value -o tsv)
    fi
}

duckdb_home() {
    if [ -z "${QUACKGATE_DUCKDB_HOME:-}" ]; then
        QUACKGATE_DUCKDB_HOME=$("$REPO_DIR/scripts/fetch-duckdb" | sed -n 's/^DUCKDB_HOME=//p')
    fi
    DUCKDB_CLI=$QUACKGATE_DUCKDB_HOME/bin/duckdb
    DUCKDB_PYTHON=$QUACKGATE_DUCKDB_HOME/venv/bin/python
    DUCKDB_EXT=$QUACKGATE_DUCKDB_HOME/ext
    [ -x "$DUCKDB_CLI" ] || die "no DuckDB CLI in $QUACKGATE_DUCKDB_HOME (run scripts/fetch-duckdb)"
    export QUACKGATE_DUCKDB_HOME
}

# attach_sql [TOKEN]: SQL that attaches the endpoint as `r` (the client snippet).
attach_sql() {
    local token=${1:-$TOKEN}
    printf "SET enable_progress_bar = false;\nSET extension_directory = '%s';\nSET autoinstall_known_extensions = false;\nLOAD quack;\n" "$DUCKDB_EXT"
    [ -z "$CA_FILE" ] || printf "SET ca_cert_file = '%s';\n" "$CA_FILE"
    printf "CREATE SECRET (TYPE quack, TOKEN '%s', SCOPE 'quack:%s');\nATTACH 'quack:%s' AS r (DISABLE_SSL false);\n" "$token" "$ENDPOINT" "$ENDPOINT"
}

# duck SQL [TOKEN]: runs the attach snippet then SQL in the DuckDB CLI (SQL and token go on
# stdin, never on a command line); prints CSV without header; fails on the first error.
duck() {
    { attach_sql "${2:-$TOKEN}"; printf '%s\n' "$1"; } |
        timeout 120 "$DUCKDB_CLI" -csv -noheader -bail 2>&1 | sed '/^true$/d'
}

# admin_url NAME: the admin URL of NAME from --admin-urls (local mode).
admin_url() { tr ',' '\n' <<<"$ADMIN_URLS" | sed -n "s/^$1=//p"; }
admin_names() { tr ',' '\n' <<<"$ADMIN_URLS" | sed -n 's/=.*//p'; }

random_marker() { printf 'm%s' "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"; }

# jqtest FILTER [jq args]: stdin's JSON satisfies FILTER (quietly, so check's line shows).
jqtest() { local f=$1; shift; jq -e "$@" "$f" >/dev/null; }

# long_statement SECS: runs a statement that takes SECS seconds to its first row; prints ok or
# the client's error (behind HTTP ingress it outlives the request timeout and fails with 504).
long_statement() {
    local out
    out=$(duck "FROM r.query('SELECT sleep_ms($(($1 * 1000)))');
SELECT 'long-statement-done';") || true
    if grep -q 'long-statement-done' <<<"$out"; then echo ok; else grep -m1 'Error' <<<"$out" || printf '%s\n' "$out" | head -n1; fi
}
