package controllermgr_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// The shipped sequence serviceaccount-access-review-then-secrets through the
// real API server and audit webhook: a ServiceAccount asks what it may do,
// then lists Secrets; the controller's audit matcher completes the chain and
// the Incident names the sequence rule and carries both steps' events. The
// CRD itself refuses a rule with both a condition and a sequence.
func TestShippedSequenceBecomesIncident(t *testing.T) {
	ctx := context.Background()
	both := shippedRule(t, "../../rules/audit/sequences.yaml", "serviceaccount-access-review-then-secrets")
	both.Name = "e2e-condition-and-sequence"
	both.Spec.Condition = "true"
	if err := k8s.Create(ctx, both, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "set exactly one of condition and sequence") {
		t.Errorf("a rule with a condition and a sequence: err = %v, want the CRD's refusal", err)
	}

	rule := shippedRule(t, "../../rules/audit/sequences.yaml", "serviceaccount-access-review-then-secrets")
	if err := k8s.Create(ctx, rule); err != nil && !isAlreadyExists(err) {
		t.Fatalf("create shipped rule: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), rule) })
	waitReady(t, ctx, rule)

	const ns, sa = "seq", "api"
	askCanI(t, ctx, ns, sa, 1)
	cfg, err := shared.ServiceAccountConfig(ctx, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Refused (the account may not list Secrets): the attempt is the step.
	_, _ = cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})

	user := "system:serviceaccount:" + ns + ":" + sa
	var inc v1alpha1.Incident
	eventually(t, 30*time.Second, "Incident of the sequence", func() error {
		incs, err := incidentsFor(ctx, ns, user)
		if err != nil {
			return err
		}
		// The writer creates the Incident, then writes its status: the
		// step events arrive with the second write.
		for _, i := range incs {
			if i.Spec.Rule == rule.Name && len(i.Status.SampleEvents) > 0 {
				inc = i
				return nil
			}
		}
		return fmt.Errorf("%d incidents of %s, none of %s with its status written", len(incs), user, rule.Name)
	})
	samples := inc.Status.SampleEvents
	if len(samples) != 2 || !strings.Contains(string(samples[0].Raw), "selfsubjectaccessreviews") || !strings.Contains(string(samples[1].Raw), `"secrets"`) ||
		inc.Spec.Severity != "critical" || !strings.Contains(inc.Spec.Output, "asked what it may do, then list secrets in seq") {
		t.Fatalf("incident %s/%s: output %q, %d samples: %s", inc.Namespace, inc.Name, inc.Spec.Output, len(samples), samples)
	}
	t.Logf("incident %s/%s: %s", inc.Namespace, inc.Name, inc.Spec.Output)
}
