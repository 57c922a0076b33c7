#!/usr/bin/env bash
# Runs a command inside a private network namespace made for this run:
#   scripts/isolated.sh CMD [ARGS...]
# Inside: loopback, plus the media interface parley0 carrying 127.77.0.1/32. Janus 1.1.2 never
# gathers ICE candidates on loopback, and Chromium gathers on real interfaces: in here, the only
# real interface is parley0, so WebRTC media between them stays on a 127.x address and nothing
# can reach or leave the machine's network (no route out). Everything else (Synapse, Parley, the
# test runner) binds 127.0.0.0/8 as it does outside.
# unshare(1) with a PID namespace: if this script dies, even by SIGKILL, everything inside goes.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: scripts/isolated.sh CMD [ARGS...]" >&2; exit 2; }
if [ "${PARLEY_ISOLATED:-}" = 1 ]; then exec "$@"; fi   # already inside
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
exec $SUDO unshare --net --pid --fork --kill-child --mount-proc \
  env PARLEY_ISOLATED=1 PARLEY_MEDIA_IFACE=parley0 PARLEY_MEDIA_ADDR=127.77.0.1 \
  bash "$(dirname "${BASH_SOURCE[0]}")/isolated-inner.sh" "$@"
