package objects

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/riposte-dev/riposte/engine"
)

// Rules is the live rule set, read as versioned snapshots.
type Rules interface {
	Snapshot() (version uint64, rules []*engine.Rule)
}

// Sink receives matches.
type Sink interface {
	Record(m engine.Match, ev *engine.Event)
}

// Source turns object changes into events and matches them.
type Source struct {
	rules Rules
	sink  Sink
	log   logr.Logger
	queue chan engine.Event
	now   func() time.Time
	seqs  *engine.Sequences

	events  *prometheus.CounterVec
	matches prometheus.Counter
}

// New returns a source with a queue of queueLen events. Informer handlers
// block when it is full rather than drop: the informer buffers meanwhile.
func New(rules Rules, sink Sink, log logr.Logger, queueLen int) *Source {
	if queueLen <= 0 {
		queueLen = 4096
	}
	return &Source{
		rules: rules, sink: sink, log: log, queue: make(chan engine.Event, queueLen), now: time.Now, seqs: engine.NewSequences(),
		events:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "riposte_object_events_total", Help: "Object events by operation."}, []string{"op"}),
		matches: prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_object_matches_total", Help: "Rule matches on object events."}),
	}
}

// ShareSequences makes the source keep sequence rules' partial chains in
// seqs, shared with the audit source, so a chain may start with an object
// the watch saw and end with an audit event. Call it before Run.
func (s *Source) ShareSequences(seqs *engine.Sequences) { s.seqs = seqs }

// Collectors returns the source's Prometheus collectors for registration.
func (s *Source) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.events, s.matches}
}

// Handler returns the informer event handler for one kind. Objects of the
// informer's initial list are not events: they existed before the
// controller started, and each restart would report them again.
func (s *Source) Handler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, initial bool) {
			if !initial {
				s.offer("create", obj)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(metav1.Object)
			n, ok2 := newObj.(metav1.Object)
			if ok1 && ok2 && o.GetResourceVersion() == n.GetResourceVersion() {
				return // a resync, not a change
			}
			s.offer("update", newObj)
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			s.offer("delete", obj)
		},
	}
}

func (s *Source) offer(op string, obj any) {
	ev, err := Event(op, obj, s.now())
	if err != nil {
		s.log.Error(err, "convert object event")
		return
	}
	s.events.WithLabelValues(op).Inc()
	s.queue <- ev
}

// Event converts an object change into an engine event. A Pod also fills
// pod (engine.PodFromObject, the same view audit events derive) and node.
func Event(op string, obj any, now time.Time) (engine.Event, error) {
	ev := engine.Event{Kind: engine.KindObject, Op: op, Time: now}
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		ev.Object = o.Object
	case *corev1.Pod:
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return ev, fmt.Errorf("convert pod %s/%s: %w", o.Namespace, o.Name, err)
		}
		if m["kind"] == nil || m["kind"] == "" {
			m["apiVersion"], m["kind"] = "v1", "Pod"
		}
		ev.Object = m
	case runtime.Object:
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return ev, fmt.Errorf("convert %T: %w", o, err)
		}
		ev.Object = m
	default:
		return ev, fmt.Errorf("unexpected object %T", obj)
	}
	if kind, _ := ev.Object["kind"].(string); kind == "Pod" {
		ev.Pod = engine.PodFromObject(ev.Object)
		ev.Node = ev.Pod.Node
	}
	engine.Normalize(&ev)
	return ev, nil
}

// Run matches queued events until ctx ends. One goroutine: the matcher is
// not synchronised, and object events are few next to audit events.
func (s *Source) Run(ctx context.Context) error {
	var (
		version uint64
		m       *engine.Matcher
		matches []engine.Match
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-s.queue:
			if v, rules := s.rules.Snapshot(); m == nil || v != version {
				version, m = v, engine.NewMatcherWith(rules, s.seqs)
			}
			matches = m.Match(&ev, matches[:0])
			for _, mt := range matches {
				s.matches.Inc()
				s.sink.Record(mt, &ev)
			}
		}
	}
}

// ParseKinds parses "group/version/Kind" (or "version/Kind" for the core
// group) entries into GVKs.
func ParseKinds(specs []string) ([]schema.GroupVersionKind, error) {
	var out []schema.GroupVersionKind
	for _, sp := range specs {
		gv, kind, ok := cut(sp)
		if !ok {
			return nil, fmt.Errorf("object kind %q: want group/version/Kind or version/Kind", sp)
		}
		g, err := schema.ParseGroupVersion(gv)
		if err != nil {
			return nil, fmt.Errorf("object kind %q: %w", sp, err)
		}
		out = append(out, g.WithKind(kind))
	}
	return out, nil
}

func cut(s string) (gv, kind string, ok bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			return s[:i], s[i+1:], i > 0 && i < len(s)-1
		}
	}
	return "", "", false
}
