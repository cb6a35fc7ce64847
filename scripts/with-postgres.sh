#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL server for the tests, then remove it.
#
#   scripts/with-postgres.sh go test ./internal/store/...
#
# The cluster lives in a temporary directory owned by the postgres user
# (initdb, then pg_ctl on a free loopback port, fsync off: it is thrown
# away), and is stopped and deleted when the command ends, whatever its
# outcome. The command sees SBX_TEST_POSTGRES=postgres://postgres@127.0.0.1:PORT/postgres;
# tests create a database of their own in it. Needs Debian's `postgresql`
# package (scripts/install-deps.sh) and root (to run the server as postgres).
set -euo pipefail

if [ -n "${SBX_TEST_POSTGRES:-}" ]; then
  exec "$@" # a server is already given
fi
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ] || [ "$(id -u)" != 0 ] || ! id postgres >/dev/null 2>&1; then
  echo "with-postgres: no PostgreSQL server (install Debian's postgresql: scripts/install-deps.sh) or not root; running without one" >&2
  exec "$@"
fi

dir=$(mktemp -d /tmp/sbx-pg.XXXXXX)
chown postgres: "$dir"
chmod 700 "$dir"
cleanup() {
  runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u postgres -- "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
  { cat "$dir/initdb.log" >&2; exit 1; }
runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
  start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }

export SBX_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
echo "with-postgres: throwaway PostgreSQL on 127.0.0.1:$port ($dir)" >&2
set +e
"$@"
rc=$?
exit $rc
