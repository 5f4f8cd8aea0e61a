package faults_test

import (
	"bufio"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/internal/audit"
	"github.com/riposte-dev/riposte/test/cluster"
)

const overloadToken = "overload-test-token"

// rules is a fixed live rule set.
type rules []*engine.Rule

func (r rules) Snapshot() (uint64, []*engine.Rule) { return 1, r }

// slowSink records the object name of every match and takes perMatch for
// each, as a controller whose Incident writes wait on the API server: it is
// what makes the small queue fill.
type slowSink struct {
	perMatch time.Duration
	mu       sync.Mutex
	seen     map[string]int
	changed  chan struct{}
}

func (s *slowSink) Record(_ engine.Match, ev *engine.Event) {
	time.Sleep(s.perMatch)
	s.mu.Lock()
	s.seen[ev.Audit.ObjectRef.Name]++
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// count returns how many of names were matched, and the matches beyond one
// per name.
func (s *slowSink) count(names []string) (matched, extra int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range names {
		if c := s.seen[n]; c > 0 {
			matched++
			extra += c - 1
		}
	}
	return matched, extra
}

// TestAuditOverloadLosesNothingTheAPIServerKeeps drives a real kube-apiserver
// whose audit webhook backend posts to riposte's audit endpoint, made
// deliberately small (a queue of one batch, one worker, a slow sink), at
// increasing request rates. The endpoint answers 429 and the API server
// retries: every marker request the API server wrote to its own audit log
// must be matched exactly once, or be among the events the API server
// reports it dropped (apiserver_audit_error_total); the test prints the
// figures of docs/reliability.md for each rate.
func TestAuditOverloadLosesNothingTheAPIServerKeeps(t *testing.T) {
	rule, err := engine.Compile("marker-read", "", &v1alpha1.DetectionRuleSpec{
		Source: "audit", Severity: "low",
		Condition: `audit.verb == "get" && audit.objectRef.resource == "configmaps" && audit.objectRef.name.startsWith("fault-")`,
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := &slowSink{perMatch: perMatch(), seen: map[string]int{}, changed: make(chan struct{})}
	src := audit.New(rules{rule}, sink, logr.Discard(), audit.Options{Tokens: []string{overloadToken}, QueueBatches: 1, Workers: 1})
	reg := prometheus.NewRegistry()
	reg.MustRegister(src.Collectors()...)
	srv := httptest.NewUnstartedServer(src)
	srv.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = src.Run(ctx) }()

	// The API server authenticates to the endpoint with a bearer token: the
	// harness's own webhook kubeconfig carries no credentials.
	dir := t.TempDir()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	kc := clientcmdapi.NewConfig()
	kc.Clusters["audit"] = &clientcmdapi.Cluster{Server: srv.URL + "/audit", CertificateAuthorityData: caPEM}
	kc.AuthInfos["apiserver"] = &clientcmdapi.AuthInfo{Token: overloadToken}
	kc.Contexts["audit"] = &clientcmdapi.Context{Cluster: "audit", AuthInfo: "apiserver"}
	kc.CurrentContext = "audit"
	kubeconfig := filepath.Join(dir, "audit-webhook.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Start(ctx, cluster.Options{
		AuditWebhook: &cluster.AuditWebhook{URL: srv.URL + "/audit", CAData: caPEM},
		APIServerArgs: []string{
			"--audit-webhook-config-file=" + kubeconfig,
			// A tenth of the default 10 s, so the retries of a step fit in
			// the test; the number of retries is the default.
			"--audit-webhook-initial-backoff=1s",
		},
	})
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd (RIPOSTE_TESTENV_BIN): %v", err)
	}
	defer c.Stop()
	httpClient, err := rest.HTTPClientFor(c.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}

	get := func(name string, header http.Header) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Host()+"/api/v1/namespaces/default/configmaps/"+name, nil)
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Errorf("GET %s: %v", name, err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", name, resp.Status)
		}
	}

	// kube-apiserver takes the audit ID from the client's Audit-ID header:
	// two requests with one ID are both matched (the endpoint's duplicate
	// filter does not key on the ID alone).
	reused := http.Header{"Audit-Id": {"riposte-reused-audit-id"}}
	get("fault-reused-a", reused)
	get("fault-reused-b", reused)
	waitMatched(t, c, sink, []string{"fault-reused-a", "fault-reused-b"}, func() float64 { return 0 })
	if ids := auditIDs(t, c, "fault-reused-"); len(ids) != 2 || ids[0] != "riposte-reused-audit-id" || ids[1] != ids[0] {
		t.Errorf("audit IDs the API server logged for the two requests = %v, want the header's twice", ids)
	}

	t.Logf("%8s %8s %8s %8s %8s %8s %8s %8s", "asked/s", "made/s", "emitted", "matched", "dropped", "429s", "dups", "drain")
	for _, rate := range []int{250, 500, 1000, 2000, 4000} {
		prefix := fmt.Sprintf("fault-%d-", rate)
		errBefore := apiserverAuditErrors(t, httpClient, c)
		rejBefore := metric(t, reg, "riposte_audit_requests_total", "code", "429")
		dupBefore := metric(t, reg, "riposte_audit_events_total", "result", "duplicate")
		start := time.Now()
		made := drive(ctx, rate, 2*time.Second, func(i int) { get(prefix+strconv.Itoa(i), nil) })
		elapsed := time.Since(start)
		names := make([]string, made)
		for i := range names {
			names[i] = prefix + strconv.Itoa(i)
		}
		dropped := func() float64 { return apiserverAuditErrors(t, httpClient, c) - errBefore }
		drain := waitMatched(t, c, sink, names, dropped)
		emitted := len(auditIDs(t, c, prefix))
		matched, extra := sink.count(names)
		t.Logf("%8d %8.0f %8d %8d %8.0f %8.0f %8.0f %8s", rate, float64(made)/elapsed.Seconds(), emitted, matched, dropped(),
			metric(t, reg, "riposte_audit_requests_total", "code", "429")-rejBefore,
			metric(t, reg, "riposte_audit_events_total", "result", "duplicate")-dupBefore, drain.Round(100*time.Millisecond))
		if emitted != made {
			t.Errorf("rate %d: the API server logged %d marker events for %d requests", rate, emitted, made)
		}
		if extra != 0 {
			t.Errorf("rate %d: %d marker events matched more than once", rate, extra)
		}
		if d := dropped(); d > 0 {
			t.Logf("rate %d: the API server dropped %v audit events (apiserver_audit_error_total): the first loss", rate, d)
			break
		}
		if matched != made {
			t.Errorf("rate %d: %d of %d marker events matched and the API server reports no drop: riposte lost %d", rate, matched, made, made-matched)
		}
	}
}

