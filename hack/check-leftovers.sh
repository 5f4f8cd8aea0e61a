#!/usr/bin/env bash
# Fails when tests left control-plane processes or test/cluster temp dirs behind.
# Run it after `go test` has exited; test/cluster's TestMain checks its own clusters.
set -uo pipefail
status=0
left=$(pgrep -a -f '(^|/)(etcd|kube-apiserver|kube-controller-manager)( |$)' | grep -v pgrep || true)
if [[ -n "$left" ]]; then
	echo "check-leftovers: processes left behind by the tests:" >&2
	echo "$left" >&2
	status=1
fi
# test/cluster and test/stack name their temp dirs so; Stop removes them.
dirs=$(compgen -G "${TMPDIR:-/tmp}/riposte-cluster-*"; compgen -G "${TMPDIR:-/tmp}/riposte-stack-*" || true)
if [[ -n "$dirs" ]]; then
	echo "check-leftovers: temp dirs left behind by the tests:" >&2
	echo "$dirs" >&2
	status=1
fi
if [[ $status == 0 ]]; then
	echo "check-leftovers: no control-plane process or temp dir left behind"
fi
exit $status
