// Package rulecheck decides whether a rule may go live: it compiles the rule,
// runs its embedded tests and resolves its playbook references. The rule
// reconcilers and the admission webhook both use it, so `kubectl apply` is
// refused with exactly the message a stored rule would show in its Stalled
// condition.
package rulecheck
