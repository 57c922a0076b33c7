#!/usr/bin/env bash
# Checks that the build runs without the sources, the way docs/deployment.md installs it:
# `npm run build`, then dist/, package.json, vendor/ and node_modules/ (without dev packages)
# copied to an empty folder, and from there the CLI's own commands and the doctor and backup
# integration tests with Parley and the CLI started from that copy (PARLEY_MAIN).
#   scripts/dist-check.sh            (run it under flock /tmp/parley-heavy.lock: it builds)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
npm run build
out="$(mktemp -d /tmp/parley-dist-XXXXXX)"
trap 'rm -rf "$out"' EXIT
cp -r dist package.json package-lock.json vendor "$out/"
# Hard links: pruning removes links in the copy, never the files the worktree shares.
cp -al node_modules "$out/node_modules"
(cd "$out" && npm prune --omit=dev --offline --ignore-scripts --no-audit --no-fund --loglevel=error)
main="$out/dist/appservice/src/app/main.js"
for absent in appservice client/src node_modules/typescript node_modules/vitest; do
  [ ! -e "$out/$absent" ] || { echo "dist-check: $absent is in the copy"; exit 1; }
done
ls "$out/dist/client/dist/index.html" "$out/dist/appservice/src/store/migrations/001-initial.sql" >/dev/null

cd "$out"
node "$main" --help >/dev/null
node "$main" -e -c "$out/config.yaml" >/dev/null
node "$main" --samples "$out/samples" >/dev/null
ls "$out/samples" >/dev/null
# The example config has placeholder secrets: doctor runs and names them (exit 1), no crash.
set +e
node "$main" doctor -c "$out/config.yaml" >"$out/doctor.txt" 2>&1
code=$?
set -e
[ "$code" -eq 1 ] && grep -q "placeholder secret" "$out/doctor.txt" || { cat "$out/doctor.txt"; echo "dist-check: doctor on the example config: exit $code"; exit 1; }
cd - >/dev/null

# Parley (from dist) against real Synapse and Janus; the CLI from dist too.
PARLEY_MAIN="$main" scripts/isolated.sh npx vitest run --project integration test/integration/doctor.test.ts test/integration/backup.test.ts
echo "dist-check: ok ($out)"
