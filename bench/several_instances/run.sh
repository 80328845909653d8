#!/usr/bin/env bash
# bench/several_instances/run.sh: commit-to-client latency through a
# follower vs through the leader, in the same run (rfc/0003; see
# bench/README.md). Starts a private PostgreSQL (shapeproxy_test_cluster),
# two instances on one data directory pinned to core 0 (the first leads, the
# second follows: it answers reads of existing shapes from the shared files
# and relays the rest to the leader), creates one bench_live_N table per run, then alternates
# bench_live_latency runs (pinned to core 1) against the leader and against
# the follower, --pairs times. Prints each run's arrival p50/p99 and the
# closing line
#   ratio p50 X (median of N; min, max), p99 Y (...): follower / leader
#
# Exit status: 0 when the run completed, 1 when the setup broke or an
# instance answered wrongly.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $0 [--build DIR] [--clients N] [--commits N] [--pairs N]
  --build DIR     build dir with src/shapeproxy, tests/support/shapeproxy_test_cluster
                  and bench/live_latency/bench_live_latency
                  (default \$SHAPEPROXY_BUILD_DIR or ../build-bench)
  --clients N     parked long-polls per run (200)
  --commits N     measured commits per run (10)
  --pairs N       leader, follower pairs (3)
USAGE
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
clients=200
commits=10
pairs=3
bench_parse_args "build clients commits pairs" "$@"

bench_init several_instances
bench_require_bins "$build"
client_bin="$build/bench/live_latency/bench_live_latency"
[[ -x "$client_bin" ]] || fail "missing $client_bin (build it, or pass --build DIR)"
bench_require_tools psql jq taskset curl python3
tmp="$bench_tmp"

bench_start_cluster
# One empty table per run (the client inserts ids from 1).
for i in $(seq $((2 * pairs))); do bench_create_table "bench_live_$i" 0; done
run=0

# --- two instances on one data directory, both on core 0 ----------------------
shared="$tmp/shared-data"
common=(--database-url "$conninfo" --slot bench_live --publication bench_live --log-level warn
  --long-poll-timeout-ms 40000 --max-connections $((clients + 16)))
bench_start_proxy --cpu 0 --data-dir "$shared" --log "$tmp/leader.log" "${common[@]}" --instance-id leader
leader_pid=$proxy_pid leader_port=$proxy_port
bench_track "$leader_pid"
bench_start_proxy --cpu 0 --data-dir "$shared" --log "$tmp/follower.log" "${common[@]}" --instance-id follower
follower_pid=$proxy_pid follower_port=$proxy_port
[[ "$(curl -fsS "http://127.0.0.1:$follower_port/v1/status" | jq -r .cluster.role)" == follower ]] ||
  fail "the second instance does not follow"

# One run: prints the arrival line, sets $p50 and $p99 (ms).
run_once() {
  local label=$1 port=$2 pid=$3 out="$tmp/client-$1.out"
  run=$((run + 1))
  # The follower's /metrics counts no parked reads (the leader holds them):
  # both runs settle by time only, for the same conditions.
  taskset -c 1 "$client_bin" --port "$port" --conninfo "$conninfo" --table "bench_live_$run" \
    --clients "$clients" --commits "$commits" --proxy-pid "$pid" --no-wait-parked --settle-ms 200 \
    >"$out" || {
    cat "$out" >&2
    fail "$label run failed"
  }
  local line
  line="$(grep '^arrival' "$out")"
  p50="$(sed -E 's/.* p50 ([0-9.]+) ms.*/\1/' <<<"$line")"
  p99="$(sed -E 's/.* p99 ([0-9.]+) ms.*/\1/' <<<"$line")"
  # Reads the follower answered itself so far (0 when it relays everything).
  local own
  own="$(curl -fsS "http://127.0.0.1:$follower_port/metrics" |
    sed -nE 's/^shapeproxy_cluster_follower_reads_total ([0-9]+)$/\1/p')"
  printf '%-8s p50 %6s ms  p99 %6s ms  (follower reads answered itself: %s)\n' "$label" "$p50" \
    "$p99" "${own:-0}"
}

echo "leader and follower on core 0, client on core 1; $clients clients x $commits commits, $pairs pairs"
ratios50=() ratios99=()
for _ in $(seq "$pairs"); do
  run_once leader "$leader_port" "$leader_pid"
  l50=$p50 l99=$p99
  run_once follower "$follower_port" "$follower_pid"
  ratios50+=("$(python3 -c "print(round($p50 / $l50, 2))")")
  ratios99+=("$(python3 -c "print(round($p99 / $l99, 2))")")
done
minmax() { printf '%s\n' "$@" | sort -g | sed -n '1p;$p' | paste -sd, - | sed 's/,/, max /; s/^/min /'; }
printf 'ratio p50 %s (median of %d; %s), p99 %s (median of %d; %s): follower / leader\n' \
  "$(median "${ratios50[@]}")" "$pairs" "$(minmax "${ratios50[@]}")" \
  "$(median "${ratios99[@]}")" "$pairs" "$(minmax "${ratios99[@]}")"
bench_done
