#!/usr/bin/env bash
# `make fuzz`: schemathesis (PyPI) against a live gateway started here on a fresh database
# (dropped on exit), on 127.0.0.1 only, driven by the gateway's own GET /openapi.json.
# Two bounded runs, about two minutes in all:
#   1. a master key (and the admin token for /admin/v1/organizations) on every operation,
#      stateful phase included (it creates, lists and revokes keys and projects);
#   2. a project key of another organization, made after run 1 (which revokes every key it
#      finds), on every /api/v1 operation but DELETE (a project key may revoke itself, after
#      which the rest of the run would only measure 401s).
# Checks: not_a_server_error, status_code_conformance, content_type_conformance,
# response_schema_conformance, response_headers_conformance. Exits non-zero on any failure, on
# a server panic, and when a run did not reach the endpoints: in run 1 every operation must
# have answered 2xx at least once, in run 2 GET /api/v1/keys and GET /api/v1/auth/verify
# (scripts/fuzz_reached.py reads the server's log).
#
# Environment:
#   FUZZ_MASTER_SECS=70 FUZZ_PROJECT_SECS=35   time budget of each run (schemathesis --max-time)
#   FUZZ_MAX_EXAMPLES=100                      test cases per operation and phase (--max-examples)
#   FUZZ_SEED=N                                replay a run's generation (schemathesis --seed)
#   FUZZ_RESULTS_DIR=target/fuzz               junit reports, the server log, schemathesis' cache
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

SCHEMATHESIS_VERSION=4.32.5
MASTER_SECS=${FUZZ_MASTER_SECS:-70}
PROJECT_SECS=${FUZZ_PROJECT_SECS:-35}
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-100}
RESULTS=${FUZZ_RESULTS_DIR:-${CARGO_TARGET_DIR:-target}/fuzz}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance

step() { printf '\n==> %s\n' "$*"; }
fatal() {
    echo "fuzz: ERROR: $*" >&2
    exit 1
}

command -v python3 >/dev/null 2>&1 || fatal "python3 is needed (schemathesis is a Python tool)"
command -v curl >/dev/null 2>&1 || fatal "curl is needed"
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)

# --- schemathesis, pinned ----------------------------------------------------------
# The one on PATH when it is the pinned version, else a virtualenv of our own under
# $RESULTS (or, where python3 has no venv module, a plain pip install).
st_version() { "$1" --version 2>/dev/null | awk '{ print $NF }'; }
ST=
if command -v schemathesis >/dev/null 2>&1 &&
    [[ $(st_version schemathesis) == "$SCHEMATHESIS_VERSION" ]]; then
    ST=$(command -v schemathesis)
elif [[ -x $RESULTS/venv/bin/schemathesis &&
    $(st_version "$RESULTS/venv/bin/schemathesis") == "$SCHEMATHESIS_VERSION" ]]; then
    ST=$RESULTS/venv/bin/schemathesis
else
    step "installing schemathesis $SCHEMATHESIS_VERSION (pip)"
    if python3 -m venv "$RESULTS/venv" >/dev/null 2>&1; then
        "$RESULTS/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "schemathesis==$SCHEMATHESIS_VERSION"
        ST=$RESULTS/venv/bin/schemathesis
    else
        python3 -m pip install --quiet --disable-pip-version-check \
            "schemathesis==$SCHEMATHESIS_VERSION"
        command -v pyenv >/dev/null 2>&1 && pyenv rehash
        ST=$(command -v schemathesis || true)
    fi
    [[ -n $ST && -x $ST ]] || fatal "pip installed schemathesis but no schemathesis command was found"
fi
echo "schemathesis $(st_version "$ST") ($ST)"

# --- build and serve ----------------------------------------------------------------
step "building the gateway (debug)"
cargo build --bin logstitch-gateway
BIN=${CARGO_TARGET_DIR:-target}/debug/logstitch-gateway

GATEWAY_PURPOSE=fuzz
GATEWAY_LOG_FILE=$RESULTS/server.log
: >"$GATEWAY_LOG_FILE"
# Fuzzed requests come from one address and many carry bad keys on purpose: past
# rate_limit.failed_auth_burst they would all answer 429 (documented, and in the description)
# before reaching the code under test. Lift the throttle so the runs exercise the endpoints.
GATEWAY_ENV=(
    LOGSTITCH__RATE_LIMIT__FAILED_AUTH_BURST=100000000
    LOGSTITCH__RATE_LIMIT__FAILED_AUTH_PER_SECOND=100000000
    LOGSTITCH__LOG__FORMAT=json # one line per request, read by fuzz_reached.py
)
# shellcheck source-path=SCRIPTDIR source=gateway-common.sh
source "$REPO/scripts/gateway-common.sh"
WORK=$(mktemp -d -t logstitch-fuzz.XXXXXX)
cleanup() {
    gateway_cleanup
    rm -rf "$WORK"
}
trap cleanup EXIT

step "starting the gateway on a fresh database"
gateway_start "$BIN"

