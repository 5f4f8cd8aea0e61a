package incident

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// An Incident of a sequence rule names the rule and carries the event of
// each step, in order, as its sample events.
func TestSequenceIncidentCarriesEachStep(t *testing.T) {
	ns := namespaces(t, 2)
	own, shop := ns[0], ns[1]
	clock := &fakeClock{t: time.Unix(1700000000, 0)}
	w := NewWriter(kc, logr.Discard(), Options{Namespace: own, Now: clock.now, WriteQPS: 1000})
	rule := compile(t, "review-then-secrets", "", v1alpha1.DetectionRuleSpec{
		Source: "audit", Severity: "critical",
		Sequence: &v1alpha1.Sequence{Key: []string{"audit.user.username"}, Window: metav1.Duration{Duration: time.Minute},
			Steps: []v1alpha1.SequenceStep{
				{Name: "review", Condition: `audit.objectRef.resource == "selfsubjectaccessreviews"`},
				{Name: "list", Condition: `audit.objectRef.resource == "secrets" && audit.verb == "list"`},
			}},
	})
	review := ssarEvent(saUser(shop))
	review.Audit.AuditID = "step-review"
	list := ssarEvent(saUser(shop))
	list.Audit.AuditID, list.Audit.Verb, list.Audit.ObjectRef.Resource = "step-list", "list", "secrets"
	list.Time = review.Time.Add(10 * time.Second)
	m := engine.NewMatcher([]*engine.Rule{rule})
	var matches []engine.Match
	for _, ev := range []*engine.Event{&review, &list} {
		for _, mt := range m.Match(ev, nil) {
			matches = append(matches, mt)
			w.Record(mt, ev)
		}
	}
	if len(matches) != 1 {
		t.Fatalf("%d matches, want 1", len(matches))
	}
	ctx := context.Background()
	w.Flush(ctx)
	var incs v1alpha1.IncidentList
	if err := kc.List(ctx, &incs, client.InNamespace(shop)); err != nil {
		t.Fatal(err)
	}
	if len(incs.Items) != 1 {
		t.Fatalf("%d Incidents, want 1", len(incs.Items))
	}
	inc := incs.Items[0]
	samples := inc.Status.SampleEvents
	if inc.Spec.Rule != "review-then-secrets" || len(samples) != 2 ||
		!strings.Contains(string(samples[0].Raw), `"step-review"`) || !strings.Contains(string(samples[1].Raw), `"step-list"`) {
		t.Fatalf("rule %q, samples %d: %v", inc.Spec.Rule, len(samples), samples)
	}
}
