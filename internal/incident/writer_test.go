package incident

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

func scheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func compile(t *testing.T, name, ns string, spec v1alpha1.DetectionRuleSpec) *engine.Rule {
	t.Helper()
	r, err := engine.Compile(name, ns, &spec)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func ssarEvent(user string) engine.Event {
	ev := engine.Event{Kind: engine.KindAudit, Time: time.Unix(1700000000, 0)}
	ev.Audit.Stage = "ResponseComplete"
	ev.Audit.Verb = "create"
	ev.Audit.User.Username = user
	ev.Audit.ObjectRef.Resource = "selfsubjectaccessreviews"
	ev.Audit.SourceIPs = []string{"10.0.0.7"}
	return ev
}

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestRepeatedMatchesInWindowFoldIntoOneIncident(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(scheme(t)).WithStatusSubresource(&v1alpha1.Incident{}).Build()
	clock := &fakeClock{t: time.Unix(1700000000, 0)}
	w := NewWriter(c, logr.Discard(), Options{Namespace: "riposte-system", Now: clock.now, WriteQPS: 1000})
	rule := compile(t, "sa-ssar", "", v1alpha1.DetectionRuleSpec{
		Source: "audit", Severity: "medium", Condition: `audit.verb == "create"`,
		Throttle: &v1alpha1.Throttle{Window: metav1.Duration{Duration: time.Minute}, Key: []string{"audit.user.username"}},
	})
	ev := ssarEvent("system:serviceaccount:shop:api")
	ctx := context.Background()
	for i := range 100 {
		w.Record(engine.Match{Rule: rule, Output: "out"}, &ev)
		clock.t = clock.t.Add(100 * time.Millisecond)
		if i == 49 {
			w.Flush(ctx) // half-way: the second flush must update, not create
		}
	}
	w.Flush(ctx)

	var list v1alpha1.IncidentList
	if err := c.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("got %d incidents, want 1", len(list.Items))
	}
	inc := list.Items[0]
	if inc.Status.Count != 100 {
		t.Errorf("count = %d, want 100", inc.Status.Count)
	}
	if inc.Namespace != "shop" {
		t.Errorf("namespace = %q, want the service account's namespace shop", inc.Namespace)
	}
	s := inc.Spec.Subject
	if s.User != "system:serviceaccount:shop:api" || s.ServiceAccount != "api" || s.Verb != "create" || len(s.SourceIPs) != 1 || s.SourceIPs[0] != "10.0.0.7" {
		t.Errorf("subject = %+v", s)
	}
	if got := len(inc.Status.SampleEvents); got != DefaultMaxSamples {
		t.Errorf("samples = %d, want %d", got, DefaultMaxSamples)
	}
	// metav1.Time keeps seconds: 100 matches 100ms apart span 9.9s.
	if span := inc.Status.LastSeen.Sub(inc.Status.FirstSeen.Time); span != 9*time.Second {
		t.Errorf("lastSeen - firstSeen = %v, want 9s", span)
	}
	if inc.Status.Phase != "Open" || inc.Spec.Rule != "sa-ssar" || inc.Spec.RuleKind != "ClusterDetectionRule" {
		t.Errorf("phase %q rule %q kind %q", inc.Status.Phase, inc.Spec.Rule, inc.Spec.RuleKind)
	}

	// After the window a new match opens a new Incident.
	clock.t = clock.t.Add(2 * time.Minute)
	w.Record(engine.Match{Rule: rule}, &ev)
	w.Flush(ctx)
	if err := c.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 {
		t.Errorf("after the window: %d incidents, want 2", len(list.Items))
	}
}

func TestIncidentNamespace(t *testing.T) {
	clusterRule := compile(t, "any", "", v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "true"})
	nsRule := compile(t, "mine", "team-a", v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "true"})
	human := ssarEvent("alice@example.com")
	sa := ssarEvent("system:serviceaccount:shop:api")
	for _, tc := range []struct {
		name string
		rule *engine.Rule
		ev   engine.Event
		want string
	}{
		{"cluster-level subject goes to the controller namespace", clusterRule, human, "riposte-system"},
		{"service account subject goes to its namespace", clusterRule, sa, "shop"},
		{"namespaced rule keeps its incidents", nsRule, sa, "team-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(scheme(t)).WithStatusSubresource(&v1alpha1.Incident{}).Build()
			w := NewWriter(c, logr.Discard(), Options{Namespace: "riposte-system", WriteQPS: 1000})
			w.Record(engine.Match{Rule: tc.rule}, &tc.ev)
			w.Flush(context.Background())
			var list v1alpha1.IncidentList
			if err := c.List(context.Background(), &list, client.InNamespace(tc.want)); err != nil || len(list.Items) != 1 {
				t.Fatalf("incidents in %s: %d, %v", tc.want, len(list.Items), err)
			}
		})
	}
}

// BenchmarkRecordFolded is the cost of a match that folds into an open
// Incident: the hot path of a noisy rule.
func BenchmarkRecordFolded(b *testing.B) {
	s := runtime.NewScheme()
	_ = v1alpha1.AddToScheme(s)
	c := fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&v1alpha1.Incident{}).Build()
	w := NewWriter(c, logr.Discard(), Options{Namespace: "riposte-system"})
	r, err := engine.Compile("sa-ssar", "", &v1alpha1.DetectionRuleSpec{
		Source: "audit", Severity: "medium", Condition: `audit.verb == "create"`,
		Throttle: &v1alpha1.Throttle{Window: metav1.Duration{Duration: time.Hour}, Key: []string{"audit.user.username"}},
	})
	if err != nil {
		b.Fatal(err)
	}
	ev := ssarEvent("system:serviceaccount:shop:api")
	m := engine.Match{Rule: r}
	w.Record(m, &ev)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		w.Record(m, &ev)
	}
}

// An Incident deleted while its window is open is created again by the
// next match, with the whole count.
func TestDeletedIncidentIsRecreated(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(scheme(t)).WithStatusSubresource(&v1alpha1.Incident{}).Build()
	w := NewWriter(c, logr.Discard(), Options{Namespace: "riposte-system", WriteQPS: 1000})
	rule := compile(t, "r", "", v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "true"})
	ev := ssarEvent("system:serviceaccount:shop:api")
	ctx := context.Background()
	w.Record(engine.Match{Rule: rule}, &ev)
	w.Flush(ctx)
	var list v1alpha1.IncidentList
	if err := c.List(ctx, &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("%d incidents, %v", len(list.Items), err)
	}
	if err := c.Delete(ctx, &list.Items[0]); err != nil {
		t.Fatal(err)
	}
	w.Record(engine.Match{Rule: rule}, &ev)
	w.Flush(ctx) // the patch finds it gone
	w.Flush(ctx) // and the retry creates it
	if err := c.List(ctx, &list); err != nil || len(list.Items) != 1 || list.Items[0].Status.Count != 2 {
		t.Fatalf("after delete: %d incidents (%v), want 1 with count 2", len(list.Items), err)
	}
}
