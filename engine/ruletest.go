package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// TestResult is the outcome of one test of a rule.
type TestResult struct {
	Rule string `json:"rule"`
	// Test is the test's name.
	Test   string `json:"test"`
	Passed bool   `json:"passed"`
	// Message says why a test failed.
	Message string `json:"message,omitempty"`
}

// RunTests runs the tests embedded in a rule's spec. A test passes when the
// rule (condition, exceptions, kind and namespace scope) matches exactly when
// the test expects it to, and, if the test names an output, renders it.
func RunTests(r *Rule) []TestResult { return RunTestsContext(context.Background(), r) }

// RunTestsContext is RunTests with each evaluation cost-limited
// (TestCostLimit) and every test stopped when ctx ends: the tests of a rule
// from a pull request or an admission request must not run without end.
// Tests not run in time fail and say so.
func RunTestsContext(ctx context.Context, r *Rule) []TestResult {
	out := make([]TestResult, 0, len(r.spec.Tests))
	for i, tc := range r.spec.Tests {
		name := tc.Name
		if name == "" {
			name = fmt.Sprintf("tests[%d]", i)
		}
		res := TestResult{Rule: r.Name(), Test: name}
		if err := ctx.Err(); err != nil {
			res.Message = "not run: " + budgetMessage(err)
			out = append(out, res)
			continue
		}
		ev, err := DecodeLine(tc.Event.Raw)
		if err != nil {
			res.Message = fmt.Sprintf("tests[%d].event: %v", i, err)
			out = append(out, res)
			continue
		}
		res.Passed, res.Message = r.check(ctx, &ev, tc.Expect, tc.Output)
		out = append(out, res)
	}
	return out
}

// ErrTestBudget is reported by tests stopped because their time ran out.
var ErrTestBudget = errors.New("the rule's tests ran out of time")

func budgetMessage(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrTestBudget.Error()
	}
	return err.Error()
}

// check evaluates the rule on ev against an expectation and explains a failure.
func (r *Rule) check(ctx context.Context, ev *Event, expect, output string) (bool, string) {
	ev, derived := r.testEvent(ev)
	v := Verdict{}
	if r.Applies(ev) {
		v = r.EvalContext(ctx, ev)
	}
	if v.Err != nil {
		if err := ctx.Err(); err != nil {
			return false, "stopped: " + budgetMessage(err)
		}
		return false, fmt.Sprintf("evaluation failed: %v", v.Err)
	}
	switch expect {
	case v1alpha1.ExpectMatch:
		if !v.Matched {
			why := "condition is false"
			switch {
			case v.Exception != "":
				why = fmt.Sprintf("exception %q dropped the match", v.Exception)
			case !derived && r.source == SourceObject && ev.Kind == KindAudit:
				why = "the audit event carries no object: an object event comes from a successful create, update, patch or delete at stage ResponseComplete with the object in responseObject (or, for create and update, requestObject)"
			case !r.Applies(ev):
				why = fmt.Sprintf("the rule does not see %q events", ev.Kind)
				if r.namespace != "" {
					why += " of namespace " + fmt.Sprintf("%q", ev.Namespace())
				}
			}
			return false, "expected a match: " + why
		}
		if output != "" {
			if got := r.Output(ev); got != output {
				return false, fmt.Sprintf("output %q, want %q", got, output)
			}
		}
		return true, ""
	case v1alpha1.ExpectNoMatch:
		if v.Matched {
			return false, "expected no match, but the rule matched: " + r.Output(ev)
		}
		return true, ""
	}
	return false, fmt.Sprintf("expect is %q, want %q or %q", expect, v1alpha1.ExpectMatch, v1alpha1.ExpectNoMatch)
}

// Check evaluates the rule on an event and reports whether it fired, the way
// test files use it (cost-limited and stopped when ctx ends). An object
// rule given an audit event is evaluated on the object event the audit
// event carries (ObjectFromAudit), as in a cluster.
func (r *Rule) Check(ctx context.Context, ev *Event) Verdict {
	ev, _ = r.testEvent(ev)
	if !r.Applies(ev) {
		return Verdict{}
	}
	return r.EvalContext(ctx, ev)
}

// testEvent is the event a test of the rule evaluates: for an object rule
// given an audit event, the object event derived from it, if any.
func (r *Rule) testEvent(ev *Event) (*Event, bool) {
	if r.source != SourceObject || ev.Kind != KindAudit {
		return ev, false
	}
	if o, ok := ObjectFromAudit(ev); ok {
		return &o, true
	}
	return ev, false
}
