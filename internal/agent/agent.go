package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/riposte-dev/riposte/bpf"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/internal/agent/proctable"
)

// Config configures an agent.
type Config struct {
	Node string
	Log  *slog.Logger
	// Registry receives the agent's metrics; nil registers nothing.
	Registry prometheus.Registerer
	// OnMatch is called for each event some rule matched, in the reading
	// goroutine; ev and its slices are reused after it returns.
	OnMatch func(ev *engine.Event, matches []engine.Match)
	// OnEnforce is called for each in-kernel enforcement (an enforce event).
	OnEnforce func(ev *engine.Event)
	// OnEvent, when set, sees every decoded event (tests, recording).
	OnEvent func(ev *engine.Event)
	// Enrich, when set, fills container, pod and workload (enrich.Store.Enrich
	// in the cluster) after the process table and before matching. Every
	// cgroup it gives a container id to must first be registered with
	// Sensors().SetContainerCgroup, or container-only rules could miss
	// container processes in the host's mount namespace (docs/agent.md).
	Enrich func(ev *engine.Event)
	// Sensors tunes the sensors (tests report the agent's own activity).
	Sensors bpf.Options
}

// ruleState is one rule set, swapped whole when rules change.
type ruleState struct {
	matcher  *engine.Matcher
	killRule []string // kill slot - 1 -> rule name
}

// Agent is the running pipeline.
type Agent struct {
	cfg     Config
	sensors *bpf.Sensors
	table   *proctable.Table
	rules   atomic.Pointer[ruleState]
	// seqs holds sequence rules' partial chains across rule-set changes:
	// an unchanged rule keeps its chains.
	seqs        *engine.Sequences
	counters    *countersCollector
	Enforcement Enforcement
}

// New probes the enforcement, loads and attaches the sensors and seeds the
// process table. It returns an error wrapping bpf.ErrMissing when the machine
// cannot run them.
func New(cfg Config) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if err := bpf.Check(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, seqs: engine.NewSequences()}
	a.Enforcement = ProbeLSM()
	s, err := bpf.Load(cfg.Sensors)
	if err != nil {
		return nil, err
	}
	a.sensors = s
	a.Enforcement.Announce(cfg.Log, cfg.Registry)
	boot := bpf.BootTime()
	a.table = proctable.New(proctable.Options{Kernel: func(pid uint32) (proctable.KernelProc, bool) {
		p, ok := s.Proc(pid)
		k := proctable.KernelProc{ExecTime: p.ExecTime, PPID: p.PPID, Binary: p.Binary}
		switch p.Origin {
		case bpf.OriginEntrypoint:
			k.Origin = engine.OriginEntrypoint
		case bpf.OriginExec:
			k.Origin = engine.OriginExec
		}
		if k.Origin != "" {
			k.OriginPID = int64(p.Root)
			k.OriginTime = boot.Add(time.Duration(p.RootTime))
		}
		return k, ok
	}})
	if err := a.table.Seed(); err != nil {
		s.Close()
		return nil, err
	}
	a.counters = newCountersCollector(s)
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(a.counters); err != nil {
			s.Close()
			return nil, fmt.Errorf("register agent metrics: %w", err)
		}
	}
	a.rules.Store(&ruleState{matcher: engine.NewMatcherWith(nil, a.seqs)})
	return a, nil
}

// Sensors exposes the loaded sensors (counters, filter).
func (a *Agent) Sensors() *bpf.Sensors { return a.sensors }

// Table exposes the process table.
func (a *Agent) Table() *proctable.Table { return a.table }

// SetRules makes a rule set live: the kernel filter, the kill sets and the
// matcher, without reattaching anything. kill are the rules a playbook asks
// to kill in the kernel; those the kernel cannot check exactly are returned
// as skipped (with the reason) and not killed in the kernel.
func (a *Agent) SetRules(rules []*engine.Rule, kill []KillRule) (skipped []error, err error) {
	// A sequence lets through the events of any of its steps.
	in := make([]bpf.RuleConstraints, 0, len(rules))
	for _, r := range rules {
		for _, c := range r.Prefilters() {
			in = append(in, bpf.RuleConstraints{Name: r.Name(), Constraints: c})
		}
	}
	ks, skipped := NewKillSet(kill)
	st := &ruleState{matcher: engine.NewMatcherWith(rules, a.seqs)}
	slot := map[string]uint32{}
	target := func(e KillEntry) bpf.KillTarget {
		return bpf.KillTarget{Slot: slotOf(st, slot, e.Rule), Host: e.Host, Protected: e.Protected}
	}
	bins, names := map[string]bpf.KillTarget{}, map[string]bpf.KillTarget{}
	for b, e := range ks.Binaries {
		bins[b] = target(e)
	}
	for n, e := range ks.Names {
		names[n] = target(e)
	}
	// Matcher first, kernel after: a filter wider than the matcher is sound.
	a.rules.Store(st)
	if err := a.sensors.SetFilter(bpf.NewFilter(in)); err != nil {
		return skipped, err
	}
	if err := a.sensors.SetKill(bins, names); err != nil {
		return skipped, err
	}
	return skipped, nil
}

