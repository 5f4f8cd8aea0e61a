package controller

import (
	"net/url"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/internal/session"
)

func agentIncident(origin string, started time.Time, created time.Time) *v1alpha1.Incident {
	inc := &v1alpha1.Incident{}
	inc.Namespace, inc.Name = "shop", "shell-in-container-1"
	inc.Labels = map[string]string{v1alpha1.OriginLabel: string(v1alpha1.OriginAgent)}
	inc.CreationTimestamp = metav1.NewTime(created)
	st := metav1.NewTime(started)
	inc.Spec.Subject = v1alpha1.Subject{Namespace: "shop", Pod: "web-1", Container: "app", ContainerID: "c1",
		Origin: origin, OriginTime: &st, OriginCommand: []string{"sh", "-c", "id"}}
	return inc
}

func observeExec(s *session.Store, id, pod, container, user string, at time.Time, command ...string) {
	q := url.Values{"command": command, "container": {container}}
	ev := engine.Event{Kind: engine.KindAudit, Audit: engine.Audit{
		AuditID: id, Stage: "ResponseStarted", Verb: "create",
		RequestURI:     "/api/v1/namespaces/shop/pods/" + pod + "/exec?" + q.Encode(),
		User:           engine.UserInfo{Username: user},
		ObjectRef:      engine.AuditObjectRef{Resource: "pods", Namespace: "shop", Name: pod, Subresource: "exec"},
		ResponseStatus: engine.Status{Code: 101}, RequestReceivedTimestamp: at,
	}}
	s.Observe(&ev)
}

// TestDecideNamesTheExecUserOnlyFromAMatchingRequest: an entrypoint
// process names nobody at once; an exec process waits for its request and
// is joined when it arrives late; after the wait it says no API server exec
// was recorded; a request for another pod never names anyone.
func TestDecideNamesTheExecUserOnlyFromAMatchingRequest(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	wait := 45 * time.Second
	s := session.NewStore(session.Options{Now: func() time.Time { return t0 }}, nil)

	got, _ := Decide(s, agentIncident(v1alpha1.SessionEntrypoint, t0, t0), t0, wait)
	if got == nil || got.Origin != v1alpha1.SessionEntrypoint || got.User != "" {
		t.Errorf("entrypoint: %+v", got)
	}
	got, _ = Decide(s, agentIncident("", t0, t0), t0, wait)
	if got == nil || got.Origin != v1alpha1.SessionUnknown || got.User != "" {
		t.Errorf("unknown origin: %+v", got)
	}

	inc := agentIncident(v1alpha1.SessionExec, t0.Add(200*time.Millisecond), t0.Add(time.Second))
	observeExec(s, "m1", "web-2", "app", "mallory", t0, "sh", "-c", "id") // another pod
	got, retry := Decide(s, inc, t0.Add(2*time.Second), wait)
	if got != nil || retry != 44*time.Second {
		t.Fatalf("before its request arrives: session %+v, retry in %s, want none and 44s", got, retry)
	}
	observeExec(s, "a1", "web-1", "app", "alice", t0, "sh", "-c", "id") // arrives late
	got, _ = Decide(s, inc, t0.Add(3*time.Second), wait)
	if got == nil || got.User != "alice" || got.AuditID != "a1" || got.Origin != v1alpha1.SessionExec {
		t.Fatalf("late join: %+v", got)
	}

	probe := agentIncident(v1alpha1.SessionExec, t0.Add(2*time.Minute), t0.Add(2*time.Minute))
	got, _ = Decide(s, probe, t0.Add(2*time.Minute+wait), wait)
	if got == nil || got.User != "" || got.Message != session.NoAPIExec {
		t.Errorf("exec without a request after the wait: %+v", got)
	}
}

// TestOnlyAgentContainerIncidentsGetASession: an Incident someone else
// created (no agent origin label) or one without a container is never
// joined, so a forged Incident cannot borrow a user's exec.
func TestOnlyAgentContainerIncidentsGetASession(t *testing.T) {
	t0 := time.Now()
	inc := agentIncident(v1alpha1.SessionExec, t0, t0)
	if !needsSession(inc) {
		t.Fatal("an agent's container Incident must be joined")
	}
	forged := inc.DeepCopy()
	forged.Labels[v1alpha1.OriginLabel] = string(v1alpha1.OriginManual)
	noContainer := inc.DeepCopy()
	noContainer.Spec.Subject.ContainerID = ""
	done := inc.DeepCopy()
	done.Status.Session = &v1alpha1.Session{Origin: v1alpha1.SessionExec}
	for name, x := range map[string]*v1alpha1.Incident{"manual origin": forged, "no container": noContainer, "already decided": done} {
		if needsSession(x) {
			t.Errorf("%s: would be joined", name)
		}
	}
}
