#!/usr/bin/env bash
# `make run`: get a database (and record which, for `make db`), build the
# gateway, apply migrations, make sure a demo organization exists (showing its
# master key and ready-to-paste lines on first creation), then serve on
# $LISTEN (default 127.0.0.1:8080).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

ADDR=${LISTEN:-127.0.0.1:8080}
DEMO_ORG=Demo

DATABASE_URL=$(scripts/ensure-db.sh --record)
export DATABASE_URL
echo "==> database: $DATABASE_URL (\`make db\` prints this one)"

# Debug profile on purpose: `cargo test` builds the same artifacts, so
# `make run` after `make test` (or vice versa) does not compile everything twice.
BIN=${CARGO_TARGET_DIR:-target}/debug/logstitch-gateway
if [[ ! -x $BIN ]]; then
    echo "==> first build: the gateway and its dependencies (about 5 minutes on 2 cores; later builds take seconds)"
fi
cargo build --bin logstitch-gateway

echo "==> applying migrations"
"$BIN" migrate

# The CLI prints flat one-line JSON objects, without spaces. Read whole first: `grep -q` stops
# at the first match, and under pipefail a lister cut off mid-list would read as "not found".
ORGS="$("$BIN" org list)"
if grep -q "\"name\":\"$DEMO_ORG\"" <<<"$ORGS"; then
    cat <<EOF

==> organization '$DEMO_ORG' already exists.
    Its master key was shown once, on the first 'make run', and cannot be
    shown again. To get a fresh organization with a new master key:
        DATABASE_URL=$DATABASE_URL $BIN org create --name NAME

EOF
else
    echo "==> creating organization '$DEMO_ORG'"
    created=$("$BIN" org create --name "$DEMO_ORG")
    field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$created"; }
    MASTER_KEY=$(field master_key)
    PROJECT_ID=$(field project_id)
    if [[ -z $MASTER_KEY || -z $PROJECT_ID ]]; then
        echo "could not parse the output of 'org create': $created" >&2
        exit 1
    fi
    URL=http://$ADDR
    cat <<EOF

==> organization '$DEMO_ORG' created. Save the master key now: it is shown only this once.

    Paste these into a shell (each line runs as it is):

      MK=$MASTER_KEY
      PROJECT=$PROJECT_ID

      # create a project key (the full key is in this answer only)
      curl -s -X POST $URL/api/v1/keys -H "Authorization: Bearer \$MK" -H "Content-Type: application/json" -d "{\"project_id\":\"\$PROJECT\",\"type\":\"project\",\"name\":\"Production API Key\"}"

      # list keys
      curl -s $URL/api/v1/keys -H "Authorization: Bearer \$MK"

      # revoke one: ID is the newest project key's id from the list
      ID=\$(curl -s $URL/api/v1/keys -H "Authorization: Bearer \$MK" | grep -o '"id":"[^"]*","prefix":"pk_' | head -n 1 | cut -d'"' -f4)
      curl -s -X DELETE $URL/api/v1/keys/\$ID -H "Authorization: Bearer \$MK"

EOF
fi

echo "==> serving on http://$ADDR (Ctrl-C to stop)"
exec "$BIN" serve --listen "$ADDR"
