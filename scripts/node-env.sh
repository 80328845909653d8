# Puts the pinned Node.js and npm that scripts/install-deps installs into
# .tools/ (and its other tools, .tools/bin: promtool) first on PATH (not the system's node: Debian 12's is 18, too old for
# the suites). Source it: source scripts/node-env.sh
node_env_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ! -x "$node_env_root/.tools/node_modules/.bin/node" ]]; then
  echo "node-env: no pinned Node.js in $node_env_root/.tools: run scripts/install-deps" >&2
  return 1 2>/dev/null || exit 1
fi
export PATH="$node_env_root/.tools/node_modules/.bin:$node_env_root/.tools/bin:$PATH"
unset node_env_root
