package controllermgr_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/test/stack"
)

// badCEL misspells objectRef.resource on its second line.
const badCEL = "audit.verb == \"create\" &&\n  audit.objectRef.resorce == \"pods\""
const goodCEL = "audit.verb == \"create\" &&\n  audit.objectRef.resource == \"pods\""

func auditRule(name, condition string) *v1alpha1.ClusterDetectionRule {
	return &v1alpha1.ClusterDetectionRule{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: condition},
	}
}

// registerWebhook points a ValidatingWebhookConfiguration at the
// controller's loopback webhook without a caBundle: the controller's
// certificate manager must fill it in.
func registerWebhook(t *testing.T, ctx context.Context) {
	t.Helper()
	cfg, err := env.RegisterWebhook(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), cfg) })
}

func TestInvalidCELRejectedByWebhookAndStalledWithoutIt(t *testing.T) {
	ctx := context.Background()

	// 1. Webhook off: the invalid rule is stored and goes Stalled with the
	// compile error's line and column.
	rule := auditRule("e2e-bad-cel", badCEL)
	if err := k8s.Create(ctx, rule); err != nil {
		t.Fatalf("create rule without webhook: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), rule) })
	var stalledMsg string
	eventually(t, 30*time.Second, "rule Stalled", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(rule), rule); err != nil {
			return err
		}
		if !conditions.IsStalled(rule) || rule.Status.ObservedGeneration != rule.Generation {
			mf, _ := json.Marshal(rule.ManagedFields)
			return fmt.Errorf("conditions %+v observedGeneration %d managedFields %s", rule.Status.Conditions, rule.Status.ObservedGeneration, mf)
		}
		stalledMsg = conditions.GetMessage(rule, v1alpha1.StalledCondition)
		return nil
	})
	if r := conditions.GetReason(rule, v1alpha1.StalledCondition); r != v1alpha1.CompileFailedReason {
		t.Errorf("Stalled reason = %q, want %s", r, v1alpha1.CompileFailedReason)
	}
	if !strings.Contains(stalledMsg, "condition 2:") || !conditions.IsFalse(rule, v1alpha1.ReadyCondition) {
		t.Errorf("Stalled message %q does not name line 2 of the condition, or Ready is not False", stalledMsg)
	}
	t.Logf("stored rule Stalled: %s", stalledMsg)
	wantKstatus(t, rule, "ClusterDetectionRule", status.FailedStatus) // Flux's wait fails

	// 2. Fixed: Ready, and observedGeneration follows generation.
	rule.Spec.Condition = goodCEL
	if err := k8s.Update(ctx, rule); err != nil {
		t.Fatalf("fix rule: %v", err)
	}
	eventually(t, 30*time.Second, "fixed rule Ready", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(rule), rule); err != nil {
			return err
		}
		if !conditions.IsReady(rule) || conditions.Has(rule, v1alpha1.StalledCondition) || rule.Status.ObservedGeneration != rule.Generation {
			return fmt.Errorf("generation %d observed %d conditions %+v", rule.Generation, rule.Status.ObservedGeneration, rule.Status.Conditions)
		}
		return nil
	})
	if rule.Generation < 2 {
		t.Errorf("generation = %d after an update, want >= 2", rule.Generation)
	}
	t.Logf("fixed rule Ready at generation %d: %s", rule.Generation, conditions.GetMessage(rule, v1alpha1.ReadyCondition))
	wantKstatus(t, rule, "ClusterDetectionRule", status.CurrentStatus)

	// 3. Webhook on: the same invalid CEL is refused before it is stored,
	// with the same message.
	registerWebhook(t, ctx)
	eventually(t, 30*time.Second, "webhook serving with the patched caBundle", func() error {
		var cfg admissionregistrationv1.ValidatingWebhookConfiguration
		if err := k8s.Get(ctx, client.ObjectKey{Name: stack.WebhookConfig}, &cfg); err != nil {
			return err
		}
		if len(cfg.Webhooks[0].ClientConfig.CABundle) == 0 {
			return fmt.Errorf("caBundle not patched yet")
		}
		// A dry-run create goes through admission: it succeeds once the
		// API server trusts the webhook's certificate.
		return k8s.Create(ctx, auditRule("e2e-webhook-probe", goodCEL), client.DryRunAll)
	})
	bad := auditRule("e2e-bad-cel-2", badCEL)
	err := k8s.Create(ctx, bad)
	if err == nil {
		_ = k8s.Delete(ctx, bad)
		t.Fatal("webhook admitted a rule with invalid CEL")
	}
	// The same message but for the rule's name: "condition 2:18: ...".
	_, want, _ := strings.Cut(strings.SplitN(stalledMsg, "\n", 2)[0], `": `)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("webhook denial %q does not carry the Stalled message %q", err, stalledMsg)
	}
	t.Logf("webhook refused: %v", err)
	// Flux validates with a server-side dry run: refused the same way.
	if err := k8s.Create(ctx, auditRule("e2e-bad-cel-dry", badCEL), client.DryRunAll); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("server-side dry run of invalid CEL: err = %v, want a denial with %q", err, want)
	}
	// An unusable playbook is refused too.
	pb := &v1alpha1.ClusterResponsePlaybook{ObjectMeta: metav1.ObjectMeta{Name: "e2e-kill-nothing"},
		Spec: v1alpha1.ResponsePlaybookSpec{Steps: []v1alpha1.Step{{Action: v1alpha1.ActionKill}}}}
	if err := k8s.Create(ctx, pb); err == nil || !strings.Contains(err.Error(), "kill.target") {
		_ = k8s.Delete(ctx, pb)
		t.Errorf("playbook without kill.target: err = %v, want a denial naming kill.target", err)
	}
	// A rule whose embedded test fails is refused too.
	failing := auditRule("e2e-failing-test", goodCEL)
	failing.Spec.Tests = []v1alpha1.RuleTest{{Name: "a get is reported", Expect: v1alpha1.ExpectMatch}}
	failing.Spec.Tests[0].Event.Raw = []byte(`{"kind":"audit","audit":{"verb":"get","objectRef":{"resource":"pods"}}}`)
	if err := k8s.Create(ctx, failing); err == nil || !strings.Contains(err.Error(), "a get is reported") {
		_ = k8s.Delete(ctx, failing)
		t.Errorf("rule with a failing embedded test: err = %v, want a denial naming the test", err)
	}
}

