// Package webhook is the validating admission webhook for rules and
// playbooks, and the serving certificate it manages for itself.
// It runs the same checks as the rule reconcilers (internal/rulecheck), so
// `kubectl apply`, Flux's server-side dry run and Argo CD's sync refuse a rule
// that would only go Stalled, with the same message naming line and column.
package webhook
