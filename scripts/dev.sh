#!/usr/bin/env bash
# A complete local deployment on loopback: installs whatever is missing, then starts two
# institutions (each a Synapse, a Janus, a coturn and a Parley serving the web client), creates a demo
# user on each, prints the URL to open, and runs until Ctrl-C, starting again any component that
# dies (scripts/stack/supervise.ts, docs/health.md).
#   scripts/dev.sh [--institutions 1|2|3]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
source scripts/env.sh
exec node scripts/dev.ts "$@"
