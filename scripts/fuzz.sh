#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target in the module for a short time each
# (default 10s): parsers of hostile input must never panic.
# Usage: bash scripts/fuzz.sh [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
fail=0
count=0
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	grep -lq '^func Fuzz' "$dir"/*_test.go 2>/dev/null || continue
	for name in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //' | sort -u); do
		count=$((count + 1))
		echo "fuzz: $pkg $name ($t)"
		if ! go test -run='^$' -fuzz="^${name}\$" -fuzztime="$t" "$pkg" >/tmp/mamori-fuzz.log 2>&1; then
			echo "fuzz: FAIL $pkg $name"; tail -30 /tmp/mamori-fuzz.log; fail=1
		fi
	done
done
echo "fuzz: $count targets, $([ $fail -eq 0 ] && echo ok || echo FAILED)"
exit $fail
