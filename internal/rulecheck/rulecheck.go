package rulecheck

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// PlaybookLookup reports whether a playbook exists. namespace is empty for a
// ClusterResponsePlaybook. The consumer defines it so checks stay testable
// without an API server.
type PlaybookLookup interface {
	PlaybookExists(ctx context.Context, namespace, name string) (bool, error)
}

// Failure is why a rule cannot go live. Reason is one of the condition
// reasons of api/v1alpha1; Permanent is false when a retry may help (a
// missing playbook may be created later, an API error may pass).
type Failure struct {
	Reason    string
	Message   string
	Permanent bool
}

func (f *Failure) Error() string { return f.Message }

// Check compiles a rule (namespace empty for a ClusterDetectionRule), runs its
// embedded tests and, when lookup is not nil, resolves its playbooks. It
// returns the compiled rule or the first failure.
func Check(ctx context.Context, lookup PlaybookLookup, name, namespace string, spec *v1alpha1.DetectionRuleSpec) (*engine.Rule, *Failure) {
	rule, f := Compile(name, namespace, spec)
	if f != nil {
		return nil, f
	}
	if f := Tests(ctx, rule, 0); f != nil {
		return nil, f
	}
	if lookup != nil {
		if f := Playbooks(ctx, lookup, namespace, spec.Playbooks); f != nil {
			return nil, f
		}
	}
	return rule, nil
}

// Compile compiles a rule and classifies a failure.
func Compile(name, namespace string, spec *v1alpha1.DetectionRuleSpec) (*engine.Rule, *Failure) {
	rule, err := engine.Compile(name, namespace, spec)
	if err == nil {
		return rule, nil
	}
	var ce *engine.CompileError
	switch {
	case errors.As(err, &ce):
		msg := ce.Error()
		if ce.Source != "" {
			msg += "\n" + ce.Source
		}
		return nil, &Failure{Reason: v1alpha1.CompileFailedReason, Message: msg, Permanent: true}
	case errors.Is(err, engine.ErrInvalidRule):
		return nil, &Failure{Reason: v1alpha1.InvalidSpecReason, Message: err.Error(), Permanent: true}
	default:
		return nil, &Failure{Reason: v1alpha1.CompileFailedReason, Message: err.Error(), Permanent: true}
	}
}

// TestBudget bounds the time all embedded tests of one rule may take where
// riposte checks a rule for the cluster (admission, the rule reconciler): a
// rule's author chooses its tests, and the admission webhook must answer
// within the API server's timeout.
const TestBudget = 2 * time.Second

// Tests runs a compiled rule's embedded tests within budget (TestBudget when
// zero) and ctx, and reports every failing one; tests the budget did not let
// run fail.
func Tests(ctx context.Context, rule *engine.Rule, budget time.Duration) *Failure {
	if budget <= 0 {
		budget = TestBudget
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var failed []string
	results := engine.RunTestsContext(ctx, rule)
	ran := 0
	for _, r := range results {
		if !strings.Contains(r.Message, engine.ErrTestBudget.Error()) {
			ran++
		}
		if !r.Passed {
			failed = append(failed, fmt.Sprintf("test %q failed: %s", r.Test, r.Message))
		}
	}
	if ran < len(results) {
		return &Failure{
			Reason:    v1alpha1.TestFailedReason,
			Message:   fmt.Sprintf("rule %q: its %d embedded tests take longer than %s (%d finished): make the condition cheaper or the tests fewer", rule.Name(), len(results), budget, ran),
			Permanent: true,
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return &Failure{
		Reason:    v1alpha1.TestFailedReason,
		Message:   fmt.Sprintf("rule %q: %d of %d embedded tests failed: %s", rule.Name(), len(failed), len(results), strings.Join(failed, "; ")),
		Permanent: true,
	}
}

// Playbooks checks that every named playbook exists: in namespace for a
// DetectionRule, cluster-scoped for a ClusterDetectionRule (namespace "").
func Playbooks(ctx context.Context, lookup PlaybookLookup, namespace string, names []string) *Failure {
	var missing []string
	for _, n := range names {
		ok, err := lookup.PlaybookExists(ctx, namespace, n)
		if err != nil {
			return &Failure{Reason: v1alpha1.PlaybookNotFoundReason, Message: fmt.Sprintf("look up playbook %q: %v", n, err)}
		}
		if !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	kind := "ClusterResponsePlaybook"
	where := ""
	if namespace != "" {
		kind = "ResponsePlaybook"
		where = fmt.Sprintf(" in namespace %q", namespace)
	}
	return &Failure{
		Reason:  v1alpha1.PlaybookNotFoundReason,
		Message: fmt.Sprintf("%s %s not found%s", kind, quoteList(missing), where),
	}
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}
