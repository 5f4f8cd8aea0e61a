// Package session answers "who is behind this shell": it keeps the API
// server's recent pods/exec and pods/attach requests (from the
// authenticated audit webhook only) and joins them with a process whose
// kernel-recorded origin is a runtime exec into the same pod and container,
// within a bounded window. Memory is bounded; evictions are counted.
package session

import (
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/riposte-dev/riposte/engine"
)

// Defaults for Options.
const (
	// DefaultWindow is how long after the API server received an exec
	// request the runtime may start the exec'd process.
	DefaultWindow = 30 * time.Second
	// DefaultSkew is how much earlier than the request the node's clock may
	// put the process (clocks of nodes and API servers differ).
	DefaultSkew = 5 * time.Second
	// DefaultRetention is how long a request is kept: a shell may run long
	// before it does what an Incident is about.
	DefaultRetention = time.Hour
	DefaultMaxExecs  = 10000
	// DefaultMaxPending bounds the Incidents waiting for their request.
	DefaultMaxPending = 4096
)

// Bounds of one recorded request: the audit event's fields are chosen by
// the user who made it.
const (
	MaxCommandArgs = 64
	MaxArgBytes    = 1024
	MaxGroups      = 32
	MaxSourceIPs   = 8
	MaxStringBytes = 1024
)

// Exec is one API server request that opened a session in a container.
type Exec struct {
	AuditID        string
	Verb           string // create (SPDY POST) or get (WebSocket)
	Subresource    string // exec or attach
	Namespace, Pod string
	// Container is the container query parameter; empty when the request
	// named none (the API server then uses the pod's only container).
	Container      string
	Command        []string
	User, UID      string
	Groups         []string
	ImpersonatedBy string
	SourceIPs      []string
	UserAgent      string
	Received       time.Time
	// Truncated is set when a field was cut to the bounds above.
	Truncated bool
}

// FromAudit reads an exec or attach request from an audit event; ok is
// false for any other event, and for a request the API server refused
// (only an upgraded connection, 101, or a 2xx answer opened a session).
func FromAudit(a *engine.Audit) (e Exec, ok bool) {
	if a.ObjectRef.Resource != "pods" || a.ObjectRef.APIGroup != "" {
		return Exec{}, false
	}
	sub := a.ObjectRef.Subresource
	if sub != "exec" && sub != "attach" {
		return Exec{}, false
	}
	if a.Verb != "create" && a.Verb != "get" {
		return Exec{}, false
	}
	if a.Stage != "ResponseStarted" && a.Stage != "ResponseComplete" {
		return Exec{}, false
	}
	if c := a.ResponseStatus.Code; c != 101 && (c < 200 || c > 299) {
		return Exec{}, false
	}
	if a.ObjectRef.Namespace == "" || a.ObjectRef.Name == "" || a.AuditID == "" {
		return Exec{}, false
	}
	e = Exec{
		AuditID: a.AuditID, Verb: a.Verb, Subresource: sub,
		Namespace: a.ObjectRef.Namespace, Pod: a.ObjectRef.Name,
		Received: a.RequestReceivedTimestamp,
	}
	if e.Received.IsZero() {
		e.Received = a.StageTimestamp
	}
	user := a.User
	if a.ImpersonatedUser.Username != "" {
		user = a.ImpersonatedUser
		e.ImpersonatedBy = e.cut(a.User.Username)
	}
	e.User, e.UID = e.cut(user.Username), e.cut(user.UID)
	e.Groups = e.cutList(user.Groups, MaxGroups)
	e.SourceIPs = e.cutList(a.SourceIPs, MaxSourceIPs)
	e.UserAgent = e.cut(a.UserAgent)
	if u, err := url.ParseRequestURI(a.RequestURI); err == nil {
		q := u.Query()
		e.Container = e.cut(q.Get("container"))
		e.Command = e.cutList(q["command"], MaxCommandArgs)
	} else {
		e.Truncated = true // the command is unknown: never joined by it
	}
	return e, true
}

func (e *Exec) cut(s string) string {
	if len(s) > MaxStringBytes {
		e.Truncated = true
		return s[:MaxStringBytes]
	}
	return s
}

