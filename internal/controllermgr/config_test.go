package controllermgr_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fluxcd/pkg/runtime/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// config/default is accepted by a real API server (server-side dry run:
// schema, defaults, admission), and the samples go Ready under the
// controller.
func TestConfigAppliesAndSamplesGoReady(t *testing.T) {
	ctx := context.Background()
	if out, err := shared.Kubectl(ctx, "apply", "--dry-run=server", "-k", "../../config/default").CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply --dry-run=server -k config/default: %v\n%s", err, out)
	}
	if err := shared.EnsureServiceAccount(ctx, "shop", "default"); err != nil {
		t.Fatal(err)
	}
	if out, err := shared.Kubectl(ctx, "apply", "-k", "../../config/samples").CombinedOutput(); err != nil {
		t.Fatalf("apply samples: %v\n%s", err, out)
	}
	// The samples are live rules: left in place they would fire on what
	// later tests of the package do.
	t.Cleanup(func() {
		if out, err := shared.Kubectl(context.Background(), "delete", "--ignore-not-found", "-k", "../../config/samples").CombinedOutput(); err != nil {
			t.Errorf("delete samples: %v\n%s", err, out)
		}
	})
	objs := []interface {
		client.Object
		conditions.Setter
	}{
		&v1alpha1.ClusterDetectionRule{}, &v1alpha1.DetectionRule{}, &v1alpha1.ResponsePlaybook{},
	}
	keys := []client.ObjectKey{{Name: "sample-serviceaccount-can-i"}, {Namespace: "shop", Name: "shell-in-shop-api"}, {Namespace: "shop", Name: "capture-and-notify"}}
	for i, o := range objs {
		eventually(t, 30*time.Second, fmt.Sprintf("sample %s Ready", keys[i]), func() error {
			if err := k8s.Get(ctx, keys[i], o); err != nil {
				return err
			}
			if !conditions.IsReady(o) {
				return fmt.Errorf("conditions %+v", o.GetConditions())
			}
			return nil
		})
	}
}
