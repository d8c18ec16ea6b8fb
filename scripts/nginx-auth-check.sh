#!/usr/bin/env bash
# `make nginx-check`: real nginx in front of the gateway, with auth_request (issue 5, §3).
#
#   1. installs Debian's nginx if it is missing (nginx-light, else nginx), without letting the
#      package start its own service on port 80;
#   2. builds the gateway (debug, like `make run`/`make test`) and starts it on a free port of
#      127.0.0.1 with a FRESH database logstitch_nginx_<pid> (scripts/gateway-common.sh);
#   3. writes an nginx config into a temp dir (own pid file, logs, temp paths) that protects
#      /protected/ with `auth_request` against GET /api/v1/auth/verify, and runs nginx from it
#      on another free port of 127.0.0.1 (foreground process, stopped by its pid); the page
#      behind it is a static file, because `return` would skip auth_request (see the config);
#   4. asserts: no key -> 401; unknown key -> 401; valid project key -> 200 "protected ok" with
#      X-Org = the organization id; the key revoked -> the very next request -> 401; gateway
#      gone -> nginx fails closed (500).
# Everything is undone on exit, failure or Ctrl-C: nginx and the gateway stopped, the database
# dropped, the temp dir removed. One PASS/FAIL line per check on stdout; exits non-zero on any
# failure. Safe to run repeatedly and next to other runs (ports and names are per run).
#
# Needs root only to install nginx; with nginx already installed it also runs unprivileged.
#
# Environment:
#   GATEWAY_BIN=path     test this binary instead of building target/debug/logstitch-gateway
#   NGINX_CHECK_KEEP=1   keep the temp dir (nginx.conf, logs) for a look afterwards
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

note() { echo "[nginx-check] $*" >&2; }
CHECKS=0
FAILED=0
pass() {
    CHECKS=$((CHECKS + 1))
    echo "PASS: $*"
}
fail() {
    CHECKS=$((CHECKS + 1))
    FAILED=$((FAILED + 1))
    echo "FAIL: $*"
}
# A step the remaining checks depend on went wrong: report it and stop (the trap cleans up).
fatal() {
    FAILED=$((FAILED + 1))
    echo "FAIL: $*"
    exit 1
}

WORK=
NGINX=
NGINX_PID=
NGINX_PORT=
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0

# Read by gateway-common.sh: the database is named logstitch_nginx_<pid>.
# shellcheck disable=SC2034
GATEWAY_PURPOSE=nginx
# (SC1091: a plain `shellcheck` run, without -x, does not follow the file.)
# shellcheck source-path=SCRIPTDIR source=gateway-common.sh disable=SC1091
source "$REPO/scripts/gateway-common.sh"

stop_nginx() {
    local i
    [[ -n $NGINX_PID ]] || return 0
    # `daemon off`: $NGINX_PID is the master; SIGQUIT = graceful shutdown (workers finish
    # their requests and exit with it). SIGTERM after 10 s, SIGKILL after 15 s.
    kill -QUIT "$NGINX_PID" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do
        kill -0 "$NGINX_PID" 2>/dev/null || break
        ((i == 50)) && kill -TERM "$NGINX_PID" 2>/dev/null
        sleep 0.2
    done
    if kill -0 "$NGINX_PID" 2>/dev/null; then
        note "nginx $NGINX_PID did not stop; killing it"
        kill -KILL "$NGINX_PID" 2>/dev/null || true
    fi
    wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=
}

