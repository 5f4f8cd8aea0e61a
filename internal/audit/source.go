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

// PeerResolver names the pod that held an IP at a time; the enrichment
// store (engine/enrich) is one. IPs are reused, so the time matters.
type PeerResolver interface {
	PeerAt(ip string, t time.Time) (engine.Peer, bool)
}

// Defaults for Options.
const (
	DefaultMaxBodyBytes = 8 << 20
	DefaultQueueBatches = 256
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
	// Workers is the number of matching goroutines (default GOMAXPROCS).
	Workers int
	// KeepRequestReceived also matches RequestReceived-stage events. Off by
	// default: the same request comes again at ResponseComplete with its
	// response code, and matching both would count every request twice.
	KeepRequestReceived bool
	// SourcePods, when set, fills audit.sourcePod from the first source IP
	// at the event's time, so rules and Incidents name the calling pod.
	SourcePods PeerResolver
}

// Source is the audit webhook endpoint and its workers.
type Source struct {
	opts   Options
	rules  Rules
	sink   Sink
	log    logr.Logger
	queue  chan []engine.Event
	tokens [][]byte
	bufs   sync.Pool

	m metrics
}

type metrics struct {
	requests *prometheus.CounterVec
	events   *prometheus.CounterVec
	matches  prometheus.Counter
	queued   prometheus.GaugeFunc
}

// Event results counted in riposte_audit_events_total.
const (
	resultAccepted    = "accepted"     // queued for matching
	resultRejected    = "rejected"     // refused with 429; the API server resends them
	resultDecodeError = "decode_error" // not an audit event
	resultIgnored     = "ignored"      // a stage that is not matched
	resultProcessed   = "processed"    // matched against the rules
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
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	s := &Source{opts: opts, rules: rules, sink: sink, log: log, queue: make(chan []engine.Event, opts.QueueBatches)}
	for _, t := range opts.Tokens {
		if t != "" {
			s.tokens = append(s.tokens, []byte(t))
		}
	}
	s.bufs.New = func() any { return new(bytes.Buffer) }
	s.m = metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riposte_audit_requests_total", Help: "Audit webhook requests by HTTP status code."}, []string{"code"}),
		events:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riposte_audit_events_total", Help: "Audit events by result: accepted, rejected (429), decode_error, ignored, processed."}, []string{"result"}),
		matches:  prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_audit_matches_total", Help: "Rule matches on audit events."}),
	}
	s.m.queued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "riposte_audit_queue_batches", Help: "Audit batches waiting for a worker."}, func() float64 { return float64(len(s.queue)) })
	return s
}

// Collectors returns the source's Prometheus collectors for registration.
func (s *Source) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.m.requests, s.m.events, s.m.matches, s.m.queued}
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
	batch, err := s.decode(buf.Bytes())
	if err != nil {
		return fail(w, http.StatusBadRequest, err.Error())
	}
	if len(batch) == 0 {
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	}
	select {
	case s.queue <- batch:
		s.m.events.WithLabelValues(resultAccepted).Add(float64(len(batch)))
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	default:
		// Back-pressure: the API server's webhook backend retries on 429.
		s.m.events.WithLabelValues(resultRejected).Add(float64(len(batch)))
		w.Header().Set("Retry-After", "1")
		return fail(w, http.StatusTooManyRequests, "audit queue full, retry")
	}
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
	for {
		var batch []engine.Event
		select {
		case <-ctx.Done():
			return
		case batch = <-s.queue:
		}
		if v, rules := s.rules.Snapshot(); m == nil || v != version {
			version, m = v, engine.NewMatcher(rules)
		}
		for i := range batch {
			ev := &batch[i]
			if r := s.opts.SourcePods; r != nil && len(ev.Audit.SourceIPs) > 0 {
				if p, ok := r.PeerAt(ev.Audit.SourceIPs[0], ev.Time); ok {
					ev.Audit.SourcePod = p
				}
			}
			matches = m.Match(ev, matches[:0])
			for _, mt := range matches {
				s.m.matches.Inc()
				s.sink.Record(mt, ev)
			}
			matches = s.matchObject(m, ev, matches)
		}
		processed.Add(float64(len(batch)))
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
