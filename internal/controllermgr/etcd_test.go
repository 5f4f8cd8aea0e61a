package controllermgr_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// etcd is killed and started again while requests a rule matches keep
// coming: the API server answers them with errors meanwhile (and still
// audits them), the controller's Incident writes fail and are retried, and
// afterwards every request the API server wrote to its audit log has exactly
// one Incident: none lost, none duplicated.
func TestEtcdRestartUnderLoadLosesNoIncident(t *testing.T) {
	ctx := context.Background()
	const ns = "e2e-etcd-restart"
	if err := shared.EnsureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}
	// One Incident per object name: the throttle key.
	rule := &v1alpha1.ClusterDetectionRule{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-etcd-restart-read"},
		Spec: v1alpha1.DetectionRuleSpec{
			Source:    "audit",
			Severity:  "low",
			Condition: `audit.verb == "get" && audit.objectRef.resource == "configmaps" && audit.objectRef.namespace == "` + ns + `" && audit.objectRef.name.startsWith("etcd-fault-")`,
			Throttle:  &v1alpha1.Throttle{Window: metav1.Duration{Duration: time.Hour}, Key: []string{"audit.objectRef.name"}},
		},
	}
	if err := k8s.Create(ctx, rule); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = k8s.Delete(ctx, rule) }()
	waitReady(t, ctx, rule)

	hc, err := rest.HTTPClientFor(shared.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	var made, failed atomic.Int64
	get := func(i int) {
		url := fmt.Sprintf("%s/api/v1/namespaces/%s/configmaps/etcd-fault-%d", shared.Host(), ns, i)
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
		made.Add(1)
		resp, err := hc.Do(req)
		if err != nil {
			failed.Add(1)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			failed.Add(1)
		}
	}
	// The load: 10 requests a second, each for a new name, until stopped.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() { defer wg.Done(); get(i) }()
		}
	}()
	// Some Incidents written before the fault.
	eventually(t, 30*time.Second, "Incidents before the fault", func() error {
		if n := len(incidentKeys(t, ctx, ns, rule.Name)); n < 10 {
			return fmt.Errorf("%d Incidents", n)
		}
		return nil
	})
	var failedWhileDown int64
	err = shared.RestartEtcd(ctx, func() {
		// Down until the API server has failed requests of the load: the
		// outage is seen, whatever the machine's speed.
		start := failed.Load()
		eventually(t, 30*time.Second, "requests failing while etcd is down", func() error {
			if failedWhileDown = failed.Load() - start; failedWhileDown < 5 {
				return fmt.Errorf("%d failed", failedWhileDown)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("restart etcd: %v", err)
	}
	// Load after the restart, then stop.
	after := made.Load()
	eventually(t, 30*time.Second, "requests after the restart", func() error {
		if n := made.Load() - after; n < 30 {
			return fmt.Errorf("%d", n)
		}
		return nil
	})
	close(stop)
	wg.Wait()

	var audited map[string]int
	var keys map[string]int
	eventually(t, 90*time.Second, "one Incident per audited request", func() error {
		audited = auditedNames(t, ns, "etcd-fault-")
		keys = incidentKeys(t, ctx, ns, rule.Name)
		var missing []string
		for name := range audited {
			if keys[name] == 0 {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d audited requests have no Incident, e.g. %s", len(missing), len(audited), missing[0])
		}
		return nil
	})
	var dups int
	for name, n := range keys {
		if n > 1 {
			dups++
			t.Errorf("%d Incidents for %s, want 1", n, name)
		}
		if audited[name] == 0 {
			t.Errorf("an Incident for %s, which the API server did not audit", name)
		}
	}
	t.Logf("etcd restarted under load: %d requests made, %d failed while etcd was down, %d audited, %d Incidents, %d duplicated",
		made.Load(), failedWhileDown, len(audited), len(keys), dups)
}

// incidentKeys counts the Incidents of a rule by throttle key.
func incidentKeys(t *testing.T, ctx context.Context, ns, rule string) map[string]int {
	t.Helper()
	var list v1alpha1.IncidentList
	if err := k8s.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{v1alpha1.RuleLabel: rule}); err != nil {
		t.Logf("list Incidents: %v", err)
		return nil
	}
	keys := map[string]int{}
	for _, inc := range list.Items {
		keys[inc.Spec.ThrottleKey]++
	}
	return keys
}

// auditedNames reads the API server's own audit log: the names of the
// configmaps in ns starting with prefix that were read (ResponseComplete),
// with how many times.
func auditedNames(t *testing.T, ns, prefix string) map[string]int {
	t.Helper()
	events, err := shared.AuditEvents(prefix)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, ev := range events {
		if ev.Stage == "ResponseComplete" && ev.Verb == "get" &&
			ev.ObjectRef.Resource == "configmaps" && ev.ObjectRef.Namespace == ns && strings.HasPrefix(ev.ObjectRef.Name, prefix) {
			names[ev.ObjectRef.Name]++
		}
	}
	return names
}
