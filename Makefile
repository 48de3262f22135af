# Mamori build entry points. The README's commands wrap these.
GO ?= go
BIN ?= bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/mamori-edr/mamori/internal/version.Version=$(VERSION)

.PHONY: all build mamori agent generate check-generate vet fmt-check test test-unit test-e2e fuzz bench run clean

all: build

build: mamori agent

mamori:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mamori ./cmd/mamori

# The agent runs on every kind of host: one static binary, no cgo.
agent:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mamori-agent ./cmd/mamori-agent

# Regenerate the eBPF objects and Go bindings (needs clang and libbpf-dev).
generate:
	$(GO) generate ./internal/agent/sensor/...

# CI: the committed eBPF output must be what the sources generate.
check-generate: generate
	git diff --exit-code -- internal/agent/sensor || { echo "committed bpf2go output is stale: run 'make generate' and commit"; exit 1; }

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l cmd internal bench test 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test:
	bash scripts/test.sh

test-unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/e2e)

test-e2e:
	$(GO) test -count=1 -v ./test/e2e/...

fuzz:
	bash scripts/fuzz.sh 15s

# Overhead of the agent, measured side by side in one run; prints ratios and
# writes bench/results/<date>.json.
bench: build
	$(GO) run ./bench/exec -mamori $(BIN)/mamori -agent $(BIN)/mamori-agent

run:
	bash scripts/run.sh

clean:
	rm -rf $(BIN)
