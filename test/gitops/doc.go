// Package gitops proves riposte's GitOps loop with the real Flux
// controllers. source-controller and kustomize-controller (built from pinned
// modules by test/tools/flux) run as processes with their own
// ServiceAccounts against the real control plane of test/stack, where
// riposte's controller, its admission webhook and the audit webhook run; the
// `riposte agent` binary loads the node rules. A local Git server
// (fluxcd/pkg/gittestserver) holds a team's rules repository, and the shipped
// config/flux, patched only where a deployment differs, points Flux at it.
// Commits to that repository then go live, are refused with the rule's
// error while the last good version keeps detecting, and are timed from
// push to loaded on the node.
//
// The same package runs the CI workflow of docs/gitops.md against this
// repository's rules/.
package gitops
