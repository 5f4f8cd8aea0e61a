package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

type noPlaybooks struct{}

func (noPlaybooks) PlaybookExists(context.Context, string, string) (bool, error) { return false, nil }

func request(t *testing.T, obj runtime.Object, kind string) admission.Request {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, Kind: metav1.GroupVersionKind{Group: "riposte.dev", Version: "v1alpha1", Kind: kind},
		Namespace: "team", Object: runtime.RawExtension{Raw: raw},
	}}
}

func TestValidatorDeniesBadRulesAndWarnsOnMissingPlaybooks(t *testing.T) {
	v := &Validator{Playbooks: noPlaybooks{}}
	bad := &v1alpha1.DetectionRule{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "team"},
		Spec: v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "audit.verb ==\n  audit.nope"}}
	resp := v.Handle(context.Background(), request(t, bad, "DetectionRule"))
	if resp.Allowed || !strings.Contains(resp.Result.Message, "condition 2:") {
		t.Errorf("bad CEL: allowed=%v message %q", resp.Allowed, resp.Result.Message)
	}
	good := bad.DeepCopy()
	good.Spec.Condition = `audit.verb == "create"`
	good.Spec.Playbooks = []string{"later"}
	resp = v.Handle(context.Background(), request(t, good, "DetectionRule"))
	if !resp.Allowed || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], `"later" not found`) {
		t.Errorf("missing playbook: allowed=%v warnings %v", resp.Allowed, resp.Warnings)
	}
	suspended := bad.DeepCopy()
	suspended.Spec.Suspend = true
	if resp = v.Handle(context.Background(), request(t, suspended, "DetectionRule")); !resp.Allowed {
		t.Error("a suspended draft was refused")
	}
}

func TestValidatorDeniesUnusablePlaybooks(t *testing.T) {
	v := &Validator{}
	pb := &v1alpha1.ClusterResponsePlaybook{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: v1alpha1.ResponsePlaybookSpec{Steps: []v1alpha1.Step{{Action: v1alpha1.ActionKill}}}}
	resp := v.Handle(context.Background(), request(t, pb, "ClusterResponsePlaybook"))
	if resp.Allowed || !strings.Contains(resp.Result.Message, "kill.target") {
		t.Errorf("kill without target: allowed=%v message %q", resp.Allowed, resp.Result.Message)
	}
	pb.Spec.Steps[0].Kill = &v1alpha1.KillParams{Target: "pod"}
	if resp = v.Handle(context.Background(), request(t, pb, "ClusterResponsePlaybook")); !resp.Allowed {
		t.Errorf("valid playbook refused: %q", resp.Result.Message)
	}
}

// TestValidatorRefusesRulesWhoseTestsTakeTooLong: a namespaced rule whose
// embedded tests (an expensive condition, many tests) would keep admission
// busy is refused within the test budget with a message saying so, and the
// webhook stops computing when its request's context ends.
func TestValidatorRefusesRulesWhoseTestsTakeTooLong(t *testing.T) {
	// Within the static cost limit each evaluation is bounded; many tests of
	// a costly condition on big events still add up.
	var args []string
	for range 16 {
		args = append(args, `"`+strings.Repeat("a", 4000)+`"`)
	}
	event := `{"kind":"exec","process":{"binary":"/bin/sh","args":[` + strings.Join(args, ",") + `]}}`
	r := &v1alpha1.DetectionRule{ObjectMeta: metav1.ObjectMeta{Name: "slow", Namespace: "team"},
		Spec: v1alpha1.DetectionRuleSpec{Source: "process", Severity: "low",
			Condition: `event.kind == "exec" && process.args.exists(a, a.split("a").size() > 100000)`}}
	for i := range 100 {
		r.Spec.Tests = append(r.Spec.Tests, v1alpha1.RuleTest{Name: fmt.Sprintf("t%d", i), Expect: v1alpha1.ExpectNoMatch, Event: runtime.RawExtension{Raw: []byte(event)}})
	}
	// Unbounded, the tests pass: the rule is only slow. The shorter of two
	// runs is the time they need (the first also pays one-time set-up).
	var all time.Duration
	for i := range 2 {
		begin := time.Now()
		if resp := (&Validator{Playbooks: noPlaybooks{}, TestBudget: time.Minute}).Handle(context.Background(), request(t, r, "DetectionRule")); !resp.Allowed {
			t.Fatalf("refused with a minute to run: %s", resp.Result.Message)
		}
		if took := time.Since(begin); i == 0 || took < all {
			all = took
		}
	}
	budget := all / 10
	v := &Validator{Playbooks: noPlaybooks{}, TestBudget: budget}
	begin := time.Now()
	resp := v.Handle(context.Background(), request(t, r, "DetectionRule"))
	took := time.Since(begin)
	if resp.Allowed || !strings.Contains(resp.Result.Message, "take longer than") {
		t.Fatalf("allowed=%v message %q, want a refusal naming the time budget", resp.Allowed, resp.Result.Message)
	}
	if took >= all {
		t.Errorf("refused after %s, as long as running every test (%s)", took, all)
	}
	t.Logf("all tests %s; with a budget of %s refused after %s: %s", all.Round(time.Millisecond), budget.Round(time.Millisecond), took.Round(time.Millisecond), resp.Result.Message)
	// An admission request whose context ends stops the tests with it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if resp := (&Validator{Playbooks: noPlaybooks{}, TestBudget: time.Minute}).Handle(ctx, request(t, r, "DetectionRule")); resp.Allowed {
		t.Fatal("allowed although the request's context had ended")
	}
}