func (e *Exec) cutList(l []string, n int) []string {
	if len(l) > n {
		e.Truncated = true
		l = l[:n]
	}
	out := make([]string, len(l))
	for i, s := range l {
		if len(s) > MaxArgBytes {
			e.Truncated = true
			s = s[:MaxArgBytes]
		}
		out[i] = s
	}
	return out
}

// Options bound a Store. Zero values take the defaults.
type Options struct {
	Window, Skew, Retention time.Duration
	MaxExecs, MaxPending    int
	Now                     func() time.Time
}

// Store keeps recent exec requests by pod. It is safe for concurrent use.
type Store struct {
	opts Options

	mu    sync.Mutex
	byPod map[string][]*Exec // namespace/pod → requests, oldest first
	ids   map[string]bool    // audit ids kept (ResponseStarted and ResponseComplete come both)
	order []*Exec            // every request kept, oldest first
	// pending are Incidents waiting for a request of their pod, by
	// namespace/pod; Wake gets them when one arrives.
	pending  map[string]map[Waiter]bool
	npending int
	wake     func(Waiter)

	m metrics
}

// Waiter names an Incident waiting for a request.
type Waiter struct{ Namespace, Name string }

type metrics struct {
	recorded, duplicate, evicted, expired, pendingEvicted prometheus.Counter
	joins                                                 *prometheus.CounterVec
	kept                                                  prometheus.GaugeFunc
}

// NewStore returns an empty store. wake, if set, is called (without the
// store's lock) for each Incident waiting on a pod when a request for that
// pod arrives.
func NewStore(opts Options, wake func(Waiter)) *Store {
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Skew <= 0 {
		opts.Skew = DefaultSkew
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.MaxExecs <= 0 {
		opts.MaxExecs = DefaultMaxExecs
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{opts: opts, byPod: map[string][]*Exec{}, ids: map[string]bool{}, pending: map[string]map[Waiter]bool{}, wake: wake}
	s.m = metrics{
		recorded:       prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_session_execs_recorded_total", Help: "API server exec and attach requests kept for joining with runtime execs."}),
		duplicate:      prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_session_execs_duplicate_total", Help: "Audit events of a request already kept (another stage)."}),
		evicted:        prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_session_execs_evicted_total", Help: "Requests dropped before their retention ended because the store was full."}),
		expired:        prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_session_execs_expired_total", Help: "Requests dropped at the end of their retention."}),
		pendingEvicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_session_pending_evicted_total", Help: "Incidents no longer woken early by their request because too many waited (they are joined at their deadline)."}),
		joins:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riposte_session_joins_total", Help: "Session lookups by result: joined, ambiguous, none."}, []string{"result"}),
	}
	s.m.kept = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riposte_session_execs", Help: "API server exec and attach requests kept."}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.order))
	})
	return s
}

// Collectors returns the store's Prometheus collectors.
func (s *Store) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.m.recorded, s.m.duplicate, s.m.evicted, s.m.expired, s.m.pendingEvicted, s.m.joins, s.m.kept}
}

// Observe keeps ev if it is an exec or attach request (FromAudit). Call it
// only with events from the API server's authenticated audit webhook.
func (s *Store) Observe(ev *engine.Event) {
	if ev.Kind != engine.KindAudit {
		return
	}
	e, ok := FromAudit(&ev.Audit)
	if !ok {
		return
	}
	s.Add(e)
}

// Add keeps one request, evicting the oldest when the store is full.
func (s *Store) Add(e Exec) {
	s.mu.Lock()
	s.expire()
	if s.ids[e.AuditID] {
		s.mu.Unlock()
		s.m.duplicate.Inc()
		return
	}
	for len(s.order) >= s.opts.MaxExecs {
		s.drop(s.order[0])
		s.order = s.order[1:]
		s.m.evicted.Inc()
	}
	p := &e
	s.order = append(s.order, p)
	s.ids[e.AuditID] = true
	k := podKey(e.Namespace, e.Pod)
	s.byPod[k] = append(s.byPod[k], p)
	var woken []Waiter
	for w := range s.pending[k] {
		woken = append(woken, w)
	}
	s.npending -= len(s.pending[k])
	delete(s.pending, k)
	s.mu.Unlock()
	s.m.recorded.Inc()
	if s.wake != nil {
		for _, w := range woken {
			s.wake(w)
		}
	}
}

