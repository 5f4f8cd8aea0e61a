package audit

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/riposte-dev/riposte/engine"
)

// Rules is the live rule set, read as versioned snapshots.
type Rules interface {
	Snapshot() (version uint64, rules []*engine.Rule)
}

// Sink receives matches. It must not block for long: workers call it inline.
type Sink interface {
	Record(m engine.Match, ev *engine.Event)
}

// PeerResolver names pods for audit sources; the enrichment store
// (engine/enrich) is one.
type PeerResolver interface {
	// PeerAt names the pod that held an IP at a time: IPs are reused, so
	// the time matters.
	PeerAt(ip string, t time.Time) (engine.Peer, bool)
	// PodPeer names the pod with a uid (its workload), false when unknown.
	PodPeer(uid string) (engine.Peer, bool)
}

// Defaults for Options.
const (
	DefaultMaxBodyBytes  = 8 << 20
	DefaultQueueBatches  = 256
	DefaultMaxQueueBytes = 64 << 20
)

// Options configure a Source.
type Options struct {
	// Tokens are the bearer tokens accepted. A request with a verified
	// client certificate needs none (the TLS config decides which CAs).
	Tokens []string
	// MaxBodyBytes bounds one request body; bigger ones get 413.
	MaxBodyBytes int64
	// QueueBatches bounds the batches waiting for a worker; when full, 429.
	QueueBatches int
	// MaxQueueBytes bounds the request bodies whose events wait for a
	// worker; a batch that would go over it gets 429, so memory stays
	// bounded however large the API server's batches are (decoded events
	// take a few times their JSON size).
	MaxQueueBytes int64
	// Workers is the number of matching goroutines (default GOMAXPROCS).
	Workers int
	// KeepRequestReceived also matches RequestReceived-stage events. Off by
	// default: the same request comes again at ResponseComplete with its
	// response code, and matching both would count every request twice.
	KeepRequestReceived bool
	// SourcePods, when set, fills audit.sourcePod (Attribute), so rules and
	// Incidents name the calling pod.
	SourcePods PeerResolver
	// Sequences holds sequence rules' partial chains, shared by the workers
	// (a chain's steps may come in different batches) and with the object
	// source; nil gives the source its own.
	Sequences *engine.Sequences
	// DedupWindow is how many recent events are remembered to drop the
	// copies of a batch the API server sends again (default
	// DefaultDedupWindow).
	DedupWindow int
	// Observe, when set, sees every processed event before it is matched,
	// in the worker (package session keeps the exec requests).
	Observe func(ev *engine.Event)
}

// Source is the audit webhook endpoint and its workers.
type Source struct {
	opts   Options
	rules  Rules
	sink   Sink
	log    logr.Logger
	queue  chan batch
	queued atomic.Int64 // body bytes of the queued batches
	tokens [][]byte
	bufs   sync.Pool
	dedup  *window

	m metrics
}

type metrics struct {
	requests *prometheus.CounterVec
	events   *prometheus.CounterVec
	matches  prometheus.Counter
	// rejectedBatches counts batches refused before decoding (over the
	// byte bound): their events are not counted one by one.
	rejectedBatches prometheus.Counter
	// dedupEvicted counts events forgotten by the duplicate filter to make
	// room: a copy of one of them arriving later is matched again.
	dedupEvicted prometheus.Counter
	queued       prometheus.GaugeFunc
	queuedBytes  prometheus.GaugeFunc
}

// batch is one request's events and the size of its body.
type batch struct {
	events []engine.Event
	bytes  int64
}

// Event results counted in riposte_audit_events_total.
const (
	resultAccepted    = "accepted"     // queued for matching
	resultRejected    = "rejected"     // refused with 429; the API server resends them
	resultDecodeError = "decode_error" // not an audit event
	resultIgnored     = "ignored"      // a stage that is not matched
	resultProcessed   = "processed"    // matched against the rules
	resultDuplicate   = "duplicate"    // a copy of an event already matched (a retried batch)
)

