#!/usr/bin/env bash
# Fails when tests left control-plane processes behind.
set -uo pipefail
left=$(pgrep -a -f '(^|/)(etcd|kube-apiserver|kube-controller-manager)( |$)' | grep -v pgrep || true)
if [[ -n "$left" ]]; then
	echo "check-leftovers: processes left behind by the tests:" >&2
	echo "$left" >&2
	exit 1
fi
echo "check-leftovers: no control-plane process left behind"
