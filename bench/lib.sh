# bench/lib.sh: start-up and clean-up shared by the bench/*/run.sh scripts.
# Source it, then call bench_init once:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
#   rows=1000                        # defaults ($build is set by lib.sh)
#   bench_parse_args "build rows" "$@"
#   bench_init fallback              # name for messages and the temp dir
#   bench_start_cluster              # -> $conninfo, $cluster_port, $cluster_socket_dir
#   bench_start_proxy ARGS...        # -> $proxy_pid, $proxy_port, $proxy_base
#
# Everything started through it (cluster, proxy, processes passed to
# bench_track) is stopped, and $bench_tmp removed, on any exit; on failure
# the tail of the proxy log ($bench_proxy_log) is printed. `fail MESSAGE`
# exits 1.

bench_name=bench
# The default build dir: $SHAPEPROXY_BUILD_DIR, else build-bench next to the
# checkout.
build="${SHAPEPROXY_BUILD_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build-bench}"
bench_tmp=""
bench_failed=1
bench_pids=()
cluster_pid=""
proxy_pid=""
bench_proxy_log=""

bench_cleanup() {
  set +e
  if [[ $bench_failed -ne 0 && -n "$bench_proxy_log" && -f "$bench_proxy_log" ]]; then
    echo "--- proxy log (tail of $bench_proxy_log) ---" >&2
    tail -n 30 "$bench_proxy_log" >&2
  fi
  for pid in "${bench_pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  [[ -n "$proxy_pid" ]] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
  # Closing the launcher's stdin stops the cluster and removes its directory.
  exec 3>&- 2>/dev/null
  [[ -n "$cluster_pid" ]] && wait "$cluster_pid" 2>/dev/null
  [[ -n "$bench_tmp" ]] && rm -rf "$bench_tmp"
}

