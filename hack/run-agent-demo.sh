#!/usr/bin/env bash
# Part 2 of `make run`: the host agent on this machine's kernel, when it allows eBPF.
set -uo pipefail
riposte="$1"
echo "== 2. riposte run: the host agent, eBPF sensors with in-kernel prefilters, shipped rules"
if [[ $(id -u) -ne 0 || ! -r /sys/kernel/btf/vmlinux ]]; then
	echo "skipped: the host agent needs root and BTF (/sys/kernel/btf/vmlinux) on this machine"
	exit 0
fi
if ! "$riposte" run --help >/dev/null 2>&1; then
	echo "skipped: this build has no host agent"
	exit 0
fi
bash "$(dirname "$0")/kernel-prereqs.sh" || exit 0
"$riposte" run --rules rules --duration 8s --exec "/bin/sh -c 'cat /etc/shadow >/dev/null; sleep 1'"