cleanup() {
    local status=$?
    set +e
    if ((status != 0 && FAILED == 0)); then
        echo "FAIL: aborted (exit status $status; see the messages above)"
    fi
    if ((FAILED > 0 || status != 0)) && [[ -n $WORK ]]; then
        if [[ -s $WORK/error.log ]]; then
            note "last lines of the nginx error log:"
            tail -n 20 "$WORK/error.log" >&2
        fi
        if [[ -s $WORK/gateway.log ]]; then
            note "last lines of the gateway log:"
            tail -n 20 "$WORK/gateway.log" >&2
        fi
    fi
    stop_nginx
    gateway_cleanup
    if ((POLICY_RC_OURS)); then
        rm -f "$POLICY_RC"
        POLICY_RC_OURS=0
    fi
    if [[ -n $WORK ]]; then
        if [[ ${NGINX_CHECK_KEEP:-} == 1 ]]; then
            note "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- nginx ------------------------------------------------------------------------------
find_nginx() {
    if command -v nginx >/dev/null 2>&1; then
        command -v nginx
    elif [[ -x /usr/sbin/nginx ]]; then # /usr/sbin is not on a normal user's PATH
        echo /usr/sbin/nginx
    fi
}

# Install Debian's nginx. Its postinst would start the packaged service (port 80, all
# addresses): a policy-rc.d that answers 101 ("action forbidden") makes invoke-rc.d and
# deb-systemd-invoke skip that. An existing policy-rc.d (Docker images ship one that always
# says 101) is left alone; ours is removed right after the install, and by the trap.
install_nginx() {
    local pkg=nginx pid_before
    command -v apt-get >/dev/null 2>&1 ||
        fatal "nginx is not installed and this is not a Debian-like system (no apt-get); install nginx"
    [[ $(id -u) -eq 0 ]] ||
        fatal "nginx is not installed; install it with: sudo apt-get install -y nginx-light (or run this as root)"
    export DEBIAN_FRONTEND=noninteractive
    if [[ ! -e $POLICY_RC ]]; then
        printf '#!/bin/sh\n# temporary, from %s: no service starts during the install\nexit 101\n' \
            "$0" >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        POLICY_RC_OURS=1
    fi
    pid_before=$(cat /run/nginx.pid 2>/dev/null || true)
    note "installing nginx (apt-get update, then apt-get install)"
    apt-get update >&2 || fatal "apt-get update failed"
    # nginx-light (bookworm and older) is the smallest flavour that still has auth_request;
    # newer releases only have `nginx`.
    if [[ $(apt-cache policy nginx-light 2>/dev/null | sed -n 's/^ *Candidate: *//p') =~ ^[0-9] ]]; then
        pkg=nginx-light
    fi
    apt-get install -y --no-install-recommends "$pkg" >&2 || fatal "apt-get install -y $pkg failed"
    if ((POLICY_RC_OURS)); then
        rm -f "$POLICY_RC"
        POLICY_RC_OURS=0
    fi
    # Belt and braces: if the packaged service started anyway (some init without
    # policy-rc.d support), stop the instance this install started, and only that one.
    local pid_after
    pid_after=$(cat /run/nginx.pid 2>/dev/null || true)
    if [[ -n $pid_after && $pid_after != "$pid_before" ]] && kill -0 "$pid_after" 2>/dev/null; then
        note "the $pkg package started its own nginx (pid $pid_after); stopping it"
        kill -QUIT "$pid_after" 2>/dev/null || true
    fi
}

NGINX=$(find_nginx)
if [[ -z $NGINX ]]; then
    install_nginx
    NGINX=$(find_nginx)
    [[ -n $NGINX ]] || fatal "nginx was installed but no nginx binary was found"
fi
NGINX_BUILD=$("$NGINX" -V 2>&1)
note "using $NGINX ($(head -n1 <<<"$NGINX_BUILD"))"
[[ $NGINX_BUILD == *--with-http_auth_request_module* ]] ||
    fatal "$NGINX is built without the auth_request module (install Debian's nginx-light or nginx)"

# --- the gateway on a fresh database ------------------------------------------------------
if [[ -n ${GATEWAY_BIN:-} ]]; then
    BIN=$GATEWAY_BIN
else
    note "building the gateway (cargo build --bin logstitch-gateway)"
    cargo build --bin logstitch-gateway >&2 || fatal "cargo build failed"
    BIN=${CARGO_TARGET_DIR:-target}/debug/logstitch-gateway
fi

WORK=$(mktemp -d -t logstitch-nginx.XXXXXX)
# The workers run as an unprivileged user when nginx starts as root: let them into the
# directory (it holds only the config and logs; keys never touch the disk).
chmod 755 "$WORK"
# shellcheck disable=SC2034 # read by gateway_start
GATEWAY_LOG_FILE=$WORK/gateway.log
gateway_start "$BIN" # sets GATEWAY_URL (http://127.0.0.1:<port>), GATEWAY_ADMIN_TOKEN
GATEWAY_ADDR=${GATEWAY_URL#http://}

# --- HTTP helpers (127.0.0.1 only; --noproxy so no *_proxy variable reroutes anything) ---
STATUS=
BODY=
# http URL [curl args...]: sets STATUS (000 when there was no HTTP answer) and BODY; the
# response headers are in $WORK/headers.
http() {
    local url=$1
    shift
    : >"$WORK/body"
    : >"$WORK/headers"
    STATUS=$(curl -sS --noproxy '*' --max-time 10 -o "$WORK/body" -D "$WORK/headers" \
        -w '%{http_code}' "$@" "$url" 2>"$WORK/curl.err") || STATUS=000
    BODY=$(cat "$WORK/body")
}
# header NAME: value of response header NAME of the last http call (last one wins).
header() {
    awk -v name="$1" 'BEGIN { n = tolower(name) ":" }
        tolower(substr($0, 1, length(n))) == n { v = substr($0, length(n) + 1) }
        END { gsub(/^[ \t]+|[ \t\r]+$/, "", v); print v }' "$WORK/headers"
}
# json EXPR: evaluate a Python expression over the last body, parsed as `j`.
json() {
    python3 -c 'import json, sys; j = json.loads(sys.argv[2]); print(eval(sys.argv[1]))' "$1" "$BODY"
}

# --- nginx config -------------------------------------------------------------------------
NGINX_PORT=$(gw_free_port)
# The module-specific temp paths are only valid directives if the module is compiled in.
OPTIONAL_TEMP_PATHS=
for module in fastcgi uwsgi scgi; do
    if [[ $NGINX_BUILD != *"--without-http_${module}_module"* ]]; then
        OPTIONAL_TEMP_PATHS+="    ${module}_temp_path $WORK/tmp/$module;"$'\n'
    fi
done
mkdir -p "$WORK/tmp" "$WORK/html"
printf 'protected ok\n' >"$WORK/html/protected.txt"
cat >"$WORK/nginx.conf" <<EOF
# Written by scripts/nginx-auth-check.sh for one run; everything lives in $WORK.
# Foreground master: the script started it and stops it by its pid.
daemon off;
master_process on;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log notice;

events {
    worker_connections 64;
}

http {
    access_log $WORK/access.log;
    default_type text/plain;
    client_body_temp_path $WORK/tmp/client_body;
    proxy_temp_path $WORK/tmp/proxy;
$OPTIONAL_TEMP_PATHS
    server {
        listen 127.0.0.1:$NGINX_PORT;

        # Readiness probe for the script.
        location = /_ready {
            return 204;
        }

        # The protected area. auth_request sends a subrequest to /_auth for EVERY request
        # (nginx caches nothing here, which is why a revocation applies to the very next
        # request; putting proxy_cache on /_auth would delay it by the cache's validity):
        #   - subrequest 2xx      -> the request is allowed;
        #   - subrequest 401      -> the client gets 401, with nginx's own page: the gateway's
        #                            JSON envelope is not passed on (only a WWW-Authenticate
        #                            header would be; the gateway sends none);
        #   - subrequest 403      -> 403;
        #   - anything else       -> 500: the gateway's 429 (failed-auth throttle), 503
        #                            (database/actor unavailable), or nginx's own 502/504 when
        #                            the gateway is unreachable/slow. Fail closed, but as an
        #                            error, not as "unauthenticated".
        #
        # NOT \`return 200 "protected ok\\n";\` here: \`return\` runs in the rewrite phase, BEFORE
        # the access phase where auth_request runs, so it would answer 200 to everyone without
        # ever asking the gateway. The content must come from the content phase: a proxy_pass to
        # the real upstream in production, a static file here (try_files switches to it
        # without an internal redirect, so the subrequest happens exactly once).
        location /protected/ {
            auth_request /_auth;
            # Identity from the verify response's headers, for the protected content/upstream.
            auth_request_set \$org \$upstream_http_x_logstitch_organization_id;
            add_header X-Org \$org;
            root $WORK/html;
            try_files /protected.txt =404;
        }

        location = /_auth {
            internal;
            proxy_pass http://$GATEWAY_ADDR/api/v1/auth/verify;
            # Verify needs only the key: never send the client's body to it.
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            # Passed anyway by default; explicit because it is the whole point. When the client
            # sent none, the header is omitted (empty value) and the gateway answers 401.
            proxy_set_header Authorization \$http_authorization;
        }
    }
}
EOF

NGINX_ARGS=(-p "$WORK/" -c "$WORK/nginx.conf")
# -e (nginx >= 1.19.5): the startup error log too, instead of the compiled-in
# /var/log/nginx/error.log, before the config is read.
if "$NGINX" -h 2>&1 | grep -q -- '-e filename'; then
    NGINX_ARGS+=(-e "$WORK/error.log")
fi
"$NGINX" -t -q "${NGINX_ARGS[@]}" >&2 || fatal "nginx -t rejected $WORK/nginx.conf"
note "starting nginx on 127.0.0.1:$NGINX_PORT (auth against $GATEWAY_URL)"
"$NGINX" "${NGINX_ARGS[@]}" >>"$WORK/nginx.out" 2>&1 &
NGINX_PID=$!
NGINX_URL=http://127.0.0.1:$NGINX_PORT
for ((i = 0; ; i++)); do
    kill -0 "$NGINX_PID" 2>/dev/null || {
        cat "$WORK/nginx.out" >&2 || true
        NGINX_PID=
        fatal "nginx exited during startup"
    }
    http "$NGINX_URL/_ready"
    [[ $STATUS == 204 ]] && break
    ((i < 50)) || fatal "nginx did not answer on $NGINX_URL within 10 s"
    sleep 0.2
done

# --- setup: an organization and a project key ----------------------------------------------
http "$GATEWAY_URL/admin/v1/organizations" -X POST \
    -H "Authorization: Bearer $GATEWAY_ADMIN_TOKEN" -H 'Content-Type: application/json' \
    --data '{"name":"nginx-check"}'
[[ $STATUS == 201 ]] || fatal "create organization: HTTP $STATUS $BODY"
ORG_ID=$(json 'j["organization_id"]')
PROJECT_ID=$(json 'j["project_id"]')
MASTER_KEY=$(json 'j["master_key"]')

http "$GATEWAY_URL/api/v1/keys" -X POST \
    -H "Authorization: Bearer $MASTER_KEY" -H 'Content-Type: application/json' \
    --data "{\"project_id\":\"$PROJECT_ID\",\"type\":\"project\",\"name\":\"nginx\"}"
[[ $STATUS == 201 ]] || fatal "create project key: HTTP $STATUS $BODY"
KEY=$(json 'j["key"]')
KEY_PREFIX=$(json 'j["prefix"]')

http "$GATEWAY_URL/api/v1/keys" -H "Authorization: Bearer $MASTER_KEY"
[[ $STATUS == 200 ]] || fatal "list keys: HTTP $STATUS $BODY"
KEY_ID=$(python3 -c 'import json, sys
keys = json.loads(sys.argv[1])["keys"]
print("\n".join(k["id"] for k in keys if k["prefix"] == sys.argv[2]))' "$BODY" "$KEY_PREFIX")
[[ -n $KEY_ID && $KEY_ID != *$'\n'* ]] || fatal "list keys: no single key with prefix $KEY_PREFIX in $BODY"
note "organization $ORG_ID, project key $KEY_ID ($KEY_PREFIX...)"

# --- the checks ---------------------------------------------------------------------------
http "$NGINX_URL/protected/"
if [[ $STATUS == 401 ]]; then
    pass "no key -> 401"
else
    fail "no key -> expected 401, got $STATUS"
fi

http "$NGINX_URL/protected/" -H 'Authorization: Bearer ls_not_a_real_key_0000000000000000'
if [[ $STATUS == 401 ]]; then
    pass "unknown key -> 401"
else
    fail "unknown key -> expected 401, got $STATUS"
fi

http "$NGINX_URL/protected/" -H "Authorization: Bearer $KEY"
x_org=$(header X-Org)
if [[ $STATUS == 200 && $BODY == "protected ok" && $x_org == "$ORG_ID" ]]; then
    pass "valid project key -> 200 \"protected ok\", X-Org $x_org"
else
    fail "valid project key -> expected 200 \"protected ok\" with X-Org $ORG_ID, got $STATUS \"$BODY\" with X-Org '$x_org'"
fi

http "$GATEWAY_URL/api/v1/keys/$KEY_ID" -X DELETE -H "Authorization: Bearer $MASTER_KEY"
[[ $STATUS == 200 ]] || fatal "revoke key $KEY_ID: HTTP $STATUS $BODY"
# No sleep, no retry: the very next request must be refused.
http "$NGINX_URL/protected/" -H "Authorization: Bearer $KEY"
if [[ $STATUS == 401 ]]; then
    pass "revoked key, very next request -> 401"
else
    fail "revoked key, very next request -> expected 401, got $STATUS \"$BODY\""
fi

# Fail closed: with the gateway gone the subrequest gets nginx's 502, which auth_request
# turns into 500 (see the config) -- never into a pass.
gateway_cleanup
http "$NGINX_URL/protected/" -H "Authorization: Bearer $MASTER_KEY"
if [[ $STATUS == 500 ]]; then
    pass "gateway unreachable -> 500 (fails closed)"
else
    fail "gateway unreachable -> expected 500, got $STATUS \"$BODY\""
fi

if ((FAILED > 0)); then
    echo "FAIL: $FAILED of $CHECKS checks failed"
    exit 1
fi
echo "PASS: all $CHECKS checks passed (nginx $NGINX_URL -> gateway $GATEWAY_URL)"
