#!/usr/bin/env bash
# bench/several_instances/throughput.sh: requests/s of 3 instances vs 1 for
# GET /v1/shape?table=bench_rows&offset=-1 of a 10k-row shape (issue 13,
# rfc/0003; see bench/README.md), both measured in the same run.
#
# The machine has 2 cores, not one per instance, so each instance stands for
# a machine of its own by a CPU budget: a cgroup (v1 cpu or v2 cpu.max) with
# --quota percent of a core each, all instances pinned to core 0; the load
# (wrk) runs on core 1 without a quota. 1 instance then has --quota of CPU,
# 3 instances 3 x --quota: the ratio says how much of that the cluster
# turns into requests (3.0: every instance serves on its own; 1.0: one
# instance does all the work, e.g. followers relaying to the leader).
#
# Procedure:
#  1. A private PostgreSQL (shapeproxy_test_cluster), bench_rows with --rows.
#  2. Three instances on one data directory (the first leads); each in its
#     own cgroup. The shape is created through the leader; every instance
#     must give the same bytes for it (same handle, same body).
#  3. Warm-up (unmeasured) of both set-ups, then --pairs pairs of
#     "1" (3 wrk -t1 -c(C/3) against the leader, at once) and
#     "3" (one such wrk against each instance), each --duration s; req/s
#     summed over the 3 wrk processes. The followers stay idle in "1".
#  4. One line per pair (req/s, the CPU each instance used, % of its
#     quota), and the closing line
#       ratio X (median of N; min A, max B) candidate C req/s, one instance R req/s
#
# Exit status: 0 when the run completed (whatever the ratio), 1 when the
# setup broke or an instance answered wrongly (non-2xx, socket errors,
# different bodies).
set -euo pipefail

