package ruleset

import (
	"fmt"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// Finding is one lint result.
type Finding struct {
	// Error findings fail lint; the rest are warnings.
	Error  bool
	Rule   string
	Detail string
}

// Lint checks a loaded set: rules that do not compile, rules without a positive and a negative test, and playbook references that
// resolve to no loaded playbook.
func Lint(s *Set) []Finding {
	var out []Finding
	for _, r := range s.Rules {
		if r.Err != nil {
			detail := r.Err.Error()
			if e, ok := r.Err.(*Error); ok {
				detail = e.Detail()
			}
			out = append(out, Finding{Error: true, Rule: r.ID(), Detail: detail})
			continue
		}
		pos, neg := s.testCounts(r)
		if pos == 0 {
			out = append(out, Finding{Rule: r.ID(), Detail: fmt.Sprintf("%s:%d: rule %q has no test that expects a match", r.File, r.Line, r.ID())})
		}
		if neg == 0 {
			out = append(out, Finding{Rule: r.ID(), Detail: fmt.Sprintf("%s:%d: rule %q has no test that expects no match", r.File, r.Line, r.ID())})
		}
		if len(r.Compiled.Constraints().Kinds) == 0 {
			out = append(out, Finding{Rule: r.ID(), Detail: fmt.Sprintf("%s:%d: rule %q can never match: its event.kind is outside source %q", r.File, r.Line, r.ID(), r.Spec.Source)})
		}
		for i, p := range r.Spec.Playbooks {
			if !s.hasPlaybook(r, p) {
				want := "ClusterResponsePlaybook"
				if r.Namespace != "" {
					want = fmt.Sprintf("ResponsePlaybook in namespace %q", r.Namespace)
				}
				out = append(out, Finding{Rule: r.ID(), Detail: fmt.Sprintf("%s:%d: rule %q: playbook %q: no %s of that name is loaded",
					r.File, r.LineOf(fmt.Sprintf("spec.playbooks[%d]", i)), r.ID(), p, want)})
			}
		}
	}
	return out
}

func (s *Set) testCounts(r *Rule) (pos, neg int) {
	for _, t := range r.Spec.Tests {
		switch t.Expect {
		case v1alpha1.ExpectMatch:
			pos++
		case v1alpha1.ExpectNoMatch:
			neg++
		}
	}
	for _, tf := range s.TestFiles {
		for _, c := range tf.Cases {
			for _, id := range c.Match {
				if id == r.ID() {
					pos++
				}
			}
			for _, id := range c.NoMatch {
				if id == r.ID() {
					neg++
				}
			}
		}
	}
	return pos, neg
}

// hasPlaybook resolves a rule's playbook reference the way the controller
// does: a DetectionRule uses ResponsePlaybooks of its namespace, a
// ClusterDetectionRule ClusterResponsePlaybooks.
func (s *Set) hasPlaybook(r *Rule, name string) bool {
	for _, p := range s.Playbooks {
		if p.Name != name {
			continue
		}
		if r.Namespace == "" && p.Kind == "ClusterResponsePlaybook" {
			return true
		}
		if r.Namespace != "" && p.Kind == "ResponsePlaybook" && p.Namespace == r.Namespace {
			return true
		}
	}
	return false
}
