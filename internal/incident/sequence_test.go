package incident

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
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

// The writer's collectors, which the agent and the controller register,
// export what sequence state did, evictions included.
func TestSequenceCountsAreExported(t *testing.T) {
	w := NewWriter(kc, logr.Discard(), Options{Namespace: "x"})
	reg := prometheus.NewRegistry()
	reg.MustRegister(w.Collectors()...)
	rule := compile(t, "flood", "", v1alpha1.DetectionRuleSpec{Source: "process", Severity: "low",
		Sequence: &v1alpha1.Sequence{Key: []string{"container.id"}, Window: metav1.Duration{Duration: time.Hour}, MaxKeys: 1,
			Steps: []v1alpha1.SequenceStep{{Name: "a", Condition: `process.name == "a"`}, {Name: "b", Condition: `process.name == "b"`}}}})
	before := engine.SequenceTotals().Evicted
	m := engine.NewMatcher([]*engine.Rule{rule})
	for _, id := range []string{"c1", "c2", "c3"} {
		m.Match(&engine.Event{Kind: engine.KindExec, Container: engine.Container{ID: id}, Process: engine.Process{Name: "a", Binary: "/a"}}, nil)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "riposte_sequence_keys_evicted_total" {
			got = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if got < float64(before+2) {
		t.Fatalf("riposte_sequence_keys_evicted_total = %v, want at least %d", got, before+2)
	}
}
