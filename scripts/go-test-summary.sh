#!/usr/bin/env bash
# Summarise a `go test` log (plain or -v output): packages ok/failed, and with -v, tests
# (subtests included) passed/failed/skipped. The last line is "tests: N passed, N failed,
# N skipped" when the log has -v output, so CI can read it.
#
#   scripts/go-test-summary.sh test.log
set -euo pipefail

log=${1:?usage: $0 GO_TEST_LOG}

count() { grep -cE "$1" "$log" || true; }

pkg_ok=$(count '^ok[[:space:]]')
pkg_fail=$(count '^FAIL[[:space:]]+[^[:space:]]')
pkg_notest=$(count '^\?[[:space:]].*\[no test files\]')
passed=$(count '^[[:space:]]*--- PASS: ')
failed=$(count '^[[:space:]]*--- FAIL: ')
skipped=$(count '^[[:space:]]*--- SKIP: ')

echo "---- go test summary ----"
echo "packages: ${pkg_ok} ok, ${pkg_fail} failed, ${pkg_notest} without tests"
if [[ $skipped -gt 0 ]]; then
	echo "skipped tests:"
	grep -E '^[[:space:]]*--- SKIP: ' "$log" | sed 's/^[[:space:]]*/  /'
fi
if [[ $failed -gt 0 ]]; then
	echo "failed tests:"
	grep -E '^[[:space:]]*--- FAIL: ' "$log" | sed 's/^[[:space:]]*/  /'
fi
if [[ $((passed + failed + skipped)) -gt 0 ]]; then
	echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
fi
