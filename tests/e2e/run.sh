#!/usr/bin/env bash
# Runs the e2e suite: installs the pinned npm packages when node_modules is
# missing or older than the lock file (scripts/node-test-prelude.sh), then
# node's test runner over every *.test.js (one process per file, two at a
# time). Needs SHAPEPROXY_BIN and SHAPEPROXY_TEST_CLUSTER (ctest sets both);
# extra arguments go to `node --test`, e.g.
#   tests/e2e/run.sh --test-name-pattern=insert
# and test files among them replace the default of every file:
#   tests/e2e/run.sh ./health.test.js
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source ../../scripts/node-test-prelude.sh e2e
npm_install_pinned .

# 1,000 live clients need 1,000 sockets on each side (children inherit this).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 8192 2>/dev/null || true

# --test-force-exit: a handle left open by a failing test must not hang the run.
files=(./*.test.js)
for arg in "$@"; do [[ "$arg" == *.test.js ]] && files=(); done
exec node --test --test-concurrency=2 --test-force-exit "$@" "${files[@]}"
