package audit

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// chanSink passes every match on with a copy of its event.
type chanSink chan engine.Event

func (c chanSink) Record(_ engine.Match, ev *engine.Event) { c <- *ev }

// podCreate is a pod create as kube-apiserver posts it at RequestResponse
// level, answered with code.
func podCreate(name string, code int) string {
	return fmt.Sprintf(`{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"id-%s","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/pods","verb":"create",`+
		`"user":{"username":"system:serviceaccount:shop:api","extra":{"authentication.kubernetes.io/pod-name":["api-1"]}},"sourceIPs":["10.244.0.9"],"userAgent":"kubectl/v1.37.2",`+
		`"objectRef":{"resource":"pods","namespace":"shop","name":%q,"apiVersion":"v1"},"responseStatus":{"metadata":{},"code":%d},`+
		`"requestObject":{"kind":"Pod","apiVersion":"v1","metadata":{"name":%q},"spec":{"containers":[{"name":"c","securityContext":{"privileged":true}}]}},`+
		`"responseObject":{"kind":"Pod","apiVersion":"v1","metadata":{"name":%q,"namespace":"shop","uid":"uid-%s"},"spec":{"containers":[{"name":"c","securityContext":{"privileged":true}}]}},`+
		`"stageTimestamp":"2026-11-20T10:00:00.000000Z"}`, name, name, code, name, name, name)
}

// An object rule fires from the audit stream on the pod a request created,
// with the request's actor in the event; a denied request derives nothing.
func TestObjectRulesFireFromAuditWithTheActor(t *testing.T) {
	rule, err := engine.Compile("privileged-pod", "", &v1alpha1.DetectionRuleSpec{
		Source: "object", Severity: "high",
		Condition: `event.op == "create" && object.kind == "Pod" && pod.privileged`,
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := make(chanSink, 10)
	src := New(staticRules{rule}, sink, logr.Discard(), Options{Tokens: []string{testToken}, Workers: 1})
	srv := httptest.NewTLSServer(src)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go src.Run(ctx)

	// In one batch, handled in order by the one worker: the marker last.
	body := `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[` +
		strings.Join([]string{podCreate("denied", 403), auditEvent(1, "alice", "configmaps"), podCreate("marker", 201)}, ",") + `]}`
	if code := post(t, srv.Client(), srv.URL, testToken, []byte(body)); code != http.StatusOK {
		t.Fatalf("post: %d", code)
	}
	select {
	case ev := <-sink:
		if ev.Kind != engine.KindObject || ev.Op != "create" || ev.Pod.Name != "marker" || ev.Pod.UID != "uid-marker" {
			t.Errorf("first match is %q %q on pod %+v, want the marker pod's create (the denied one derives nothing)", ev.Kind, ev.Op, ev.Pod)
		}
		if ev.Audit.User.Username != "system:serviceaccount:shop:api" || ev.Audit.SourceIPs[0] != "10.244.0.9" || ev.Audit.UserAgent != "kubectl/v1.37.2" {
			t.Errorf("the actor is missing: %+v", ev.Audit)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no match within 10s")
	}
	if got := value(src.m.events.WithLabelValues(resultObject)); got != 1 {
		t.Errorf("riposte_audit_events_total{result=%q} = %v, want 1", resultObject, got)
	}
}
