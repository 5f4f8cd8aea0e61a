package session

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/riposte-dev/riposte/engine"
)

var t0 = time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)

// execAudit is an audit event as kube-apiserver writes it for a pods/exec
// request (verb create for the SPDY POST form, get for the WebSocket form).
func execAudit(id, verb, ns, pod, container, user string, at time.Time, command ...string) engine.Audit {
	q := url.Values{}
	for _, c := range command {
		q.Add("command", c)
	}
	if container != "" {
		q.Set("container", container)
	}
	q.Set("stdout", "true")
	return engine.Audit{
		AuditID: id, Stage: "ResponseStarted", Verb: verb,
		RequestURI: "/api/v1/namespaces/" + ns + "/pods/" + pod + "/exec?" + q.Encode(),
		User:       engine.UserInfo{Username: user, Groups: []string{"devs", "system:authenticated"}},
		SourceIPs:  []string{"10.0.0.9"}, UserAgent: "kubectl/v1.33",
		ObjectRef:                engine.AuditObjectRef{Resource: "pods", Namespace: ns, Name: pod, Subresource: "exec", APIVersion: "v1"},
		ResponseStatus:           engine.Status{Code: 101},
		RequestReceivedTimestamp: at, StageTimestamp: at.Add(20 * time.Millisecond),
	}
}

func counter(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	sum := 0.0
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		switch {
		case d.Counter != nil:
			sum += d.Counter.GetValue()
		case d.Gauge != nil:
			sum += d.Gauge.GetValue()
		}
	}
	return sum
}

func TestFromAuditReadsBothExecFormsAndRefusesTheRest(t *testing.T) {
	post := execAudit("a1", "create", "shop", "web-1", "app", "alice", t0, "sh", "-c", "id; cat /etc/shadow")
	ws := execAudit("a2", "get", "shop", "web-1", "app", "bob", t0, "sh")
	for _, a := range []engine.Audit{post, ws} {
		e, ok := FromAudit(&a)
		if !ok {
			t.Fatalf("%s form not read", a.Verb)
		}
		if e.Namespace != "shop" || e.Pod != "web-1" || e.Container != "app" || e.User != a.User.Username || e.Verb != a.Verb || !e.Received.Equal(t0) {
			t.Errorf("%s form: got %+v", a.Verb, e)
		}
	}
	e, _ := FromAudit(&post)
	if strings.Join(e.Command, "\x00") != "sh\x00-c\x00id; cat /etc/shadow" {
		t.Errorf("command %q", e.Command)
	}
	imp := post
	imp.ImpersonatedUser = engine.UserInfo{Username: "carol", Groups: []string{"ops"}}
	if e, _ := FromAudit(&imp); e.User != "carol" || e.ImpersonatedBy != "alice" || e.Groups[0] != "ops" {
		t.Errorf("impersonation: user %q by %q groups %v, want carol by alice [ops]", e.User, e.ImpersonatedBy, e.Groups)
	}
	refused := []func(a *engine.Audit){
		func(a *engine.Audit) { a.ResponseStatus.Code = 403 },                      // forbidden: opened nothing
		func(a *engine.Audit) { a.ResponseStatus.Code = 0 },                        // no answer recorded
		func(a *engine.Audit) { a.Stage = "RequestReceived" },                      // not yet decided
		func(a *engine.Audit) { a.ObjectRef.Subresource = "portforward" },          // not a session in a container
		func(a *engine.Audit) { a.ObjectRef.Resource = "nodes" },                   // nodes/proxy
		func(a *engine.Audit) { a.ObjectRef.APIGroup = "evil.example" },            // an aggregated API's "pods"
		func(a *engine.Audit) { a.Verb = "list" },                                  // not an exec
		func(a *engine.Audit) { a.AuditID = "" },                                   // cannot be told apart
		func(a *engine.Audit) { a.ObjectRef.Name, a.ObjectRef.Namespace = "", "" }, // no pod
	}
	for i, f := range refused {
		a := post
		f(&a)
		if _, ok := FromAudit(&a); ok {
			t.Errorf("refused case %d read as a session: %+v", i, a)
		}
	}
}

func TestFromAuditBoundsWhatTheUserChose(t *testing.T) {
	long := strings.Repeat("x", 10*MaxArgBytes)
	var cmd []string
	for range 3 * MaxCommandArgs {
		cmd = append(cmd, long)
	}
	a := execAudit("a1", "create", "shop", "web-1", "app", "alice", t0, cmd...)
	a.UserAgent = long
	e, ok := FromAudit(&a)
	if !ok {
		t.Fatal("not read")
	}
	if !e.Truncated || len(e.Command) != MaxCommandArgs || len(e.Command[0]) != MaxArgBytes || len(e.UserAgent) != MaxStringBytes {
		t.Errorf("bounds: truncated %v, %d args of %d bytes, user agent %d bytes", e.Truncated, len(e.Command), len(e.Command[0]), len(e.UserAgent))
	}
}

