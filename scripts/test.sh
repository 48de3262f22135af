#!/usr/bin/env bash
# test.sh installs what the tests need and runs every check CI runs: format,
# vet, the generated eBPF output, the static agent build, unit and kernel tests
# (with -race), the end-to-end tests with real binaries, and a fuzz smoke run.
# Usage: sudo bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PATH=/usr/local/go/bin:$PATH
export GOFLAGS=${GOFLAGS:--buildvcs=false}

step() { printf '\n=== %s\n' "$*"; }

step "gofmt"
make -s fmt-check
step "go vet"
go vet ./...
step "eBPF objects match their sources"
if [[ -d .git ]]; then make -s check-generate; else echo "not a git checkout: skipped"; fi
step "agent is a static binary"
CGO_ENABLED=0 go build -o /tmp/mamori-agent-static ./cmd/mamori-agent
file /tmp/mamori-agent-static | grep -q 'statically linked' || { file /tmp/mamori-agent-static; echo "agent is not static"; exit 1; }
rm -f /tmp/mamori-agent-static

# Unit, kernel and end-to-end suites run side by side on the two cores; each
# writes its own log, printed whole so CI's reader sees every go test line.
step "tests (unit + kernel with -race; end-to-end with real binaries; stock kernels under QEMU)"
logdir=$(mktemp -d)
go test -race -count=1 -timeout 20m $(go list ./... | grep -v /test/e2e) >"$logdir/unit.log" 2>&1 &
unit=$!
# The end-to-end suite, then the DuckDB engine's conformance run (cgo, behind
# the duckdb build tag), share one job: together they take about as long as
# the unit suite.
{
	e2e_rc=0
	go test -count=1 -timeout 20m -v ./test/e2e/... >"$logdir/e2e.log" 2>&1 || e2e_rc=$?
	go test -count=1 -timeout 10m -tags duckdb ./internal/store/duckdb/ >"$logdir/duckdb.log" 2>&1 || exit 1
	exit $e2e_rc
} &
e2e=$!
bash scripts/test-kernels.sh >"$logdir/kernels.log" 2>&1 &
kernels=$!
rc=0
wait $unit || { rc=1; echo "unit/kernel tests failed"; }
wait $e2e || { rc=1; echo "end-to-end or DuckDB tests failed"; }
wait $kernels || { rc=1; echo "tests on stock kernels (QEMU) failed"; }
cat "$logdir/unit.log"
step "end-to-end"
grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' "$logdir/e2e.log" || true
tail -5 "$logdir/e2e.log"
step "DuckDB event store conformance (-tags duckdb)"
cat "$logdir/duckdb.log" 2>/dev/null || true
step "eBPF tests on stock Debian kernels (QEMU)"
grep -E '^(--- kernel|vmtest:|--- |PASS|FAIL|ok|panic)' "$logdir/kernels.log" || true
if [[ $rc -ne 0 ]]; then
	echo "tests FAILED (full logs in $logdir)"
	exit 1
fi

step "fuzz smoke"
bash scripts/fuzz.sh "${FUZZTIME:-5s}"
echo "all checks passed"
