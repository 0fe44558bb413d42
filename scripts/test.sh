#!/usr/bin/env bash
# Installs what is missing, runs every test, and checks that builds are reproducible.
# Prints each test target's result, then a last line "N passed, N failed" counting test cases
# and checks; exits non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh || exit 1

bazel test --test_summary=short //...
bazel_status=$?

# count SUMMARY WORDS: the sum of the numbers before WORDS in a pytest summary line.
count() {
  echo "$1" | grep -oE "[0-9]+ ($2)" | awk '{ n += $1 } END { print n + 0 }'
}

passed=0
failed=0
echo
echo "Test cases per target:"
for log in $(find -L bazel-testlogs/ -name test.log | sort); do
  target=${log#bazel-testlogs/}
  target="//${target%/test.log}"
  summary=$(grep -E '[0-9]+ (passed|failed|errors?)( |,|$)' "$log" | tail -1 | tr -d '=')
  echo "  ${target}: ${summary:-no pytest summary}"
  passed=$((passed + $(count "$summary" 'passed')))
  failed=$((failed + $(count "$summary" 'failed|errors?')))
done
if [ "$bazel_status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "bazel test exited with status $bazel_status"
  failed=$((failed + 1))
fi

# Whole-build properties: bit-identical after `bazel clean` and across checkout paths and output
# bases; a change to one image rebuilds only its chain and the node image.
for check in check_reproducible check_reproducible_paths check_incremental; do
  if "scripts/$check.sh"; then
    echo "check scripts/$check.sh: passed"
    passed=$((passed + 1))
  else
    echo "check scripts/$check.sh: FAILED"
    failed=$((failed + 1))
  fi
done

echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