// New returns a source. Start its workers with Run and serve it as an
// http.Handler.
func New(rules Rules, sink Sink, log logr.Logger, opts Options) *Source {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.QueueBatches <= 0 {
		opts.QueueBatches = DefaultQueueBatches
	}
	if opts.MaxQueueBytes <= 0 {
		opts.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Sequences == nil {
		opts.Sequences = engine.NewSequences()
	}
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	s := &Source{opts: opts, rules: rules, sink: sink, log: log, queue: make(chan batch, opts.QueueBatches), dedup: newWindow(opts.DedupWindow)}
	for _, t := range opts.Tokens {
		if t != "" {
			s.tokens = append(s.tokens, []byte(t))
		}
	}
	s.bufs.New = func() any { return new(bytes.Buffer) }
	s.m = metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riposte_audit_requests_total", Help: "Audit webhook requests by HTTP status code."}, []string{"code"}),
		events:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riposte_audit_events_total", Help: "Audit events by result: accepted, rejected (429), decode_error, ignored, duplicate (a retried copy, not matched again), processed."}, []string{"result"}),
		matches:  prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_audit_matches_total", Help: "Rule matches on audit events."}),
		rejectedBatches: prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_audit_rejected_batches_total",
			Help: "Audit batches refused with 429 before decoding because the queued bytes were at their bound; the API server resends them."}),
		dedupEvicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_audit_dedup_evicted_total",
			Help: "Audit events forgotten by the duplicate filter to stay within its window; a copy arriving after that is matched again."}),
	}
	s.m.queued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riposte_audit_queue_batches", Help: "Audit batches waiting for a worker."}, func() float64 { return float64(len(s.queue)) })
	s.m.queuedBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riposte_audit_queue_bytes", Help: "Request body bytes of the audit batches waiting for a worker."}, func() float64 { return float64(s.queued.Load()) })
	return s
}

// Collectors returns the source's Prometheus collectors for registration.
func (s *Source) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.m.requests, s.m.events, s.m.matches, s.m.rejectedBatches, s.m.dedupEvicted, s.m.queued, s.m.queuedBytes}
}

// ServeHTTP accepts one audit.k8s.io/v1 EventList.
func (s *Source) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	code := s.serve(w, r)
	s.m.requests.WithLabelValues(codeLabel(code)).Inc()
}

