package ruleset

import (
	"context"
	"fmt"
	"time"

	"github.com/riposte-dev/riposte/engine"
)

// Result is the outcome of one test: an embedded test, a test-file case
// against one rule, or a rule that failed to compile.
type Result struct {
	// Rule is the rule's ID.
	Rule string `json:"rule"`
	Test string `json:"test"`
	// File and Line locate the test (or the rule for compile failures).
	File    string `json:"file"`
	Line    int    `json:"line,omitempty"`
	Passed  bool   `json:"passed"`
	Message string `json:"message,omitempty"`
}

// DefaultTestTimeout bounds the embedded tests of one rule, and one test
// file case, in `riposte test`: a rule file in a pull request chooses both
// its condition and its tests, and must not hold CI for long.
const DefaultTestTimeout = 10 * time.Second

// Run runs every rule's embedded tests and every test file case, each
// rule's tests (and each case) within timeout. A rule that does not compile
// is one failed result.
func Run(ctx context.Context, s *Set, timeout time.Duration) []Result {
	if timeout <= 0 {
		timeout = DefaultTestTimeout
	}
	var out []Result
	for _, r := range s.Rules {
		if r.Err != nil {
			msg := r.Err.Error()
			if e, ok := r.Err.(*Error); ok {
				msg = e.Detail()
			}
			out = append(out, Result{Rule: r.ID(), Test: "compile", File: r.File, Line: r.Line, Message: msg})
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		for i, tr := range engine.RunTestsContext(rctx, r.Compiled) {
			out = append(out, Result{Rule: r.ID(), Test: tr.Test, File: r.File, Line: r.LineOf(fmt.Sprintf("spec.tests[%d]", i)), Passed: tr.Passed, Message: tr.Message})
		}
		cancel()
	}
	for _, tf := range s.TestFiles {
		for _, c := range tf.Cases {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			out = append(out, runCase(cctx, s, tf, c)...)
			cancel()
		}
	}
	return out
}

func runCase(ctx context.Context, s *Set, tf *TestFile, c TestCase) []Result {
	ev, err := engine.DecodeLine(c.Event)
	if err != nil {
		return []Result{{Rule: "-", Test: c.Name, File: tf.File, Line: c.Line, Message: "event: " + err.Error()}}
	}
	var out []Result
	check := func(id string, want bool) {
		res := Result{Rule: id, Test: c.Name, File: tf.File, Line: c.Line}
		r := s.Rule(id)
		switch {
		case r == nil:
			res.Message = fmt.Sprintf("no rule %q is loaded", id)
		case r.Compiled == nil:
			res.Message = "the rule does not compile"
		case r.Compiled.IsSequence():
			res.Message = "a sequence rule matches a list of events: test it in its embedded tests (spec.tests[].events)"
		default:
			v := r.Compiled.Check(ctx, &ev)
			switch {
			case v.Err != nil:
				res.Message = "evaluation failed: " + v.Err.Error()
			case v.Matched == want:
				res.Passed = true
			case want && v.Exception != "":
				res.Message = fmt.Sprintf("expected a match: exception %q dropped it", v.Exception)
			case want:
				res.Message = "expected a match, the rule did not fire"
			default:
				shown := &ev
				if o, ok := engine.ObjectFromAudit(&ev); ok && r.Compiled.Source() == engine.SourceObject {
					shown = &o
				}
				res.Message = "expected no match, but the rule fired: " + r.Compiled.Output(shown)
			}
		}
		out = append(out, res)
	}
	for _, id := range c.Match {
		check(id, true)
	}
	for _, id := range c.NoMatch {
		check(id, false)
	}
	return out
}
