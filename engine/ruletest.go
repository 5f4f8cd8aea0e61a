package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
		if r.seq != nil || len(tc.Events) > 0 {
			res.Passed, res.Message = r.checkSequence(ctx, i, &tc)
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

// MaxTestEvents bounds the events of one test of a sequence rule, as the
// CRD does for rules in a cluster; rule files are held to it too.
const MaxTestEvents = 64

// checkSequence runs one test of a sequence rule: its events, in order,
// through fresh sequence state; the test expects a match when a chain
// completes on any of them.
func (r *Rule) checkSequence(ctx context.Context, i int, tc *v1alpha1.RuleTest) (bool, string) {
	switch {
	case r.seq == nil:
		return false, fmt.Sprintf("tests[%d].events is for sequence rules; this rule's tests give one event", i)
	case len(tc.Event.Raw) > 0:
		return false, fmt.Sprintf("tests[%d].event: a sequence rule's test lists its events in events", i)
	case len(tc.Events) == 0:
		return false, fmt.Sprintf("tests[%d].events: a sequence rule's test needs at least one event", i)
	case len(tc.Events) > MaxTestEvents:
		return false, fmt.Sprintf("tests[%d].events: %d events, at most %d", i, len(tc.Events), MaxTestEvents)
	}
	b, err := r.boundedPrograms()
	if err != nil {
		return false, err.Error()
	}
	seqs := NewSequences()
	var completed *Event
	var chain []StepEvent
	excepted := ""
	feed := func(ev *Event) error {
		if !r.Applies(ev) {
			return nil
		}
		res := r.observe(ctx, seqs, &activation{ev: ev}, b.steps, b.exceptions)
		if len(res.errs) > 0 {
			return res.errs[0]
		}
		if res.completed != nil && completed == nil {
			completed, chain = ev, res.completed
		}
		if res.excepted != "" {
			excepted = res.excepted
		}
		return nil
	}
	for j, raw := range tc.Events {
		if err := ctx.Err(); err != nil {
			return false, "stopped: " + budgetMessage(err)
		}
		ev, err := DecodeLine(raw.Raw)
		if err != nil {
			return false, fmt.Sprintf("tests[%d].events[%d]: %v", i, j, err)
		}
		if err := feed(&ev); err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return false, "stopped: " + budgetMessage(cerr)
			}
			return false, fmt.Sprintf("events[%d]: evaluation failed: %v", j, err)
		}
		// An audit event that carries an object is also an object event,
		// as in the controller.
		if ev.Kind == KindAudit && r.kindSet&(1<<kindIndex(KindObject)) != 0 {
			if o, ok := ObjectFromAudit(&ev); ok {
				if err := feed(&o); err != nil {
					return false, fmt.Sprintf("events[%d] (its object event): evaluation failed: %v", j, err)
				}
			}
		}
	}
	switch tc.Expect {
	case v1alpha1.ExpectMatch:
		if completed == nil {
			if excepted != "" {
				return false, fmt.Sprintf("expected a match: exception %q dropped it", excepted)
			}
			return false, "expected a match: no chain of the steps completed within the window"
		}
		if tc.Output != "" {
			if got := r.Output(completed); got != tc.Output {
				return false, fmt.Sprintf("output %q, want %q", got, tc.Output)
			}
		}
		return true, ""
	case v1alpha1.ExpectNoMatch:
		if completed != nil {
			steps := make([]string, len(chain))
			for k, s := range chain {
				steps[k] = s.Step
			}
			return false, fmt.Sprintf("expected no match, but the sequence completed (%s): %s", strings.Join(steps, " → "), r.Output(completed))
		}
		return true, ""
	}
	return false, fmt.Sprintf("expect is %q, want %q or %q", tc.Expect, v1alpha1.ExpectMatch, v1alpha1.ExpectNoMatch)
}
