#!/usr/bin/env bash
# bench/fallback/run.sh: the proxy in fallback mode (its role has no
# REPLICATION, so replication never starts and it serves from direct queries).
#
# (a) Fallback response vs psql COPY, same run: a new shape of --rows rows
#     (every request a distinct where clause selecting all rows, so every one
#     is a fresh fallback query: catalog check, REPEATABLE READ query, log
#     built, whole snapshot in one response with --chunk-bytes 256 MB), timed
#     by curl from request to last byte, beside `psql -c "COPY (SELECT ...)
#     TO STDOUT"` of the same rows as the same role. Warm-up pair, then --pairs
#     alternating psql/proxy pairs, each request once the proxies are idle
#     (--no-settle: back to back); each measured shape is DELETEd after (so
#     the fallback loop does not keep refreshing it). Prints
#     `ratio X (median of N; min A, max B) candidate C ms, psql COPY R ms`
#     (ratio = proxy ms / psql ms; target 1.3 or less).
# (b) --clients concurrent long-poll clients (node, one keep-alive socket
#     each) on one 1,000-row shape for --seconds, while a writer updates a
#     row every 100 ms. Counted on the server with pg_stat_statements: calls of
#     the shape's row query by the proxy's role. Prints
#     `queries per poll interval X (N queries in T s, interval P ms) ...`
#     (target: at most 1).
#
# Exit status: 0 when the run completed (benchmarks never fail for being
# slow), 1 when the setup broke or an answer was wrong.
set -euo pipefail

usage() {
  cat <<EOF
usage: $0 [--build DIR] [--rows N] [--pairs N] [--clients N] [--seconds S] [--poll-ms MS]
          [--reference BIN] [--no-b]
  --build DIR     build dir with src/shapeproxy and tests/support/shapeproxy_test_cluster
                  (default \$SHAPEPROXY_BUILD_DIR or ../build-bench)
  --rows N        rows of the (a) shape (100000)
  --pairs N       measured psql/proxy pairs in (a) (5)
  --clients N     live clients in (b) (1000)
  --seconds S     length of (b) (10)
  --poll-ms MS    --fallback-poll-interval-ms (1000)
  --reference BIN another proxy binary (e.g. an older build), started beside the
                  build's in fallback too: each (a) pair also times it (psql,
                  reference, candidate), and (a) closes with the median of
                  candidate/reference per pair
  --no-b          skip (b)
  --no-settle     in (a), measure each request right after the previous one
                  (by default it waits until the proxies are idle: see settle)
EOF
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
rows=100000
pairs=5
clients=1000
seconds=10
poll_ms=1000
reference=""
no_b=""
no_settle=""
bench_parse_args "build rows pairs clients seconds poll-ms reference no-b! no-settle!" "$@"
[[ -z "$reference" || -x "$reference" ]] || { echo "fallback: $reference is not executable" >&2; exit 2; }

bench_init fallback
bench_require_bins "$build"
bench_require_tools psql jq curl node python3
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- PostgreSQL: pg_stat_statements, tables, a role without REPLICATION ------
bench_start_cluster
psql "$conninfo" -v ON_ERROR_STOP=1 -q -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
bench_cluster_command stop
bench_cluster_command start
psql "$conninfo" -v ON_ERROR_STOP=1 -q -c "CREATE EXTENSION pg_stat_statements"
bench_create_table bench_rows "$rows"
psql "$conninfo" -v ON_ERROR_STOP=1 -q <<SQL
CREATE TABLE bench_small (id int4 PRIMARY KEY, title text NOT NULL, n int4 NOT NULL);
INSERT INTO bench_small SELECT i, 'row ' || i, 0 FROM generate_series(1, 1000) AS i;
VACUUM ANALYZE;
CREATE ROLE bench_app LOGIN;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_app;
CREATE PUBLICATION bench_pub FOR ALL TABLES;
SQL
app_conninfo="$(sed -E 's/user=[^ ]+//' <<<"$conninfo") user=bench_app"

proxy_args=(--database-url "$app_conninfo" --publication bench_pub --fallback-grace-ms 200
  --fallback-poll-interval-ms "$poll_ms" --chunk-bytes 268435456 --allow-delete --log-level warn)
wait_fallback() {
  for _ in $(seq 300); do
    [[ "$(curl -s "$1/v1/status" | jq -r .status)" == fallback ]] && return 0
    sleep 0.1
  done
  fail "the proxy at $1 never went to fallback"
}
reference_base=""
if [[ -n "$reference" ]]; then
  # The reference first, on the same core, with its own data directory.
  candidate_bin="$proxy_bin"
  proxy_bin="$reference"
  bench_start_proxy --cpu 0 --data-dir "$bench_tmp/reference-data" --log "$bench_tmp/reference.log" \
    "${proxy_args[@]}" --slot bench_fb_ref
  reference_base="$proxy_base" reference_pid="$proxy_pid"
  bench_track "$reference_pid"
  proxy_bin="$candidate_bin"
  wait_fallback "$reference_base"
  echo "(a) reference $reference (pid $reference_pid), candidate $proxy_bin"
