package incident

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/test/cluster"
)

// The writer is tested against a real kube-apiserver with the riposte CRDs:
// it validates names, labels and status the way production does.
var kc client.Client

func TestMain(m *testing.M) {
	os.Exit(cluster.Main(m, cluster.Options{}, func(c *cluster.Cluster) {
		if _, err := c.InstallCRDs(context.Background(), "../../config/crd/bases"); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: install CRDs:", err)
			os.Exit(1)
		}
		s := runtime.NewScheme()
		_ = v1alpha1.AddToScheme(s)
		_ = corev1.AddToScheme(s)
		var err error
		if kc, err = client.New(c.AdminConfig(), client.Options{Scheme: s}); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			os.Exit(1)
		}
	}))
}

var nsSeq atomic.Int32

// namespaces creates fresh namespaces for one test, so tests sharing the API
// server never see each other's Incidents.
func namespaces(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	for range n {
		name := fmt.Sprintf("inc-%d", nsSeq.Add(1))
		if err := kc.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
		out = append(out, name)
	}
	return out
}

func compile(t *testing.T, name, ns string, spec v1alpha1.DetectionRuleSpec) *engine.Rule {
	t.Helper()
	r, err := engine.Compile(name, ns, &spec)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func saUser(ns string) string { return "system:serviceaccount:" + ns + ":api" }

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
	ns := namespaces(t, 2)
	own, shop := ns[0], ns[1]
	c := kc
	clock := &fakeClock{t: time.Unix(1700000000, 0)}
	w := NewWriter(c, logr.Discard(), Options{Namespace: own, Now: clock.now, WriteQPS: 1000})
	rule := compile(t, "sa-ssar", "", v1alpha1.DetectionRuleSpec{
		Source: "audit", Severity: "medium", Condition: `audit.verb == "create"`,
		Throttle: &v1alpha1.Throttle{Window: metav1.Duration{Duration: time.Minute}, Key: []string{"audit.user.username"}},
	})
	ev := ssarEvent(saUser(shop))
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
	if err := c.List(ctx, &list, client.InNamespace(shop)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("got %d incidents, want 1", len(list.Items))
	}
	inc := list.Items[0]
	if inc.Status.Count != 100 {
		t.Errorf("count = %d, want 100", inc.Status.Count)
	}
	if inc.Namespace != shop {
		t.Errorf("namespace = %q, want the service account's namespace %s", inc.Namespace, shop)
	}
	s := inc.Spec.Subject
	if s.User != saUser(shop) || s.ServiceAccount != "api" || s.Verb != "create" || len(s.SourceIPs) != 1 || s.SourceIPs[0] != "10.0.0.7" {
		t.Errorf("subject = %+v", s)
	}
	if got := len(inc.Status.SampleEvents); got != DefaultMaxSamples {
		t.Errorf("samples = %d, want %d", got, DefaultMaxSamples)
	}
	// metav1.Time keeps seconds: 100 matches 100ms apart span 9.9s.
	if span := inc.Status.LastSeen.Sub(inc.Status.FirstSeen.Time); span != 9*time.Second {
		t.Errorf("lastSeen - firstSeen = %v, want 9s", span)
	}
	// The phase is the Incident reconciler's to write, not the writer's.
	if inc.Status.Phase != "" || inc.Spec.Rule != "sa-ssar" || inc.Spec.RuleKind != "ClusterDetectionRule" {
		t.Errorf("phase %q rule %q kind %q", inc.Status.Phase, inc.Spec.Rule, inc.Spec.RuleKind)
	}

	// After the window a new match opens a new Incident.
	clock.t = clock.t.Add(2 * time.Minute)
	w.Record(engine.Match{Rule: rule}, &ev)
	w.Flush(ctx)
	if err := c.List(ctx, &list, client.InNamespace(shop)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 {
		t.Errorf("after the window: %d incidents, want 2", len(list.Items))
	}
}

func TestIncidentNamespace(t *testing.T) {
	ns := namespaces(t, 3)
	own, shop, team := ns[0], ns[1], ns[2]
	clusterRule := compile(t, "any", "", v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "true"})
	// A namespaced rule's name is namespace/name, not a valid label value:
	// the real API server refuses such a label, so this also proves the
	// Incident's labels are valid.
	nsRule := compile(t, "mine", team, v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "true"})
	human := ssarEvent("alice@example.com")
	sa := ssarEvent(saUser(shop))
	for _, tc := range []struct {
		name   string
		rule   *engine.Rule
		ev     engine.Event
		want   string
		labels map[string]string
	}{
		{"cluster-level subject goes to the controller namespace", clusterRule, human, own,
			map[string]string{v1alpha1.RuleLabel: "any", v1alpha1.RuleKindLabel: "ClusterDetectionRule"}},
		{"service account subject goes to its namespace", clusterRule, sa, shop,
			map[string]string{v1alpha1.RuleLabel: "any", v1alpha1.RuleKindLabel: "ClusterDetectionRule"}},
		{"namespaced rule keeps its incidents", nsRule, sa, team,
			map[string]string{v1alpha1.RuleLabel: "mine", v1alpha1.RuleNamespaceLabel: team, v1alpha1.RuleKindLabel: "DetectionRule"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWriter(kc, logr.Discard(), Options{Namespace: own, WriteQPS: 1000})
			w.Record(engine.Match{Rule: tc.rule}, &tc.ev)
			w.Flush(context.Background())
			var list v1alpha1.IncidentList
			if err := kc.List(context.Background(), &list, client.InNamespace(tc.want), client.MatchingLabels(tc.labels)); err != nil || len(list.Items) != 1 {
				t.Fatalf("incidents in %s labelled %v: %d, %v", tc.want, tc.labels, len(list.Items), err)
			}
			if err := kc.DeleteAllOf(context.Background(), &v1alpha1.Incident{}, client.InNamespace(tc.want)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// BenchmarkRecordFolded is the cost of a match that folds into an open
// Incident: the hot path of a noisy rule.
func BenchmarkRecordFolded(b *testing.B) {
	// Folding never writes: the client is not called on this path.
	w := NewWriter(kc, logr.Discard(), Options{Namespace: "riposte-system"})
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
	ns := namespaces(t, 2)
	own, shop := ns[0], ns[1]
	c := kc
	w := NewWriter(c, logr.Discard(), Options{Namespace: own, WriteQPS: 1000})
	rule := compile(t, "r", "", v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "true"})
	ev := ssarEvent(saUser(shop))
	ctx := context.Background()
	w.Record(engine.Match{Rule: rule}, &ev)
	w.Flush(ctx)
	var list v1alpha1.IncidentList
	if err := c.List(ctx, &list, client.InNamespace(shop)); err != nil || len(list.Items) != 1 {
		t.Fatalf("%d incidents, %v", len(list.Items), err)
	}
	if err := c.Delete(ctx, &list.Items[0]); err != nil {
		t.Fatal(err)
	}
	w.Record(engine.Match{Rule: rule}, &ev)
	w.Flush(ctx) // the patch finds it gone
	w.Flush(ctx) // and the retry creates it
	if err := c.List(ctx, &list, client.InNamespace(shop)); err != nil || len(list.Items) != 1 || list.Items[0].Status.Count != 2 {
		t.Fatalf("after delete: %d incidents (%v), want 1 with count 2", len(list.Items), err)
	}
}

// A container's first process can match before the container's status is
// known; the Incident's subject is completed by the next match of the same
// container, and never from another container's match.
func TestLaterMatchCompletesSubject(t *testing.T) {
	ns := namespaces(t, 2)
	own, shop := ns[0], ns[1]
	w := NewWriter(kc, logr.Discard(), Options{Namespace: own, WriteQPS: 1000})
	rule := compile(t, "shell", "", v1alpha1.DetectionRuleSpec{
		Source: "process", Severity: "high", Condition: `event.kind == "exec"`,
		Throttle: &v1alpha1.Throttle{Window: metav1.Duration{Duration: time.Hour}, Key: []string{"process.binary"}},
	})
	exec := func(containerID, name, image string) engine.Event {
		ev := engine.Event{Kind: engine.KindExec, Time: time.Now()}
		ev.Process.Binary, ev.Process.PID = "/bin/sh", 7
		ev.Pod.Namespace, ev.Pod.Name, ev.Pod.UID = shop, "web-1", "pod-uid-1"
		ev.Container.ID, ev.Container.Name, ev.Container.Image = containerID, name, image
		return ev
	}
	ctx := context.Background()
	get := func() v1alpha1.Subject {
		t.Helper()
		var list v1alpha1.IncidentList
		if err := kc.List(ctx, &list, client.InNamespace(shop)); err != nil || len(list.Items) != 1 {
			t.Fatalf("%d incidents, %v", len(list.Items), err)
		}
		return list.Items[0].Spec.Subject
	}

	early := exec("c1", "", "") // before the kubelet reported the container
	w.Record(engine.Match{Rule: rule}, &early)
	w.Flush(ctx)
	if s := get(); s.ContainerID != "c1" || s.Container != "" || s.Image != "" {
		t.Fatalf("first subject %+v", s)
	}
	other := exec("c2", "sidecar", "evil:1") // same key, another container
	w.Record(engine.Match{Rule: rule}, &other)
	w.Flush(ctx)
	if s := get(); s.Container != "" || s.Image != "" {
		t.Fatalf("another container's identity leaked into the subject: %+v", s)
	}
	late := exec("c1", "app", "registry.example/web:1.4")
	w.Record(engine.Match{Rule: rule}, &late)
	w.Flush(ctx)
	if s := get(); s.ContainerID != "c1" || s.Container != "app" || s.Image != "registry.example/web:1.4" || s.Pod != "web-1" {
		t.Fatalf("subject not completed: %+v", s)
	}
}
