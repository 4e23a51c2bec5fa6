#!/usr/bin/env sh
# azd preprovision hook: generates the secrets that are missing from the azd environment and
# checks the parameters, before `azd provision` (and `azd up`) runs main.bicep. Idempotent: a
# value already in the environment is kept, so re-running never rotates anything.
#
# Generated (openssl rand -hex 32), kept in the azd environment (.azure/<env>/.env, on the
# operator's machine) and written by main.bicep into Key Vault:
#   QUACK_TOKEN            the clients' token (Key Vault: quack-token, operator only)
#   QUACK_TOKEN_SHA256     its SHA-256 (Key Vault: edge-static-tokens, the edges)
#   CATALOG_QUACK_TOKEN    the workers' catalog token (Key Vault: catalog-token, the nodes)
#   CATALOG_QUACK_TOKEN_SHA256 (Key Vault: catalog-static-tokens, the catalog)
#   QUACKGATE_ID_SECRET    signs connection ids and the peer leg (Key Vault: id-secret,
#                          the edges and the nodes)
#   QUACKGATE_ID_SECRET_PREVIOUS  verifies only (Key Vault: id-secret-previous); the id
#                          secret itself unless a rotation is under way
# Parameters, with their defaults (azd env set NAME VALUE to change one):
#   QUERY_MIN_REPLICAS=2 QUERY_MAX_REPLICAS=4   edge replicas
#   NODE_COUNT=2                                node apps, one replica each
#   WORKERS_PER_NODE=2                          DuckDB workers per node
#   DUCKLAKE_DATA_PATH=az://lakehouse/data/     the lake's data in the data storage account
#   INGRESS_MODE=http                           http: ACA's HTTP ingress, TLS by the platform,
#                                               240 s request limit; tcp: VNet environment,
#                                               the edge terminates TLS, no request limit
#   TCP_EXPOSED_PORT=8443                       INGRESS_MODE=tcp: the public port
#   EDGE_TLS_CERT_FILE, EDGE_TLS_KEY_FILE       INGRESS_MODE=tcp: PEM files of the edge's
#                                               certificate and key (stored base64 as
#                                               EDGE_TLS_CERT_B64/EDGE_TLS_KEY_B64)
#   OPERATOR_PRINCIPAL_ID, OPERATOR_PRINCIPAL_TYPE=User   who may read quack-token and the
#                                               lake's files; default: the signed-in user
#   PROMETHEUS_METRICS=false                    true: an Azure Monitor workspace and a
#                                               Prometheus agent sidecar in every app
set -eu

get() { azd env get-value "$1" 2>/dev/null || true; }
set_default() { [ -n "$(get "$1")" ] || azd env set "$1" "$2" >/dev/null; }
hex32() { openssl rand -hex 32; }
sha256() { printf %s "$1" | openssl dgst -sha256 -r | cut -d' ' -f1; }
die() { echo "preprovision: $*" >&2; exit 1; }

command -v openssl >/dev/null || die "openssl is needed to generate the secrets"

for name in QUACK_TOKEN CATALOG_QUACK_TOKEN QUACKGATE_ID_SECRET; do
    if [ -z "$(get $name)" ]; then
        azd env set "$name" "$(hex32)" >/dev/null
        echo "preprovision: generated $name"
    fi
done
# The hashes always follow the tokens (an operator may set a token of their own).
azd env set QUACK_TOKEN_SHA256 "$(sha256 "$(get QUACK_TOKEN)")" >/dev/null
azd env set CATALOG_QUACK_TOKEN_SHA256 "$(sha256 "$(get CATALOG_QUACK_TOKEN)")" >/dev/null

id_secret=$(get QUACKGATE_ID_SECRET)
printf %s "$id_secret" | grep -Eq '^[0-9a-f]{64}$' || die "QUACKGATE_ID_SECRET must be 64 hex characters"
# Outside a rotation the previous secret is the secret itself (infra/aca/README.md, rotating).
set_default QUACKGATE_ID_SECRET_PREVIOUS "$id_secret"
get QUACKGATE_ID_SECRET_PREVIOUS | grep -Eq '^[0-9a-f]{64}$' || die "QUACKGATE_ID_SECRET_PREVIOUS must be 64 hex characters"

set_default QUERY_MIN_REPLICAS 2
set_default QUERY_MAX_REPLICAS 4
set_default NODE_COUNT 2
set_default WORKERS_PER_NODE 2
set_default DUCKLAKE_DATA_PATH az://lakehouse/data/
set_default INGRESS_MODE http
set_default TCP_EXPOSED_PORT 8443
set_default OPERATOR_PRINCIPAL_TYPE User
set_default PROMETHEUS_METRICS false
if [ -z "$(get OPERATOR_PRINCIPAL_ID)" ] && command -v az >/dev/null; then
    me=$(az ad signed-in-user show --query id -o tsv 2>/dev/null || true)
    [ -z "$me" ] || { azd env set OPERATOR_PRINCIPAL_ID "$me" >/dev/null; echo "preprovision: OPERATOR_PRINCIPAL_ID = the signed-in user"; }
fi

min=$(get QUERY_MIN_REPLICAS) max=$(get QUERY_MAX_REPLICAS) nodes=$(get NODE_COUNT)
[ "$min" -ge 1 ] && [ "$max" -ge "$min" ] || die "QUERY_MIN_REPLICAS ($min) must be >= 1 and <= QUERY_MAX_REPLICAS ($max)"
[ "$nodes" -ge 1 ] || die "NODE_COUNT must be >= 1"
case $(get DUCKLAKE_DATA_PATH) in
    az://*/*/) ;;
    *) die "DUCKLAKE_DATA_PATH must look like az://<container>/<prefix>/, got $(get DUCKLAKE_DATA_PATH)" ;;
esac

case $(get INGRESS_MODE) in
    http) ;;
    tcp)
        port=$(get TCP_EXPOSED_PORT)
        [ "$port" != 80 ] && [ "$port" != 443 ] || die "TCP_EXPOSED_PORT cannot be 80 or 443 (ACA reserves them for HTTP ingress)"
        for kind in CERT KEY; do
            file=$(get EDGE_TLS_${kind}_FILE)
            if [ -n "$file" ]; then
                [ -r "$file" ] || die "EDGE_TLS_${kind}_FILE: cannot read $file"
                azd env set "EDGE_TLS_${kind}_B64" "$(base64 -w0 < "$file")" >/dev/null
            fi
            [ -n "$(get EDGE_TLS_${kind}_B64)" ] || die "INGRESS_MODE=tcp: set EDGE_TLS_${kind}_FILE to the edge's PEM $(echo $kind | tr A-Z a-z) (azd env set EDGE_TLS_${kind}_FILE path)"
        done
        ;;
    *) die "INGRESS_MODE must be http or tcp, got $(get INGRESS_MODE)" ;;
esac
case $(get PROMETHEUS_METRICS) in
    true | false) ;;
    *) die "PROMETHEUS_METRICS must be true or false, got $(get PROMETHEUS_METRICS)" ;;
esac
echo "preprovision: ok (PROMETHEUS_METRICS=$(get PROMETHEUS_METRICS), INGRESS_MODE=$(get INGRESS_MODE), NODE_COUNT=$nodes, edges $min..$max)"