// expire drops requests older than the retention. Called with mu held.
func (s *Store) expire() {
	cut := s.opts.Now().Add(-s.opts.Retention)
	n := 0
	for n < len(s.order) && s.order[n].Received.Before(cut) {
		s.drop(s.order[n])
		n++
	}
	if n > 0 {
		s.order = s.order[n:]
		s.m.expired.Add(float64(n))
	}
}

// drop removes e from the pod index. Called with mu held.
func (s *Store) drop(e *Exec) {
	delete(s.ids, e.AuditID)
	k := podKey(e.Namespace, e.Pod)
	l := s.byPod[k]
	for i, x := range l {
		if x == e {
			l = append(l[:i:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(s.byPod, k)
	} else {
		s.byPod[k] = l
	}
}

// Len is the number of requests kept.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}

// Wait registers w to be woken when a request for namespace/pod arrives.
// When too many wait, the oldest registration of the fullest pod is dropped
// (counted): that Incident is still joined at its deadline.
func (s *Store) Wait(namespace, pod string, w Waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := podKey(namespace, pod)
	if s.pending[k][w] {
		return
	}
	if s.npending >= s.opts.MaxPending {
		// Drop one waiter of any pod (map order): bounded, counted.
		for pk, ws := range s.pending {
			for x := range ws {
				delete(ws, x)
				s.npending--
				break
			}
			if len(ws) == 0 {
				delete(s.pending, pk)
			}
			break
		}
		s.m.pendingEvicted.Inc()
	}
	if s.pending[k] == nil {
		s.pending[k] = map[Waiter]bool{}
	}
	s.pending[k][w] = true
	s.npending++
}

// Pending is the number of Incidents waiting to be woken.
func (s *Store) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.npending
}

// Query is the process to explain: its pod and container, when it entered
// the container, and the command it entered with (nil when unknown).
type Query struct {
	Namespace, Pod, Container string
	Started                   time.Time
	Command                   []string
}

// Result of a lookup.
type Result struct {
	// Exec is the request behind the process when exactly one user's
	// request matches.
	Exec *Exec
	// Candidates is how many requests matched.
	Candidates int
	// Ambiguous is set when requests of different users match: nobody is
	// named.
	Ambiguous bool
}

// Lookup finds the exec request behind q: a kept exec (not attach) request
// for the same namespace, pod and container (a request naming no container
// matches any: the API server accepts that only for a pod with one
// container), received at most Skew after the process started and at most
// Window before it, and with the same command when both are known. Of
// several requests of one user the latest before the process is taken.
func (s *Store) Lookup(q Query) Result {
	s.mu.Lock()
	var cands []Exec
	for _, e := range s.byPod[podKey(q.Namespace, q.Pod)] {
		if e.Subresource != "exec" || (e.Container != "" && e.Container != q.Container) {
			continue
		}
		if q.Started.Before(e.Received.Add(-s.opts.Skew)) || q.Started.After(e.Received.Add(s.opts.Window)) {
			continue
		}
		if len(q.Command) > 0 && !e.Truncated && !equal(q.Command, e.Command) {
			continue
		}
		cands = append(cands, *e)
	}
	s.mu.Unlock()
	r := Result{Candidates: len(cands)}
	switch {
	case len(cands) == 0:
		s.m.joins.WithLabelValues("none").Inc()
		return r
	case !oneUser(cands):
		r.Ambiguous = true
		s.m.joins.WithLabelValues("ambiguous").Inc()
		return r
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].Received.Before(cands[j].Received) })
	best := cands[0]
	for _, c := range cands[1:] {
		if !c.Received.After(q.Started.Add(s.opts.Skew)) {
			best = c
		}
	}
	r.Exec = &best
	s.m.joins.WithLabelValues("joined").Inc()
	return r
}

func oneUser(l []Exec) bool {
	for _, e := range l[1:] {
		if e.User != l[0].User || e.ImpersonatedBy != l[0].ImpersonatedBy {
			return false
		}
	}
	return true
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// podKey cannot collide: namespaces and pod names never hold a slash.
func podKey(namespace, pod string) string { return namespace + "/" + pod }

// Window is the store's join window (for callers that wait for a request).
func (s *Store) Window() time.Duration { return s.opts.Window }

// NoAPIExec is the message of an exec with no API server request behind it.
const NoAPIExec = "kubelet exec probe or kubelet API: no API server exec recorded"
