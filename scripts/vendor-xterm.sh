#!/bin/sh
# Refreshes the xterm.js files embedded in the dashboard
# (internal/dashboard/assets/vendor/xterm) from the npm registry at the
# pinned version, after checking the tarball against the registry's
# integrity hash. The files are committed; nothing is fetched at build or
# run time. To upgrade: change VERSION and INTEGRITY (from
# `npm view @xterm/xterm@VERSION dist.integrity`), run this, test the
# dashboard (go test ./tests/dashboard), commit.
set -eu
VERSION=5.5.0
INTEGRITY=sha512-hqJHYaQb5OptNunnyAnkHyM8aCjZ1MEIDTQu1iIbbTD/xops91NB5yq1ZK/dC2JDbVWtF23zUtl9JE2NqwT87A==
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/internal/dashboard/assets/vendor/xterm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "@xterm/xterm@$VERSION" >/dev/null
tgz=xterm-xterm-$VERSION.tgz
got=sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)
if [ "$got" != "$INTEGRITY" ]; then
	echo "vendor-xterm: $tgz has integrity $got, want $INTEGRITY" >&2
	exit 1
fi
tar xzf "$tgz"
mkdir -p "$dest"
cp package/lib/xterm.js package/css/xterm.css package/LICENSE "$dest/"
printf '@xterm/xterm %s (%s), from the npm registry by scripts/vendor-xterm.sh\n' "$VERSION" "$INTEGRITY" >"$dest/VERSION"
echo "vendored @xterm/xterm $VERSION into $dest"
