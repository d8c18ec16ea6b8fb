#!/usr/bin/env bash
# Make sure a Postgres server is reachable and print exactly ONE line on stdout:
# a libpq URL to an existing database named `logstitch`. Every diagnostic goes
# to stderr, so callers can simply do:  DATABASE_URL=$(scripts/ensure-db.sh)
#
# Where the database comes from, first match wins:
#   1. $DATABASE_URL is set        -> printed unchanged; nothing is created.
#   2. A Postgres on 127.0.0.1:5432 that lets user `postgres` in without a
#      password                    -> database `logstitch` created there if
#      missing. Skipped when LOGSTITCH_FORCE_PRIVATE_PG=1.
#   3. A private cluster for this checkout in .data/pg, listening on
#      127.0.0.1:${LOGSTITCH_PG_PORT:-54329}, trust auth, superuser `postgres`.
#      Debian's `postgresql` package is installed if no server binaries exist.
# Re-running is cheap: an initialised, running cluster is just reused.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=pg-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg-common.sh"

DB_NAME=logstitch
SYSTEM_PORT=5432
PSQL=

# --- 1. explicit URL ---------------------------------------------------------
if [[ -n ${DATABASE_URL:-} ]]; then
    printf '%s\n' "$DATABASE_URL"
    exit 0
fi

# --- helpers -------------------------------------------------------------------

APT_UPDATED=0
# Install Debian packages. Needs root; otherwise tell the user what to run.
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "need the package(s) '$*' but this is not a Debian-like system (no apt-get); install them, or set DATABASE_URL"
    is_root ||
        die "need the package(s) '$*'; install them with: sudo apt-get install -y $* (or set DATABASE_URL)"
    export DEBIAN_FRONTEND=noninteractive
    if [[ $APT_UPDATED -eq 0 ]]; then
        apt-get update >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    apt-get install -y "$@" >&2 || die "apt-get install -y $* failed"
}

# pg_query PORT SQL: run SQL as user postgres on 127.0.0.1:PORT, print rows.
# Never prompts (-w) and ignores PGPASSWORD / ~/.pgpass: the URL we print
# carries no password, so a check must only pass if none is needed.
# -X skips ~/.psqlrc, which could otherwise add output.
pg_query() {
    local port=$1 sql=$2
    env -u PGPASSWORD PGPASSFILE=/nonexistent/pgpass PGCONNECT_TIMEOUT=5 \
        "$PSQL" -X -w -q -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc "$sql"
}

db_exists() {
    [[ -n $(pg_query "$1" "select 1 from pg_database where datname = '$DB_NAME'") ]]
}

# Create the database if missing. A concurrent run (two `make test` at once)
# may win the race, so a failed CREATE only counts if the db is still absent.
ensure_database() {
    local port=$1
    if ! db_exists "$port"; then
        log "creating database $DB_NAME on 127.0.0.1:$port"
        pg_query "$port" "create database $DB_NAME" >&2 || db_exists "$port" ||
            die "could not create database $DB_NAME on 127.0.0.1:$port"
    fi
}

