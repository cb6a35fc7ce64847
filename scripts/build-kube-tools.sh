#!/usr/bin/env bash
# Builds a real kube-apiserver and etcd from the Go module proxy, once per machine, into a cache
# directory that envtest (KUBEBUILDER_ASSETS) can use. There is no kubelet here: the cluster tests
# need only the API server (Leases, discovery, server-side dry-run of the Helm chart).
#
# `go install k8s.io/kubernetes/cmd/kube-apiserver@vX` is refused because kubernetes' go.mod has
# replace directives for its staging modules, so a throwaway wrapper module requires kubernetes and
# replaces each staging module by the same module at the matching v0.x release.
#
# Usage: scripts/build-kube-tools.sh            # prints the directory holding the binaries
# Env:   SBX_TOOLS_CACHE (default /var/cache/sbx/tools), GO (default go on PATH or /usr/local/go/bin/go)
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
CACHE=${SBX_TOOLS_CACHE:-/var/cache/sbx/tools}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
OUT="$CACHE/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/etcd" ]]; then
	echo "$OUT"
	exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/kube.lock"
flock 9
if [[ -x "$OUT/kube-apiserver" && -x "$OUT/etcd" ]]; then
	echo "$OUT"
	exit 0
fi

work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

# staging replaces: k8s.io/<m> => ./staging/src/k8s.io/<m> becomes k8s.io/<m> => k8s.io/<m> v0.<minor>.<patch>
staging_version="v0${KUBE_VERSION#v1}"
kmod=$("$GO" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
[[ -f "$kmod" ]] || { echo "build-kube-tools: cannot download k8s.io/kubernetes@$KUBE_VERSION's go.mod" >&2; exit 1; }

mkdir -p "$work/apiserver" "$work/etcd"
{
	echo "module sbx.local/kubetools"
	echo
	echo "go 1.26"
	echo
	echo "require k8s.io/kubernetes $KUBE_VERSION"
	echo
	grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$kmod" |
		awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
} >"$work/apiserver/go.mod"
cat >"$work/apiserver/tools.go" <<'GO'
//go:build tools

package kubetools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO

cat >"$work/etcd/go.mod" <<MOD
module sbx.local/etcdtools

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
cat >"$work/etcd/tools.go" <<'GO'
//go:build tools

package etcdtools

import _ "go.etcd.io/etcd/server/v3"
GO

mkdir -p "$OUT.tmp"
echo "build-kube-tools: building kube-apiserver $KUBE_VERSION (about 12 min on 2 busy cores the first time)" >&2
(cd "$work/apiserver" && "$GO" mod tidy -e >/dev/null 2>&1 || true
	cd "$work/apiserver" && "$GO" build -trimpath -o "$OUT.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
echo "build-kube-tools: building etcd $ETCD_VERSION" >&2
(cd "$work/etcd" && "$GO" mod tidy -e >/dev/null 2>&1 || true
	cd "$work/etcd" && "$GO" build -trimpath -o "$OUT.tmp/etcd" go.etcd.io/etcd/server/v3)
if command -v kubectl >/dev/null; then ln -sf "$(command -v kubectl)" "$OUT.tmp/kubectl"; fi
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
