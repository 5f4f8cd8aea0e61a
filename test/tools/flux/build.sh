#!/usr/bin/env bash
# Builds Flux's source-controller and kustomize-controller from the modules
# pinned in this folder's go.mod into
#   <cache>/flux/<key>/bin
# with the Flux CRDs they serve, from the same modules' config/crd/bases, in
#   <cache>/flux/<key>/crds
# and prints that bin path on stdout (everything else goes to stderr).
# <key> hashes go.mod, go.sum, this script and the Go version, as
# test/tools/build.sh does for the control plane: a pin change rebuilds,
# otherwise this is a no-op that only prints the path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${1:-$here/../../../.cache}"
go="${GO:-go}"

key="$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" <("$go" env GOVERSION) | sha256sum | cut -c1-16)"
mkdir -p "$cache/flux/$key"
cache="$(cd "$cache" && pwd)"
dir="$cache/flux/$key"
bin="$dir/bin"

if [[ -x "$bin/source-controller" && -x "$bin/kustomize-controller" ]] && compgen -G "$dir/crds/*.yaml" >/dev/null; then
	echo "$bin"
	exit 0
fi

# Build into a scratch folder and rename at the end, so an interrupted build
# never leaves a half-filled folder that the check above would take for
# complete.
tmp="$(mktemp -d "$dir/tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
echo "testenv: building Flux source-controller and kustomize-controller into $bin (cold: ~10 min on 2 cores)" >&2
(
	cd "$here"
	export GOFLAGS=-mod=readonly
	# CGO off as in Flux's release images: static binaries.
	CGO_ENABLED=0 "$go" build -trimpath -ldflags "-s -w" -o "$tmp/bin/" \
		github.com/fluxcd/source-controller \
		github.com/fluxcd/kustomize-controller
	mkdir -p "$tmp/crds"
	for m in github.com/fluxcd/source-controller github.com/fluxcd/kustomize-controller; do
		cp "$("$go" list -m -f '{{.Dir}}' "$m")"/config/crd/bases/*.yaml "$tmp/crds/"
	done
	chmod u+w "$tmp/crds/"*.yaml
)
rm -rf "$bin" "$dir/crds"
mv "$tmp/crds" "$dir/crds"
mv "$tmp/bin" "$bin"
echo "testenv: built Flux in $((SECONDS - start)) s" >&2
echo "$bin"