// A sequence rule is admitted or refused like any rule: a bad step
// condition is refused naming the step and the CEL line and column, a
// failing chain test naming the test; a good one is admitted.
func TestValidatorJudgesSequenceRules(t *testing.T) {
	v := &Validator{Playbooks: noPlaybooks{}}
	rule := func(cond string, tests ...v1alpha1.RuleTest) *v1alpha1.ClusterDetectionRule {
		return &v1alpha1.ClusterDetectionRule{ObjectMeta: metav1.ObjectMeta{Name: "chain"}, Spec: v1alpha1.DetectionRuleSpec{
			Source: "audit", Severity: "high", Tests: tests,
			Sequence: &v1alpha1.Sequence{Key: []string{"audit.user.username"}, Window: metav1.Duration{Duration: time.Minute}, Steps: []v1alpha1.SequenceStep{
				{Name: "review", Condition: `audit.objectRef.resource == "selfsubjectaccessreviews"`},
				{Name: "list", Condition: cond},
			}}}}
	}
	events := func(resources ...string) v1alpha1.RuleTest {
		tc := v1alpha1.RuleTest{Name: "chain fires", Expect: v1alpha1.ExpectMatch}
		for i, r := range resources {
			tc.Events = append(tc.Events, runtime.RawExtension{Raw: []byte(fmt.Sprintf(
				`{"kind":"audit","time":"2026-12-01T10:00:0%dZ","audit":{"verb":"list","user":{"username":"u"},"objectRef":{"resource":%q}}}`, i, r))})
		}
		return tc
	}
	resp := v.Handle(context.Background(), request(t, rule("audit.verb == \"list\" &&\n  audit.objectRef.nope"), "ClusterDetectionRule"))
	if resp.Allowed || !strings.Contains(resp.Result.Message, "sequence.steps[1].condition 2:18") {
		t.Errorf("bad step: allowed=%v message %q", resp.Allowed, resp.Result.Message)
	}
	resp = v.Handle(context.Background(), request(t, rule(`audit.objectRef.resource == "secrets"`, events("secrets", "selfsubjectaccessreviews")), "ClusterDetectionRule"))
	if resp.Allowed || !strings.Contains(resp.Result.Message, `test "chain fires" failed: expected a match`) {
		t.Errorf("chain out of order: allowed=%v message %q", resp.Allowed, resp.Result.Message)
	}
	resp = v.Handle(context.Background(), request(t, rule(`audit.objectRef.resource == "secrets"`, events("selfsubjectaccessreviews", "secrets")), "ClusterDetectionRule"))
	if !resp.Allowed {
		t.Errorf("good sequence refused: %q", resp.Result.Message)
	}
}
