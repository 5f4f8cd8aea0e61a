package agent

import (
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/riposte-dev/riposte/bpf"
	"github.com/riposte-dev/riposte/engine"
)

// countersCollector exports the kernel's per-CPU counters, summed at scrape
// time, as riposte_agent_events_total{kind,outcome}, plus the user-space
// outcomes (decode errors; exec paths and arguments the kernel kept only in
// part, completed from /proc or left partial), and the ring-buffer losses of each CPU as
// riposte_agent_ringbuf_lost_total{cpu}.
type countersCollector struct {
	s    *bpf.Sensors
	desc *prometheus.Desc
	lost *prometheus.Desc
	mu   sync.Mutex
	user map[userOutcome]uint64
}

// userOutcome is an outcome decided in user space.
type userOutcome struct {
	kind    engine.Kind
	outcome string
}

// User-space outcomes of riposte_agent_events_total.
const (
	outcomeDecodeError   = "decode_error"
	outcomePathCompleted = "path_completed" // the kernel kept part of the path; /proc had the rest
	outcomePathPartial   = "path_partial"   // the kernel kept part of the path; the process was gone
	outcomeArgsCompleted = "args_completed" // the kernel kept the first arguments; /proc had the rest
	outcomeArgsPartial   = "args_partial"   // the kernel kept the first arguments; the process was gone
)

func newCountersCollector(s *bpf.Sensors) *countersCollector {
	return &countersCollector{
		s: s,
		desc: prometheus.NewDesc("riposte_agent_events_total",
			"Events by kind and outcome: seen by a sensor, dropped by the in-kernel prefilter, submitted to the ring buffer, lost because it was full, or in user space undecodable, or with a path or arguments the kernel kept only in part, completed from /proc or left partial.",
			[]string{"kind", "outcome"}, nil),
		lost: prometheus.NewDesc("riposte_agent_ringbuf_lost_total",
			"Events the sensors of each CPU could not submit because the ring buffer was full, every kind summed.",
			[]string{"cpu"}, nil),
		user: map[userOutcome]uint64{},
	}
}

func (c *countersCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.lost
}

func (c *countersCollector) Collect(ch chan<- prometheus.Metric) {
	if lost, err := c.s.LostByCPU(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.lost, err)
	} else {
		for cpu, v := range lost {
			ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(v), strconv.Itoa(cpu))
		}
	}
	counts, err := c.s.Counters()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for k, v := range counts {
		for i, o := range bpf.Outcomes {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v[i]), string(k), o)
		}
	}
	c.mu.Lock()
	for k, v := range c.user {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v), string(k.kind), k.outcome)
	}
	c.mu.Unlock()
}

func (c *countersCollector) count(k engine.Kind, outcome string) {
	c.mu.Lock()
	c.user[userOutcome{k, outcome}]++
	c.mu.Unlock()
}

// lossLogger logs ring-buffer losses at a bounded rate: at most one line per
// interval, carrying every loss since the previous line.
type lossLogger struct {
	log      *slog.Logger
	interval time.Duration
	last     map[engine.Kind]uint64
	pending  map[engine.Kind]uint64
	lastLog  time.Time
}

func (l *lossLogger) observe(now time.Time, counts bpf.Counts) {
	if l.last == nil {
		l.last, l.pending = map[engine.Kind]uint64{}, map[engine.Kind]uint64{}
	}
	for k, v := range counts {
		lost := v[3]
		if d := lost - l.last[k]; d > 0 {
			l.pending[k] += d
		}
		l.last[k] = lost
	}
	if len(l.pending) == 0 || now.Sub(l.lastLog) < l.interval {
		return
	}
	var total uint64
	attrs := []any{}
	for k, v := range l.pending {
		total += v
		attrs = append(attrs, string(k), v)
	}
	l.log.Warn("ring buffer full: events lost", append([]any{"lost", total, "since", l.lastLog.Format(time.RFC3339)}, attrs...)...)
	l.pending = map[engine.Kind]uint64{}
	l.lastLog = now
}
