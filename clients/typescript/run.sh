#!/usr/bin/env bash
# Builds @shapeproxy/client and runs its tests against a real proxy and
# PostgreSQL (through tests/e2e/harness.js): installs the pinned npm packages
# when missing (here and in tests/e2e, whose harness needs `pg`), compiles
# with tsc into dist/, then runs node's test runner over test/*.test.js while
# tsc checks test/types-check.ts against dist/. Needs SHAPEPROXY_BIN and
# SHAPEPROXY_TEST_CLUSTER (ctest sets both); extra arguments go to
# `node --test`, e.g.
#   clients/typescript/run.sh --test-name-pattern=fallback
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source ../../scripts/node-test-prelude.sh clients/typescript
npm_install_pinned .
npm_install_pinned ../../tests/e2e

npm run --silent build
# The typed-usage check (against dist/*.d.ts) runs while the tests do.
npm run --silent typecheck &
typecheck=$!

# --test-force-exit: a handle left open by a failing test must not hang the run.
status=0
node --test --test-concurrency=2 --test-force-exit "$@" ./test/*.test.js || status=$?
if ! wait "$typecheck"; then
  echo "clients/typescript: test/types-check.ts does not compile against dist/" >&2
  status=1
fi
exit "$status"
