#!/usr/bin/env bash
# `make run`: get a database, build the gateway, apply migrations, make sure a
# demo organization exists (showing its master key + ready-to-paste curl lines
# on first creation), then serve on $LISTEN (default 127.0.0.1:8080).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

ADDR=${LISTEN:-127.0.0.1:8080}
DEMO_ORG=Demo

DATABASE_URL=$(scripts/ensure-db.sh)
export DATABASE_URL
echo "==> database: $DATABASE_URL"

# Debug profile on purpose: `cargo test` builds the same artifacts, so
# `make run` after `make test` (or vice versa) does not compile everything twice.
cargo build --bin logstitch-gateway
BIN=${CARGO_TARGET_DIR:-target}/debug/logstitch-gateway

echo "==> applying migrations"
"$BIN" migrate

# json_field NAME: read one JSON object from stdin, print its string field NAME.
# python3 parses real JSON; the sed fallback is enough for the flat one-line
# objects the CLI prints.
json_field() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import json, sys; print(json.loads(sys.stdin.read()).get(sys.argv[1], ""))' "$1"
    else
        sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\([^\"]*\)\".*/\1/p"
    fi
}

# has_org NAME: does `org list` output (one JSON object per line, on stdin)
# contain an organization with exactly this name?
has_org() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c '
import json, sys
names = set()
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        names.add(json.loads(line).get("name"))
sys.exit(0 if sys.argv[1] in names else 1)' "$1"
    else
        grep -Eq "\"name\"[[:space:]]*:[[:space:]]*\"$1\""
    fi
}

orgs=$("$BIN" org list)
if has_org "$DEMO_ORG" <<<"$orgs"; then
    cat <<EOF

==> organization '$DEMO_ORG' already exists.
    Its master key was shown once, on the first 'make run', and cannot be
    shown again. To get a fresh organization with a new master key:
        DATABASE_URL=$DATABASE_URL $BIN org create --name NAME

EOF
else
    echo "==> creating organization '$DEMO_ORG'"
    created=$("$BIN" org create --name "$DEMO_ORG")
    # The CLI prints one JSON line; keep only that line in case anything else
    # (e.g. a log line) lands on stdout.
    created=$(grep master_key <<<"$created" | tail -n 1 || true)
    MASTER_KEY=$(json_field master_key <<<"$created")
    PROJECT_ID=$(json_field project_id <<<"$created")
    if [[ -z $MASTER_KEY || -z $PROJECT_ID ]]; then
        echo "could not parse the output of 'org create': $created" >&2
        exit 1
    fi
    cat <<EOF

==> organization '$DEMO_ORG' created.

    master key : $MASTER_KEY
    project id : $PROJECT_ID

    Save the master key now: it is shown only this once.

    Create a project API key:
      curl -s -X POST http://$ADDR/api/v1/keys -H "Authorization: Bearer $MASTER_KEY" -H "Content-Type: application/json" -d '{"project_id":"$PROJECT_ID","type":"project","name":"Production API Key"}'

    List keys:
      curl -s http://$ADDR/api/v1/keys -H "Authorization: Bearer $MASTER_KEY"

    Revoke a key (use an id from the list):
      curl -s -X DELETE http://$ADDR/api/v1/keys/<id from list> -H "Authorization: Bearer $MASTER_KEY"

EOF
fi

echo "==> serving on http://$ADDR (Ctrl-C to stop)"
exec "$BIN" serve --listen "$ADDR"
