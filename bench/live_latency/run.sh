#!/usr/bin/env bash
# bench/live_latency/run.sh: commit-to-client latency of 1,000 parked live
# long-polls on one shape (see bench/README.md). Starts a private PostgreSQL
# (shapeproxy_test_cluster) and the proxy pinned to core 0, creates
# bench_live (id int8 pk, title text, amount numeric, done bool, created
# timestamptz), then runs bench_live_latency pinned to core 1, which commits
# one INSERT per round and times every client from COMMIT to its parsed
# response. Prints p50/p99/max and the closing line `p99 X ms (target 20 ms)`.
#
# Exit status: 0 when the run completed (the target is reported, not
# asserted), 1 when the setup broke or the proxy answered wrongly.
# Extra arguments after `--` go to bench_live_latency (e.g. -- --verbose).
set -euo pipefail

usage() {
  cat <<USAGE
usage: $0 [--build DIR] [--clients N] [--commits N] [-- CLIENT-ARGS...]
  --build DIR     build dir with src/shapeproxy, tests/support/shapeproxy_test_cluster
                  and bench/live_latency/bench_live_latency
                  (default \$SHAPEPROXY_BUILD_DIR or ../build-bench)
  --clients N     parked long-polls (1000)
  --commits N     measured commits, one sample per client each (20)
USAGE
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="${SHAPEPROXY_BUILD_DIR:-$here/../../../build-bench}"
clients=1000
commits=20
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --commits) commits="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

proxy_bin="$build/src/shapeproxy"
cluster_bin="$build/tests/support/shapeproxy_test_cluster"
client_bin="$build/bench/live_latency/bench_live_latency"
for bin in "$proxy_bin" "$cluster_bin" "$client_bin"; do
  [[ -x "$bin" ]] || { echo "live_latency: missing $bin (build it, or pass --build DIR)" >&2; exit 1; }
done
for tool in psql jq taskset curl python3; do
  command -v "$tool" >/dev/null || { echo "live_latency: needs $tool" >&2; exit 1; }
done

# --- cleanup: runs on every exit, also on failure or Ctrl-C -----------------
tmp="$(mktemp -d /tmp/shapeproxy-bench-live-XXXXXX)"
proxy_pid=""
cluster_pid=""
failed=1
cleanup() {
  set +e
  [[ $failed -ne 0 && -f "$tmp/client.out" ]] && cat "$tmp/client.out"
  if [[ $failed -ne 0 && -f "$tmp/proxy.log" ]]; then
    echo "--- proxy log (tail) ---" >&2
    tail -n 30 "$tmp/proxy.log" >&2
  fi
  [[ -n "$proxy_pid" ]] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
  # Closing the launcher's stdin stops the cluster and removes its directory.
  exec 3>&- 2>/dev/null
  [[ -n "$cluster_pid" ]] && wait "$cluster_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "live_latency: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- PostgreSQL and the (empty) table ----------------------------------------
mkfifo "$tmp/cluster.in"
"$cluster_bin" <"$tmp/cluster.in" >"$tmp/cluster.json" 2>"$tmp/cluster.log" &
cluster_pid=$!
exec 3>"$tmp/cluster.in"  # held open for the whole run; closed by cleanup
for _ in $(seq 600); do
  [[ -s "$tmp/cluster.json" ]] && break
  kill -0 "$cluster_pid" 2>/dev/null || { cat "$tmp/cluster.log" >&2; fail "cluster did not start"; }
  sleep 0.1
done
conninfo="$(jq -r .conninfo "$tmp/cluster.json")"
[[ -n "$conninfo" && "$conninfo" != null ]] || fail "no conninfo from the cluster launcher"
psql "$conninfo" -v ON_ERROR_STOP=1 -q <<SQL
CREATE TABLE bench_live (
  id int8 PRIMARY KEY,
  title text NOT NULL,
  amount numeric NOT NULL,
  done bool NOT NULL,
  created timestamptz NOT NULL
);
SQL

# --- the proxy on core 0 ------------------------------------------------------
# The longest long-poll timeout, so parked requests are answered by commits,
# not by timeouts (the client re-parks after a timeout anyway).
proxy_port="$(free_port)"
mkdir -p "$tmp/proxy-data"
taskset -c 0 "$proxy_bin" --database-url "$conninfo" --listen 127.0.0.1 --port "$proxy_port" \
  --data-dir "$tmp/proxy-data" --slot bench_live --publication bench_live --log-level warn \
  --long-poll-timeout-ms 40000 >"$tmp/proxy.log" 2>&1 &
proxy_pid=$!
for _ in $(seq 300); do
  curl -s -o /dev/null "http://127.0.0.1:$proxy_port/" && break
  kill -0 "$proxy_pid" 2>/dev/null || fail "proxy exited"
  sleep 0.1
done

# --- the client on core 1 -----------------------------------------------------
echo "proxy on core 0, client on core 1; $clients clients x $commits commits"
taskset -c 1 "$client_bin" --port "$proxy_port" --conninfo "$conninfo" --table bench_live \
  --clients "$clients" --commits "$commits" --proxy-pid "$proxy_pid" "${extra[@]}" >"$tmp/client.out"
# The client's closing line (p99 ... target) stays the last line of the run.
head -n -1 "$tmp/client.out"
printf 'proxy peak RSS %s\n' "$(awk '/VmHWM/ {print $2, $3}' "/proc/$proxy_pid/status")"
tail -n 1 "$tmp/client.out"
failed=0
