package rollout

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/test/cluster"
)

// Leases are read from a real kube-apiserver.
var kc client.Client

func TestMain(m *testing.M) {
	os.Exit(cluster.Main(m, cluster.Options{}, func(c *cluster.Cluster) {
		s := runtime.NewScheme()
		_ = coordinationv1.AddToScheme(s)
		_ = corev1.AddToScheme(s)
		var err error
		if kc, err = client.New(c.AdminConfig(), client.Options{Scheme: s}); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			os.Exit(1)
		}
	}))
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	in := map[types.UID]int64{"b": 2, "a": 7}
	s := Encode(in)
	if s != "a=7,b=2" {
		t.Errorf("Encode = %q, want sorted pairs", s)
	}
	out := Decode(s + ",junk,c=x")
	if len(out) != 2 || out["a"] != 7 || out["b"] != 2 {
		t.Errorf("Decode = %v", out)
	}
}

func TestTrackerCountsLiveAgentsOnly(t *testing.T) {
	ctx := context.Background()
	if err := kc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	lease := func(node string, renewed time.Time, loaded string) *coordinationv1.Lease {
		secs := int32(180)
		rt := metav1.NewMicroTime(renewed)
		return &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: LeaseName(node), Namespace: "ns", Labels: map[string]string{v1alpha1.AgentLabel: "true"},
				Annotations: map[string]string{v1alpha1.LoadedRulesAnnotation: loaded}},
			Spec: coordinationv1.LeaseSpec{RenewTime: &rt, LeaseDurationSeconds: &secs},
		}
	}
	for _, l := range []*coordinationv1.Lease{
		lease("a", now, "r1=3"),
		lease("b", now, "r1=2"),             // older generation
		lease("c", now.Add(-time.Hour), ""), // stopped reporting
		lease("d", now, "r1=4"),             // newer generation counts
	} {
		if err := kc.Create(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	// An unlabelled Lease (a leader-election lock) is not an agent.
	other := lease("e", now, "r1=3")
	other.Name, other.Labels = "riposte-controller-leader", nil
	if err := kc.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	tr := &Tracker{Reader: kc, Namespace: "ns"}
	loaded, total, err := tr.Nodes(ctx, "r1", 3)
	if err != nil || loaded != 2 || total != 3 {
		t.Errorf("Nodes = %d/%d, %v; want 2/3", loaded, total, err)
	}
}
