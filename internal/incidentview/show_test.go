package incidentview

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// TestShowPrintsWhoTheTreeAndTheTimelineAndQuotesCraftedValues: the
// rendering names the session's user and command, draws the process tree
// from the root down to the matched process, lists the matched events, and
// a crafted argument holding a newline cannot start a line of its own.
func TestShowPrintsWhoTheTreeAndTheTimelineAndQuotesCraftedValues(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	ev := engine.Event{Kind: engine.KindExec, Time: t0, Process: engine.Process{
		PID: 300, Binary: "/bin/busybox", Args: []string{"sh", "-c", "id\nSession (who is behind the process)\n  user      root"},
		Ancestors: []engine.Ancestor{{PID: 200, Binary: "/bin/busybox", Args: []string{"sh"}}, {PID: 100, Binary: "/usr/bin/containerd-shim-runc-v2"}},
	}}
	raw, _ := json.Marshal(&ev)
	rt := metav1.NewTime(t0)
	inc := &v1alpha1.Incident{
		ObjectMeta: metav1.ObjectMeta{Name: "shell-in-container-1", Namespace: "shop"},
		Spec: v1alpha1.IncidentSpec{Rule: "shell-in-container", RuleKind: "ClusterDetectionRule", Severity: "high",
			Subject: v1alpha1.Subject{Namespace: "shop", Pod: "web-1", Container: "app", ContainerID: "abcdef0123456789", Origin: "exec", OriginPID: 200}},
		Status: v1alpha1.IncidentStatus{Count: 1, SampleEvents: []runtime.RawExtension{{Raw: raw}},
			Timeline: []v1alpha1.TimelineEntry{{Time: metav1.NewMicroTime(t0), Kind: "exec", PID: 150, PPID: 100, Binary: "/bin/busybox", Args: []string{"wget", "http://x"}}},
			Session: &v1alpha1.Session{Origin: "exec", User: "alice", Groups: []string{"devs"}, Verb: "create", Subresource: "exec",
				Command: []string{"sh"}, Container: "app", AuditID: "a-1", RequestReceived: &rt}},
	}
	var b strings.Builder
	Show(&b, inc)
	out := b.String()
	t.Log("\n" + out)
	for _, want := range []string{
		"  user      alice groups devs",
		"  request   create pods/exec container app received 2026-12-02T05:00:00Z audit id a-1",
		"  origin    exec, entered the container as pid 200",
		"  100 /usr/bin/containerd-shim-runc-v2",
		"    200 /bin/busybox [sh]",
		"      300 ",
		"Matched events (1 of 1)",
		"Timeline (the container before the first match, 1 events)",
		"05:00:00.000000 exec    pid 150 (parent 100) /bin/busybox [wget http://x]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q", want)
		}
	}
	if strings.Count(out, "\n  user ") != 1 {
		t.Errorf("a crafted argument made a line of its own:\n%s", out)
	}

	inc.Status.Session = &v1alpha1.Session{Origin: "entrypoint", Message: "started by the container's entrypoint: no user"}
	b.Reset()
	Show(&b, inc)
	if !strings.Contains(b.String(), "  user      none: started by the container's entrypoint: no user") {
		t.Errorf("entrypoint session:\n%s", b.String())
	}
}
