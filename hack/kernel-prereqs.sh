#!/usr/bin/env bash
# Mounts what the agent's eBPF tests need when the machine has not: tracefs and
# bpffs. Says what it did; fails with the reason when it cannot.
set -euo pipefail
if [[ $(id -u) -ne 0 ]]; then
	echo "kernel-prereqs: the eBPF tests need root (they load real programs)" >&2
	exit 1
fi
[[ -r /sys/kernel/btf/vmlinux ]] || { echo "kernel-prereqs: no BTF at /sys/kernel/btf/vmlinux: the agent needs a kernel built with CONFIG_DEBUG_INFO_BTF" >&2; exit 1; }
if ! mountpoint -q /sys/kernel/tracing; then
	mount -t tracefs tracefs /sys/kernel/tracing && echo "kernel-prereqs: mounted tracefs at /sys/kernel/tracing"
fi
if ! mountpoint -q /sys/fs/bpf; then
	mount -t bpf bpf /sys/fs/bpf && echo "kernel-prereqs: mounted bpffs at /sys/fs/bpf"
fi
