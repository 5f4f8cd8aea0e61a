package rulecheck

import (
	"context"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

type playbooks map[string]bool

func (p playbooks) PlaybookExists(_ context.Context, ns, name string) (bool, error) {
	return p[ns+"/"+name], nil
}

func TestCheckClassifiesFailures(t *testing.T) {
	test := func(expect, ev string) v1alpha1.RuleTest {
		tc := v1alpha1.RuleTest{Name: "t", Expect: expect}
		tc.Event.Raw = []byte(ev)
		return tc
	}
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
	spec := v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "true", Playbooks: []string{"here"}}
	if r, f := Check(context.Background(), playbooks{"team/here": true}, "r", "team", &spec); f != nil || r == nil {
		t.Errorf("valid rule: %v", f)
	}
}