// drive calls req about rate times a second for d from 32 goroutines and
// returns how many calls it made; call i gets argument i.
func drive(ctx context.Context, rate int, d time.Duration, req func(i int)) int {
	total := int(float64(rate) * d.Seconds())
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= total || ctx.Err() != nil {
					return
				}
				// Call i is due at start + i/rate.
				if wait := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); wait > 0 {
					time.Sleep(wait)
				}
				req(i)
			}
		}()
	}
	wg.Wait()
	return int(min(next.Load(), int64(total)))
}

// waitMatched waits until every name is matched or accounted for by the
// API server's count of dropped audit events, and returns how long it took.
func waitMatched(t *testing.T, c *cluster.Cluster, sink *slowSink, names []string, dropped func() float64) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(90 * time.Second)
	for {
		sink.mu.Lock()
		changed := sink.changed
		sink.mu.Unlock()
		matched, _ := sink.count(names)
		if matched == len(names) || float64(matched)+dropped() >= float64(len(names)) {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 90 s, %d of %d marker events matched and the API server reports %v dropped (see %s/kube-apiserver.log)",
				matched, len(names), dropped(), c.Dir())
		}
		select {
		case <-changed:
		case <-time.After(time.Second): // the API server's drop counter has no notification
		}
	}
}

// auditIDs reads the API server's own audit log: the audit IDs of the
// ResponseComplete events for configmaps whose name starts with prefix.
func auditIDs(t *testing.T, c *cluster.Cluster, prefix string) []string {
	t.Helper()
	events, err := c.AuditEvents(prefix)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ev := range events {
		if ev.Stage == "ResponseComplete" && ev.ObjectRef.Resource == "configmaps" && strings.HasPrefix(ev.ObjectRef.Name, prefix) {
			ids = append(ids, ev.AuditID)
		}
	}
	return ids
}

// apiserverAuditErrors is apiserver_audit_error_total{plugin="webhook"}.
func apiserverAuditErrors(t *testing.T, hc *http.Client, c *cluster.Cluster) float64 {
	t.Helper()
	resp, err := hc.Get(c.Host() + "/metrics")
	if err != nil {
		t.Fatalf("the API server's metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "apiserver_audit_error_total{") && strings.Contains(line, `plugin="webhook"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// metric reads one labelled counter of the endpoint.
func metric(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabel(m, label, value) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// perMatch is the sink's time per match: 500µs (a capacity of 2,000
// matches/s) unless RIPOSTE_AUDIT_SINK_DELAY sets another, to find where
// the API server's retries run out.
func perMatch() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("RIPOSTE_AUDIT_SINK_DELAY")); err == nil && d >= 0 {
		return d
	}
	return 500 * time.Microsecond
}
