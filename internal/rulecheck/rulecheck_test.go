package rulecheck

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

type playbooks map[string]bool

func (p playbooks) PlaybookExists(_ context.Context, ns, name string) (bool, error) {
	return p[ns+"/"+name], nil
}

func test(expect, ev string) v1alpha1.RuleTest {
	tc := v1alpha1.RuleTest{Name: "t", Expect: expect}
	tc.Event.Raw = []byte(ev)
	return tc
}

func seqTest(expect string, evs ...string) v1alpha1.RuleTest {
	tc := v1alpha1.RuleTest{Name: "t", Expect: expect}
	for _, ev := range evs {
		tc.Events = append(tc.Events, runtime.RawExtension{Raw: []byte(ev)})
	}
	return tc
}

// seq is an audit sequence (an access review, then a Secret list, by one
// user) changed by mut, with tests.
func seq(mut func(*v1alpha1.Sequence), tests ...v1alpha1.RuleTest) v1alpha1.DetectionRuleSpec {
	s := &v1alpha1.Sequence{Key: []string{"audit.user.username"}, Window: metav1.Duration{Duration: time.Minute}, Steps: []v1alpha1.SequenceStep{
		{Name: "review", Condition: `audit.objectRef.resource == "selfsubjectaccessreviews"`},
		{Name: "list", Condition: `audit.verb == "list" && audit.objectRef.resource == "secrets"`},
	}}
	mut(s)
	return v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Sequence: s, Tests: tests}
}

func TestCheckClassifiesFailures(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ns        string
		spec      v1alpha1.DetectionRuleSpec
		reason    string
		contains  string
		permanent bool
	}{
		{"bad CEL names line and column", "", v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "audit.verb == \"x\" &&\n audit.nope"},
			v1alpha1.CompileFailedReason, "condition 2:", true},
		{"unknown source is an invalid spec", "", v1alpha1.DetectionRuleSpec{Source: "dns", Severity: "low", Condition: "true"},
			v1alpha1.InvalidSpecReason, `source "dns"`, true},
		{"failing embedded test is named", "", v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: `audit.verb == "create"`,
			Tests: []v1alpha1.RuleTest{test("match", `{"kind":"audit","audit":{"verb":"get"}}`)}},
			v1alpha1.TestFailedReason, `test "t" failed`, true},
		{"missing playbook can heal", "team", v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "true", Playbooks: []string{"here", "gone"}},
			v1alpha1.PlaybookNotFoundReason, `ResponsePlaybook "gone" not found in namespace "team"`, false},
		{"bad CEL in a sequence step names the step, line and column", "", seq(func(s *v1alpha1.Sequence) { s.Steps[1].Condition = "audit.verb == \"list\" &&\n  audit.objectRef.nope" }),
			v1alpha1.CompileFailedReason, "sequence.steps[1].condition 2:18: undefined field 'nope'", true},
		{"a sequence of one step is an invalid spec", "", seq(func(s *v1alpha1.Sequence) { s.Steps = s.Steps[:1] }),
			v1alpha1.InvalidSpecReason, "sequence.steps: 1 steps, want 2 to 8", true},
		{"a sequence test whose chain does not complete is named", "", seq(func(s *v1alpha1.Sequence) {}, seqTest("match", `{"kind":"audit","time":"2026-12-01T10:00:00Z","audit":{"verb":"list","user":{"username":"u"}}}`)),
			v1alpha1.TestFailedReason, `test "t" failed: expected a match: no chain of the steps completed within the window`, true},
		{"a sequence test given one event is told to use events", "", seq(func(s *v1alpha1.Sequence) {}, test("noMatch", `{"kind":"audit"}`)),
			v1alpha1.TestFailedReason, `a sequence rule's test lists its events in events`, true},
		{"cluster rule needs cluster playbooks", "", v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "true", Playbooks: []string{"here"}},
			v1alpha1.PlaybookNotFoundReason, `ClusterResponsePlaybook "here" not found`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, f := Check(context.Background(), playbooks{"team/here": true}, "r", tc.ns, &tc.spec)
			if f == nil {
				t.Fatal("Check passed, want a failure")
			}
			if f.Reason != tc.reason || !strings.Contains(f.Message, tc.contains) || f.Permanent != tc.permanent {
				t.Errorf("got %s %q permanent=%v; want %s containing %q permanent=%v", f.Reason, f.Message, f.Permanent, tc.reason, tc.contains, tc.permanent)
			}
		})
	}
	review := `{"kind":"audit","time":"2026-12-01T10:00:00Z","audit":{"verb":"create","objectRef":{"resource":"selfsubjectaccessreviews"},"user":{"username":"u"}}}`
	list := `{"kind":"audit","time":"2026-12-01T10:00:30Z","audit":{"verb":"list","objectRef":{"resource":"secrets"},"user":{"username":"u"}}}`
	good := seq(func(*v1alpha1.Sequence) {}, seqTest("match", review, list), seqTest("noMatch", list, review))
	if r, f := Check(context.Background(), nil, "r", "", &good); f != nil || r == nil || !r.IsSequence() {
		t.Errorf("valid sequence rule: %v", f)
	}
	spec := v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "true", Playbooks: []string{"here"}}
	if r, f := Check(context.Background(), playbooks{"team/here": true}, "r", "team", &spec); f != nil || r == nil {
		t.Errorf("valid rule: %v", f)
	}
}
