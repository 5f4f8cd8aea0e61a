package audit

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/internal/certs"
)

const testToken = "s3cret-token"

// staticRules is a fixed live rule set.
type staticRules []*engine.Rule

func (s staticRules) Snapshot() (uint64, []*engine.Rule) { return 1, s }

// countSink counts matches.
type countSink struct{ n atomic.Int64 }

func (c *countSink) Record(engine.Match, *engine.Event) { c.n.Add(1) }

func ssarRule(t testing.TB) *engine.Rule {
	t.Helper()
	r, err := engine.Compile("sa-ssar", "", &v1alpha1.DetectionRuleSpec{
		Source:   "audit",
		Severity: "medium",
		Condition: `audit.stage == "ResponseComplete" && audit.verb == "create" &&
			audit.objectRef.resource == "selfsubjectaccessreviews" &&
			audit.user.username.startsWith("system:serviceaccount:")`,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// auditEvent is a Metadata-level audit event as kube-apiserver posts it.
func auditEvent(i int, user, resource string) string {
	return fmt.Sprintf(`{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"6e0c3c4e-5f3b-`+batchTag+`-%012d","stage":"ResponseComplete","requestURI":"/apis/authorization.k8s.io/v1/%s","verb":"create","user":{"username":%q,"uid":"0b1c","groups":["system:serviceaccounts","system:serviceaccounts:shop","system:authenticated"],"extra":{"authentication.kubernetes.io/pod-name":["api-7d9f-abcde"]}},"sourceIPs":["10.244.0.17"],"userAgent":"kubectl/v1.37.2 (linux/amd64) kubernetes/abc","objectRef":{"resource":%q,"apiGroup":"authorization.k8s.io","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestReceivedTimestamp":"2026-11-20T10:00:00.000000Z","stageTimestamp":"2026-11-20T10:00:00.002000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}`, i, resource, user, resource)
}

// batchTag stands in the audit IDs of listTemplate for the batch number.
const batchTag = "4d38-9a53"

var batchSeq atomic.Int64

// stamp gives the events of a listTemplate audit IDs no other batch has:
// the endpoint drops events it has already matched.
func stamp(template []byte) []byte {
	return bytes.ReplaceAll(template, []byte(batchTag), fmt.Appendf(nil, "%09d", batchSeq.Add(1)))
}

// listOf renders n events with fresh audit IDs, every matchEvery-th one
// matching ssarRule.
func listOf(n, matchEvery int) []byte { return stamp(listTemplate(n, matchEvery)) }

func listTemplate(n, matchEvery int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		if matchEvery > 0 && i%matchEvery == 0 {
			b.WriteString(auditEvent(i, "system:serviceaccount:shop:api", "selfsubjectaccessreviews"))
		} else {
			b.WriteString(auditEvent(i, "alice@example.com", "configmaps"))
		}
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func post(t testing.TB, c *http.Client, url, token string, body []byte) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestRequestsWithoutValidCredentialsGet401(t *testing.T) {
	src := New(staticRules{ssarRule(t)}, &countSink{}, logr.Discard(), Options{Tokens: []string{testToken}})
	srv := httptest.NewTLSServer(src)
	defer srv.Close()
	for _, tok := range []string{"", "wrong", testToken + "x"} {
		if code := post(t, srv.Client(), srv.URL, tok, listOf(1, 1)); code != http.StatusUnauthorized {
			t.Errorf("token %q: got %d, want 401", tok, code)
		}
	}
	if code := post(t, srv.Client(), srv.URL, testToken, listOf(1, 1)); code != http.StatusOK {
		t.Errorf("valid token: got %d, want 200", code)
	}
	if got := value(src.m.requests.WithLabelValues("401")); got != 3 {
		t.Errorf("riposte_audit_requests_total{code=401} = %v, want 3", got)
	}
}

func TestVerifiedClientCertificateAuthenticates(t *testing.T) {
	ca, err := certs.NewCA("audit-test-ca")
	if err != nil {
		t.Fatal(err)
	}
	serving, _ := ca.Serving("127.0.0.1")
	client, _ := ca.Client("kube-apiserver")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.Cert)

	src := New(staticRules{ssarRule(t)}, &countSink{}, logr.Discard(), Options{})
	srv := httptest.NewUnstartedServer(src)
	sc, _ := tls.X509KeyPair(serving.Cert, serving.Key)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{sc}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	srv.StartTLS()
	defer srv.Close()

	cc, _ := tls.X509KeyPair(client.Cert, client.Key)
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cc}}}}
	without := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if code := post(t, withCert, srv.URL, "", listOf(1, 1)); code != http.StatusOK {
		t.Errorf("with client certificate: got %d, want 200", code)
	}
	if code := post(t, without, srv.URL, "", listOf(1, 1)); code != http.StatusUnauthorized {
		t.Errorf("without client certificate: got %d, want 401", code)
	}
}

