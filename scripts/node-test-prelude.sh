# The start shared by the run.sh of the Node test suites (tests/e2e,
# clients/typescript). Source it with the suite's name for messages:
#   cd "$(dirname "${BASH_SOURCE[0]}")" && source ../../scripts/node-test-prelude.sh e2e
# Checks what every suite needs (SHAPEPROXY_BIN and SHAPEPROXY_TEST_CLUSTER,
# which ctest sets, and the pinned node of .tools/) and defines npm_install_pinned DIR: installs
# DIR's pinned packages (`npm ci`) when its node_modules is missing or older
# than its package-lock.json, so a clean checkout and a changed lock file
# both get a fresh install.
node_suite="$1"

: "${SHAPEPROXY_BIN:?set SHAPEPROXY_BIN to the shapeproxy binary}"
: "${SHAPEPROXY_TEST_CLUSTER:?set SHAPEPROXY_TEST_CLUSTER to shapeproxy_test_cluster}"

# The pinned Node.js and npm of scripts/install-deps (.tools/), first on PATH.
source "$(dirname "${BASH_SOURCE[0]}")/node-env.sh"

npm_install_pinned() {
  if [[ ! -d "$1/node_modules" || "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]]; then
    (cd "$1" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
