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
# Missing Postgres programs are installed by `cargo xtask install` (Debian's
# postgresql or postgresql-client), the one place that installs tools.
#
# --record (make run) also writes the choice to .data/run-database; --recorded
# (make db) then gives exactly that database again, whatever the environment
# says by then, restarting the private cluster if it is down.
# Re-running is cheap: an initialised, running cluster is just reused.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=pg-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/pg-common.sh"

DB_NAME=logstitch
SYSTEM_PORT=5432
PSQL=
MODE=${1:-}
RECORD=$DATA_DIR/run-database

# record KIND URL [PORT]: with --record, remember the choice (mode 600: a
# DATABASE_URL may hold a password).
record() {
    [[ $MODE == --record ]] || return 0
    mkdir -p "$DATA_DIR"
    (umask 077 && printf 'kind=%q\nurl=%q\nport=%q\n' "$1" "$2" "${3:-}" >"$RECORD")
}

# The one install place (xtask/src/tools.rs); its report goes to stderr.
install_tool() {
    (cd "$REPO" && cargo xtask install "$1") >&2 ||
        die "could not install $1; install it yourself, or set DATABASE_URL"
}

# pg_query PORT SQL: run SQL as user postgres on 127.0.0.1:PORT, print rows.
# Never prompts (-w) and ignores PGPASSWORD / ~/.pgpass: the URL we print
# carries no password, so a check must only pass if none is needed.
# -X skips ~/.psqlrc, which could otherwise add output.
pg_query() {
    env -u PGPASSWORD PGPASSFILE=/nonexistent/pgpass PGCONNECT_TIMEOUT=5 \
        "$PSQL" -X -w -q -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atc "$2"
}

db_exists() {
    [[ -n $(pg_query "$1" "select 1 from pg_database where datname = '$DB_NAME'") ]]
}

# Create the database if missing. A concurrent run (two `make test` at once)
# may win the race, so a failed CREATE only counts if the db is still absent.
ensure_database() {
    if ! db_exists "$1"; then
        log "creating database $DB_NAME on 127.0.0.1:$1"
        pg_query "$1" "create database $DB_NAME" >&2 || db_exists "$1" ||
            die "could not create database $DB_NAME on 127.0.0.1:$1"
    fi
}

# --- 2. a server already on 127.0.0.1:5432 -----------------------------------
# Succeeds (and prints the URL) only if that server lets postgres in without a
# password; returns 1 to fall through to the private cluster otherwise.
# Note: it runs as an `if` condition, where bash suspends `set -e`, so every
# step that must not fail silently ends in an explicit `|| die`/`return`.
try_system_server() {
    local url=postgres://postgres@127.0.0.1:$SYSTEM_PORT/$DB_NAME
    # Anything listening? (bash's /dev/tcp: no client tool needed to find out)
    timeout 3 bash -c ": </dev/tcp/127.0.0.1/$SYSTEM_PORT" 2>/dev/null || return 1
    PSQL=$(find_client_tool psql)
    if [[ -z $PSQL ]]; then
        log "something listens on 127.0.0.1:$SYSTEM_PORT; psql is needed to talk to it"
        install_tool psql
        PSQL=$(find_client_tool psql)
    fi
    if [[ $(pg_query "$SYSTEM_PORT" 'select 1' 2>/dev/null) != 1 ]]; then
        log "127.0.0.1:$SYSTEM_PORT does not let user postgres in without a password; using a private cluster instead"
        return 1
    fi
    ensure_database "$SYSTEM_PORT"
    record system "$url"
    echo "$url"
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
    if ! as_pg_user "$bindir/pg_ctl" -D "$PGDATA" -l "$LOG_FILE" -s \
        -o "-p $PG_PORT $sock_opt -c listen_addresses=127.0.0.1" \
        -w -t 60 start >&2; then
        log "last lines of $LOG_FILE:"
        tail -n 20 "$LOG_FILE" >&2 || true
        die "could not start the private cluster (port $PG_PORT taken? set LOGSTITCH_PG_PORT to another port)"
    fi
}

use_private_cluster() {
    local bindir current_port url=postgres://postgres@127.0.0.1:$PG_PORT/$DB_NAME
    bindir=$(find_pg_bindir)
    if [[ -z $bindir ]]; then
        log "no Postgres server binaries (initdb/pg_ctl) found"
        install_tool postgresql
        bindir=$(find_pg_bindir)
        [[ -n $bindir ]] || die "postgresql installed but initdb/pg_ctl still not found"
    fi
    # Prefer the psql matching the server binaries.
    PSQL=$bindir/psql
    if [[ ! -x $PSQL ]]; then
        [[ -n $(find_client_tool psql) ]] || install_tool psql
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
        # must not depend on the host's collation anyway. initdb's output
        # (ending "you can now start the database server using pg_ctl …",
        # which happens just below) is shown only when it fails.
        if ! as_pg_user "$bindir/initdb" -D "$PGDATA" -U postgres --auth=trust \
            --encoding=UTF8 --no-locale >"$DATA_DIR/initdb.log" 2>&1; then
            cat "$DATA_DIR/initdb.log" >&2
            die "initdb failed (remove $PGDATA and retry)"
        fi
    fi

    if as_pg_user "$bindir/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
        current_port=$(running_port "$PGDATA")
        if [[ $current_port != "$PG_PORT" ]]; then
            log "private cluster runs on port ${current_port:-?}; restarting it on $PG_PORT"
            as_pg_user "$bindir/pg_ctl" -D "$PGDATA" -m fast -w -s stop >&2
            start_private_cluster "$bindir"
        fi
    else
        start_private_cluster "$bindir"
    fi

    ensure_database "$PG_PORT"
    record private "$url" "$PG_PORT"
    echo "$url"
}

# --- main ----------------------------------------------------------------------
if [[ $MODE == --recorded && -f $RECORD ]]; then
    kind='' url='' port=''
    # shellcheck disable=SC1090 # written by record() above
    source "$RECORD"
    case $kind in
    private) PG_PORT=$port && use_private_cluster ;;
    system) try_system_server || die "the database make run used, $url, does not answer" ;;
    *) printf '%s\n' "$url" ;;
    esac
    exit 0
fi
# --- 1. explicit URL ---------------------------------------------------------
if [[ -n ${DATABASE_URL:-} ]]; then
    record given "$DATABASE_URL"
    printf '%s\n' "$DATABASE_URL"
    exit 0
fi
if [[ ${LOGSTITCH_FORCE_PRIVATE_PG:-} != 1 ]] && try_system_server; then
    exit 0
fi
use_private_cluster