func TestOversizedBodyGets413(t *testing.T) {
	src := New(staticRules{ssarRule(t)}, &countSink{}, logr.Discard(), Options{Tokens: []string{testToken}, MaxBodyBytes: 4096})
	srv := httptest.NewTLSServer(src)
	defer srv.Close()
	big := listOf(20, 1)
	if code := post(t, srv.Client(), srv.URL, testToken, big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("declared length %d: got %d, want 413", len(big), code)
	}
	// Without Content-Length (chunked) the limit holds while reading.
	req, _ := http.NewRequest(http.MethodPost, srv.URL, io.MultiReader(bytes.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked body: got %d, want 413", resp.StatusCode)
	}
	if code := post(t, srv.Client(), srv.URL, testToken, listOf(2, 1)); code != http.StatusOK {
		t.Errorf("small body: got %d, want 200", code)
	}
}

func TestMalformedListGets400AndBadItemsAreCounted(t *testing.T) {
	src := New(staticRules{ssarRule(t)}, &countSink{}, logr.Discard(), Options{Tokens: []string{testToken}})
	srv := httptest.NewTLSServer(src)
	defer srv.Close()
	if code := post(t, srv.Client(), srv.URL, testToken, []byte(`{"items":[`)); code != http.StatusBadRequest {
		t.Errorf("truncated JSON: got %d, want 400", code)
	}
	body := []byte(`{"kind":"EventList","items":[{"verb":7},` + auditEvent(1, "bob", "pods") + `]}`)
	if code := post(t, srv.Client(), srv.URL, testToken, body); code != http.StatusOK {
		t.Errorf("one bad item: got %d, want 200", code)
	}
	if got := value(src.m.events.WithLabelValues(resultDecodeError)); got != 1 {
		t.Errorf("decode errors = %v, want 1", got)
	}
}

// A full queue answers 429 and everything accepted is processed: nothing is
// dropped silently.
func TestFullQueueGets429AndNothingAcceptedIsLost(t *testing.T) {
	sink := &countSink{}
	src := New(staticRules{ssarRule(t)}, sink, logr.Discard(), Options{Tokens: []string{testToken}, QueueBatches: 2, Workers: 1})
	srv := httptest.NewTLSServer(src)
	defer srv.Close()
	var codes []int
	for range 5 {
		codes = append(codes, post(t, srv.Client(), srv.URL, testToken, listOf(10, 1)))
	}
	want := []int{200, 200, 429, 429, 429}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("codes with no worker running = %v, want %v", codes, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = src.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for sink.n.Load() < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if got := sink.n.Load(); got != 20 {
		t.Errorf("matches = %d, want 20 (2 accepted batches of 10)", got)
	}
	if got := value(src.m.events.WithLabelValues(resultRejected)); got != 30 {
		t.Errorf("rejected events = %v, want 30", got)
	}
	if a, p := value(src.m.events.WithLabelValues(resultAccepted)), value(src.m.events.WithLabelValues(resultProcessed)); a != p {
		t.Errorf("accepted %v != processed %v", a, p)
	}
}

func TestRequestReceivedStageIsIgnored(t *testing.T) {
	sink := &countSink{}
	src := New(staticRules{ssarRule(t)}, sink, logr.Discard(), Options{Tokens: []string{testToken}})
	ev := strings.Replace(auditEvent(1, "system:serviceaccount:a:b", "selfsubjectaccessreviews"), "ResponseComplete", "RequestReceived", 1)
	batch, err := src.decode([]byte(`{"items":[` + ev + `]}`))
	if err != nil || len(batch) != 0 {
		t.Fatalf("decode = %d events, %v; want 0 events", len(batch), err)
	}
	if got := value(src.m.events.WithLabelValues(resultIgnored)); got != 1 {
		t.Errorf("ignored = %v, want 1", got)
	}
}

// BenchmarkEndpoint posts EventLists of 100 events over TLS on loopback and
// waits until every accepted event is matched. Run with -cpu 1 for the
// one-core figure; events/s is reported.
func BenchmarkEndpoint(b *testing.B) {
	const perBatch = 100
	sink := &countSink{}
	src := New(staticRules{ssarRule(b)}, sink, logr.Discard(), Options{Tokens: []string{testToken}, QueueBatches: 64})
	srv := httptest.NewTLSServer(src)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = src.Run(ctx) }()
	template := listTemplate(perBatch, 10)
	client := srv.Client()
	var rejected atomic.Int64
	b.SetBytes(int64(len(template)))
	b.ResetTimer()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				body := stamp(template)
				for {
					code := post(b, client, srv.URL, testToken, body)
					if code == http.StatusOK {
						break
					}
					if code != http.StatusTooManyRequests {
						b.Errorf("status %d", code)
						return
					}
					rejected.Add(1)
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	want := float64(b.N * perBatch)
	for value(src.m.events.WithLabelValues(resultProcessed)) < want {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(want/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(rejected.Load()), "429s")
	if got := sink.n.Load(); got != int64(b.N*perBatch/10) {
		b.Errorf("matches = %d, want %d", got, b.N*perBatch/10)
	}
}

// value reads a counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// BenchmarkEndpointOverload drives a deliberately small queue with 16
// concurrent clients that do not back off: the endpoint must answer 429
// rather than drop, and every event it accepted must be matched.
func BenchmarkEndpointOverload(b *testing.B) {
	const perBatch = 100
	sink := &countSink{}
	src := New(staticRules{ssarRule(b)}, sink, logr.Discard(), Options{Tokens: []string{testToken}, QueueBatches: 2, Workers: 1})
	srv := httptest.NewUnstartedServer(src)
	// Clients cut off at the end of the run abort handshakes: not news.
	srv.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = src.Run(ctx); close(done) }()
	template := listTemplate(perBatch, 10)
	client := srv.Client()
	var ok, rejected atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				switch code := post(b, client, srv.URL, testToken, stamp(template)); code {
				case http.StatusOK:
					ok.Add(1)
				case http.StatusTooManyRequests:
					rejected.Add(1)
				default:
					b.Errorf("status %d", code)
					return
				}
			}
		}()
	}
	wg.Wait()
	accepted := value(src.m.events.WithLabelValues(resultAccepted))
	for value(src.m.events.WithLabelValues(resultProcessed)) < accepted {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	cancel()
	<-done
	if want := float64(ok.Load() * perBatch); accepted != want {
		b.Errorf("accepted events %v, want %v (200 responses x %d)", accepted, want, perBatch)
	}
	if got, want := sink.n.Load(), ok.Load()*perBatch/10; got != want {
		b.Errorf("matches %d, want %d: an accepted event was lost", got, want)
	}
	b.ReportMetric(float64(rejected.Load())/float64(b.N)*100, "%429")
	b.ReportMetric(accepted/b.Elapsed().Seconds(), "events/s")
}

