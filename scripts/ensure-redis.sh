#!/usr/bin/env bash
# Make sure a Redis is reachable and print exactly ONE line on stdout: its URL.
# Every diagnostic goes to stderr, so callers can simply do:
#   REDIS_URL=$(scripts/ensure-redis.sh)
# (the Postgres twin is scripts/ensure-db.sh). Tests that need Redis read REDIS_URL and
# keep to key prefixes of their own, so sharing one server is safe.
#
# Where the Redis comes from, first match wins:
#   1. $REDIS_URL is set            -> printed unchanged.
#   2. A Redis answering PING on 127.0.0.1:6379 -> redis://127.0.0.1:6379.
#      Skipped when LOGSTITCH_FORCE_PRIVATE_REDIS=1.
#   3. A private redis-server for this checkout: data, log and pid file in .data/redis,
#      listening on 127.0.0.1:${LOGSTITCH_REDIS_PORT:-63799}, nothing persisted. Debian's
#      redis-server is installed first when missing (by `cargo xtask install`, the one
#      place that installs tools).
# Re-running is cheap: a running private server is reused. Stop it with
#   kill "$(cat .data/redis/redis.pid)"
set -euo pipefail

log() { echo "[redis] $*" >&2; }
die() {
    echo "[redis] ERROR: $*" >&2
    exit 1
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$REPO/.data/redis
PORT=${LOGSTITCH_REDIS_PORT:-63799}

# answers_ping PORT: true when a Redis on 127.0.0.1:PORT answers +PONG (bash's /dev/tcp:
# no client tool needed).
answers_ping() {
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "PING\r\n" >&3
        IFS= read -r -t 2 reply <&3 && [[ $reply == +PONG* ]]
    ' _ "$1" 2>/dev/null
}

if [[ -n ${REDIS_URL:-} ]]; then
    printf '%s\n' "$REDIS_URL"
    exit 0
fi
if [[ ${LOGSTITCH_FORCE_PRIVATE_REDIS:-} != 1 ]] && answers_ping 6379; then
    echo "redis://127.0.0.1:6379"
    exit 0
fi

if answers_ping "$PORT"; then
    echo "redis://127.0.0.1:$PORT"
    exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
    log "no redis-server found"
    (cd "$REPO" && cargo xtask install redis-server) >&2 ||
        die "could not install redis-server; install it yourself, or set REDIS_URL"
fi
mkdir -p "$DIR"
log "starting a private redis-server on 127.0.0.1:$PORT (log: $DIR/redis.log)"
redis-server --port "$PORT" --bind 127.0.0.1 --daemonize yes \
    --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" \
    --save '' --appendonly no >&2 ||
    die "redis-server did not start (port $PORT taken? set LOGSTITCH_REDIS_PORT)"
for _ in $(seq 100); do
    if answers_ping "$PORT"; then
        echo "redis://127.0.0.1:$PORT"
        exit 0
    fi
    sleep 0.1
done
tail -n 20 "$DIR/redis.log" >&2 || true
die "the private redis-server on 127.0.0.1:$PORT never answered"
