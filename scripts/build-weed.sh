#!/usr/bin/env bash
# Build SeaweedFS's `weed` (a real S3-compatible server) once per machine
# into a cache keyed by version, and print the binary's path. The blob
# store's S3 tests (internal/blob/s3store) run against it.
#
#   scripts/build-weed.sh            # build if missing, print the path
#   scripts/build-weed.sh --path     # print where it goes, build nothing
#
# `go install github.com/seaweedfs/seaweedfs/weed@VERSION` is refused
# because seaweedfs' go.mod has a replace directive (go-bip39 =>
# cosmos/go-bip39), so the build runs in a throwaway wrapper module that
# requires seaweedfs and repeats that replace. The first build takes many
# minutes on 2 cores and fills the Go module cache with ~1 GB; later runs
# return at once. SBX_TOOLS_DIR moves the cache (default /var/cache/sbx/tools).
#
# A lock in the cache directory makes concurrent callers wait for one
# build. Heavy-lock etiquette (flock /tmp/sbx-heavy.lock) is the caller's:
# `make test` may already hold it, and taking it here would deadlock.
set -euo pipefail

# Keep in step with internal/blob/s3store (the tests read it from here).
WEED_VERSION=v0.0.0-20261109003541-7506e5f91cd6
tools=${SBX_TOOLS_DIR:-/var/cache/sbx/tools}
dest="$tools/weed/$WEED_VERSION/weed"

case "${1:-}" in
  --path) echo "$dest"; exit 0 ;;
  "") ;;
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "build-weed: unknown option $1 (known: --path)" >&2; exit 2 ;;
esac

if [ -x "$dest" ]; then
  echo "$dest"
  exit 0
fi

command -v go >/dev/null || export PATH=/usr/local/go/bin:$PATH
mkdir -p "$tools/weed"
exec 9>"$tools/weed/.lock"
flock 9
if [ -x "$dest" ]; then # another caller built it while we waited
  echo "$dest"
  exit 0
fi

work=$(mktemp -d /tmp/sbx-weed-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat >"$work/go.mod" <<EOF
module sbx.local/weedbuild

go 1.26

require github.com/seaweedfs/seaweedfs $WEED_VERSION

// The same replace as seaweedfs' own go.mod (why go install is refused).
replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0
EOF
echo "build-weed: building weed $WEED_VERSION from the Go module proxy (slow the first time)" >&2
start=$(date +%s)
(cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=0 nice -n 10 \
  go build -trimpath -ldflags '-s -w' -o "$work/weed" github.com/seaweedfs/seaweedfs/weed)
mkdir -p "$(dirname "$dest")"
install -m 0755 "$work/weed" "$dest.tmp"
mv -f "$dest.tmp" "$dest"
echo "build-weed: built $dest in $(( $(date +%s) - start ))s" >&2
echo "$dest"
