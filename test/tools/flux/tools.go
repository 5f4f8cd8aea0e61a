//go:build tools

// Package flux pins Flux's source-controller and kustomize-controller, which
// `make testenv` builds for the GitOps end-to-end test (test/gitops). It is
// never compiled: the blank imports only keep the commands in go.mod.
//
// It is a module of its own, beside the control plane's (test/tools): in one
// module, minimal version selection would build kube-apiserver and the
// kubelet with Flux's newer versions of shared dependencies (zap, otelgrpc,
// genproto, cbor, go-digest, …) and Flux with Kubernetes v0.37 libraries
// it was not released with, and a Flux pin change would rebuild the control
// plane. Apart, each is built from what its release pins.
package flux

import (
	_ "github.com/fluxcd/kustomize-controller"
	_ "github.com/fluxcd/source-controller"
)
