#!/usr/bin/env bash
# Installs what is missing, runs every test, and checks that builds are reproducible.
# Ends with a line "N passed, N failed"; exits non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh || exit 1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
bazel test --test_summary=short //... 2>&1 | tee "$log"
bazel_status=${PIPESTATUS[0]}

passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FLAKY|INCOMPLETE|REMOTE FAILURE|FAILED TO BUILD)' "$log")
if [ "$bazel_status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "bazel test exited with status $bazel_status"
  failed=$((failed + 1))
fi

# Whole-build properties: bit-identical after `bazel clean` and across checkout paths and output
# bases; a change to one image rebuilds only its chain and the node image.
for check in check_reproducible check_reproducible_paths check_incremental; do
  if "scripts/$check.sh"; then
    echo "//scripts:$check PASSED"
    passed=$((passed + 1))
  else
    echo "//scripts:$check FAILED"
    failed=$((failed + 1))
  fi
done

echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
