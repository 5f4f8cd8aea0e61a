// Package recorder is the agent's flight recorder: per container, the last
// events that reached user space (execs with arguments and parent, opens,
// connects, ...), bounded in events, age and containers, so an Incident can
// carry what its container did before the match.
package recorder

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// Defaults and bounds.
const (
	DefaultEvents     = 64
	DefaultAge        = 5 * time.Minute
	DefaultContainers = 1024
	maxArgs           = 16
	maxString         = 256
)

// Options bound a Recorder. Zero values take the defaults.
type Options struct {
	// Events is how many events each container keeps (the last ones).
	Events int
	// Age is how old a kept event may be.
	Age time.Duration
	// Containers is how many containers are recorded; the one written
	// least recently is evicted (counted) to make room.
	Containers int
}

// Recorder is safe for concurrent use.
type Recorder struct {
	opts Options

	mu   sync.Mutex
	ring map[string]*ring
	tick uint64

	evicted prometheus.Counter
}

type ring struct {
	entries []v1alpha1.TimelineEntry
	next    int // where the next entry goes once full
	used    uint64
}

// New returns an empty recorder.
func New(o Options) *Recorder {
	if o.Events <= 0 {
		o.Events = DefaultEvents
	}
	if o.Age <= 0 {
		o.Age = DefaultAge
	}
	if o.Containers <= 0 {
		o.Containers = DefaultContainers
	}
	return &Recorder{opts: o, ring: map[string]*ring{},
		evicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "riposte_recorder_containers_evicted_total",
			Help: "Containers whose flight recorder was dropped to make room for another."})}
}

// Collectors returns the recorder's metrics.
func (r *Recorder) Collectors() []prometheus.Collector { return []prometheus.Collector{r.evicted} }

// Add records a container event; host events and enforcement reports are
// not recorded.
func (r *Recorder) Add(ev *engine.Event) {
	id := ev.Container.ID
	if id == "" || ev.Kind == engine.KindEnforce {
		return
	}
	e := entryOf(ev)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tick++
	rg := r.ring[id]
	if rg == nil {
		if len(r.ring) >= r.opts.Containers {
			r.evictOldest()
		}
		rg = &ring{entries: make([]v1alpha1.TimelineEntry, 0, r.opts.Events)}
		r.ring[id] = rg
	}
	rg.used = r.tick
	if len(rg.entries) < r.opts.Events {
		rg.entries = append(rg.entries, e)
		return
	}
	rg.entries[rg.next] = e
	rg.next = (rg.next + 1) % r.opts.Events
}

// evictOldest drops the container written least recently. Called with mu
// held; linear in the containers, which are bounded.
func (r *Recorder) evictOldest() {
	var oldest string
	var at uint64
	for id, rg := range r.ring {
		if oldest == "" || rg.used < at {
			oldest, at = id, rg.used
		}
	}
	delete(r.ring, oldest)
	r.evicted.Inc()
}

// Timeline returns a container's events up to and including until, no
// older than the recorder's age, oldest first.
func (r *Recorder) Timeline(containerID string, until time.Time) []v1alpha1.TimelineEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	rg := r.ring[containerID]
	if rg == nil {
		return nil
	}
	from := until.Add(-r.opts.Age)
	out := make([]v1alpha1.TimelineEntry, 0, len(rg.entries))
	n := len(rg.entries)
	for i := range n {
		e := rg.entries[(rg.next+i)%n]
		if e.Time.Time.After(until) || e.Time.Time.Before(from) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// Containers is how many containers are recorded.
func (r *Recorder) Containers() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ring)
}

func entryOf(ev *engine.Event) v1alpha1.TimelineEntry {
	p := &ev.Process
	e := v1alpha1.TimelineEntry{Time: metav1.NewMicroTime(ev.Time), Kind: string(ev.Kind), PID: p.PID, PPID: p.PPID, Binary: cut(p.Binary), Origin: p.Origin}
	if ev.Kind == engine.KindExec {
		args := p.Args
		if len(args) > maxArgs {
			args = args[:maxArgs]
		}
		e.Args = make([]string, len(args))
		for i, a := range args {
			e.Args[i] = cut(a)
		}
	}
	if ev.File.Path != "" {
		e.Path = cut(ev.File.Path)
	}
	if ev.Net.Peer.IP != "" {
		e.Peer = net.JoinHostPort(ev.Net.Peer.IP, strconv.FormatInt(ev.Net.Peer.Port, 10))
	}
	return e
}

// cut bounds s to maxString bytes, copied so the recorder does not keep
// the event's longer string alive.
func cut(s string) string {
	if len(s) > maxString {
		return strings.Clone(s[:maxString])
	}
	return s
}