# --- helpers ----------------------------------------------------------------------------
# json_field FIELD: one field of the JSON object on stdin.
json_field() {
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# post PATH TOKEN BODY: the response body; fails unless the status is 201.
post() {
    local status
    status=$(curl -sS --max-time 10 -o "$WORK/body" -w '%{http_code}' -X POST "$GATEWAY_URL$1" \
        -H "Authorization: Bearer $2" -H 'Content-Type: application/json' -d "$3")
    [[ $status == 201 ]] || fatal "POST $1 answered $status: $(cat "$WORK/body")"
    cat "$WORK/body"
}

# new_org NAME: an organization made through the admin API; sets ORG_ID, PROJECT_ID and
# MASTER_KEY.
new_org() {
    local org
    org=$(post /admin/v1/organizations "$GATEWAY_ADMIN_TOKEN" "{\"name\": \"$1\"}")
    ORG_ID=$(json_field organization_id <<<"$org")
    PROJECT_ID=$(json_field project_id <<<"$org")
    MASTER_KEY=$(json_field master_key <<<"$org")
}

# Keys reach schemathesis through its config files' ${VAR} interpolation, never through its
# command line (which ps shows).
export LOGSTITCH_FUZZ_MASTER_KEY='' LOGSTITCH_FUZZ_PROJECT_KEY=''
export LOGSTITCH_FUZZ_ADMIN_TOKEN=$GATEWAY_ADMIN_TOKEN
export LOGSTITCH_FUZZ_CACHE=$RESULTS/cache
cat >"$WORK/master.toml" <<'EOF'
cache = { directory = "${LOGSTITCH_FUZZ_CACHE}" }
[auth.openapi.masterKey]
bearer = "${LOGSTITCH_FUZZ_MASTER_KEY}"
[auth.openapi.adminToken]
bearer = "${LOGSTITCH_FUZZ_ADMIN_TOKEN}"
EOF
cat >"$WORK/project.toml" <<'EOF'
cache = { directory = "${LOGSTITCH_FUZZ_CACHE}" }
headers = { Authorization = "Bearer ${LOGSTITCH_FUZZ_PROJECT_KEY}" }
EOF

FAILED=()
# run NAME CONFIG SECONDS [schemathesis options...]
run() {
    local name=$1 config=$2 seconds=$3
    shift 3
    local args=(
        run "$GATEWAY_URL/openapi.json"
        --url "$GATEWAY_URL"
        --checks "$CHECKS"
        --max-time "$seconds"
        --max-examples "$MAX_EXAMPLES"
        --request-timeout 10
        # One worker: hypothesis describes its strategies with ast.parse, which CPython 3.11
        # does not make thread-safe ("SystemError: AST constructor recursion depth mismatch").
        --workers 1
        --generation-database none
        --report junit --report-junit-path "$RESULTS/junit-$name.xml"
        --no-color
    )
    if [[ -n ${FUZZ_SEED:-} ]]; then
        args+=(--seed "$FUZZ_SEED")
    fi
    step "schemathesis, $name run (at most ${seconds}s)"
    if ! "$ST" --config-file "$config" "${args[@]}" "$@"; then
        FAILED+=("the $name run")
    fi
}

# reached NAME FROM_LINE [METHOD PATH]...: see fuzz_reached.py.
reached() {
    local name=$1 from=$2
    shift 2
    step "$name run: statuses per operation (server log)"
    if ! python3 "$REPO/scripts/fuzz_reached.py" "$GATEWAY_LOG_FILE" "$from" \
        "$REPO/openapi.json" "$@"; then
        FAILED+=("the $name run did not reach every endpoint")
    fi
}

log_lines() { wc -l <"$GATEWAY_LOG_FILE"; }

# --- run 1: master key ------------------------------------------------------------------
step "run 1: an organization (admin API) for the master key"
new_org "Fuzz master"
LOGSTITCH_FUZZ_MASTER_KEY=$MASTER_KEY
echo "organization $ORG_ID, project $PROJECT_ID"
from=$(($(log_lines) + 1))
run master "$WORK/master.toml" "$MASTER_SECS"
reached master "$from"

# --- run 2: project key -----------------------------------------------------------------
step "run 2: another organization, and project keys made by its master key"
new_org "Fuzz project"
for name in "fuzz one" "fuzz two"; do
    created=$(post /api/v1/keys "$MASTER_KEY" \
        "{\"project_id\": \"$PROJECT_ID\", \"type\": \"project\", \"name\": \"$name\"}")
    LOGSTITCH_FUZZ_PROJECT_KEY=$(json_field key <<<"$created")
done
echo "organization $ORG_ID, project $PROJECT_ID"
from=$(($(log_lines) + 1))
# The budget goes to what a project key may do (list its project's keys, verify itself);
# its 403s on master-only operations are covered by the tenant-isolation test, and DELETE
# would revoke the key under the run's feet.
run project "$WORK/project.toml" "$PROJECT_SECS" \
    --include-path-regex '^/api/v1/(keys|auth/verify)$' --include-method GET
reached project "$from" GET /api/v1/keys GET /api/v1/auth/verify

if grep -q 'panicked' "$GATEWAY_LOG_FILE"; then
    grep 'panicked' "$GATEWAY_LOG_FILE" | head -n 5 >&2
    FAILED+=("server panics (see $GATEWAY_LOG_FILE)")
fi
if ((${#FAILED[@]})); then
    fatal "failed: ${FAILED[*]} (junit reports and the server log in $RESULTS)"
fi
step "fuzz: both runs passed (junit reports and the server log in $RESULTS)"
