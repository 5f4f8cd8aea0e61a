#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager,
# kubectl) and the kubelet of the real test node (test/node) from the modules
# pinned in this folder's go.mod into
#   <cache>/testenv/<key>/bin
# and prints that bin path on stdout (everything else goes to stderr).
# <key> hashes go.mod, go.sum, this script and the Go version, so the binaries are
# rebuilt only when a pin, a build flag or the toolchain changes; otherwise this is
# a no-op that only prints the path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${1:-$here/../../.cache}"
go="${GO:-go}"

key="$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" <("$go" env GOVERSION) | sha256sum | cut -c1-16)"
dir="$cache/testenv/$key"
bin="$dir/bin"
mkdir -p "$dir"
cache="$(cd "$cache" && pwd)"
dir="$cache/testenv/$key"
bin="$dir/bin"

if [[ -x "$bin/etcd" && -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/kubectl" && -x "$bin/kubelet" ]]; then
	echo "$bin"
	exit 0
fi

# The version is stamped so the binaries report v1.37.2 instead of v0.0.0 (the
# apiserver's /version and kubectl version read it).
k8s_version="$(cd "$here" && "$go" list -m -f '{{.Version}}' k8s.io/kubernetes)"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitTreeState=clean"

# Build into a scratch folder and rename at the end, so an interrupted build never
# leaves a half-filled bin/ that the check above would take for complete.
tmp="$(mktemp -d "$dir/bin.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
echo "testenv: building control plane $k8s_version into $bin (cold: ~10 min on 2 cores)" >&2
(
	cd "$here"
	# CGO off as in the upstream release builds: static binaries, no C toolchain.
	CGO_ENABLED=0 GOFLAGS=-mod=readonly "$go" build -trimpath -ldflags "$ldflags" -o "$tmp/" \
		./etcd \
		k8s.io/kubernetes/cmd/kube-apiserver \
		k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kubectl \
		k8s.io/kubernetes/cmd/kubelet
)
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "testenv: built in $((SECONDS - start)) s" >&2
echo "$bin"
