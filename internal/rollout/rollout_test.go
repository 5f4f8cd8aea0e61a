package rollout

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

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
	s := runtime.NewScheme()
	_ = coordinationv1.AddToScheme(s)
	now := time.Now()
	lease := func(node string, renewed time.Time, loaded string) *coordinationv1.Lease {
		secs := int32(180)
		rt := metav1.NewMicroTime(renewed)
		return &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: LeaseName(node), Namespace: "ns", Labels: map[string]string{AgentLabel: "true"},
				Annotations: map[string]string{LoadedAnnotation: loaded}},
			Spec: coordinationv1.LeaseSpec{RenewTime: &rt, LeaseDurationSeconds: &secs},
		}
	}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(
		lease("a", now, "r1=3"),
		lease("b", now, "r1=2"),             // older generation
		lease("c", now.Add(-time.Hour), ""), // stopped reporting
		lease("d", now, "r1=4"),             // newer generation counts
	).Build()
	tr := &Tracker{Reader: c, Namespace: "ns"}
	loaded, total, err := tr.Nodes(context.Background(), "r1", 3)
	if err != nil || loaded != 2 || total != 3 {
		t.Errorf("Nodes = %d/%d, %v; want 2/3", loaded, total, err)
	}
}
