package controllermgr_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// kstatusOf computes the status Flux's health checks (kstatus) give obj.
func kstatusOf(t *testing.T, obj client.Object, kind string) status.Status {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind(kind)
	res, err := status.Compute(u)
	if err != nil {
		t.Fatalf("kstatus: %v", err)
	}
	return res.Status
}

func wantKstatus(t *testing.T, obj client.Object, kind string, want status.Status) {
	t.Helper()
	if got := kstatusOf(t, obj, kind); got != want {
		t.Errorf("kstatus of %s %s = %s, want %s", kind, obj.GetName(), got, want)
	}
}
