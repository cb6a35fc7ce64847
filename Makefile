# sbx — build, run and test. `make run` and `make test` are the two commands a
# fresh Debian 12 machine needs; both install missing packages first.

GO       ?= go
# The release version lives in VERSION. A build from anything but the commit
# tagged v$(VERSION) carries the commit as semver build metadata
# (0.17.0+git.1a2b3c4[.dirty]), which Debian also orders after 0.17.0.
BASE_VERSION := $(shell cat VERSION)
VERSION  ?= $(shell v=$(BASE_VERSION); \
	if git describe --exact-match --tags --match "v$$v" >/dev/null 2>&1 && git diff --quiet HEAD 2>/dev/null; then echo $$v; \
	elif c=$$(git rev-parse --short=7 HEAD 2>/dev/null); then git diff --quiet HEAD 2>/dev/null && echo "$$v+git.$$c" || echo "$$v+git.$$c.dirty"; \
	else echo $$v; fi)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -s -w -X github.com/sbxdev/sbx/internal/cli.Version=$(VERSION) -X github.com/sbxdev/sbx/internal/cli.Commit=$(COMMIT)
LISTEN   ?= 127.0.0.1:3000
DATA_DIR ?= /var/lib/sbx
GOTEST_FLAGS ?= -count=1 -timeout 40m

# `make install` layout (DESTDIR for staging, as packagers expect). envd
# and codeinterp go to $(LIBDIR): they are copied into sandboxes, not run
# on the host, and sbx finds them in ../lib/sbx from its own binary.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib/sbx
DOCDIR     ?= $(PREFIX)/share/doc/sbx
SYSCONFDIR ?= /etc
UNITDIR    ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,/etc/systemd/system)

# Packaging tools, run from the Go module proxy at pinned versions (built
# once into the Go build cache).
NFPM     ?= github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
DEB_ARCH ?= $(shell $(GO) env GOARCH)
# Where builds and packages go; tests point them at temporary directories
# so they never replace the bin/sbx other tests are running.
BIN      ?= bin
DIST     ?= dist
IMAGE    ?= $(DIST)/sbx-image.tar

.PHONY: all build deps deps-run run test js-deps test-go test-js bench bench-peers bench-snapshot clean install uninstall deb image

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sbx ./cmd/sbx
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/envd ./cmd/envd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/codeinterp ./cmd/codeinterp

# Install sbx, its agents, the systemd unit, its options file (kept when it
# exists: it is the operator's) and the operations guide.
install: build
	install -D -m 0755 $(BIN)/sbx $(DESTDIR)$(BINDIR)/sbx
	install -D -m 0755 $(BIN)/envd $(DESTDIR)$(LIBDIR)/envd
	install -D -m 0755 $(BIN)/codeinterp $(DESTDIR)$(LIBDIR)/codeinterp
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' packaging/sbx.service.in > $(DESTDIR)$(UNITDIR)/sbx.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/sbx.service
	[ -e $(DESTDIR)$(SYSCONFDIR)/default/sbx ] || install -D -m 0644 packaging/default $(DESTDIR)$(SYSCONFDIR)/default/sbx
	install -D -m 0644 docs/operations.md $(DESTDIR)$(DOCDIR)/operations.md
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; \
		echo "installed; start with: systemctl enable --now sbx"; fi

# Remove what `make install` put in place; the options file, the data dir
# (/var/lib/sbx) and the rootfs cache stay.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sbx $(DESTDIR)$(LIBDIR)/envd $(DESTDIR)$(LIBDIR)/codeinterp \
		$(DESTDIR)$(UNITDIR)/sbx.service $(DESTDIR)$(DOCDIR)/operations.md
	-rmdir $(DESTDIR)$(LIBDIR) $(DESTDIR)$(DOCDIR) 2>/dev/null

# The Debian package, $(DIST)/sbx_<version>_<arch>.deb (packaging/nfpm.yaml).
deb: build
	rm -rf $(DIST)/deb-root
	$(MAKE) --no-print-directory install BIN=$(BIN) DESTDIR=$(abspath $(DIST))/deb-root PREFIX=/usr SYSCONFDIR=/etc UNITDIR=/lib/systemd/system
	rm -f $(DIST)/sbx_*.deb
	sed 's|@DEB_ROOT@|$(abspath $(DIST))/deb-root|' packaging/nfpm.yaml > $(DIST)/nfpm.yaml
	VERSION='$(VERSION)' DEB_ARCH='$(DEB_ARCH)' \
		$(GO) run $(NFPM) package --config $(DIST)/nfpm.yaml --packager deb --target $(DIST)/
	@ls $(DIST)/sbx_*.deb

# The server image, $(IMAGE): a Debian root filesystem with crun, built by
# sbx's own rootfs builder (debootstrap, cached like the templates; needs
# root), plus the binaries; entrypoint `tini -- sbx serve`. No container
# engine needed: `podman load -i $(IMAGE)` or `docker load -i $(IMAGE)`.
image: build
	$(GO) run ./tools/mkimage -out $(IMAGE) -tag sbx:$(subst +,-,$(VERSION)) -version '$(VERSION)' -bin $(BIN)

# Install the host packages sbx and its tests need (crun, runc, debootstrap,
# ..., the SDKs' and kernels' test tools, chromium). Idempotent.
deps:
	bash scripts/install-deps.sh

# Only what `sbx serve` needs.
deps-run:
	bash scripts/install-deps.sh --run

# Install what running needs, build, start `sbx serve` in the foreground,
# wait for the base template and print the `sbx env` lines. Extra flags
# for sbx serve: make run SBX_FLAGS="--tls-cert c.pem --tls-key k.pem".
SBX_FLAGS ?=
run: deps-run build
	SBX_BIN_DIR=$(BIN) bash scripts/run.sh $(LISTEN) $(DATA_DIR) $(SBX_FLAGS)

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
	KUBEBUILDER_ASSETS="$$(bash scripts/build-kube-tools.sh)" bash scripts/with-postgres.sh bash -c '$(GO) test $(GOTEST_FLAGS) ./... && \
		SBX_TEST_DATABASE=postgres $(GO) test $(GOTEST_FLAGS) $(PG_PACKAGES)'

test-js: js-deps
	cd tests/e2b-js && npm test

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 20x ./internal/... 

# sbx side by side with sbx under runsc and Docker (when present) through
# the official SDK: create -> first command, a tight create/kill loop,
# density (rate, memory per idle sandbox). Needs root; not part of `make
# test`. PEERS_ARGS="--n 30 --density 1000" for the README's figures.
PEERS_ARGS ?= --n 30 --density 200
bench-peers: build js-deps
	bash scripts/bench-peers.sh $(PEERS_ARGS)

# Template snapshots against cold starts, measured side by side in one run
# (needs root, crun and runsc; see README "Template snapshots").
bench-snapshot: build
	$(GO) test ./tests/e2e -run '^$$' -bench BenchmarkTemplateSnapshot -benchtime 1x -v

clean:
	rm -rf $(BIN) $(DIST)
