//go:build tools

// Package tools pins the control-plane binaries and the kubelet that `make
// testenv` builds. It is never compiled: the blank imports only keep the
// commands in go.mod.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