# Is anything accepting TCP connections on 127.0.0.1:PORT? (fallback when
# pg_isready is not installed; uses bash's /dev/tcp)
port_open() {
    timeout 3 bash -c ": </dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# --- 2. a server already on 127.0.0.1:5432 -----------------------------------
# Succeeds (and prints the URL) only if that server lets postgres in without a
# password; returns 1 to fall through to the private cluster otherwise.
# Note: it runs as an `if` condition, where bash suspends `set -e`, so every
# step that must not fail silently ends in an explicit `|| die`/`return`.
try_system_server() {
    local pg_isready
    pg_isready=$(find_client_tool pg_isready)
    if [[ -n $pg_isready ]]; then
        "$pg_isready" -q -h 127.0.0.1 -p "$SYSTEM_PORT" -t 3 || return 1
    else
        port_open "$SYSTEM_PORT" || return 1
    fi

    PSQL=$(find_client_tool psql)
    if [[ -z $PSQL ]]; then
        is_root || die "something listens on 127.0.0.1:$SYSTEM_PORT but psql is not installed." \
            "Install it with: sudo apt-get install -y postgresql-client" \
            "(or set DATABASE_URL, or LOGSTITCH_FORCE_PRIVATE_PG=1 to ignore that server)"
        log "something listens on 127.0.0.1:$SYSTEM_PORT; installing postgresql-client to talk to it"
        apt_install postgresql-client
        PSQL=$(find_client_tool psql)
        [[ -n $PSQL ]] || die "postgresql-client installed but psql still not found"
    fi

    if [[ $(pg_query "$SYSTEM_PORT" 'select 1' 2>/dev/null) != 1 ]]; then
        log "127.0.0.1:$SYSTEM_PORT does not let user postgres in without a password; using a private cluster instead"
        return 1
    fi
    ensure_database "$SYSTEM_PORT"
    echo "postgres://postgres@127.0.0.1:$SYSTEM_PORT/$DB_NAME"
}

# --- 3. private cluster in .data/pg ------------------------------------------
start_private_cluster() {
    local bindir=$1 sock_opt
    # A unix socket path must fit in sun_path (108 bytes incl. NUL). We connect
    # over TCP anyway, so for a very deep checkout (or a path the -o quoting
    # below can't carry) just run without a unix socket.
    if ((${#SOCK_DIR} + 16 > 107)) || [[ $SOCK_DIR == *"'"* ]]; then
        log "socket path $SOCK_DIR unusable; running without a unix socket (TCP only)"
        sock_opt="-k ''"
    else
        sock_opt="-k '$SOCK_DIR'"
    fi
    log "starting private cluster on 127.0.0.1:$PG_PORT (log: $LOG_FILE)"
    if ! as_pg_user "$bindir/pg_ctl" -D "$PGDATA" -l "$LOG_FILE" \
        -o "-p $PG_PORT $sock_opt -c listen_addresses=127.0.0.1" \
        -w -t 60 start >&2; then
        log "last lines of $LOG_FILE:"
        tail -n 20 "$LOG_FILE" >&2 || true
        die "could not start the private cluster (port $PG_PORT taken? set LOGSTITCH_PG_PORT to another port)"
    fi
}

use_private_cluster() {
    local bindir current_port
    bindir=$(find_pg_bindir)
    if [[ -z $bindir ]]; then
        log "no Postgres server binaries (initdb/pg_ctl) found; installing Debian's postgresql package"
        apt_install postgresql
        bindir=$(find_pg_bindir)
        [[ -n $bindir ]] || die "postgresql installed but initdb/pg_ctl still not found"
    fi
    # Prefer the psql matching the server binaries.
    if [[ -x $bindir/psql ]]; then
        PSQL=$bindir/psql
    else
        PSQL=$(find_client_tool psql)
        [[ -n $PSQL ]] || apt_install postgresql-client
        PSQL=$(find_client_tool psql)
    fi

    # initdb/pg_ctl/postgres refuse to run as root, so as root the cluster
    # belongs to the `postgres` OS user (created if this box has none).
    if is_root && ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
        log "creating system user $PG_OS_USER to own the cluster (initdb refuses to run as root)"
        useradd --system --user-group --no-create-home --shell /bin/bash "$PG_OS_USER"
    fi

    mkdir -p "$DATA_DIR"
    # A symlink whose target was deleted: start over.
    if [[ -L $PG_LINK && ! -e $PG_LINK ]]; then
        rm -f "$PG_LINK"
    fi
    if [[ ! -e $PG_LINK ]]; then
        if is_root && ! as_pg_user test -x "$DATA_DIR"; then
            # e.g. the checkout is under /root (mode 0700): the postgres user
            # cannot even reach .data, so keep the cluster outside the repo
            # rather than loosening permissions on the user's directories.
            local outside
            outside=/var/lib/logstitch-dev/$(printf '%s' "$REPO" | sha256sum | cut -c1-12)
            log "user $PG_OS_USER cannot reach $DATA_DIR; keeping the cluster in $outside/pg (linked from .data/pg)"
            mkdir -p "$outside/pg"
            ln -s "$outside/pg" "$PG_LINK"
        else
            mkdir -p "$PG_LINK"
        fi
    fi
    resolve_cluster_paths
    mkdir -p "$SOCK_DIR"
    touch "$LOG_FILE"
    if is_root; then
        chown "$PG_OS_USER:" "$PGDATA" "$SOCK_DIR" "$LOG_FILE"
    fi
    chmod 700 "$PGDATA" # postgres refuses a group/world-accessible data dir

    if [[ ! -f $PGDATA/PG_VERSION ]]; then
        log "initialising private cluster in $PGDATA"
        # --no-locale: a fresh box often has no generated locales, and tests
        # must not depend on the host's collation anyway.
        as_pg_user "$bindir/initdb" -D "$PGDATA" -U postgres --auth=trust \
            --encoding=UTF8 --no-locale >&2 ||
            die "initdb failed (remove $PGDATA and retry)"
    fi

    if as_pg_user "$bindir/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
        current_port=$(running_port "$PGDATA")
        if [[ $current_port != "$PG_PORT" ]]; then
            log "private cluster runs on port ${current_port:-?}; restarting it on $PG_PORT"
            as_pg_user "$bindir/pg_ctl" -D "$PGDATA" -m fast -w stop >&2
            start_private_cluster "$bindir"
        fi
    else
        start_private_cluster "$bindir"
    fi

    ensure_database "$PG_PORT"
    echo "postgres://postgres@127.0.0.1:$PG_PORT/$DB_NAME"
}

# --- main ----------------------------------------------------------------------
if [[ ${LOGSTITCH_FORCE_PRIVATE_PG:-} != 1 ]] && try_system_server; then
    exit 0
fi
use_private_cluster
