#!/usr/bin/env bash
# Installs the Debian packages a make target needs when they are missing, or,
# when not root, fails at once naming them. `make run`, `make test` and
# .ci/run call it; when everything is installed it only asks dpkg (well under
# a second).
#
#   hack/setup.sh run    what `make run` needs
#   hack/setup.sh test   what `make test` needs (the default): clang and
#                        libbpf to check the committed eBPF objects against
#                        their C sources, containerd, runc, the CNI plugins and
#                        busybox for the real test node
#
# RIPOSTE_SETUP_EXTRA names more packages to require (a CI image's own).
set -euo pipefail

run_pkgs=(make git ca-certificates iproute2 procps util-linux)
test_pkgs=("${run_pkgs[@]}" clang llvm libbpf-dev bpftool containerd runc containernetworking-plugins busybox-static)

case "${1:-test}" in
run) want=("${run_pkgs[@]}") ;;
test) want=("${test_pkgs[@]}") ;;
*)
	echo "usage: hack/setup.sh [run|test]" >&2
	exit 2
	;;
esac
# shellcheck disable=SC2206 # a space-separated list of package names
want+=(${RIPOSTE_SETUP_EXTRA:-})

if ! command -v dpkg-query >/dev/null; then
	echo "setup: this is not a Debian system (no dpkg-query); install the equivalents of: ${want[*]}" >&2
	exit 1
fi

installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${want[@]}" 2>/dev/null | awk '$1 == "ii" {print $2}' || true)
missing=()
for p in "${want[@]}"; do
	grep -qxF "$p" <<<"$installed" || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -ne 0 ]]; then
	{
		echo "setup: missing Debian packages: ${missing[*]}"
		echo "setup: install them as root, then run make again:"
		echo "    sudo apt-get install --no-install-recommends ${missing[*]}"
	} >&2
	exit 1
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: installed ${missing[*]}"
