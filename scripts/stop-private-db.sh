#!/usr/bin/env bash
# Stop this checkout's private Postgres cluster (.data/pg, started by
# ensure-db.sh) if it is running. Leaves the data in place; delete .data to
# start from scratch. Never touches a system server on port 5432.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=pg-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg-common.sh"

if [[ ! -e $PG_LINK ]]; then
    log "no private cluster in $PG_LINK; nothing to stop"
    exit 0
fi
resolve_cluster_paths
if [[ ! -f $PGDATA/PG_VERSION ]]; then
    log "$PGDATA is not an initialised cluster; nothing to stop"
    exit 0
fi

bindir=$(find_pg_bindir)
[[ -n $bindir ]] || die "pg_ctl not found, cannot stop the cluster in $PGDATA"

if as_pg_user "$bindir/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    log "stopping private cluster in $PGDATA"
    # fast: roll back open transactions and disconnect clients instead of
    # waiting for them (a dev server left running would block forever).
    as_pg_user "$bindir/pg_ctl" -D "$PGDATA" -m fast -w -s stop >&2
else
    log "private cluster in $PGDATA is not running"
fi
