package audit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// running serves a source with its workers until the test ends.
func running(t *testing.T, opts Options) (*Source, *countSink, *httptest.Server) {
	t.Helper()
	sink := &countSink{}
	opts.Tokens = []string{testToken}
	src := New(staticRules{ssarRule(t)}, sink, logr.Discard(), opts)
	srv := httptest.NewTLSServer(src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = src.Run(ctx); close(done) }()
	t.Cleanup(func() { srv.Close(); cancel(); <-done })
	return src, sink, srv
}

// settle waits until every accepted event was either matched or dropped as
// a duplicate.
func settle(t *testing.T, src *Source) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		acc := value(src.m.events.WithLabelValues(resultAccepted))
		done := value(src.m.events.WithLabelValues(resultProcessed)) + value(src.m.events.WithLabelValues(resultDuplicate))
		if acc == done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("accepted %v events, %v processed or duplicate after 10 s", acc, done)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A batch the API server sends again (its response was lost) is matched
// once, however often and however concurrently it comes; the copies are
// counted as duplicates.
func TestRetriedBatchIsMatchedOnce(t *testing.T) {
	src, sink, srv := running(t, Options{Workers: 4})
	body := listOf(20, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code := post(t, srv.Client(), srv.URL, testToken, body); code != http.StatusOK {
				t.Errorf("replayed batch: %d, want 200", code)
			}
		}()
	}
	wg.Wait()
	settle(t, src)
	if got := sink.n.Load(); got != 20 {
		t.Errorf("matches = %d, want 20 (one per event of the batch)", got)
	}
	if got := value(src.m.events.WithLabelValues(resultDuplicate)); got != 7*20 {
		t.Errorf("duplicates = %v, want %d", got, 7*20)
	}
	if got := value(src.m.events.WithLabelValues(resultProcessed)); got != 20 {
		t.Errorf("processed = %v, want 20", got)
	}
}

// The filter remembers a bounded number of events: a flood of distinct
// events beyond the bound evicts the oldest (counted), so a copy of an
// evicted event is matched again, while a copy of a recent one is still
// dropped. Memory does not grow with the flood.
func TestDuplicateFilterIsBoundedAndCountsEvictions(t *testing.T) {
	const bound = 100
	src, sink, srv := running(t, Options{Workers: 1, DedupWindow: bound})
	first := listOf(10, 1)
	if code := post(t, srv.Client(), srv.URL, testToken, first); code != http.StatusOK {
		t.Fatalf("first batch: %d", code)
	}
	var last []byte
	for range 30 {
		last = listOf(10, 1)
		if code := post(t, srv.Client(), srv.URL, testToken, last); code != http.StatusOK {
			t.Fatalf("flood batch: %d", code)
		}
	}
	settle(t, src)
	if got, want := value(src.m.dedupEvicted), float64(310-bound); got != want {
		t.Errorf("evictions after 310 distinct events = %v, want %v", got, want)
	}
	if n := len(src.dedup.keys); n != bound {
		t.Errorf("keys remembered = %d, want the bound %d", n, bound)
	}
	before := sink.n.Load()
	post(t, srv.Client(), srv.URL, testToken, last)  // recent: dropped
	post(t, srv.Client(), srv.URL, testToken, first) // evicted: matched again
	settle(t, src)
	if got := sink.n.Load() - before; got != 10 {
		t.Errorf("matches from a recent and an evicted replay = %d, want 10 (the evicted batch only)", got)
	}
	if got := value(src.m.events.WithLabelValues(resultDuplicate)); got != 10 {
		t.Errorf("duplicates = %v, want 10", got)
	}
}

// kube-apiserver takes a request's audit ID from the client's Audit-ID
// header, so the ID is attacker-chosen: a malicious request carrying the ID
// (and stage) of an earlier harmless one must still be matched.
func TestReusedAuditIDIsNotADuplicate(t *testing.T) {
	src, sink, srv := running(t, Options{Workers: 1})
	harmless := auditEvent(1, "alice@example.com", "configmaps")
	malicious := auditEvent(1, "system:serviceaccount:shop:api", "selfsubjectaccessreviews")
	if !strings.Contains(harmless, `"auditID":"6e0c3c4e-5f3b-4d38-9a53-000000000001"`) || !strings.Contains(malicious, `"auditID":"6e0c3c4e-5f3b-4d38-9a53-000000000001"`) {
		t.Fatal("the two events must share their audit ID")
	}
	// Same ID, stage and timestamps; only what the request was differs.
	for _, ev := range []string{harmless, malicious} {
		if code := post(t, srv.Client(), srv.URL, testToken, []byte(`{"kind":"EventList","items":[`+ev+`]}`)); code != http.StatusOK {
			t.Fatalf("post: %d", code)
		}
	}
	settle(t, src)
	if got := sink.n.Load(); got != 1 {
		t.Errorf("matches = %d, want 1: the malicious request was taken for a copy of the harmless one", got)
	}
	if got := value(src.m.events.WithLabelValues(resultDuplicate)); got != 0 {
		t.Errorf("duplicates = %v, want 0", got)
	}
	// Any field the API server sets makes a different event.
	base := auditEvent(2, "system:serviceaccount:shop:api", "selfsubjectaccessreviews")
	for _, change := range [][2]string{
		{`"stage":"ResponseComplete"`, `"stage":"Panic"`},
		{`"stageTimestamp":"2026-11-20T10:00:00.002000Z"`, `"stageTimestamp":"2026-11-20T10:00:00.002001Z"`},
		{`"sourceIPs":["10.244.0.17"]`, `"sourceIPs":["10.244.0.18"]`},
		{`"code":201`, `"code":403`},
	} {
		ev := strings.Replace(base, change[0], change[1], 1)
		if ev == base {
			t.Fatalf("change %q not applied", change[0])
		}
		before := value(src.m.events.WithLabelValues(resultProcessed))
		post(t, srv.Client(), srv.URL, testToken, []byte(`{"kind":"EventList","items":[`+ev+`]}`))
		settle(t, src)
		if value(src.m.events.WithLabelValues(resultProcessed)) != before+1 {
			t.Errorf("an event differing by %s was dropped as a duplicate", change[1])
		}
	}
}
