#!/usr/bin/env bash
# Part 2 of `make run`: the host agent on this machine's kernel, when it allows eBPF.
set -uo pipefail
riposte="$1"
here="$(cd "$(dirname "$0")" && pwd)"
echo "== 2. riposte run: the host agent — eBPF sensors, in-kernel prefilters, the shipped rules plus a kill-at-exec demo rule"
if [[ $(id -u) -ne 0 || ! -r /sys/kernel/btf/vmlinux ]]; then
	echo "skipped: the host agent needs root and BTF (/sys/kernel/btf/vmlinux) on this machine"
	exit 0
fi
usage=$("$riposte" 2>&1 || true)
if ! grep -q "^  run " <<<"$usage"; then
	echo "skipped: this build has no host agent"
	exit 0
fi
bash "$here/kernel-prereqs.sh" || exit 0
demo=/tmp/riposte-demo
rm -rf "$demo" && mkdir -p "$demo"
cp /usr/bin/touch "$demo/forbidden"
evidence="$(mktemp -d)"
echo "workload: read /etc/shadow, then run $demo/forbidden, which would create $demo/created"
"$riposte" run --rules rules --rules test/fixtures/agent-demo --evidence "$evidence" --duration 20s \
	--exec "cat /etc/shadow >/dev/null; touch $demo/ran; $demo/forbidden $demo/created; sleep 1"
rc=$?
if [[ $rc -ne 0 || ! -e "$demo/ran" ]]; then
	echo "RESULT: the agent did not run the workload (exit $rc)"
elif [[ -e "$demo/created" ]]; then
	echo "RESULT: $demo/created exists: the forbidden binary ran"
else
	echo "RESULT: the workload ran, and $demo/created does not exist: the forbidden binary was killed at exec before it ran"
fi
rm -rf "$demo" "$evidence"
exit $rc
