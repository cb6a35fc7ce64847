# sbx — build, run and test. `make run` and `make test` are the two commands a
# fresh Debian 12 machine needs; both install missing packages first.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/sbxdev/sbx/internal/cli.Version=$(VERSION)
LISTEN   ?= 127.0.0.1:3000
DATA_DIR ?= /var/lib/sbx
GOTEST_FLAGS ?= -count=1 -timeout 20m

.PHONY: all build deps run test js-deps test-go test-js bench bench-snapshot clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/sbx ./cmd/sbx
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/envd ./cmd/envd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/codeinterp ./cmd/codeinterp

# Install the host packages sbx needs (crun, runc, debootstrap, ...). Idempotent.
deps:
	bash scripts/install-deps.sh

# Install what is missing, build, start `sbx serve` and print the `sbx env` lines.
run: deps build
	bash scripts/run.sh $(LISTEN) $(DATA_DIR)

# The whole test suite: Go unit + integration tests, then the official E2B
# JavaScript SDKs against a real server.
test: deps build js-deps test-go test-js

# The official E2B SDKs (pinned in tests/e2b-js/package-lock.json); some Go
# tests drive them too, so they are installed before the Go tests run.
js-deps:
	cd tests/e2b-js && npm ci --no-audit --no-fund

# The Go tests run against a throwaway PostgreSQL too (the data layer's
# conformance suite, two servers on one database): with-postgres.sh starts
# it on a loopback port and removes it at the end. The packages that keep
# state in the database then run their own tests once more on PostgreSQL.
PG_PACKAGES := ./internal/events/... ./internal/webhook ./internal/template ./internal/budget \
	./internal/refine ./internal/monitor ./internal/metrics ./internal/usage
test-go:
	$(GO) vet ./...
	bash scripts/with-postgres.sh bash -c '$(GO) test $(GOTEST_FLAGS) ./... && \
		SBX_TEST_DATABASE=postgres $(GO) test $(GOTEST_FLAGS) $(PG_PACKAGES)'

test-js: js-deps
	cd tests/e2b-js && npm test

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 20x ./internal/... 

# Template snapshots against cold starts, measured side by side in one run
# (needs root, crun and runsc; see README "Template snapshots").
bench-snapshot: build
	$(GO) test ./tests/e2e -run '^$$' -bench BenchmarkTemplateSnapshot -benchtime 1x -v

clean:
	rm -rf bin
