package controllermgr_test

import (
	"context"
	"encoding/json"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// TestAnAgentCannotWriteWhoIsBehindAProcess: the agent of a node creates
// its own container Incident and counts its matches in status, but writing
// status.session (naming a user behind the process) is refused at
// admission: the session is the controller's, from the audit webhook.
func TestAnAgentCannotWriteWhoIsBehindAProcess(t *testing.T) {
	ctx := context.Background()
	ns := "session-forge"
	ensureNamespace(t, ctx, ns)
	if err := k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := podWithIP(t, ctx, ns, "web", "node-a", "")
	agent := agentClient(t, ctx, "node-a")
	inc := manualIncident(ns, "shell-in-container-forge", v1alpha1.OriginAgent, pod, "mark")
	inc.Labels[v1alpha1.NodeLabel] = "node-a"
	inc.Spec.Subject.ContainerID, inc.Spec.Subject.Origin = "c1", v1alpha1.SessionExec
	if err := agent.Create(ctx, inc); err != nil {
		t.Fatalf("the agent creates its own node's Incident: %v", err)
	}
	patch := func(body map[string]any) error {
		b, _ := json.Marshal(map[string]any{"status": body})
		return agent.Status().Patch(ctx, inc, client.RawPatch(types.MergePatchType, b))
	}
	// The policy reads the old status, which may not exist yet: the
	// agent's first count lands at once.
	if err := patch(map[string]any{"count": 3}); err != nil {
		t.Fatalf("the agent counts its matches on an Incident without status: %v", err)
	}
	for _, forged := range []map[string]any{
		{"origin": "exec", "user": "alice", "auditID": "forged"},
		{"groups": []string{"system:masters"}},
		{"command": []string{"sh"}, "sourceIPs": []string{"10.0.0.1"}},
	} {
		err := patch(map[string]any{"session": forged})
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Fatalf("the agent wrote status.session %v: %v", forged, err)
		}
	}
}
