# shellcheck shell=bash disable=SC2034  # vars are used by the sourcing scripts
# Helpers shared by ensure-db.sh and stop-private-db.sh. Sourced, not executed.
#
# Layout of the private (per-checkout) Postgres cluster:
#   $REPO/.data/pg       data directory (git-ignored)
#   $REPO/.data/pg.log   server log
#   $REPO/.data/sock     unix socket directory
# When we run as root and the `postgres` OS user cannot reach $REPO (e.g. the
# checkout lives under /root, which is mode 0700), .data/pg is a symlink to a
# directory under /var/lib/logstitch-dev/ and the log and socket sit next to
# the real data directory. Everything is derived from where .data/pg really
# points, so both scripts agree on the paths.

log() { echo "[db] $*" >&2; }
die() {
    echo "[db] ERROR: $*" >&2
    exit 1
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA_DIR=$REPO/.data
PG_LINK=$DATA_DIR/pg
PG_PORT=${LOGSTITCH_PG_PORT:-54329}
PG_OS_USER=postgres

is_root() { [[ $(id -u) -eq 0 ]]; }

# Run a command as the OS user that owns the private cluster. initdb, pg_ctl
# and postgres all refuse to run as root, so as root we switch to `postgres`;
# otherwise the cluster simply belongs to the current user.
# `cd /` first: the tools call getcwd(), which fails if the postgres user
# cannot read our current directory (say, /root/...).
as_pg_user() {
    if ! is_root; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd / && su "$PG_OS_USER" -s /bin/bash -c "$(printf '%q ' "$@")")
    fi
}

# Directory holding initdb + pg_ctl from one and the same Postgres version.
# PATH wins (it may be a symlink such as /usr/local/bin/initdb, so resolve it to
# find its sibling pg_ctl); otherwise Debian's /usr/lib/postgresql/<ver>/bin,
# highest version first. Prints nothing if no server binaries are installed.
find_pg_bindir() {
    local initdb dir
    if initdb=$(command -v initdb 2>/dev/null); then
        dir=$(dirname "$(readlink -f "$initdb")")
        if [[ -x $dir/pg_ctl ]]; then
            echo "$dir"
            return
        fi
    fi
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
        if [[ -x $dir/initdb && -x $dir/pg_ctl ]]; then
            echo "$dir"
            return
        fi
    done
}

# A client tool (psql, pg_isready): on PATH, else the copy shipped next to the
# server binaries under /usr/lib/postgresql/<ver>/bin. Prints nothing if absent.
find_client_tool() {
    local name=$1 p
    if p=$(command -v "$name" 2>/dev/null); then
        echo "$p"
        return
    fi
    for p in $(printf '%s\n' /usr/lib/postgresql/*/bin/"$name" | sort -rV); do
        if [[ -x $p ]]; then
            echo "$p"
            return
        fi
    done
}

# Set PGDATA, LOG_FILE and SOCK_DIR from where .data/pg really points (see the
# layout note at the top). Call only once .data/pg exists.
resolve_cluster_paths() {
    PGDATA=$(readlink -f "$PG_LINK")
    LOG_FILE=$(dirname "$PGDATA")/pg.log
    SOCK_DIR=$(dirname "$PGDATA")/sock
}

# Port the private cluster is currently running on (line 4 of postmaster.pid),
# empty if unknown.
running_port() {
    local pidfile=$1/postmaster.pid
    if [[ -r $pidfile ]]; then
        sed -n 4p "$pidfile"
    fi
}