func newStore(t *testing.T, o Options) *Store {
	t.Helper()
	if o.Now == nil {
		o.Now = func() time.Time { return t0 }
	}
	return NewStore(o, nil)
}

func add(s *Store, a engine.Audit) {
	ev := engine.Event{Kind: engine.KindAudit, Audit: a}
	s.Observe(&ev)
}

// TestLookupJoinsOnlyTheSamePodContainerWindowAndCommand: the join names
// the user of the request for exactly this pod and container, received at
// most Window before the process and at most Skew after; a request naming
// another pod, a container whose name merely resembles this one, another
// command, or a time outside the window names nobody.
func TestLookupJoinsOnlyTheSamePodContainerWindowAndCommand(t *testing.T) {
	s := newStore(t, Options{Window: 30 * time.Second, Skew: 5 * time.Second})
	add(s, execAudit("a1", "create", "shop", "web-1", "app", "alice", t0, "sh"))
	add(s, execAudit("a2", "get", "shop", "web-2", "app", "mallory", t0, "sh"))
	add(s, execAudit("a3", "create", "shop", "web-1", "app-sidecar", "mallory", t0, "sh"))
	add(s, execAudit("a4", "create", "shop2", "web-1", "app", "mallory", t0, "sh"))
	q := Query{Namespace: "shop", Pod: "web-1", Container: "app", Started: t0.Add(300 * time.Millisecond), Command: []string{"sh"}}
	r := s.Lookup(q)
	if r.Exec == nil || r.Exec.User != "alice" || r.Candidates != 1 {
		t.Fatalf("join: %+v", r)
	}
	for name, q2 := range map[string]Query{
		"another container":               {Namespace: "shop", Pod: "web-1", Container: "app2", Started: q.Started},
		"a container named like a prefix": {Namespace: "shop", Pod: "web-1", Container: "ap", Started: q.Started},
		"another pod":                     {Namespace: "shop", Pod: "web-3", Container: "app", Started: q.Started},
		"another namespace's pod":         {Namespace: "other", Pod: "web-1", Container: "app", Started: q.Started},
		"another command":                 {Namespace: "shop", Pod: "web-1", Container: "app", Started: q.Started, Command: []string{"bash"}},
		"too long after":                  {Namespace: "shop", Pod: "web-1", Container: "app", Started: t0.Add(31 * time.Second)},
		"too long before":                 {Namespace: "shop", Pod: "web-1", Container: "app", Started: t0.Add(-6 * time.Second)},
		"slash in the pod name":           {Namespace: "shop/web-1", Pod: "", Container: "app", Started: q.Started},
	} {
		if r := s.Lookup(q2); r.Exec != nil || r.Candidates != 0 {
			t.Errorf("%s: joined %+v", name, r.Exec)
		}
	}
	// No command known on the node: joined by pod, container and time.
	if r := s.Lookup(Query{Namespace: "shop", Pod: "web-1", Container: "app", Started: q.Started}); r.Exec == nil || r.Exec.AuditID != "a1" {
		t.Errorf("without a command: %+v", r)
	}
	// An attach is never the origin of an exec'd process.
	at := execAudit("a5", "create", "shop", "web-9", "app", "dave", t0)
	at.ObjectRef.Subresource = "attach"
	add(s, at)
	if r := s.Lookup(Query{Namespace: "shop", Pod: "web-9", Container: "app", Started: q.Started}); r.Exec != nil {
		t.Errorf("attach joined as an exec: %+v", r.Exec)
	}
}

func TestLookupNamesNobodyWhenUsersAreAmbiguous(t *testing.T) {
	s := newStore(t, Options{})
	add(s, execAudit("a1", "create", "shop", "web-1", "app", "alice", t0, "sh"))
	add(s, execAudit("a2", "get", "shop", "web-1", "app", "mallory", t0.Add(time.Second), "sh"))
	r := s.Lookup(Query{Namespace: "shop", Pod: "web-1", Container: "app", Started: t0.Add(2 * time.Second), Command: []string{"sh"}})
	if r.Exec != nil || !r.Ambiguous || r.Candidates != 2 {
		t.Fatalf("two users: %+v", r)
	}
	// Two requests of one user: the latest before the process.
	s = newStore(t, Options{})
	add(s, execAudit("a1", "create", "shop", "web-1", "app", "alice", t0, "sh"))
	add(s, execAudit("a2", "create", "shop", "web-1", "app", "alice", t0.Add(10*time.Second), "sh"))
	r = s.Lookup(Query{Namespace: "shop", Pod: "web-1", Container: "app", Started: t0.Add(11 * time.Second), Command: []string{"sh"}})
	if r.Exec == nil || r.Exec.AuditID != "a2" || r.Candidates != 2 {
		t.Fatalf("one user twice: %+v", r)
	}
}

