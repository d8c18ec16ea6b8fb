#!/usr/bin/env bash
# `make dashboards` (CI runs it): checks dashboards/ against promtool and a live gateway.
#   1. installs promtool if missing (Debian's `prometheus` package; its service is kept from
#      starting), and PyYAML for the Python half (scripts/check_dashboards.py);
#   2. promtool check rules dashboards/alerts.yml, promtool test rules alerts.test.yml,
#      promtool check config prometheus-scrape.yml;
#   3. the Grafana dashboard: structure (datasource + $instance variables, units, ids), and
#      every PromQL expression in it parses (written as recording rules, Grafana variables
#      replaced, then promtool check rules);
#   4. builds the gateway (debug, as `make test` does), starts it on a fresh database on the
#      server scripts/ensure-db.sh finds, drives real traffic (organization, project, keys,
#      verify ok/invalid/missing/revoked, list, revoke, a 404, a forwarded route whose
#      upstream is down, a per-key rate limit), scrapes /metrics, and checks
#      that every metric name the dashboard and the rules use appears in it.
# The server is stopped and its database dropped on exit. Only 127.0.0.1 is used.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

DASHBOARD=dashboards/logstitch-gateway.json
ALERTS=dashboards/alerts.yml
ALERT_TESTS=dashboards/alerts.test.yml
SCRAPE_CONFIG=dashboards/prometheus-scrape.yml

step() { printf '\n==> %s\n' "$*"; }
fatal() {
    echo "check-dashboards: ERROR: $*" >&2
    exit 1
}

