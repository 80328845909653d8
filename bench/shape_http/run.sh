#!/usr/bin/env bash
# bench/shape_http/run.sh: requests/second of the proxy's initial snapshot
# (GET /v1/shape?table=bench_rows&offset=-1 of a 10k-row shape) against nginx
# serving exactly the same body bytes as a static file, measured in the same
# run (see /work/shared/reference/benchmarking.md and bench/README.md).
#
# Procedure:
#  1. Start a private PostgreSQL (shapeproxy_test_cluster, stops and removes
#     its files when our fd to its stdin closes), create bench_rows
#     (id int8 pk, title text, amount numeric, done bool, created timestamptz)
#     with --rows rows.
#  2. Start the proxy (pinned to core 0) and fetch the snapshot once with
#     curl; check it holds --rows rows and its size equals content-length.
#  3. Start nginx (one worker, no access log, sendfile on, pinned to core 0)
#     serving those bytes with the same content-type at the same path; check
#     nginx returns the same number of bytes.
#  4. Warm-up round on each side (unmeasured), then --pairs pairs of
#     nginx, proxy, each `taskset -c 1 wrk -t1 -cC -dDs` against the same URL.
#  --gzip: every request (curl, wrk) sends `Accept-Encoding: gzip`; the
#     proxy answers with the stored gzip member (sendfile), nginx serves the
#     same member as a static file with `content-encoding: gzip`.
#  --nginx-gunzip (identity requests): nginx keeps only the proxy's gzip
#     member (gzip_static always) and decodes it for each request (gunzip on),
#     the same storage trade-off as the proxy's: like for like.
#  5. Print one line per pair and the closing line
#     `ratio X (median of N; min A, max B) candidate C req/s, nginx R req/s`
#     (ratio per pair = proxy req/s / nginx req/s; C and R are medians).
#
# Exit status: 0 when the run completed (whatever the ratio: benchmarks never
# fail for being slow), 1 when the setup broke or a side answered wrongly
# (non-2xx responses, socket errors, wrong byte count).
set -euo pipefail

usage() {
  cat <<EOF
usage: $0 [--build DIR] [--rows N] [--pairs N] [--duration SECONDS]
          [--connections N] [--warmup SECONDS] [--gzip] [--nginx-gunzip]
Requests/s of the proxy's offset=-1 snapshot vs nginx serving the same bytes.
  --build DIR        build dir with src/shapeproxy and
                     tests/support/shapeproxy_test_cluster
                     (default \$SHAPEPROXY_BUILD_DIR or ../build-bench)
  --rows N           rows in the shape (10000)
  --pairs N          measured nginx/proxy pairs (5)
  --duration S       seconds per wrk run (5)
  --connections N    wrk connections (32)
  --warmup S         seconds of the unmeasured warm-up run per side (3)
  --gzip             requests accept gzip: the stored gzip chunk on both sides
  --nginx-gunzip     identity requests; nginx stores the gzip member and gunzips it
EOF
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
rows=10000
pairs=5
duration=5
connections=32
warmup=3
gzip=0
nginx_gunzip=0
bench_parse_args "build rows pairs duration connections warmup gzip! nginx-gunzip!" "$@"
[[ $gzip == 1 && $nginx_gunzip == 1 ]] && fail "--nginx-gunzip is for identity requests: not with --gzip"
accept=()
[[ $gzip == 1 ]] && accept=(-H 'Accept-Encoding: gzip')

bench_init shape_http
bench_require_bins "$build"
command -v nginx >/dev/null && command -v wrk >/dev/null ||
  fail "needs nginx and wrk (apt-get install -y nginx-light wrk curl postgresql-client jq)"
bench_require_tools curl psql jq taskset
tmp="$bench_tmp"

# nginx is ours to stop; its error log is shown when the run fails.
nginx_pid=""
stop_nginx() {
  if [[ $bench_failed -ne 0 && -f "$tmp/nginx/error.log" ]]; then
    echo "--- nginx error log (tail) ---" >&2
    tail -n 10 "$tmp/nginx/error.log" >&2
  fi
  [[ -n "$nginx_pid" ]] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  bench_cleanup
}
trap stop_nginx EXIT

# --- 1. PostgreSQL and the table --------------------------------------------
bench_start_cluster

bench_create_table bench_rows "$rows"

# --- 2. the proxy, and the body it serves -----------------------------------
bench_start_proxy --cpu 0 --database-url "$conninfo" --slot bench_http \
  --publication bench_http --log-level warn
path="/v1/shape?table=bench_rows&offset=-1"
proxy_url="$proxy_base$path"

# The first request creates the shape (snapshot query); later ones are served
# from the shape log, which is what the benchmark measures.
status="$(curl -sS "${accept[@]}" -o "$tmp/body.json" -D "$tmp/headers.txt" -w '%{http_code}' "$proxy_url")"
[[ "$status" == 200 ]] || { cat "$tmp/body.json" >&2; fail "proxy answered $status"; }
content_type="$(awk -F': *' 'tolower($1)=="content-type"{sub(/\r$/,"",$2); print $2}' "$tmp/headers.txt")"
encoding="$(awk -F': *' 'tolower($1)=="content-encoding"{sub(/\r$/,"",$2); print $2}' "$tmp/headers.txt")"
body_bytes="$(stat -c %s "$tmp/body.json")"
if [[ $gzip == 1 ]]; then
  [[ "$encoding" == gzip ]] || fail "asked for gzip, got content-encoding '$encoding'"
  got_rows="$(gzip -dc "$tmp/body.json" | jq '[.[] | select(.headers.operation == "insert")] | length')"
else
  [[ -z "$encoding" ]] || fail "asked for identity, got content-encoding '$encoding'"
  got_rows="$(jq '[.[] | select(.headers.operation == "insert")] | length' "$tmp/body.json")"
fi
[[ "$got_rows" == "$rows" ]] || fail "snapshot holds $got_rows insert rows, expected $rows"
# A second fetch must give the same bytes (served from the log, not re-queried).
curl -sS "${accept[@]}" -o "$tmp/body2.json" "$proxy_url"
cmp -s "$tmp/body.json" "$tmp/body2.json" || fail "two offset=-1 responses differ"

# --- 3. nginx serving the same bytes ----------------------------------------
nginx_port="$(free_port)"
mkdir -p "$tmp/nginx/www" "$tmp/nginx/tmp"
cp "$tmp/body.json" "$tmp/nginx/www/shape.json"
nginx_decode=""
if [[ $nginx_gunzip == 1 ]]; then
  curl -sS -H 'Accept-Encoding: gzip' -o "$tmp/nginx/www/shape.json.gz" "$proxy_url"
  gzip -dc "$tmp/nginx/www/shape.json.gz" | cmp -s - "$tmp/body.json" ||
    fail "the proxy's gzip member does not decode to its identity body"
  nginx_decode="gzip_static always; gunzip on;"
fi
cat >"$tmp/nginx/nginx.conf" <<EOF
# One worker, no access log, sendfile on: the reference static file server.
user root;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $tmp/nginx/tmp;
  proxy_temp_path $tmp/nginx/tmp;
  fastcgi_temp_path $tmp/nginx/tmp;
  uwsgi_temp_path $tmp/nginx/tmp;
  scgi_temp_path $tmp/nginx/tmp;
  types { }
  default_type $content_type;
  $([[ $gzip == 1 ]] && echo "add_header Content-Encoding gzip; add_header Vary accept-encoding;")
  server {
    listen 127.0.0.1:$nginx_port;
    root $tmp/nginx/www;
    # Same path (and query) as the proxy, so both see identical requests.
    location = /v1/shape { $nginx_decode try_files /shape.json =404; }
  }
}
EOF
# Master and its one worker both on core 0 (the worker inherits the mask).
taskset -c 0 nginx -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" -g 'daemon off;' \
  2>>"$tmp/nginx/error.log" &