func (s *Source) serve(w http.ResponseWriter, r *http.Request) int {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return fail(w, http.StatusMethodNotAllowed, "POST an audit.k8s.io/v1 EventList")
	}
	if !s.authenticated(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="riposte-audit"`)
		return fail(w, http.StatusUnauthorized, "a client certificate or bearer token is required")
	}
	if r.ContentLength > s.opts.MaxBodyBytes {
		return fail(w, http.StatusRequestEntityTooLarge, "body over the size limit")
	}
	buf := s.bufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 4*int(s.opts.MaxBodyBytes) {
			buf.Reset()
			s.bufs.Put(buf)
		}
	}()
	buf.Reset()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fail(w, http.StatusRequestEntityTooLarge, "body over the size limit")
		}
		return fail(w, http.StatusBadRequest, "read body: "+err.Error())
	}
	size := int64(buf.Len())
	// Reserve the bytes before decoding: what waits is what is bounded (a
	// batch alone in the queue always fits, up to MaxBodyBytes).
	if n := s.queued.Add(size); n > s.opts.MaxQueueBytes && n != size {
		s.queued.Add(-size)
		return s.reject(w, -1)
	}
	events, err := s.decode(buf.Bytes())
	if err != nil {
		s.queued.Add(-size)
		return fail(w, http.StatusBadRequest, err.Error())
	}
	if len(events) == 0 {
		s.queued.Add(-size)
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	}
	select {
	case s.queue <- batch{events: events, bytes: size}:
		s.m.events.WithLabelValues(resultAccepted).Add(float64(len(events)))
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	default:
		s.queued.Add(-size)
		return s.reject(w, len(events))
	}
}

// reject answers 429: the API server's webhook backend retries the batch.
// n is the number of events refused, -1 when they were not decoded.
func (s *Source) reject(w http.ResponseWriter, n int) int {
	if n > 0 {
		s.m.events.WithLabelValues(resultRejected).Add(float64(n))
	} else {
		s.m.rejectedBatches.Inc()
	}
	w.Header().Set("Retry-After", "1")
	return fail(w, http.StatusTooManyRequests, "audit queue full, retry")
}

// authenticated accepts a verified client certificate or a known bearer
// token, compared in constant time.
func (s *Source) authenticated(r *http.Request) bool {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return false
	}
	got := []byte(tok)
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare(got, t) == 1 {
			return true
		}
	}
	return false
}

// eventList is audit.k8s.io/v1 EventList decoded in one pass: decoding
// twice (items as raw JSON, then each item) costs a third of the endpoint's
// CPU, and a well-formed list is the normal case.
type eventList struct {
	Kind  string         `json:"kind"`
	Items []engine.Audit `json:"items"`
}

// rawEventList is the fallback for a list with a malformed item, so one bad
// item does not lose the batch.
type rawEventList struct {
	Items []json.RawMessage `json:"items"`
}

func (s *Source) decode(body []byte) ([]engine.Event, error) {
	var list eventList
	if err := json.Unmarshal(body, &list); err != nil {
		var raw rawEventList
		if json.Unmarshal(body, &raw) != nil {
			return nil, errors.New("decode EventList: " + err.Error())
		}
		return s.decodeEach(raw.Items), nil
	}
	if list.Kind != "" && list.Kind != "EventList" {
		return nil, errors.New("decode EventList: kind is " + list.Kind)
	}
	batch := make([]engine.Event, 0, len(list.Items))
	var bad, ignored int
	for i := range list.Items {
		a := &list.Items[i]
		switch {
		case a.AuditID == "" && a.Verb == "":
			bad++ // the same check as engine.DecodeAuditEvent
		case a.Stage == "RequestReceived" && !s.opts.KeepRequestReceived:
			ignored++
		default:
			batch = append(batch, engine.Event{Kind: engine.KindAudit, Audit: *a})
			engine.Normalize(&batch[len(batch)-1])
		}
	}
	s.count(bad, ignored)
	return batch, nil
}

// decodeEach decodes items one by one, counting the ones that fail.
func (s *Source) decodeEach(items []json.RawMessage) []engine.Event {
	batch := make([]engine.Event, 0, len(items))
	var bad, ignored int
	for _, raw := range items {
		ev, err := engine.DecodeAuditEvent(raw)
		switch {
		case err != nil:
			bad++
		case ev.Audit.Stage == "RequestReceived" && !s.opts.KeepRequestReceived:
			ignored++
		default:
			batch = append(batch, ev)
		}
	}
	s.count(bad, ignored)
	return batch
}

func (s *Source) count(bad, ignored int) {
	if bad > 0 {
		s.m.events.WithLabelValues(resultDecodeError).Add(float64(bad))
	}
	if ignored > 0 {
		s.m.events.WithLabelValues(resultIgnored).Add(float64(ignored))
	}
}

// Run starts the workers and returns when ctx ends and the queue is drained.
func (s *Source) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range s.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.work(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// work matches batches with a matcher of its own (matchers are not
// synchronised), rebuilt when the live rule set changes.
func (s *Source) work(ctx context.Context) {
	var (
		version uint64
		m       *engine.Matcher
		matches []engine.Match
	)
	processed := s.m.events.WithLabelValues(resultProcessed)
	duplicate := s.m.events.WithLabelValues(resultDuplicate)
	for {
		var b batch
		select {
		case <-ctx.Done():
			return
		case b = <-s.queue:
		}
		batch, dup, evicted := s.dedup.admit(b.events)
		if dup > 0 {
			duplicate.Add(float64(dup))
		}
		if evicted > 0 {
			s.m.dedupEvicted.Add(float64(evicted))
		}
		if v, rules := s.rules.Snapshot(); m == nil || v != version {
			version, m = v, engine.NewMatcherWith(rules, s.opts.Sequences)
		}
		for i := range batch {
			ev := &batch[i]
			if r := s.opts.SourcePods; r != nil {
				Attribute(&ev.Audit, ev.Time, r)
			}
			if s.opts.Observe != nil {
				s.opts.Observe(ev)
			}
			matches = m.Match(ev, matches[:0])
			for _, mt := range matches {
				s.m.matches.Inc()
				s.sink.Record(mt, ev)
			}
			matches = s.matchObject(m, ev, matches)
		}
		processed.Add(float64(len(batch)))
		s.queued.Add(-b.bytes)
	}
}

// Attribute fills a.SourcePod from what the API server authenticated: the
// pod a bound ServiceAccount token was issued for (its claims), or else the
// pod that held the connection's address (the last sourceIPs entry) at time
// t. The first entries of sourceIPs come from the client's X-Forwarded-For
// header and are never used: any client could name any pod there.
func Attribute(a *engine.Audit, t time.Time, r PeerResolver) {
	if p, ok := engine.SourcePodClaims(a); ok {
		if known, ok := r.PodPeer(p.PodUID); ok && known.Namespace == p.Namespace {
			p = known
		}
		a.SourcePod = p
		return
	}
	if ip := engine.ConnectionIP(a); ip != "" {
		if p, ok := r.PeerAt(ip, t); ok {
			a.SourcePod = p
		}
	}
}

func fail(w http.ResponseWriter, code int, msg string) int {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
	return code
}

func codeLabel(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 401:
		return "401"
	case 405:
		return "405"
	case 413:
		return "413"
	case 429:
		return "429"
	}
	return "other"
}