// TestQueueIsBoundedInBytes: batches whose bodies would take the queued
// bytes over MaxQueueBytes get 429 before they are decoded, whatever the
// number of batches; a batch alone always fits; the bytes go down as the
// workers drain the queue, and what was accepted is matched.
func TestQueueIsBoundedInBytes(t *testing.T) {
	sink := &countSink{}
	body := listTemplate(50, 1)
	src := New(staticRules{ssarRule(t)}, sink, logr.Discard(), Options{Tokens: []string{testToken},
		QueueBatches: 100, MaxQueueBytes: int64(2*len(body) + 10), Workers: 1})
	srv := httptest.NewTLSServer(src)
	defer srv.Close()
	var codes []int
	for range 4 {
		codes = append(codes, post(t, srv.Client(), srv.URL, testToken, stamp(body)))
	}
	if want := []int{200, 200, 429, 429}; fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("codes with the queue at its byte bound = %v, want %v", codes, want)
	}
	if got := src.queued.Load(); got != int64(2*len(body)) {
		t.Errorf("queued bytes = %d, want %d", got, 2*len(body))
	}
	if got := value(src.m.rejectedBatches); got != 2 {
		t.Errorf("rejected batches = %v, want 2", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = src.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for (sink.n.Load() < 100 || src.queued.Load() != 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if got, q := sink.n.Load(), src.queued.Load(); got != 100 || q != 0 {
		t.Errorf("matches = %d (want 100), queued bytes after draining = %d (want 0)", got, q)
	}
	// A batch bigger than the byte bound alone in the queue still goes in.
	big := New(staticRules{ssarRule(t)}, sink, logr.Discard(), Options{Tokens: []string{testToken}, MaxQueueBytes: 10, Workers: 1})
	bsrv := httptest.NewTLSServer(big)
	defer bsrv.Close()
	if code := post(t, bsrv.Client(), bsrv.URL, testToken, body); code != 200 {
		t.Errorf("a batch alone over the byte bound: %d, want 200", code)
	}
}

// resolver is a PeerResolver with a fixed answer per IP and uid.
type resolver struct{ byIP, byUID map[string]engine.Peer }

func (r resolver) PeerAt(ip string, _ time.Time) (engine.Peer, bool) {
	p, ok := r.byIP[ip]
	return p, ok
}
func (r resolver) PodPeer(uid string) (engine.Peer, bool) { p, ok := r.byUID[uid]; return p, ok }

// TestAttributeTrustsOnlyWhatTheAPIServerAuthenticated: sourceIPs' first
// entries come from X-Forwarded-For and never name a pod; the last entry
// (the connection's address) and a bound token's pod claims do.
func TestAttributeTrustsOnlyWhatTheAPIServerAuthenticated(t *testing.T) {
	r := resolver{
		byIP:  map[string]engine.Peer{"10.0.0.7": {Pod: "victim", Namespace: "shop"}, "10.0.0.9": {Pod: "caller", Namespace: "shop"}},
		byUID: map[string]engine.Peer{"u-1": {Pod: "holder", Namespace: "shop", PodUID: "u-1", Workload: engine.Workload{Kind: "Deployment", Name: "api"}}},
	}
	for _, tc := range []struct {
		name string
		a    engine.Audit
		want string
	}{
		{"forwarded-for names the victim first", engine.Audit{SourceIPs: []string{"10.0.0.7", "10.0.0.9"}}, "caller"},
		{"only a forged address and an unknown connection", engine.Audit{SourceIPs: []string{"10.0.0.7", "192.0.2.1"}}, ""},
		{"bound token claims win over addresses", engine.Audit{SourceIPs: []string{"10.0.0.7", "10.0.0.9"},
			User: engine.UserInfo{Username: "system:serviceaccount:shop:api", Extra: map[string][]string{engine.ExtraPodName: {"holder"}, engine.ExtraPodUID: {"u-1"}}}}, "holder"},
		{"claims of a user that is not a ServiceAccount are ignored", engine.Audit{SourceIPs: []string{"10.0.0.7"},
			User: engine.UserInfo{Username: "mallory", Extra: map[string][]string{engine.ExtraPodName: {"victim"}, engine.ExtraPodUID: {"u-1"}}}}, "victim"},
		{"claims naming another namespace's pod keep the claimed namespace", engine.Audit{
			User: engine.UserInfo{Username: "system:serviceaccount:other:x", Extra: map[string][]string{engine.ExtraPodName: {"p"}, engine.ExtraPodUID: {"u-1"}}}}, "p"},
	} {
		a := tc.a
		Attribute(&a, time.Now(), r)
		if a.SourcePod.Pod != tc.want {
			t.Errorf("%s: sourcePod %+v, want pod %q", tc.name, a.SourcePod, tc.want)
		}
	}
}