fi
bench_start_proxy --cpu 0 "${proxy_args[@]}" --slot bench_fb
wait_fallback "$proxy_base"
echo "(a) candidate pid $proxy_pid; load average $(cut -d' ' -f1-3 /proc/loadavg)"

# --- (a) a new 100k-row shape from a fallback query vs psql COPY -------------
k=0
now_ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }
# Sets $where to a fresh clause that selects every row.
next_where() {
  k=$((k + 1))
  where="id < $((1000000000 + k))"
}
# settle: waits (up to 3 s) until the proxies use no CPU over two 50 ms
# samples in a row, so a measurement does not pay for the previous shape's
# work after its answer (storing its rows and snapshot file, the DELETE):
# with the proxies pinned to one core, that work would otherwise fall into
# whichever request comes next. Prints nothing; the time it took is not
# measured. --no-settle measures back to back.
proxy_cpu_ticks() {
  local pid total=0 fields
  for pid in "$@"; do
    read -r -a fields <"/proc/$pid/stat" || continue
    total=$((total + fields[13] + fields[14]))
  done
  echo "$total"
}
settle() {
  [[ -z "$no_settle" ]] || return 0
  local pids=("$proxy_pid") quiet=0 before after
  [[ -n "$reference_base" ]] && pids+=("$reference_pid")
  before="$(proxy_cpu_ticks "${pids[@]}")"
  for _ in $(seq 60); do
    sleep 0.05
    after="$(proxy_cpu_ticks "${pids[@]}")"
    if [[ "$after" == "$before" ]]; then
      quiet=$((quiet + 1))
      ((quiet >= 2)) && return 0
    else
      quiet=0
    fi
    before="$after"
  done
}
run_psql() {
  settle
  local started
  started="$(now_ms)"
  psql "$app_conninfo" -v ON_ERROR_STOP=1 -q \
    -c "COPY (SELECT id, title, amount, done, created FROM bench_rows WHERE $where) TO STDOUT" \
    >"$bench_tmp/copy.txt"
  echo $(( $(now_ms) - started ))
}
# run_proxy [BASE]: the proxy at BASE (default: the build's).
run_proxy() {
  settle
  local started status handle base="${1:-$proxy_base}"
  started="$(now_ms)"
  status="$(curl -sS -G -o "$bench_tmp/body.json" -D "$bench_tmp/headers.txt" -w '%{http_code}' \
    --data-urlencode table=bench_rows --data-urlencode offset=-1 --data-urlencode "where=$where" \
    "$base/v1/shape")"
  local took=$(( $(now_ms) - started ))
  [[ "$status" == 200 ]] || fail "proxy answered $status: $(head -c 300 "$bench_tmp/body.json")"
  grep -qi '^electric-fallback-mode: true' "$bench_tmp/headers.txt" || fail "response not flagged fallback"
  handle="$(awk -F': *' 'tolower($1)=="electric-handle"{sub(/\r$/,"",$2); print $2}' "$bench_tmp/headers.txt")"
  curl -sS -G -o /dev/null -X DELETE --data-urlencode table=bench_rows \
    --data-urlencode "where=$where" --data-urlencode "handle=$handle" "$base/v1/shape"
  echo "$took"
}

next_where
warm_psql="$(run_psql)"
copy_lines="$(wc -l <"$bench_tmp/copy.txt")"
[[ "$copy_lines" == "$rows" ]] || fail "COPY gave $copy_lines rows, expected $rows"
warm_proxy="$(run_proxy)"
got="$(jq '[.[] | select(.headers.operation == "insert")] | length' "$bench_tmp/body.json")"
[[ "$got" == "$rows" ]] || fail "the fallback response holds $got rows, expected $rows"
if [[ -n "$reference_base" ]]; then
  cp "$bench_tmp/body.json" "$bench_tmp/candidate-body.json"
  warm_reference="$(run_proxy "$reference_base")"
  # Same where clause (k), so the same rows are expected from both, byte for
  # byte. Only the closing snapshot-end may differ: its xmin/xmax move when
  # a transaction (e.g. an instance's NOTIFY) commits between the two queries.
  same_rows() { jq -c 'map(select(.headers.control != "snapshot-end"))' "$1"; }
  cmp -s <(same_rows "$bench_tmp/body.json") <(same_rows "$bench_tmp/candidate-body.json") ||
    fail "the reference and the candidate answered different rows"
  echo "(a) warm-up: reference ${warm_reference} ms (the same rows, byte for byte)"
fi
echo "(a) warm-up: psql COPY ${warm_psql} ms ($(stat -c %s "$bench_tmp/copy.txt") bytes), proxy ${warm_proxy} ms ($(stat -c %s "$bench_tmp/body.json") bytes)"