// TestStoreStaysWithinItsBoundsAndCountsWhatItDrops: under a random stream
// of requests (duplicated stages, many pods, time moving on), the store
// never holds more than MaxExecs, and what it recorded equals what it holds
// plus what it evicted and expired; waiters are bounded the same way.
func TestStoreStaysWithinItsBoundsAndCountsWhatItDrops(t *testing.T) {
	now := t0
	s := NewStore(Options{MaxExecs: 50, MaxPending: 20, Retention: time.Minute, Now: func() time.Time { return now }}, nil)
	rng := rand.New(rand.NewSource(1))
	dups := 0
	seen := map[string]bool{}
	for i := range 5000 {
		now = now.Add(time.Duration(rng.Intn(200)) * time.Millisecond)
		id := fmt.Sprintf("a%d", rng.Intn(4000))
		if seen[id] {
			dups++ // may or may not be kept still: counted either way
		}
		seen[id] = true
		add(s, execAudit(id, "create", "ns", fmt.Sprintf("p%d", rng.Intn(30)), "c", "u", now, "sh"))
		s.Wait("ns", fmt.Sprintf("p%d", rng.Intn(1000)), Waiter{Namespace: "ns", Name: fmt.Sprintf("inc-%d", i)})
		if s.Len() > 50 {
			t.Fatalf("store holds %d > 50", s.Len())
		}
		if s.Pending() > 20 {
			t.Fatalf("%d waiters > 20", s.Pending())
		}
	}
	rec, ev, ex, dup := counter(t, s.m.recorded), counter(t, s.m.evicted), counter(t, s.m.expired), counter(t, s.m.duplicate)
	if rec != float64(s.Len())+ev+ex {
		t.Errorf("recorded %v != held %d + evicted %v + expired %v", rec, s.Len(), ev, ex)
	}
	if rec+dup != 5000 {
		t.Errorf("recorded %v + duplicates %v != 5000 offered", rec, dup)
	}
	if ev == 0 || counter(t, s.m.pendingEvicted) == 0 {
		t.Errorf("the stream must overflow both bounds: evicted %v, waiters evicted %v", ev, counter(t, s.m.pendingEvicted))
	}
	if len(s.ids) != s.Len() {
		t.Errorf("audit id index holds %d, store %d", len(s.ids), s.Len())
	}
	n := 0
	for _, l := range s.byPod {
		n += len(l)
	}
	if n != s.Len() {
		t.Errorf("pod index holds %d, store %d", n, s.Len())
	}
}

// TestALateRequestWakesItsWaitingIncidents: an Incident registered before
// its request arrives is woken when a request for its pod is added, and
// only then; a request for another pod wakes nobody.
func TestALateRequestWakesItsWaitingIncidents(t *testing.T) {
	var woken []Waiter
	s := NewStore(Options{Now: func() time.Time { return t0 }}, func(w Waiter) { woken = append(woken, w) })
	w := Waiter{Namespace: "shop", Name: "shell-in-container-abc"}
	s.Wait("shop", "web-1", w)
	add(s, execAudit("a1", "create", "shop", "web-2", "app", "mallory", t0, "sh"))
	if len(woken) != 0 {
		t.Fatalf("a request for another pod woke %v", woken)
	}
	add(s, execAudit("a2", "create", "shop", "web-1", "app", "alice", t0, "sh"))
	if len(woken) != 1 || woken[0] != w || s.Pending() != 0 {
		t.Fatalf("woken %v, pending %d", woken, s.Pending())
	}
}

func FuzzFromAudit(f *testing.F) {
	a := execAudit("a1", "create", "shop", "web-1", "app", "alice", t0, "sh", "-c", "id")
	b, _ := json.Marshal(&a)
	f.Add(b)
	f.Add([]byte(`{"auditID":"x","stage":"ResponseStarted","verb":"get","requestURI":"%zz","objectRef":{"resource":"pods","namespace":"n","name":"p","subresource":"exec"},"responseStatus":{"code":101}}`))
	f.Add([]byte(`{"auditID":"x","stage":"ResponseComplete","verb":"create","requestURI":"/api/v1/namespaces/n/pods/p/exec?command=` + strings.Repeat("a", 5000) + `","objectRef":{"resource":"pods","namespace":"n","name":"p","subresource":"exec"},"responseStatus":{"code":101}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var a engine.Audit
		if json.Unmarshal(b, &a) != nil {
			return
		}
		e, ok := FromAudit(&a)
		if !ok {
			return
		}
		if len(e.Command) > MaxCommandArgs || len(e.Groups) > MaxGroups || len(e.SourceIPs) > MaxSourceIPs || len(e.User) > MaxStringBytes || len(e.Container) > MaxStringBytes {
			t.Fatalf("unbounded: %+v", e)
		}
		s := NewStore(Options{MaxExecs: 2}, nil)
		s.Add(e)
		s.Lookup(Query{Namespace: e.Namespace, Pod: e.Pod, Container: e.Container, Started: e.Received, Command: e.Command})
	})
}
