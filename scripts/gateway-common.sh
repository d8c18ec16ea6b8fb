# shellcheck shell=bash
# Start a throwaway gateway on a fresh database, and clean it up. Sourced (not executed) by
# check-dashboards.sh and load.sh:
#
#   source scripts/gateway-common.sh
#   trap gateway_cleanup EXIT
#   gateway_start target/debug/logstitch-gateway    # sets GATEWAY_URL, GATEWAY_ADMIN_TOKEN
#
# Optional, set before gateway_start: GATEWAY_PURPOSE (part of the database name),
# GATEWAY_LOG_FILE (server log; default a temp file), GATEWAY_ENV (array of extra NAME=VALUE
# settings for the server, e.g. LOGSTITCH__SECTION__KEY overrides).
#
# The database is created next to the one scripts/ensure-db.sh reports (same server), named
# logstitch_<purpose>_<pid>, and dropped (WITH (FORCE)) by gateway_cleanup, as is the server
# process, which is stopped by its pid. Only 127.0.0.1 is used.

# shellcheck source-path=SCRIPTDIR source=pg-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg-common.sh"

GATEWAY_PURPOSE=${GATEWAY_PURPOSE:-scratch}
if [[ -z ${GATEWAY_ENV+set} ]]; then
    GATEWAY_ENV=()
fi
GATEWAY_URL=
GATEWAY_PID=
GATEWAY_ADMIN_TOKEN=
GATEWAY_DB_NAME=
GATEWAY_ADMIN_DB_URL=
GATEWAY_LOG=
GATEWAY_PSQL=

gw_log() { echo "[gateway] $*" >&2; }
gw_die() {
    echo "[gateway] ERROR: $*" >&2
    exit 1
}

# gw_psql SQL: run SQL on the database ensure-db.sh reported (never inside the scratch db).
gw_psql() {
    PGOPTIONS='-c client_min_messages=warning' "$GATEWAY_PSQL" -X -w -q -v ON_ERROR_STOP=1 -d "$GATEWAY_ADMIN_DB_URL" -c "$1"
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
gw_free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# gateway_start BIN: create the database, start BIN serving on a free port of 127.0.0.1,
# wait until /readyz answers 200. Its stderr (the logs) goes to $GATEWAY_LOG.
gateway_start() {
    local bin=$1 url query='' port i
    [[ -x $bin ]] || gw_die "$bin is not built"
    command -v python3 >/dev/null 2>&1 || gw_die "python3 is needed"
    command -v curl >/dev/null 2>&1 || gw_die "curl is needed"

    url=$("$REPO/scripts/ensure-db.sh")
    GATEWAY_PSQL=$(find_client_tool psql)
    [[ -n $GATEWAY_PSQL ]] || gw_die "psql not found (scripts/ensure-db.sh installs postgresql-client)"
    if [[ $url == *\?* ]]; then
        query="?${url#*\?}"
        url=${url%%\?*}
    fi
    GATEWAY_ADMIN_DB_URL=$url$query
    GATEWAY_DB_NAME="logstitch_${GATEWAY_PURPOSE}_$$"
    gw_log "creating database $GATEWAY_DB_NAME"
    gw_psql "DROP DATABASE IF EXISTS \"$GATEWAY_DB_NAME\" WITH (FORCE)" >&2
    gw_psql "CREATE DATABASE \"$GATEWAY_DB_NAME\"" >&2

    GATEWAY_ADMIN_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    GATEWAY_LOG=${GATEWAY_LOG_FILE:-$(mktemp -t "logstitch-$GATEWAY_PURPOSE.XXXXXX.log")}
    port=$(gw_free_port)
    GATEWAY_URL="http://127.0.0.1:$port"
    gw_log "starting $bin on $GATEWAY_URL (log: $GATEWAY_LOG)"
    env "${GATEWAY_ENV[@]}" \
        DATABASE_URL="${url%/*}/$GATEWAY_DB_NAME$query" \
        LOGSTITCH_ADMIN_TOKEN="$GATEWAY_ADMIN_TOKEN" \
        "$bin" serve --listen "127.0.0.1:$port" >>"$GATEWAY_LOG" 2>&1 &
    GATEWAY_PID=$!

    for ((i = 0; i < 150; i++)); do
        if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
            tail -n 30 "$GATEWAY_LOG" >&2 || true
            GATEWAY_PID=
            gw_die "the gateway exited during startup (log above)"
        fi
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "$GATEWAY_URL/readyz") == 200 ]]; then
            gw_log "ready"
            return 0
        fi
        sleep 0.2
    done
    tail -n 30 "$GATEWAY_LOG" >&2 || true
    gw_die "the gateway was not ready after 30 s (log above)"
}

# Stop the server (SIGTERM, SIGKILL after 15 s) and drop its database. Safe to call twice,
# and from an EXIT trap after a failure at any point.
gateway_cleanup() {
    local i
    if [[ -n $GATEWAY_PID ]]; then
        kill -TERM "$GATEWAY_PID" 2>/dev/null || true
        for ((i = 0; i < 75; i++)); do
            kill -0 "$GATEWAY_PID" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$GATEWAY_PID" 2>/dev/null; then
            gw_log "gateway $GATEWAY_PID did not stop on SIGTERM; killing it"
            kill -KILL "$GATEWAY_PID" 2>/dev/null || true
        fi
        wait "$GATEWAY_PID" 2>/dev/null || true
        GATEWAY_PID=
    fi
    if [[ -n $GATEWAY_DB_NAME ]]; then
        gw_log "dropping database $GATEWAY_DB_NAME"
        gw_psql "DROP DATABASE IF EXISTS \"$GATEWAY_DB_NAME\" WITH (FORCE)" >&2 ||
            gw_log "could not drop database $GATEWAY_DB_NAME; drop it by hand"
        GATEWAY_DB_NAME=
    fi
}
