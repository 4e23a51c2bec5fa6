#!/usr/bin/env bash
# Attaches a local DuckDB 1.5.5 to the deployment, writes a row and reads it back.
#
#   infra/aca/connect-local.sh                       # the active azd environment
#   infra/aca/connect-local.sh --local --topology D/topology.env
#   infra/aca/connect-local.sh --local --endpoint HOST:PORT --token-file F [--ca F]
#
# The endpoint comes from the azd environment (QUACKGATE_ENDPOINT, QUACKGATE_PORT), the token
# from QUACK_TOKEN there or from Key Vault (quack-token; OPERATOR_PRINCIPAL_ID may read it).
# It prints the client snippet to use in your own DuckDB session, with the token elided.
#
#   --long-statement SECS --expect ok|timeout   also run a statement that takes SECS seconds
#       to its first row, and check the outcome: `ok` (TCP ingress has no request limit) or
#       `timeout` (HTTP ingress cuts it at 240 s: HTTP 504, the session is ended)
. "$(dirname "$0")/lib.sh"
parse_common_args "$@"
LONG= EXPECT=
set -- "${REST_ARGS[@]+"${REST_ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case $1 in
        --long-statement) LONG=$2; shift ;;
        --expect) EXPECT=$2; shift ;;
        *) die "unknown option $1" ;;
    esac
    shift
done

marker=$(random_marker)
out=$(duck "CREATE TABLE IF NOT EXISTS r.connect_local (written_at TIMESTAMP, marker VARCHAR);
INSERT INTO r.connect_local VALUES (now(), '$marker');
SELECT count(*) FROM r.connect_local WHERE marker = '$marker';
FROM r.query('SELECT quackgate.worker_id()');") || true
rows=$(sed -n 1p <<<"$out")
worker=$(sed -n 2p <<<"$out")
if [ "$rows" = 1 ]; then
    pass "attached quack:$ENDPOINT, wrote row $marker and read it back (worker $worker)"
else
    fail "attach, write and read back through quack:$ENDPOINT: $out"
fi
if [ -n "$LONG" ]; then
    got=$(long_statement "$LONG")
    case $EXPECT in
        ok) check "a ${LONG} s statement completes (got: $got)" [ "$got" = ok ] ;;
        timeout) check "a ${LONG} s statement is cut by the request timeout (got: $got)" grep -qE '504|request timeout' <<<"$got" ;;
        *) say "long statement: $got" ;;
    esac
fi
printf '\nIn your own DuckDB 1.5.5 session:\n%s\n' "$(attach_sql '<token>')"
summary
