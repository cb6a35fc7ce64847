#!/usr/bin/env bash
# Install the Debian 12 host packages sbx needs, and only those missing.
# Idempotent: when everything is present it changes nothing and touches no
# network (no apt-get update).
#
#   scripts/install-deps.sh --run         # what `sbx serve` needs (make run)
#   scripts/install-deps.sh               # that, plus the test tools and chromium (make test)
#   scripts/install-deps.sh --no-browser  # the test tools without chromium
set -euo pipefail

# chromium is wanted by default: `make test` (and CI) runs the dashboard's
# headless-browser test, which fails rather than skips under
# SBX_REQUIRE_INTEGRATION=1. --with-browser is kept for old callers.
with_browser=1
with_tests=1
for arg in "$@"; do
  case "$arg" in
    --run) with_tests=0; with_browser=0 ;;
    --with-browser) with_browser=1 ;;
    --no-browser) with_browser=0 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-deps: unknown option $arg (known: --run, --no-browser, --with-browser)" >&2; exit 2 ;;
  esac
done

sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root (or install sudo)" >&2; exit 1; }
  sudo=sudo
fi

# package  why: what `sbx serve` runs with
wanted=(
  crun             # default OCI runtime
  runc             # second OCI runtime (checkpoint/restore path)
  debootstrap      # builds the template root filesystems (internal/rootfs)
  util-linux       # mount, chroot helpers, unshare
  iptables         # only to let sandbox traffic past a FORWARD policy of DROP (Docker, ufw); the sandbox firewall itself is nftables, built into the kernel
  iproute2         # ip, for network namespaces and veths
  ca-certificates  # HTTPS to the Debian mirror (template builds)
  curl             # scripts/run.sh health check
  e2fsprogs        # mkfs.ext4: each team volume is an ext4 image (internal/volume)
  libnss-myhostname  # resolves <port>-<id>.localhost, the default sandbox host names (sandbox.getHost), to loopback
)
# package  why: what only the tests use
tests=(
  busybox-static   # tiny static tools for runtime tests; /bin/sh of the package test's throwaway root
  systemd          # systemd-analyze verify of the unit (tests/ops)
  python3
  python3-ipykernel  # host-side Jupyter kernel for code interpreter tests
  python3-numpy      # ... whose tests import numpy, pandas and matplotlib
  python3-pandas
  python3-matplotlib
  python3-pil        # ... and PIL (images shown on save)
  node-acorn         # ... whose JavaScript kernel parses cells with acorn
  node-babel7        # ... and strips TypeScript with Babel
  r-base-core        # ... and whose R contexts run IRkernel
  r-cran-irkernel
  nodejs           # E2B JavaScript SDK tests
  postgresql       # the data layer's PostgreSQL tests: a throwaway server per `make test` (scripts/with-postgres.sh)
  npm
)
[ "$with_tests" = 1 ] && wanted+=("${tests[@]}")
[ "$with_browser" = 1 ] && wanted+=(chromium)

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for pkg in "${wanted[@]}"; do
  case "$pkg" in
    # A node from another repository (NodeSource) ships npm itself and
    # conflicts with Debian's npm: accept whatever provides the command.
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
  esac
  installed "$pkg" || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all host packages present (${#wanted[@]} checked)"
else
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# runsc (gVisor): Debian's build is too old for this kernel (runtime notes),
# so a pinned current one is built from the Go module proxy (~2 min, once).
# It runs sandboxes with --runtime runsc and is the runtime that can
# checkpoint a sandbox to disk.
RUNSC_VERSION=v0.0.0-20260905035102-160fafc42237
if ! command -v runsc >/dev/null; then
  command -v go >/dev/null || export PATH=/usr/local/go/bin:$PATH
  echo "install-deps: building runsc $RUNSC_VERSION from the Go module proxy (about 2 minutes)"
  tmp=$(mktemp -d)
  (cd "$tmp" && GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod go install "gvisor.dev/gvisor/runsc@$RUNSC_VERSION")
  $sudo install -m 0755 "$tmp/runsc" /usr/local/bin/runsc
  rm -rf "$tmp"
fi
# A real kube-apiserver and etcd for the cluster tests (envtest: Leases,
# leader fail-over): built from the Go module proxy once per machine into
# /var/cache/sbx/tools (about 12 minutes the first time), then reused.
if [ "$with_tests" = 1 ]; then
  command -v go >/dev/null || export PATH=/usr/local/go/bin:$PATH
  bash "$(dirname "$0")/build-kube-tools.sh" >/dev/null
fi
# SeaweedFS's weed: the real S3 server the blob store's S3 tests run
# against (internal/blob). Built once per machine into
# /var/cache/sbx/tools/weed/<version>/ (slow the first time, like runsc);
# only the tests need it.
if [ "$with_tests" = 1 ]; then
  command -v go >/dev/null || export PATH=/usr/local/go/bin:$PATH
  bash "$(dirname "$0")/build-weed.sh" >/dev/null
fi
echo "install-deps: done"