func TestMissingPlaybookKeepsRuleNotReadyUntilItExists(t *testing.T) {
	ctx := context.Background()
	ns := "e2e-playbooks"
	if err := shared.EnsureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}
	rule := &v1alpha1.DetectionRule{
		ObjectMeta: metav1.ObjectMeta{Name: "uses-playbook", Namespace: ns},
		Spec: v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: goodCEL,
			Playbooks: []string{"notify-team"}},
	}
	if err := k8s.Create(ctx, rule); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "rule not Ready for the missing playbook", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(rule), rule); err != nil {
			return err
		}
		if conditions.GetReason(rule, v1alpha1.ReadyCondition) != v1alpha1.PlaybookNotFoundReason || !conditions.IsFalse(rule, v1alpha1.ReadyCondition) {
			return fmt.Errorf("conditions %+v", rule.Status.Conditions)
		}
		return nil
	})
	t.Logf("missing playbook: %s", conditions.GetMessage(rule, v1alpha1.ReadyCondition))
	if conditions.IsStalled(rule) {
		t.Error("a missing playbook stalled the rule; it can heal, so it must not")
	}
	wantKstatus(t, rule, "DetectionRule", status.InProgressStatus)
	pb := &v1alpha1.ResponsePlaybook{
		ObjectMeta: metav1.ObjectMeta{Name: "notify-team", Namespace: ns},
		Spec: v1alpha1.ResponsePlaybookSpec{Steps: []v1alpha1.Step{{Action: v1alpha1.ActionNotify,
			Notify: &v1alpha1.NotifyParams{URL: "https://hooks.example.com/riposte"}}}},
	}
	if err := k8s.Create(ctx, pb); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "playbook Ready and rule Ready", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pb), pb); err != nil {
			return err
		}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(rule), rule); err != nil {
			return err
		}
		if !conditions.IsReady(pb) || !conditions.IsReady(rule) {
			return fmt.Errorf("playbook %+v rule %+v", pb.Status.Conditions, rule.Status.Conditions)
		}
		return nil
	})

	// An invalid playbook is Stalled with a readable reason.
	badPB := &v1alpha1.ResponsePlaybook{
		ObjectMeta: metav1.ObjectMeta{Name: "kill-nothing", Namespace: ns},
		Spec:       v1alpha1.ResponsePlaybookSpec{Steps: []v1alpha1.Step{{Action: v1alpha1.ActionKill}}},
	}
	if err := k8s.Create(ctx, badPB); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "invalid playbook Stalled", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(badPB), badPB); err != nil {
			return err
		}
		if !conditions.IsStalled(badPB) || !strings.Contains(conditions.GetMessage(badPB, v1alpha1.StalledCondition), "kill.target") {
			return fmt.Errorf("conditions %+v", badPB.Status.Conditions)
		}
		return nil
	})
}

func TestReconcileRequestAnnotationIsHandled(t *testing.T) {
	ctx := context.Background()
	rule := auditRule("e2e-requested-at", goodCEL)
	if err := k8s.Create(ctx, rule); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), rule) })
	waitReady(t, ctx, rule)
	token := time.Now().UTC().Format(time.RFC3339Nano)
	patch := client.MergeFrom(rule.DeepCopy())
	rule.Annotations = map[string]string{meta.ReconcileRequestAnnotation: token}
	if err := k8s.Patch(ctx, rule, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "lastHandledReconcileAt", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(rule), rule); err != nil {
			return err
		}
		if rule.Status.LastHandledReconcileAt != token {
			return fmt.Errorf("lastHandledReconcileAt = %q, want %q", rule.Status.LastHandledReconcileAt, token)
		}
		return nil
	})
}
