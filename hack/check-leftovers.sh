#!/usr/bin/env bash
# Fails when tests left control-plane or test-node processes, temp dirs, cgroups
# or bridges behind. Run it after `go test` has exited; test/cluster's and
# test/node's TestMains check their own instances.
set -uo pipefail
status=0
report() { echo "check-leftovers: $1:" >&2; echo "$2" >&2; status=1; }
left=$(pgrep -a -f '(^|/)(etcd|kube-apiserver|kube-controller-manager|kubelet)( |$)' | grep -v pgrep || true)
[[ -n "$left" ]] && report "processes left behind by the tests" "$left"
# test/node's containerd and its shims name the node's temp dir in their arguments
# (a containerd of the machine itself does not).
left=$(pgrep -a -f 'containerd.*riposte-node-' | grep -v pgrep || true)
[[ -n "$left" ]] && report "containerd processes of a test node left behind" "$left"
# test/cluster, test/stack and test/node name their temp dirs so; Stop removes them.
tmp="${TMPDIR:-/tmp}"
dirs=$(compgen -G "$tmp/riposte-cluster-*"; compgen -G "$tmp/riposte-stack-*"; compgen -G "$tmp/riposte-node-*" || true)
[[ -n "$dirs" ]] && report "temp dirs left behind by the tests" "$dirs"
# A test node's cgroup root is named after its temp dir, its bridge rpn<suffix>.
cgroups=$(compgen -G "/sys/fs/cgroup/*/riposte-node-*"; compgen -G "/sys/fs/cgroup/riposte-node-*" || true)
[[ -n "$cgroups" ]] && report "test-node cgroups left behind" "$cgroups"
bridges=$(compgen -G "/sys/class/net/rpn*" || true)
[[ -n "$bridges" ]] && report "test-node bridges left behind" "$bridges"
if [[ $status == 0 ]]; then
	echo "check-leftovers: no control-plane or test-node process, temp dir, cgroup or bridge left behind"
fi
exit $status
