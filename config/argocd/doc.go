// Package argocd holds the Argo CD example for riposte (Applications and the
// Lua health checks Argo CD needs for custom resources) and the test that
// runs each health.lua against its health_test.yaml the way Argo CD does.
// Run is that harness, also used on the live objects of the Flux test
// (test/gitops).
package argocd