# bench_parse_args "NAME..." ARGS...: the option loop of the run.sh scripts.
# Each NAME (e.g. "build rows poll-ms keep-going!") is an option: `--NAME
# VALUE` sets the variable NAME with dashes as underscores ($rows, $poll_ms);
# a NAME ending in `!` takes no value and sets its variable to 1. With `--`
# among the NAMEs, `--` ends the options and what follows is in $bench_rest.
# -h/--help prints `usage` and exits 0; anything else prints it and exits 2.
bench_parse_args() {
  local names=" $1 " option
  shift
  bench_rest=()
  while [[ $# -gt 0 ]]; do
    option="${1#--}"
    if [[ "$1" == -h || "$1" == --help ]]; then
      usage
      exit 0
    elif [[ "$1" == -- && "$names" == *" -- "* ]]; then
      shift
      bench_rest=("$@")
      return 0
    elif [[ "$1" == --?* && "$names" == *" $option! "* ]]; then
      printf -v "${option//-/_}" 1
      shift
    elif [[ "$1" == --?* && "$names" == *" $option "* && $# -ge 2 ]]; then
      printf -v "${option//-/_}" '%s' "$2"
      shift 2
    else
      usage >&2
      exit 2
    fi
  done
}

# bench_init NAME: temp dir ($bench_tmp) and the exit trap. Call
# `bench_done` at the very end of a run that completed.
bench_init() {
  bench_name="$1"
  bench_tmp="$(mktemp -d "/tmp/shapeproxy-bench-$bench_name-XXXXXX")"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
bench_done() { bench_failed=0; }

fail() {
  echo "$bench_name: $*" >&2
  exit 1
}

# Stops `pid` at exit (e.g. a background load generator).
bench_track() { bench_pids+=("$1"); }

# bench_require_bins BUILD: checks the proxy and the cluster launcher exist
# there; sets $proxy_bin and $cluster_bin.
bench_require_bins() {
  proxy_bin="$1/src/shapeproxy"
  cluster_bin="$1/tests/support/shapeproxy_test_cluster"
  for bin in "$proxy_bin" "$cluster_bin"; do
    [[ -x "$bin" ]] || fail "missing $bin (build it, or pass --build DIR)"
  done
}

# bench_require_tools TOOL...: each must be on PATH.
bench_require_tools() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || fail "needs $tool on PATH"
  done
}

# A free loopback TCP port (bind to 0, read it back; tiny race is acceptable).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_http URL [PID]: polls until `curl URL` answers at all (any status),
# for up to 60 s; gives up at once when process PID is gone.
wait_http() {
  for _ in $(seq "${3:-600}"); do
    curl -s -o /dev/null "$1" && return 0
    [[ -z "${2:-}" ]] || kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Starts a private PostgreSQL through shapeproxy_test_cluster (needs
# $cluster_bin). Sets $conninfo (superuser), $cluster_port, $cluster_socket_dir.
bench_start_cluster() {
  mkfifo "$bench_tmp/cluster.in"
  "$cluster_bin" <"$bench_tmp/cluster.in" >"$bench_tmp/cluster.out" 2>"$bench_tmp/cluster.log" &
  cluster_pid=$!
  exec 3>"$bench_tmp/cluster.in" # held open for the whole run; closed by cleanup
  for _ in $(seq 600); do
    [[ -s "$bench_tmp/cluster.out" ]] && break
    kill -0 "$cluster_pid" 2>/dev/null || {
      cat "$bench_tmp/cluster.log" >&2
      fail "cluster did not start"
    }
    sleep 0.1
  done
  local info
  info="$(head -n 1 "$bench_tmp/cluster.out")"
  conninfo="$(jq -r .conninfo <<<"$info")"
  cluster_port="$(jq -r .port <<<"$info")"
  cluster_socket_dir="$(jq -r .socket_dir <<<"$info")"
  [[ -n "$conninfo" && "$conninfo" != null ]] || fail "no conninfo from the cluster launcher"
}

# bench_create_table NAME ROWS [TITLE]: the benchmarks' table NAME (id int8
# pk, title text, amount numeric, done bool, created timestamptz) holding ids
# 1..ROWS; TITLE is the SQL of row i's title (default 'title of row ' || i).
bench_create_table() {
  local title="${3:-"'title of row ' || i"}"
  psql "$conninfo" -v ON_ERROR_STOP=1 -q <<SQL
CREATE TABLE $1 (
  id int8 PRIMARY KEY,
  title text NOT NULL,
  amount numeric NOT NULL,
  done bool NOT NULL,
  created timestamptz NOT NULL
);
INSERT INTO $1
SELECT i, $title, round((i * 1.37)::numeric, 2), i % 3 = 0,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute'
FROM generate_series(1, $2) AS i;
SQL
}

# bench_cluster_command stop|start: the launcher's control channel; waits
# for its "ok" answer.
bench_cluster_command() {
  local answers_before
  answers_before="$(grep -c '^ok\|^error' "$bench_tmp/cluster.out" || true)"
  echo "$1" >&3
  for _ in $(seq 600); do
    local answers
    answers="$(grep -c '^ok\|^error' "$bench_tmp/cluster.out" || true)"
    if [[ "$answers" -gt "$answers_before" ]]; then
      tail -n 1 "$bench_tmp/cluster.out" | grep -q '^ok' || fail "cluster $1: $(tail -n 1 "$bench_tmp/cluster.out")"
      return 0
    fi
    sleep 0.1
  done
  fail "cluster did not answer $1"
}

# bench_start_proxy [--cpu N] [--data-dir DIR] [--log FILE] [--wait-s S] ARGS...: starts
# the proxy (pinned to core N) on a free port with ARGS, its data in DIR
# (default $bench_tmp/proxy-data), its output appended to FILE (default
# $bench_tmp/proxy.log); waits until it answers. Sets $proxy_pid,
# $proxy_port, $proxy_base (http://127.0.0.1:PORT), $proxy_cmd (the command,
# to start the same proxy again) and $bench_proxy_log. --wait-s: longest wait (60).
bench_start_proxy() {
  local pin=() data_dir="$bench_tmp/proxy-data" wait_s_max=60
  bench_proxy_log="$bench_tmp/proxy.log"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --cpu) pin=(taskset -c "$2"); shift 2 ;;
      --data-dir) data_dir="$2"; shift 2 ;;
      --log) bench_proxy_log="$2"; shift 2 ;;
      --wait-s) wait_s_max="$2"; shift 2 ;;
      *) break ;;
    esac
  done
  proxy_port="$(free_port)"
  mkdir -p "$data_dir"
  proxy_cmd=("$proxy_bin" --listen 127.0.0.1 --port "$proxy_port" --data-dir "$data_dir" "$@")
  "${pin[@]}" "${proxy_cmd[@]}" >>"$bench_proxy_log" 2>&1 &
  proxy_pid=$!
  proxy_base="http://127.0.0.1:$proxy_port"
  wait_http "$proxy_base/v1/health" "$proxy_pid" $((${wait_s_max:-60} * 10)) || fail "proxy did not come up"
}

# median [NUMBER...]: the median of the arguments, or with none of the
# numbers on stdin (one per line).
median() { if (($#)); then printf '%s\n' "$@"; else cat; fi | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# bench_sync_shape BASE QUERY: follows one shape of the proxy at BASE from
# offset=-1 to electric-up-to-date; QUERY is the url-encoded shape query
# (e.g. table=t&where=...). Sets sync_handle, sync_inserts, sync_updates,
# sync_bytes, sync_requests, sync_refetches. A 409 (must-refetch: a compaction
# finished meanwhile) starts over from offset=-1, as a client does; any other
# answer but 200 fails.
bench_sync_shape() {
  local base="$1" query="$2" offset=-1 handle="" status n
  local body="$bench_tmp/sync-chunk"
  sync_inserts=0 sync_updates=0 sync_bytes=0 sync_requests=0 sync_refetches=0
  while :; do
    local url="$base/v1/shape?$query&offset=$offset"
    [[ -n "$handle" ]] && url+="&handle=$handle"
    status="$(curl -sS -o "$body" -D "$body.h" -w '%{http_code}' "$url")"
    if [[ "$status" == 409 && -n "$handle" && $sync_refetches -lt 10 ]]; then
      # must-refetch, as a client gets it when a compaction of the shape
      # finishes while it reads an older offset: start over, as clients do.
      offset=-1 handle="" sync_inserts=0 sync_updates=0 sync_refetches=$((sync_refetches + 1))
      continue
    fi
    [[ "$status" == 200 ]] || { head -c 500 "$body" >&2; fail "shape request answered $status: $url"; }
    handle="$(awk -F': *' 'tolower($1)=="electric-handle" {sub(/\r$/,"",$2); print $2}' "$body.h")"
    offset="$(awk -F': *' 'tolower($1)=="electric-offset" {sub(/\r$/,"",$2); print $2}' "$body.h")"
    n="$({ grep -o '"operation":"insert"' "$body" || true; } | wc -l)"
    sync_inserts=$((sync_inserts + n))
    n="$({ grep -o '"operation":"update"' "$body" || true; } | wc -l)"
    sync_updates=$((sync_updates + n))
    sync_bytes=$((sync_bytes + $(stat -c %s "$body")))
    sync_requests=$((sync_requests + 1))
    grep -qi '^electric-up-to-date' "$body.h" && break
    ((sync_requests < 100000)) || fail "shape never reached electric-up-to-date"
  done
  sync_handle="$handle"
}
