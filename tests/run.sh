#!/usr/bin/env bash
# run.sh: run every CUnit suite (BUILD/tests/test_*) and integration test (tests/it_*.sh); exit 1 if any fails.
# Usage: tests/run.sh [BUILD]   (from the project root)
# A test that exits 77 was skipped (e.g. the GPU suite without a CUDA device): shown as "skip" with its reason
# (the first line of its output) and counted apart, neither passed nor failed.
set -u
build=${1:-build}
export PGD_BUILD=$build
limit=${PGD_TEST_TIMEOUT:-600}
failed=()
passed=0
skipped=0
start=$(date +%s)

run_one() { # name, command...
  local name=$1; shift
  local log=$build/test-logs/$name.log t0=$(date +%s)
  mkdir -p "$build/test-logs"
  if timeout -k 10 "$limit" "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    printf '  pass  %-28s %3ss\n' "$name" $(( $(date +%s) - t0 ))
  else
    local rc=$?
    if [ "$rc" -eq 77 ]; then
      skipped=$((skipped + 1))
      printf '  skip  %-28s %3ss (%s)\n' "$name" $(( $(date +%s) - t0 )) "$(head -n 1 "$log")"
      return
    fi
    failed+=("$name")
    printf '  FAIL  %-28s %3ss (exit %d; log %s)\n' "$name" $(( $(date +%s) - t0 )) "$rc" "$log"
    tail -n 40 "$log" | sed 's/^/        | /'
  fi
}

echo "tests: CUnit suites"
for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  run_one "$(basename "$t")" "$t"
done
echo "tests: integration"
for t in tests/it_*.sh; do
  [ -f "$t" ] || continue
  run_one "$(basename "$t" .sh)" bash "$t"
done

echo "tests: $passed passed, $skipped skipped, ${#failed[@]} failed in $(( $(date +%s) - start ))s"
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
