#!/usr/bin/env bash
# Installs what is missing, runs every test, and checks that builds are reproducible.
# Prints each test target's result, then a last line "N passed, N failed" counting test cases
# and checks; exits non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh || exit 1

summary_file=$(mktemp)
trap 'rm -f "$summary_file"' EXIT
bazel test --test_summary=short //... 2>&1 | tee "$summary_file"
bazel_status=${PIPESTATUS[0]}

# count SUMMARY WORDS: the sum of the numbers before WORDS in a pytest summary line.
count() {
  echo "$1" | grep -oE "[0-9]+ ($2)" | awk '{ n += $1 } END { print n + 0 }'
}

passed=0
failed=0
echo
echo "Test cases per target:"
while read -r target status; do
  log="bazel-testlogs/${target#//}"
  log="${log/://}/test.log"
  summary=""
  [ -f "$log" ] && summary=$(grep -E '[0-9]+ (passed|failed|errors?)( |,|$)' "$log" | tail -1 | tr -d '=')
  if [ -z "$summary" ]; then
    # Not a pytest target (an analysis test), or it did not run: its Bazel result is one case.
    case "$status" in
      PASSED) summary="1 passed" ;;
      *) summary="1 failed ($status)" ;;
    esac
  fi
  echo "  ${target}: ${summary}"
  passed=$((passed + $(count "$summary" 'passed')))
  failed=$((failed + $(count "$summary" 'failed|errors?')))
done < <(grep -E '^//[^ ]+ +(\(cached\) )?[A-Z]' "$summary_file" | sed -E 's/ \(cached\)//' | awk '{ print $1, $2 }' | sort -u)
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
