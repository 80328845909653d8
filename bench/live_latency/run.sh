#!/usr/bin/env bash
# bench/live_latency/run.sh: commit-to-client latency of 1,000 parked live
# long-polls on one shape (see bench/README.md). Starts a private PostgreSQL
# (shapeproxy_test_cluster) and the proxy pinned to core 0, creates
# bench_live (id int8 pk, title text, amount numeric, done bool, created
# timestamptz), then runs bench_live_latency pinned to core 1, which commits
# one INSERT per round and times every client from COMMIT to the arrival of
# its response (kernel receive timestamp) and to its checked response.
# Prints p50/p99/max and the closing line `p99 X ms (target 20 ms)` (arrival).
# --rows N fills the table first (a big shape synced, then live updates);
# --reference BIN alternates runs of another proxy binary with the build's
# and closes with the ratio of their arrival p99.
#
# Exit status: 0 when the run completed (the target is reported, not
# asserted), 1 when the setup broke or the proxy answered wrongly.
# Extra arguments after `--` go to bench_live_latency (e.g. -- --verbose).
set -euo pipefail

usage() {
  cat <<USAGE
usage: $0 [--build DIR] [--clients N] [--commits N] [--sse] [--rows N] [--pairs N]
          [--reference BIN] [-- CLIENT-ARGS...]
  --build DIR       build dir with src/shapeproxy, tests/support/shapeproxy_test_cluster
                    and bench/live_latency/bench_live_latency
                    (default \$SHAPEPROXY_BUILD_DIR or ../build-bench)
  --clients N       parked long-polls (1000)
  --commits N       measured commits, one sample per client each (20)
  --sse             one SSE stream per client (live_sse=true) instead of long-polls
                    (the proxy ends a stream after 60 s: keep such runs shorter)
  --rows N          rows the table holds before the clients sync the shape (0);
                    e.g. 1000000: a 1M-row shape, synced, then live updates
  --reference BIN   another proxy binary (e.g. an older build) run alternately
                    with the build's, on the same table: pairs of runs and
                    the ratio of their arrival p99 (the client does not wait for
                    /metrics to report every read parked: an older proxy may not)
  --pairs N         with --reference: pairs of runs (3); without: runs (1)
USAGE
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
clients=1000
commits=20
rows=0
pairs=""
reference=""
sse=0
bench_parse_args "build clients commits sse! rows pairs reference --" "$@"
extra=("${bench_rest[@]}")
[[ $sse -eq 1 ]] && extra+=(--sse)
[[ -n "$reference" ]] && extra+=(--no-wait-parked)
# The client needs a descriptor per connection (it raises its own soft limit
# to the hard one, as the proxy does).
(( clients + 64 <= $(ulimit -Hn) )) ||
  fail "--clients $clients needs RLIMIT_NOFILE above $((clients + 64)); the hard limit is $(ulimit -Hn)"
[[ -z "$reference" || -x "$reference" ]] || { echo "live_latency: $reference is not executable" >&2; exit 2; }
pairs="${pairs:-$([[ -n "$reference" ]] && echo 3 || echo 1)}"

bench_init live_latency
bench_require_bins "$build"
client_bin="$build/bench/live_latency/bench_live_latency"
[[ -x "$client_bin" ]] || fail "missing $client_bin (build it, or pass --build DIR)"
bench_require_tools psql jq taskset curl python3
tmp="$bench_tmp"
candidate_bin="$proxy_bin"
# On failure, the client's output too (the proxy log tail comes from lib.sh).
show_client_output() {
  [[ $bench_failed -ne 0 && -f "$tmp/client.out" ]] && cat "$tmp/client.out"
  bench_cleanup
}
trap show_client_output EXIT

# --- PostgreSQL and the table (empty, or --rows rows) ------------------------
bench_start_cluster
bench_create_table bench_live "$rows"
((rows == 0)) || psql "$conninfo" -qc "VACUUM ANALYZE bench_live" >/dev/null

# run_one N BIN: one run with a fresh proxy (own data dir, slot, publication)
# on core 0 and the client on core 1; the client's output in $tmp/client.out
# (kept as $tmp/client-N.out). The inserted ids of run N start past the
# table's rows and the ids of earlier runs.
run_one() {
  local n="$1" slot="bench_live_$1" limit=()
  proxy_bin="$2"
  # Its connection limit leaves room for the client's set-up and /metrics
  # connections (not for --reference: an older proxy has no such flag).
  [[ "$proxy_bin" == "$candidate_bin" ]] && limit=(--max-connections $((clients + 16)))
  # The longest long-poll timeout, so parked requests are answered by
  # commits, not by timeouts (the client re-parks after a timeout anyway).
  bench_start_proxy --cpu 0 --data-dir "$tmp/data-$n" --log "$tmp/proxy-$n.log" \
    --database-url "$conninfo" --slot "$slot" --publication "$slot" --log-level warn \
    --long-poll-timeout-ms 40000 "${limit[@]}"
  taskset -c 1 "$client_bin" --port "$proxy_port" --conninfo "$conninfo" --table bench_live \
    --clients "$clients" --commits "$commits" --proxy-pid "$proxy_pid" \
    --first-id $((rows + 1 + n * 100000)) "${extra[@]}" >"$tmp/client.out"
  hwm="$(awk '/VmHWM/ {print $2, $3}' "/proc/$proxy_pid/status")"
  kill -TERM "$proxy_pid"
  wait "$proxy_pid" || true
  proxy_pid=""
  psql "$conninfo" -qc "SELECT pg_drop_replication_slot('$slot')" >/dev/null
  rm -rf "$tmp/data-$n"
  cp "$tmp/client.out" "$tmp/client-$n.out"
}
# The arrival p99 (ms) of the last run.
last_p99() { tail -n 1 "$tmp/client.out" | awk '{print $2}'; }

echo "proxy on core 0, client on core 1; $clients clients x $commits commits$([[ $sse -eq 1 ]] && echo ', SSE'); table of $rows rows"
p99s=()
if [[ -z "$reference" ]]; then
  for ((i = 0; i < pairs; i++)); do
    run_one "$i" "$candidate_bin"
    ((pairs == 1)) || echo "-- run $((i + 1))"
    head -n -1 "$tmp/client.out"
    printf 'proxy peak RSS %s\n' "$hwm"
    p99s+=("$(last_p99)")
  done
  # The client's closing line (p99 ... target) stays the last line of the run.
  ((pairs == 1)) || printf 'p99 %s ms median of %d runs (min %s, max %s)\n' "$(median "${p99s[@]}")" \
    "$pairs" "$(printf '%s\n' "${p99s[@]}" | sort -g | head -1)" "$(printf '%s\n' "${p99s[@]}" | sort -g | tail -1)"
  tail -n 1 "$tmp/client.out"
else
  echo "reference $reference, candidate $candidate_bin, alternated"
  ratios=() ref_p99s=() cand_p99s=()
  for ((i = 0; i < pairs; i++)); do
    for side in reference candidate; do
      bin="$reference" run=$((2 * i))
      [[ $side == candidate ]] && bin="$candidate_bin" run=$((2 * i + 1))
      run_one "$run" "$bin"
      printf -- '-- pair %d, %s (peak RSS %s)\n' $((i + 1)) "$side" "$hwm"
      grep -E '^(shape|arrival|processed|client CPU)' "$tmp/client.out"
      [[ $side == reference ]] && ref_p99s+=("$(last_p99)") || cand_p99s+=("$(last_p99)")
    done
    ratios+=("$(awk -v c="${cand_p99s[-1]}" -v r="${ref_p99s[-1]}" 'BEGIN {printf "%.2f", c / r}')")
    echo "pair $((i + 1)): arrival p99 reference ${ref_p99s[-1]} ms, candidate ${cand_p99s[-1]} ms, ratio ${ratios[-1]}"
  done
  printf 'p99 ratio %s (candidate/reference, median of %d; min %s, max %s) candidate p99 %s ms, reference p99 %s ms (medians)\n' \
    "$(median "${ratios[@]}")" "$pairs" "$(printf '%s\n' "${ratios[@]}" | sort -g | head -1)" \
    "$(printf '%s\n' "${ratios[@]}" | sort -g | tail -1)" "$(median "${cand_p99s[@]}")" "$(median "${ref_p99s[@]}")"
fi
bench_done
