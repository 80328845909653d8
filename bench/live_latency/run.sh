#!/usr/bin/env bash
# bench/live_latency/run.sh: commit-to-client latency of 1,000 parked live
# long-polls on one shape (see bench/README.md). Starts a private PostgreSQL
# (shapeproxy_test_cluster) and the proxy pinned to core 0, creates
# bench_live (id int8 pk, title text, amount numeric, done bool, created
# timestamptz), then runs bench_live_latency pinned to core 1, which commits
# one INSERT per round and times every client from COMMIT to the arrival of
# its response (kernel receive timestamp) and to its checked response.
# Prints p50/p99/max and the closing line `p99 X ms (target 20 ms)` (arrival).
#
# Exit status: 0 when the run completed (the target is reported, not
# asserted), 1 when the setup broke or the proxy answered wrongly.
# Extra arguments after `--` go to bench_live_latency (e.g. -- --verbose).
set -euo pipefail

usage() {
  cat <<USAGE
usage: $0 [--build DIR] [--clients N] [--commits N] [--sse] [-- CLIENT-ARGS...]
  --build DIR     build dir with src/shapeproxy, tests/support/shapeproxy_test_cluster
                  and bench/live_latency/bench_live_latency
                  (default \$SHAPEPROXY_BUILD_DIR or ../build-bench)
  --clients N     parked long-polls (1000)
  --commits N     measured commits, one sample per client each (20)
  --sse           one SSE stream per client (live_sse=true) instead of long-polls
                  (the proxy ends a stream after 60 s: keep such runs shorter)
USAGE
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
clients=1000
commits=20
sse=0
bench_parse_args "build clients commits sse! --" "$@"
extra=("${bench_rest[@]}")
[[ $sse -eq 1 ]] && extra+=(--sse)
# The client needs a descriptor per connection (it raises its own soft limit
# to the hard one, as the proxy does).
(( clients + 64 <= $(ulimit -Hn) )) ||
  fail "--clients $clients needs RLIMIT_NOFILE above $((clients + 64)); the hard limit is $(ulimit -Hn)"


bench_init live_latency
bench_require_bins "$build"
client_bin="$build/bench/live_latency/bench_live_latency"
[[ -x "$client_bin" ]] || fail "missing $client_bin (build it, or pass --build DIR)"
bench_require_tools psql jq taskset curl python3
tmp="$bench_tmp"
# On failure, the client's output too (the proxy log tail comes from lib.sh).
show_client_output() {
  [[ $bench_failed -ne 0 && -f "$tmp/client.out" ]] && cat "$tmp/client.out"
  bench_cleanup
}
trap show_client_output EXIT

# --- PostgreSQL and the (empty) table ----------------------------------------
bench_start_cluster
bench_create_table bench_live 0

# --- the proxy on core 0 ------------------------------------------------------
# The longest long-poll timeout, so parked requests are answered by commits,
# not by timeouts (the client re-parks after a timeout anyway). Its connection
# limit leaves room for the client's set-up and /metrics connections.
bench_start_proxy --cpu 0 --database-url "$conninfo" --slot bench_live \
  --publication bench_live --log-level warn --long-poll-timeout-ms 40000 \
  --max-connections $((clients + 16))

# --- the client on core 1 -----------------------------------------------------
echo "proxy on core 0, client on core 1; $clients clients x $commits commits$([[ $sse -eq 1 ]] && echo ', SSE')"
taskset -c 1 "$client_bin" --port "$proxy_port" --conninfo "$conninfo" --table bench_live \
  --clients "$clients" --commits "$commits" --proxy-pid "$proxy_pid" "${extra[@]}" >"$tmp/client.out"
# The client's closing line (p99 ... target) stays the last line of the run.
head -n -1 "$tmp/client.out"
printf 'proxy peak RSS %s\n' "$(awk '/VmHWM/ {print $2, $3}' "/proc/$proxy_pid/status")"
tail -n 1 "$tmp/client.out"
bench_done