usage() {
  cat <<USAGE
usage: $0 [--build DIR] [--rows N] [--pairs N] [--duration S] [--connections N]
          [--warmup S] [--quota PCT]
  --build DIR        build dir with src/shapeproxy and tests/support/shapeproxy_test_cluster
                     (default \$SHAPEPROXY_BUILD_DIR or ../build-bench)
  --rows N           rows in the shape (10000)
  --pairs N          measured 1-instance / 3-instance pairs (5)
  --duration S       seconds per run (5)
  --connections N    wrk connections in all, split over 3 wrk processes (12)
  --warmup S         seconds of the unmeasured warm-up of each set-up (3)
  --quota PCT        CPU budget of each instance, percent of a core (5);
                     0: no cgroup, all instances share core 0 unbounded
USAGE
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
rows=10000
pairs=5
duration=5
connections=12
warmup=3
quota=5
bench_parse_args "build rows pairs duration connections warmup quota" "$@"

bench_init several_instances_throughput
bench_require_bins "$build"
bench_require_tools wrk curl psql jq taskset
tmp="$bench_tmp"
per_wrk=$((connections / 3))
((per_wrk >= 1)) || fail "--connections must be 3 or more"

# --- CPU budgets: one cgroup per instance ---------------------------------------
cgroups=()
remove_cgroups() {
  for dir in "${cgroups[@]}"; do
    # Emptied when its process exits (the lib's cleanup stops them first).
    for _ in $(seq 50); do rmdir "$dir" 2>/dev/null && break; sleep 0.1; done
  done
}
cleanup_all() {
  bench_cleanup
  remove_cgroups
}
trap cleanup_all EXIT

# cgroup_for NAME PID: puts process PID (all its threads) into a new cgroup
# limited to $quota % of a core.
cgroup_for() {
  local dir period=100000 limit=$((quota * 1000))
  if [[ -w /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
    dir="/sys/fs/cgroup/cpu/shapeproxy-bench-$$-$1"
    mkdir "$dir" || fail "cannot create $dir"
    cgroups+=("$dir")
    echo "$period" >"$dir/cpu.cfs_period_us"
    echo "$limit" >"$dir/cpu.cfs_quota_us"
  elif [[ -w /sys/fs/cgroup/cgroup.subtree_control ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
    grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
    dir="/sys/fs/cgroup/shapeproxy-bench-$$-$1"
    mkdir "$dir" || fail "cannot create $dir"
    cgroups+=("$dir")
    echo "$limit $period" >"$dir/cpu.max"
  else
    fail "no writable cpu cgroup (v1 /sys/fs/cgroup/cpu or v2 cpu.max): run as root, or pass --quota 0"
  fi
  echo "$2" >"$dir/cgroup.procs"
}

# CPU seconds (user + system) process PID has used.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$1/stat"; }

# --- 1. PostgreSQL and the table ---------------------------------------------------
bench_start_cluster
bench_create_table bench_rows "$rows"

# --- 2. three instances on one data directory, each with its budget -------------
shared="$tmp/shared-data"
common=(--database-url "$conninfo" --slot bench_tput --publication bench_tput --log-level warn)
ids=(i1 i2 i3)
pids=() ports=()
for id in "${ids[@]}"; do
  bench_start_proxy --cpu 0 --data-dir "$shared" --log "$tmp/$id.log" "${common[@]}" --instance-id "$id"
  pids+=("$proxy_pid") ports+=("$proxy_port")
  bench_track "$proxy_pid"
  ((quota == 0)) || cgroup_for "$id" "$proxy_pid"
done
proxy_pid="" # all three are tracked
[[ "$(curl -fsS "http://127.0.0.1:${ports[0]}/v1/status" | jq -r .cluster.role)" == leader ]] ||
  fail "the first instance does not lead"
for i in 1 2; do
  for _ in $(seq 100); do
    role="$(curl -fsS "http://127.0.0.1:${ports[$i]}/v1/status" | jq -r .cluster.role)"
    [[ "$role" == follower ]] && break
    sleep 0.1
  done
  [[ "$role" == follower ]] || fail "${ids[$i]} does not follow"
done

path="/v1/shape?table=bench_rows&offset=-1"
status="$(curl -sS -o "$tmp/body-i1.json" -w '%{http_code}' "http://127.0.0.1:${ports[0]}$path")"
[[ "$status" == 200 ]] || fail "the leader answered $status"
got_rows="$(jq '[.[] | select(.headers.operation == "insert")] | length' "$tmp/body-i1.json")"
[[ "$got_rows" == "$rows" ]] || fail "snapshot holds $got_rows insert rows, expected $rows"
for i in 1 2; do
  curl -fsS -o "$tmp/body-${ids[$i]}.json" "http://127.0.0.1:${ports[$i]}$path" || fail "${ids[$i]} failed"
  cmp -s "$tmp/body-i1.json" "$tmp/body-${ids[$i]}.json" || fail "${ids[$i]} serves other bytes than the leader"
done
echo "body: $(stat -c %s "$tmp/body-i1.json") bytes, $got_rows rows, the same from the 3 instances"
if ((quota == 0)); then budget="no quota"; else budget="$quota% of a core each"; fi
echo "instances on core 0 ($budget), 3 wrk -t1 -c$per_wrk on core 1; ${duration}s runs, $pairs pairs"

# --- 3. measure ---------------------------------------------------------------------
# run_set SECONDS PORT PORT PORT: one wrk per port at once (core 1); prints
# the summed req/s. Fails on any non-2xx answer or socket error.
run_set() {
  local seconds=$1 n=0 wrk_pids=() total=0
  shift
  for port in "$@"; do
    n=$((n + 1))
    taskset -c 1 wrk -t1 -c"$per_wrk" -d"${seconds}s" "http://127.0.0.1:$port$path" >"$tmp/wrk-$n.out" 2>&1 &
    wrk_pids+=($!)
  done
  for pid in "${wrk_pids[@]}"; do wait "$pid" || fail "wrk failed: $(cat "$tmp"/wrk-*.out)"; done
  for ((k = 1; k <= n; k++)); do
    if grep -q -e 'Non-2xx' -e 'Socket errors' "$tmp/wrk-$k.out"; then
      cat "$tmp/wrk-$k.out" >&2
      fail "errors during a run"
    fi
    total="$(awk -v t="$total" '/^Requests\/sec:/ {printf "%.1f", t + $2}' "$tmp/wrk-$k.out")"
  done
  echo "$total"
}

# measure LABEL PORT PORT PORT: one measured run; sets $rate and prints its
# line with each instance's CPU use (% of one core over the run).
measure() {
  local label=$1 before=() used=() start end
  shift
  for pid in "${pids[@]}"; do before+=("$(cpu_seconds "$pid")"); done
  start="$(date +%s.%N)"
  rate="$(run_set "$duration" "$@")"
  end="$(date +%s.%N)"
  for k in 0 1 2; do
    used+=("$(awk -v a="${before[$k]}" -v b="$(cpu_seconds "${pids[$k]}")" -v s="$start" -v e="$end" \
      'BEGIN {printf "%.0f%%", 100 * (b - a) / (e - s)}')")
  done
  printf '  %-11s %8.1f req/s  cpu i1 %s i2 %s i3 %s\n' "$label" "$rate" "${used[@]}"
}

leader=${ports[0]}
run_set "$warmup" "$leader" "$leader" "$leader" >/dev/null
run_set "$warmup" "${ports[@]}" >/dev/null

ratios=() ones=() threes=()
for ((p = 1; p <= pairs; p++)); do
  echo "pair $p:"
  measure "1 instance" "$leader" "$leader" "$leader"
  one=$rate
  measure "3 instances" "${ports[@]}"
  three=$rate
  ratios+=("$(awk -v c="$three" -v r="$one" 'BEGIN {printf "%.3f", c / r}')")
  ones+=("$one") threes+=("$three")
done

printf 'ratio %.2f (median of %d; min %.2f, max %.2f) candidate %.0f req/s, one instance %.0f req/s\n' \
  "$(median "${ratios[@]}")" "$pairs" "$(printf '%s\n' "${ratios[@]}" | sort -g | head -1)" \
  "$(printf '%s\n' "${ratios[@]}" | sort -g | tail -1)" "$(median "${threes[@]}")" "$(median "${ones[@]}")"
bench_done
