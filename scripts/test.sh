#!/usr/bin/env bash
# The whole test suite: installs whatever is missing (scripts/setup.sh), then lint and types,
# unit tests, and integration tests against real Synapse, Janus and SQLite on loopback.
#   scripts/test.sh            everything
#   scripts/test.sh unit       the fast inner loop (seconds)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
source scripts/env.sh
what="${1:-all}"
report="$(mktemp -d)/vitest.json"
status=0
case "$what" in
  unit) npx vitest run --project unit --reporter=default --reporter=json --outputFile.json="$report" || status=$? ;;
  all)
    npx eslint . && npx tsc --noEmit -p tsconfig.json && npx tsc --noEmit -p client/tsconfig.json
    # Integration and browser tests run in a network namespace of their own (scripts/isolated.sh):
    # everything binds loopback, and WebRTC media stays on the namespace's 127.77.0.1.
    # Unit, integration and browser (test/e2e) suites.
    scripts/isolated.sh npx vitest run --reporter=default --reporter=json --outputFile.json="$report" || status=$?
    ;;
  *) echo "usage: scripts/test.sh [unit|all]" >&2; exit 2 ;;
esac
# One plain closing line, whatever the runner prints above it.
if [ -f "$report" ]; then
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    // A file whose setup failed counts its tests as skipped: its failure is named here too.
    const failedFiles = (r.testResults ?? []).filter((t) => t.status === "failed").length;
    const files = failedFiles ? `, ${failedFiles} file(s) failed` : "";
    console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped${files}`);
    if (r.numTotalTests === 0) { console.error("no test ran"); process.exit(1); }
  ' "$report" || status=1
fi
exit "$status"
