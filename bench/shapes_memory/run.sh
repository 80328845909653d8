#!/usr/bin/env bash
# bench/shapes_memory/run.sh: the proxy's memory as shapes of one table pile
# up ("Shapes beyond RAM", issue 11). See bench/README.md (shapes_memory) and
# /work/shared/reference/benchmarking.md.
#
#  1. Private PostgreSQL (shapeproxy_test_cluster), table bench_rows (id int8
#     pk, title text ~20 chars, amount numeric, done bool, created
#     timestamptz: 5 columns) with --rows rows; VACUUM ANALYZE.
#  2. Proxy on core 0 with its data dir in the temp dir.
#  3. Creates shapes `where=id > -k` (k = 1, 2, ...: each holds every row),
#     syncing each from offset=-1 to electric-up-to-date (checks --rows
#     inserts arrived). At each count in --steps (default 1,10,50,100):
#     proxy VmRSS, VmHWM, du of <data>/shapes (and of its state/ store), and
#     the reference from the same run: pg_total_relation_size(bench_rows).
#     The ratio printed is data dir / (shapes x table size): the disk a
#     shape needs per byte of the table it holds.
#
# Closing line, e.g.
#   shapes_memory: 100 shapes x 100000 rows: RSS 180 MB, disk 2100 MB (1.6x table per shape)
#
# Exit status: 0 when the run completed (size never fails it), 1 when the
# setup broke or the proxy answered wrongly / crashed.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $0 [--build DIR] [--rows N] [--steps LIST] [--args "PROXY ARGS"]
  --build DIR    build dir with src/shapeproxy and tests/support/shapeproxy_test_cluster
                 (default \$SHAPEPROXY_BUILD_DIR or ../build-bench)
  --rows N       rows in the table (100000)
  --steps LIST   shape counts to report at, ascending, comma-separated (1,10,50,100)
  --args ARGS    extra proxy arguments (e.g. "--state-cache-mb 64")
USAGE
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
rows=100000
steps="1,10,50,100"
args=""
bench_parse_args "build rows steps args" "$@"

bench_init shapes_memory
bench_require_bins "$build"
bench_require_tools curl psql jq taskset du
tmp="$bench_tmp"

mb() { awk -v b="$1" 'BEGIN {printf "%.0f", b / 1e6}'; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
title_sql="'title ' || lpad(i::text, 14, '0')"

bench_start_cluster
sql() { psql "$conninfo" -v ON_ERROR_STOP=1 -Atqc "$1"; }
bench_create_table bench_rows "$rows" "$title_sql"
psql "$conninfo" -qc "VACUUM ANALYZE bench_rows" >/dev/null
table_bytes="$(sql "SELECT pg_total_relation_size('bench_rows')")"
echo "shapes_memory: build $build; machine $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "table: $rows rows, pg_total_relation_size $(mb "$table_bytes") MB"

# shellcheck disable=SC2086
bench_start_proxy --cpu 0 --data-dir "$tmp/data" --database-url "$conninfo" --log-level info $args
rss_idle="$(status_kb "$proxy_pid" VmRSS)"
echo "proxy idle: RSS $((rss_idle / 1024)) MB"

# Syncs shape `where=id > -$1` from offset=-1; checks the insert count.
sync_shape() {
  bench_sync_shape "$proxy_base" "table=bench_rows&where=id%20%3E%20-$1"
  [[ "$sync_inserts" == "$rows" ]] || fail "shape $1 holds $sync_inserts inserts, expected $rows"
}

printf '%7s %9s %9s %10s %10s %12s\n' shapes "RSS MB" "HWM MB" "disk MB" "state MB" "disk/table"
made=0
last_line=""
IFS=, read -r -a counts <<<"$steps"
for count in "${counts[@]}"; do
  while ((made < count)); do
    made=$((made + 1))
    sync_shape "$made"
    kill -0 "$proxy_pid" 2>/dev/null || fail "proxy died"
  done
  sleep 1  # the group commit's last sync and the store's write settle
  rss="$(status_kb "$proxy_pid" VmRSS)"
  hwm="$(status_kb "$proxy_pid" VmHWM)"
  disk="$(du -sb "$tmp/data/shapes" | cut -f1)"
  state=0
  [[ -d "$tmp/data/shapes/state" ]] && state="$(du -sb "$tmp/data/shapes/state" | cut -f1)"
  ratio="$(awk -v d="$disk" -v t="$table_bytes" -v n="$made" 'BEGIN {printf "%.2f", d / (t * n)}')"
  printf '%7d %9d %9d %10s %10s %11sx\n' "$made" $((rss / 1024)) $((hwm / 1024)) "$(mb "$disk")" "$(mb "$state")" "$ratio"
  last_line="shapes_memory: $made shapes x $rows rows: RSS $((rss / 1024)) MB, disk $(mb "$disk") MB (${ratio}x table per shape)"
done
echo "$last_line"
bench_done