nginx_pid=$!
nginx_url="http://127.0.0.1:$nginx_port$path"
wait_http "$nginx_url" || fail "nginx did not come up"
curl -sS "${accept[@]}" -o "$tmp/nginx_body.json" -D "$tmp/nginx_headers.txt" "$nginx_url"
cmp -s "$tmp/body.json" "$tmp/nginx_body.json" || fail "nginx body differs from the proxy's"
nginx_type="$(awk -F': *' 'tolower($1)=="content-type"{sub(/\r$/,"",$2); print $2}' "$tmp/nginx_headers.txt")"
[[ "$nginx_type" == "$content_type" ]] || fail "content-type differs: proxy '$content_type', nginx '$nginx_type'"
echo "body: $body_bytes bytes, $got_rows rows, content-type $content_type${encoding:+, content-encoding $encoding} (identical from both)"
echo "wrk: -t1 -c$connections -d${duration}s on core 1; proxy and nginx on core 0; $pairs pairs"

# --- 4. measure ----------------------------------------------------------------
# Runs wrk against $1 for $2 seconds; prints req/s. Fails on any non-2xx
# response or socket error (a wrong answer, not a slow one).
run_wrk() {
  local url="$1" seconds="$2" out
  out="$(taskset -c 1 wrk -t1 -c"$connections" -d"${seconds}s" --timeout 30s "${accept[@]}" "$url")" || fail "wrk failed: $out"
  if grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out"; then
    echo "$out" >&2
    fail "errors during the run against $url"
  fi
  awk '/^Requests\/sec:/ {print $2}' <<<"$out"
}

run_wrk "$nginx_url" "$warmup" >/dev/null
run_wrk "$proxy_url" "$warmup" >/dev/null

ratios=()
proxy_rates=()
nginx_rates=()
for ((i = 1; i <= pairs; i++)); do
  ref="$(run_wrk "$nginx_url" "$duration")"
  cand="$(run_wrk "$proxy_url" "$duration")"
  ratio="$(awk -v c="$cand" -v r="$ref" 'BEGIN {printf "%.3f", c / r}')"
  printf 'pair %d: nginx %.0f req/s, proxy %.0f req/s, ratio %s\n' "$i" "$ref" "$cand" "$ratio"
  ratios+=("$ratio")
  proxy_rates+=("$cand")
  nginx_rates+=("$ref")
done

min_ratio="$(printf '%s\n' "${ratios[@]}" | sort -g | head -1)"
max_ratio="$(printf '%s\n' "${ratios[@]}" | sort -g | tail -1)"
printf 'proxy peak RSS %s\n' "$(awk '/VmHWM/ {print $2, $3}' "/proc/$proxy_pid/status")"
printf 'ratio %.2f (median of %d; min %.2f, max %.2f) candidate %.0f req/s, nginx %.0f req/s\n' \
  "$(printf '%s\n' "${ratios[@]}" | median)" "$pairs" "$min_ratio" "$max_ratio" \
  "$(printf '%s\n' "${proxy_rates[@]}" | median)" "$(printf '%s\n' "${nginx_rates[@]}" | median)"
bench_done
