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

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/ruleset"
	"github.com/riposte-dev/riposte/rules"
)

// matchSink passes every match on.
type matchSink chan engine.Match

func (c matchSink) Record(m engine.Match, _ *engine.Event) { c <- m }

func podExec(name string) string {
	return fmt.Sprintf(`{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"exec-%s","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/shop/pods/%s/exec?command=sh","verb":"get",`+
		`"user":{"username":"mallory"},"sourceIPs":["192.0.2.10"],"userAgent":"kubectl/v1.37.2","objectRef":{"resource":"pods","namespace":"shop","name":%q,"subresource":"exec","apiVersion":"v1"},`+
		`"responseStatus":{"metadata":{},"code":101},"stageTimestamp":"2026-11-20T10:01:00.000000Z"}`, name, name, name)
}

// The shipped sequence exec-into-privileged-pod fires live in the audit
// source: a privileged pod created in one batch, an exec into it in a later
// one (workers share the sequence state), and the match carries both steps.
// An exec into another pod fires only the single-event rule; it comes
// first in its batch, so the sequence's match is the marker it was seen.
func TestShippedSequenceFiresAcrossBatches(t *testing.T) {
	set, errs := ruleset.LoadFS(rules.FS)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	live, notLive := set.Live()
	if len(notLive) > 0 {
		t.Fatal(notLive)
	}
	sink := make(matchSink, 100)
	src := New(staticRules(live), sink, logr.Discard(), Options{Tokens: []string{testToken}, Workers: 4})
	srv := httptest.NewTLSServer(src)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go src.Run(ctx)

	wait := func(rule string) engine.Match {
		t.Helper()
		for {
			select {
			case m := <-sink:
				if m.Rule.Name() == "exec-into-privileged-pod" && rule != m.Rule.Name() {
					t.Fatalf("the sequence fired early: %s", m.Output)
				}
				if m.Rule.Name() == rule {
					return m
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no %s match within 10s", rule)
			}
		}
	}
	batch := func(items ...string) {
		t.Helper()
		body := `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[` + strings.Join(items, ",") + `]}`
		if code := post(t, srv.Client(), srv.URL, testToken, []byte(body)); code != http.StatusOK {
			t.Fatalf("post: %d", code)
		}
	}
	batch(podCreate("root", 201))
	wait("privileged-pod")
	batch(podExec("web"), podExec("root"))
	m := wait("exec-into-privileged-pod")
	if len(m.Steps) != 2 || m.Steps[0].Step != "pod-created" || !strings.Contains(string(m.Steps[0].Event), `"uid-root"`) ||
		m.Steps[1].Step != "exec" || !strings.Contains(string(m.Steps[1].Event), `"exec-root"`) {
		t.Fatalf("steps %+v", m.Steps)
	}
	if !strings.Contains(m.Output, "mallory exec into the privileged or hostPath pod shop/root") {
		t.Errorf("output %q", m.Output)
	}
}
