#!/usr/bin/env bash
# Runs the e2e suite: installs the pinned npm packages when node_modules is
# missing, then node's test runner over every *.test.js (one process per
# file, two at a time). Needs SHAPEPROXY_BIN and SHAPEPROXY_TEST_CLUSTER
# (ctest sets both); extra arguments go to `node --test`, e.g.
#   tests/e2e/run.sh --test-name-pattern=insert
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

: "${SHAPEPROXY_BIN:?set SHAPEPROXY_BIN to the shapeproxy binary}"
: "${SHAPEPROXY_TEST_CLUSTER:?set SHAPEPROXY_TEST_CLUSTER to shapeproxy_test_cluster}"

if ! command -v node >/dev/null; then
  echo "e2e: node is not installed (Node 20+ is needed)" >&2
  exit 1
fi
# Reinstall when the lock file is newer than the last install.
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# 1,000 live clients need 1,000 sockets on each side (children inherit this).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 8192 2>/dev/null || true

# --test-force-exit: a handle left open by a failing test must not hang the run.
exec node --test --test-concurrency=2 --test-force-exit "$@" ./*.test.js
