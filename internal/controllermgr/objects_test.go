package controllermgr_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// A Pod created by hand (no ownerReferences) is seen by the object source
// and the shipped rule makes an Incident naming it; a ReplicaSet's Pod is not.
func TestOwnerlessPodBecomesIncident(t *testing.T) {
	ctx := context.Background()
	rule := shippedRule(t, "../../rules/object/pods.yaml", "ownerless-pod-created")
	if err := k8s.Create(ctx, rule); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ctx, rule)
	ns := "e2e-objects"
	if err := shared.EnsureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}
	pod := func(name string, owners []metav1.OwnerReference) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, OwnerReferences: owners},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
		}
	}
	owned := pod("web-1", []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web", UID: "6f1d3c8e-0000-4000-8000-000000000001"}})
	bare := pod("debug", nil)
	for _, p := range []*corev1.Pod{owned, bare} {
		if err := k8s.Create(ctx, p); err != nil {
			t.Fatalf("create pod %s: %v", p.Name, err)
		}
	}
	// A second bare pod, created last, is the marker: the pod watch, the
	// object source and the Incident writer keep order, so once its
	// Incident exists a wrong one for web-1 would exist too.
	marker := pod("marker", nil)
	if err := k8s.Create(ctx, marker); err != nil {
		t.Fatalf("create pod %s: %v", marker.Name, err)
	}
	var list v1alpha1.IncidentList
	byPod := map[string]v1alpha1.Incident{}
	eventually(t, 30*time.Second, "Incident for the marker pod", func() error {
		if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		byPod = map[string]v1alpha1.Incident{}
		for _, inc := range list.Items {
			byPod[inc.Spec.Subject.Pod] = inc
		}
		if _, ok := byPod["marker"]; !ok {
			return fmt.Errorf("no incident for the marker pod in %s", ns)
		}
		return nil
	})
	if len(list.Items) != 2 {
		t.Fatalf("%d incidents in %s, want 2 (the bare pod and the marker): %v", len(list.Items), ns, byPod)
	}
	inc, ok := byPod["debug"]
	if !ok {
		t.Fatalf("no incident for the bare pod: %v", byPod)
	}
	if inc.Spec.Rule != "ownerless-pod-created" || inc.Spec.Subject.Namespace != ns || inc.Spec.Subject.PodUID != string(bare.UID) {
		t.Errorf("incident %s: rule %q subject %+v", inc.Name, inc.Spec.Rule, inc.Spec.Subject)
	}
	t.Logf("incident %s/%s: %s", inc.Namespace, inc.Name, inc.Spec.Output)
}
