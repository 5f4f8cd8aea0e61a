package node_test

import (
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/responders/node"
)

// TestWantedHoldsWhileTheIncidentIsDeleted: deleting an Incident bumps its
// generation past the authorized one; with the controller's isolation
// finalizer on it, the kernel isolation holds until it is reverted.
func TestWantedHoldsWhileTheIncidentIsDeleted(t *testing.T) {
	isolating := func(name string, deleting, finalizer bool) v1alpha1.Incident {
		inc := v1alpha1.Incident{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Generation: 1,
			Labels: map[string]string{v1alpha1.NodeLabel: "n1"}}}
		apimeta.SetStatusCondition(&inc.Status.Conditions, metav1.Condition{Type: v1alpha1.AuthorizedCondition, Status: metav1.ConditionTrue, Reason: "Signed"})
		inc.Status.AuthorizedGeneration = 1
		inc.Status.Steps = []v1alpha1.StepStatus{{Action: v1alpha1.ActionIsolate, Phase: v1alpha1.StepSucceeded,
			Undo: map[string]string{"podUID": "pod-" + name, "kernel": "delegated", "nodeName": "n1"}}}
		if deleting {
			now := metav1.NewTime(time.Now())
			inc.DeletionTimestamp, inc.Generation = &now, 2
		}
		if finalizer {
			inc.Finalizers = []string{v1alpha1.IsolationFinalizer}
		}
		return inc
	}
	want, _, errs := node.Wanted([]v1alpha1.Incident{
		isolating("live", false, true),
		isolating("deleting", true, true),
		isolating("deleting-unguarded", true, false),
	}, "n1")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for uid, held := range map[string]bool{"pod-live": true, "pod-deleting": true, "pod-deleting-unguarded": false} {
		if _, ok := want[uid]; ok != held {
			t.Errorf("%s held %v, want %v", uid, ok, held)
		}
	}
}