func slotOf(st *ruleState, slot map[string]uint32, rule string) uint32 {
	if s, ok := slot[rule]; ok {
		return s
	}
	st.killRule = append(st.killRule, rule)
	slot[rule] = uint32(len(st.killRule))
	return slot[rule]
}

// Close detaches the sensors.
func (a *Agent) Close() error { return a.sensors.Close() }

// Run reads events until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	// Housekeeping reads the sensors' maps: it ends before Run returns, so
	// Close after Run never closes a map under it.
	hctx, stop := context.WithCancel(ctx)
	hdone := make(chan struct{})
	go func() { defer close(hdone); a.housekeeping(hctx) }()
	defer func() { stop(); <-hdone }()
	d := bpf.Decoder{Boot: bpf.BootTime(), Node: a.cfg.Node}
	var (
		rec     ringbuf.Record
		ev      engine.Event
		matches []engine.Match
	)
	for {
		// A short deadline lets the loop notice ctx: the reader cannot be
		// interrupted from another goroutine without closing it.
		a.sensors.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if err := a.sensors.Read(&rec); err != nil {
			if ctx.Err() != nil || errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return fmt.Errorf("read ring buffer: %w", err)
		}
		meta, err := d.Decode(rec.RawSample, &ev)
		if err != nil {
			a.counters.count(ev.Kind, outcomeDecodeError)
			continue
		}
		if ev.Kind == engine.KindExec && (meta.PathIncomplete || len(ev.Process.Binary) >= bpf.MaxPath) {
			a.completeBinary(&ev, meta.PathIncomplete)
		}
		if ev.Kind == engine.KindExec && meta.ArgsIncomplete {
			a.completeArgs(&ev)
		}
		a.table.Observe(&ev, meta.KTime)
		a.table.Fill(&ev)
		if a.cfg.Enrich != nil {
			a.cfg.Enrich(&ev)
		}
		engine.Normalize(&ev)
		st := a.rules.Load()
		if meta.EnforceSlot != 0 && a.cfg.OnEnforce != nil {
			enf := engine.Event{Kind: engine.KindEnforce, Time: ev.Time, Node: ev.Node, Process: ev.Process}
			enf.Enforcement = engine.Enforcement{Action: "kill", Layer: "bpf_send_signal"}
			if i := int(meta.EnforceSlot) - 1; i < len(st.killRule) {
				enf.Enforcement.Rule = st.killRule[i]
			}
			a.cfg.OnEnforce(&enf)
		}
		if a.cfg.OnEvent != nil {
			a.cfg.OnEvent(&ev)
		}
		matches = st.matcher.Match(&ev, matches[:0])
		if len(matches) > 0 && a.cfg.OnMatch != nil {
			a.cfg.OnMatch(&ev, matches)
		}
	}
}

// completeBinary replaces a binary path the kernel kept only in part (its
// first bpf.MaxPath bytes, or its tail when deeper than the kernel walks)
// with the whole path from /proc, so rules on the base name or the path
// cannot be evaded by a long or deep path. When the process is gone, or
// runs another binary already, the part stays and the event says it is
// truncated.
func (a *Agent) completeBinary(ev *engine.Event, tail bool) {
	if full, ok := a.table.CompleteBinary(ev.Process.PID, ev.Process.Binary, tail); ok {
		ev.Process.Binary = full
		a.counters.count(engine.KindExec, outcomePathCompleted)
		return
	}
	ev.Truncated = true
	a.counters.count(engine.KindExec, outcomePathPartial)
}

// completeArgs replaces the arguments of an exec that filled the kernel's
// buffer (bpf.ArgsMax bytes) with the whole command line from /proc, so
// padding the arguments does not hide the ones after it from the rules.
// When the process is gone, or its command line no longer starts with what
// the kernel saw, the part stays and the event says it is truncated.
func (a *Agent) completeArgs(ev *engine.Event) {
	if full, ok := a.table.CompleteArgs(ev.Process.PID, ev.Process.Args); ok {
		ev.Process.Args = full
		a.counters.count(engine.KindExec, outcomeArgsCompleted)
		return
	}
	ev.Truncated = true
	a.counters.count(engine.KindExec, outcomeArgsPartial)
}

// housekeeping logs losses at a bounded rate and ages the process table.
func (a *Agent) housekeeping(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	loss := lossLogger{log: a.cfg.Log, interval: 10 * time.Second}
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if c, err := a.sensors.Counters(); err == nil {
				loss.observe(now, c)
			}
			if n++; n%10 == 0 {
				a.table.Sweep(now)
				a.table.GC(now)
			}
		}
	}
}