WORK=$(mktemp -d -t logstitch-dashboards.XXXXXX)
POLICY_RC_CREATED=0
cleanup() {
    if [[ $POLICY_RC_CREATED -eq 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if declare -F gateway_cleanup >/dev/null; then
        gateway_cleanup
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- tools ------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || fatal "need $* but there is no apt-get; install it by hand"
    [[ $(id -u) -eq 0 ]] || fatal "need $*: run as root, or: sudo apt-get install -y $*"
    export DEBIAN_FRONTEND=noninteractive
    if [[ $APT_UPDATED -eq 0 ]]; then
        apt-get update -q
        APT_UPDATED=1
    fi
    apt-get install -y -q --no-install-recommends "$@"
}

if ! command -v promtool >/dev/null 2>&1; then
    step "promtool not found; installing Debian's prometheus package (for promtool only)"
    # The package would start a Prometheus server. policy-rc.d exit 101 forbids invoke-rc.d
    # (and deb-systemd-invoke) to start services during the install; ours is removed on exit.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    apt_install prometheus
    if [[ $POLICY_RC_CREATED -eq 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
    # Belt and braces: if a service manager started it anyway, stop and disable it.
    if [[ -d /run/systemd/system ]] && systemctl is-active --quiet prometheus 2>/dev/null; then
        systemctl disable --now prometheus
    elif [[ -x /etc/init.d/prometheus ]] && /etc/init.d/prometheus status >/dev/null 2>&1; then
        /etc/init.d/prometheus stop
    fi
    command -v promtool >/dev/null 2>&1 || fatal "prometheus installed but promtool not found"
fi
promtool --version | head -n 1

PYTHON=python3
if ! python3 -c 'import yaml' 2>/dev/null; then
    if [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
        PYTHON=/usr/bin/python3
    else
        step "PyYAML not found; installing python3-yaml"
        apt_install python3 python3-yaml
        PYTHON=/usr/bin/python3
    fi
fi

# --- static checks ------------------------------------------------------------------
step "promtool check rules $ALERTS"
promtool check rules "$ALERTS"

step "promtool test rules $ALERT_TESTS"
promtool test rules "$ALERT_TESTS"

step "promtool check config $SCRAPE_CONFIG"
promtool check config "$SCRAPE_CONFIG"

step "dashboard structure, and every PromQL expression parses"
"$PYTHON" scripts/check_dashboards.py lint "$DASHBOARD" "$WORK/dashboard-rules.yml"
promtool check rules "$WORK/dashboard-rules.yml"

# --- live scrape after real traffic -----------------------------------------------
step "building the gateway"
cargo build --bin logstitch-gateway
BIN=${CARGO_TARGET_DIR:-target}/debug/logstitch-gateway

GATEWAY_PURPOSE=dashboards
GATEWAY_LOG_FILE=$WORK/server.log
# shellcheck source-path=SCRIPTDIR source=gateway-common.sh
source "$REPO/scripts/gateway-common.sh"
# Labelled counters appear in /metrics only once counted, so the gateway gets a forwarded
# route to an upstream that is down (upstream errors) and a per-key burst of 1 (rate limits).
DEAD_UPSTREAM_PORT=$(gw_free_port)
cat >"$WORK/gateway.toml" <<EOF
[rate_limit]
requests_per_second = 0.01
burst = 1

[[gateway.routes]]
prefix = "/api/v1/events"
upstream = "http://127.0.0.1:$DEAD_UPSTREAM_PORT"
timeout_ms = 2000
EOF
GATEWAY_ENV=(LOGSTITCH_CONFIG="$WORK/gateway.toml")
step "starting the gateway on a fresh database"
gateway_start "$BIN"

# call METHOD PATH KEY EXPECTED_STATUS [JSON_BODY]: the response body on stdout.
call() {
    local method=$1 path=$2 key=$3 expected=$4 body=${5:-} status
    local args=(-sS --max-time 10 -o "$WORK/body" -w '%{http_code}' -X "$method")
    if [[ -n $key ]]; then
        args+=(-H "Authorization: Bearer $key")
    fi
    if [[ -n $body ]]; then
        args+=(-H 'Content-Type: application/json' --data "$body")
    fi
    status=$(curl "${args[@]}" "$GATEWAY_URL$path")
    if [[ $status != "$expected" ]]; then
        fatal "$method $path answered $status, expected $expected: $(cat "$WORK/body")"
    fi
    cat "$WORK/body"
}
field() { "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

step "driving traffic"
org=$(call POST /admin/v1/organizations "$GATEWAY_ADMIN_TOKEN" 201 '{"name":"dashboards check"}')
master=$(field master_key <<<"$org")
project=$(field project_id <<<"$org")
call POST /api/v1/projects "$master" 201 '{"name":"second project"}' >/dev/null
key=$(call POST /api/v1/keys "$master" 201 "{\"project_id\":\"$project\",\"type\":\"project\",\"name\":\"one\"}" | field key)
call POST /api/v1/keys "$master" 201 "{\"project_id\":\"$project\",\"type\":\"project\",\"name\":\"two\"}" >/dev/null
for _ in 1 2 3 4 5; do
    call GET /api/v1/auth/verify "$key" 200 >/dev/null
done
key_id=$(call GET /api/v1/auth/verify "$key" 200 | field key_id)
call GET /api/v1/keys "$key" 200 >/dev/null
call GET /api/v1/keys "$master" 200 >/dev/null
call GET /api/v1/auth/verify "" 401 >/dev/null                # missing
call GET /api/v1/auth/verify "not-a-key" 401 >/dev/null       # invalid
call DELETE "/api/v1/keys/$key_id" "$master" 200 >/dev/null
call GET /api/v1/auth/verify "$key" 401 >/dev/null            # revoked
call GET /no/such/route "" 404 >/dev/null                     # unmatched
key2=$(call POST /api/v1/keys "$master" 201 "{\"project_id\":\"$project\",\"type\":\"project\",\"name\":\"three\"}" | field key)
call GET /api/v1/events/x "$key2" 502 >/dev/null              # upstream down
call GET /api/v1/events/x "$key2" 429 >/dev/null              # per-key rate limit
# lastUsedAt is written in batches (last_used.flush_interval_ms, 1 s by default), and the
# revocation comes back on the LISTEN channel asynchronously: let both happen.
sleep 2
call GET /healthz "" 200 >/dev/null
curl -sS --max-time 10 "$GATEWAY_URL/metrics" >"$WORK/metrics.txt"
echo "scraped $(grep -c '^logstitch_' "$WORK/metrics.txt") samples from $GATEWAY_URL/metrics"

step "every metric name used by $DASHBOARD and $ALERTS is in the scrape"
"$PYTHON" scripts/check_dashboards.py names "$DASHBOARD" "$ALERTS" "$WORK/metrics.txt"

step "dashboards: all checks passed"
