#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the collector's tests, idempotently,
# and prints its URL on stdout (everything else goes to stderr):
#   Debian's `postgresql` package (installed if missing), a cluster in
#   target/test-postgres owned by the unprivileged `postgres` user, listening
#   only on 127.0.0.1 on a free port, trust authentication (loopback and test
#   data only). A running server from an earlier call is reused. Tests create
#   their own databases in it (wl_test_*); each call drops those of earlier runs.
# `scripts/test-postgres.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="$PWD/target/test-postgres"
DATA="$DIR/data"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else echo "need root for: $*" >&2; return 1; fi; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
    as_root apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
BIN="$(pg_bin)"

# Run as the unprivileged owner of the cluster: PostgreSQL refuses to run as root.
if [ "$(id -u)" = 0 ]; then
    OWNER=postgres
    as_owner() { runuser -u "$OWNER" -- "$@"; }
else
    OWNER="$(id -un)"
    as_owner() { "$@"; }
fi

if [ "${1:-}" = stop ]; then
    if [ -f "$DATA/postmaster.pid" ]; then as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2; fi
    exit 0
fi

mkdir -p "$DIR"
chown "$OWNER" "$DIR"
if [ ! -f "$DATA/PG_VERSION" ]; then
    as_owner "$BIN/initdb" -D "$DATA" --auth=trust --username=postgres -E UTF8 --no-sync >&2
fi

if ! as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$DIR -c max_connections=200" >&2
    echo "$PORT" > "$DIR/port"
fi
URL="postgres://postgres@127.0.0.1:$(cat "$DIR/port")/postgres"
# Databases the tests and benchmarks made in an earlier run.
for db in $("$BIN/psql" "$URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'wl\_test\_%' OR datname LIKE 'wl\_bench\_%'"); do
    "$BIN/psql" "$URL" -qc "DROP DATABASE IF EXISTS $db" >&2
done
echo "$URL"