: >"$bench_tmp/ratios"
: >"$bench_tmp/proxy_ms"
: >"$bench_tmp/psql_ms"
: >"$bench_tmp/ref_ratios"
: >"$bench_tmp/cand_ref"
: >"$bench_tmp/ref_ms"
for pair in $(seq "$pairs"); do
  next_where
  psql_ms="$(run_psql)"
  line=""
  if [[ -n "$reference_base" ]]; then
    ref_ms="$(run_proxy "$reference_base")"
    echo "$ref_ms" >>"$bench_tmp/ref_ms"
    python3 -c "print(f'{$ref_ms / max($psql_ms, 1):.2f}')" >>"$bench_tmp/ref_ratios"
    line=", reference ${ref_ms} ms (ratio $(tail -n1 "$bench_tmp/ref_ratios"))"
  fi
  proxy_ms="$(run_proxy)"
  echo "$psql_ms" >>"$bench_tmp/psql_ms"
  echo "$proxy_ms" >>"$bench_tmp/proxy_ms"
  ratio="$(python3 -c "print(f'{$proxy_ms / max($psql_ms, 1):.2f}')")"
  echo "$ratio" >>"$bench_tmp/ratios"
  if [[ -n "$reference_base" ]]; then
    python3 -c "print(f'{$proxy_ms / max($ref_ms, 1):.2f}')" >>"$bench_tmp/cand_ref"
    line+=", candidate/reference $(tail -n1 "$bench_tmp/cand_ref")"
  fi
  echo "(a) pair $pair: psql COPY ${psql_ms} ms${line}, proxy ${proxy_ms} ms, ratio $ratio"
done
range() { echo "min $(sort -g "$1" | head -n1), max $(sort -g "$1" | tail -n1)"; }
echo "(a) load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n "$reference_base" ]]; then
  echo "(a) reference ratio $(median <"$bench_tmp/ref_ratios") (median of $pairs; $(range "$bench_tmp/ref_ratios")) reference $(median <"$bench_tmp/ref_ms") ms"
  echo "(a) candidate/reference $(median <"$bench_tmp/cand_ref") (median of $pairs; $(range "$bench_tmp/cand_ref"))"
fi
echo "(a) ratio $(median <"$bench_tmp/ratios") (median of $pairs; $(range "$bench_tmp/ratios")) candidate $(median <"$bench_tmp/proxy_ms") ms, psql COPY $(median <"$bench_tmp/psql_ms") ms (${rows} rows; target 1.3 or less)"
if [[ -n "$no_b" ]]; then
  bench_done
  exit 0
fi

# --- (b) 1,000 live clients on one shape: queries per poll interval ----------
# Sync the shape once to get its handle and offset.
offset=-1
handle=""
for _ in $(seq 20); do
  args=(--data-urlencode table=bench_small --data-urlencode "offset=$offset")
  [[ -n "$handle" ]] && args+=(--data-urlencode "handle=$handle")
  curl -sS -G -o /dev/null -D "$bench_tmp/small_headers.txt" "${args[@]}" "$proxy_base/v1/shape"
  handle="$(awk -F': *' 'tolower($1)=="electric-handle"{sub(/\r$/,"",$2); print $2}' "$bench_tmp/small_headers.txt")"
  offset="$(awk -F': *' 'tolower($1)=="electric-offset"{sub(/\r$/,"",$2); print $2}' "$bench_tmp/small_headers.txt")"
  grep -qi '^electric-up-to-date' "$bench_tmp/small_headers.txt" && break
done
grep -qi '^electric-up-to-date' "$bench_tmp/small_headers.txt" || fail "bench_small never up-to-date"

( while true; do
    psql "$conninfo" -q -c "UPDATE bench_small SET n = n + 1 WHERE id = $((RANDOM % 1000 + 1))" >/dev/null 2>&1
    sleep 0.1
  done ) &
bench_track $!

count_queries() {
  psql "$conninfo" -At -c "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s
    JOIN pg_roles r ON r.oid = s.userid
    WHERE r.rolname = 'bench_app' AND s.query LIKE '%FROM \"public\".\"bench_small\"%'"
}
psql "$conninfo" -q -c "SELECT pg_stat_statements_reset()" >/dev/null
started="$(now_ms)"
node "$here/long_poll_clients.mjs" "$proxy_base" bench_small "$handle" "$offset" "$clients" "$seconds" \
  >"$bench_tmp/clients.json"
queries="$(count_queries)"
elapsed_ms=$(( $(now_ms) - started ))
echo "(b) clients: $(cat "$bench_tmp/clients.json")"
[[ "$(jq .withChanges "$bench_tmp/clients.json")" -gt 0 ]] || fail "no client received a change"
[[ "$(jq .flagged "$bench_tmp/clients.json")" == "$(jq .responses "$bench_tmp/clients.json")" ]] ||
  fail "a response was not flagged fallback"
python3 - "$queries" "$elapsed_ms" "$poll_ms" "$clients" <<'EOF'
import sys
queries, elapsed_ms, poll_ms, clients = (int(v) for v in sys.argv[1:])
intervals = elapsed_ms / poll_ms
print(f"(b) queries per poll interval {queries / intervals:.2f} ({queries} queries in "
      f"{elapsed_ms / 1000:.1f} s, interval {poll_ms} ms, {clients} clients; target 1 or less)")
EOF
bench_done
