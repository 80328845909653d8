#!/bin/sh
# Re-records tests/replication/fixtures from a throwaway PostgreSQL 15
# cluster. Usage (as root): record_fixtures.sh <path/to/record_pgoutput>
# Note: re-recording changes OIDs, LSNs and times; the tests find those in the
# recorded stream itself, but the TOAST text is random by design.
set -eu
recorder=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
bin=/usr/lib/postgresql/15/bin
d=$(mktemp -d)
chown postgres "$d"
trap 'runuser -u postgres -- $bin/pg_ctl -D "$d/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$d"' EXIT
runuser -u postgres -- $bin/initdb -D "$d/data" -A trust -U postgres >/dev/null
runuser -u postgres -- $bin/pg_ctl -D "$d/data" -l "$d/log" -w start \
  -o "-c wal_level=logical -c listen_addresses='' -c unix_socket_directories=$d -p 5499"
psql "host=$d port=5499 user=postgres dbname=postgres" -v ON_ERROR_STOP=1 -q \
  -f "$here/record_workload.sql" >/dev/null
"$recorder" "host=$d port=5499 user=postgres dbname=postgres" "$here/../fixtures" 1000 3
