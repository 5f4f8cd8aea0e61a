package engine

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// Bounds of sequence rules. A sequence keeps, per key, at most one partial
// chain per step but the last (the one that started latest), so its state is
// bounded by MaxKeys keys of at most MaxSequenceSteps-1 chains, each step's
// event kept as JSON of at most MaxStepEventBytes, and by MaxSequenceBytes
// per rule in all: whichever bound is reached first evicts the key seen
// least recently, and the eviction is counted.
const (
	MaxSequenceSteps    = 8
	MaxSequenceKeyExprs = 4
	DefaultSequenceKeys = 1024
	MaxSequenceKeys     = 65536
	MaxStepEventBytes   = 2 << 10
	MaxSequenceBytes    = 8 << 20
)

// sequence is the compiled sequence part of a rule.
type sequence struct {
	steps   []seqStep
	window  time.Duration
	maxKeys int
	// conds and exceptions are the live programs in step and exception
	// order, so the per-event path builds no slice.
	conds, exceptions []cel.Program
}

type seqStep struct {
	name        string
	kindSet     uint64
	cond        cel.Program
	condAst     *cel.Ast
	keys        []cel.Program // the sequence's key unless the step has its own
	constraints Constraints
}

// StepEvent is the event that satisfied one step of a sequence: its JSON
// form, bounded to MaxStepEventBytes (large object bodies are left out first).
type StepEvent struct {
	Step  string          `json:"step"`
	Time  time.Time       `json:"time"`
	Event json.RawMessage `json:"event"`
}

// IsSequence reports whether the rule matches a sequence of events.
func (r *Rule) IsSequence() bool { return r.seq != nil }

// Prefilters are the necessary conditions the kernel may check for the
// rule, any one of which lets an event through: the rule's constraints, or
// for a sequence each step's. Their union is the rule's prefilter.
func (r *Rule) Prefilters() []Constraints {
	if r.seq == nil {
		return []Constraints{r.constraints}
	}
	out := make([]Constraints, len(r.seq.steps))
	for i, s := range r.seq.steps {
		out[i] = s.constraints
	}
	return out
}

// ExplainPrefilter renders the rule's prefilter for `riposte lint`,
// `riposte compile --explain` and rule status: its constraints, or for a
// sequence each step's, any of which lets an event through.
func (r *Rule) ExplainPrefilter() string {
	if r.seq == nil {
		return r.constraints.Explain()
	}
	parts := make([]string, len(r.seq.steps))
	for i, s := range r.seq.steps {
		parts[i] = fmt.Sprintf("step %s: %s", s.name, s.constraints.Explain())
	}
	return strings.Join(parts, " || ")
}

// compileSequence compiles spec.Sequence into r: each step's condition and
// key, the union of the steps' kinds, and per-step constraints.
func (r *Rule) compileSequence(env *cel.Env, display string, sq *v1alpha1.Sequence) error {
	invalid := func(format string, a ...any) error {
		return fmt.Errorf("%w %q: sequence."+format, append([]any{ErrInvalidRule, display}, a...)...)
	}
	if r.spec.Condition != "" {
		return fmt.Errorf("%w %q: set condition or sequence, not both", ErrInvalidRule, display)
	}
	if n := len(sq.Steps); n < 2 || n > MaxSequenceSteps {
		return invalid("steps: %d steps, want 2 to %d", n, MaxSequenceSteps)
	}
	if sq.Window.Duration <= 0 {
		return invalid("window must be positive")
	}
	if n := len(sq.Key); n < 1 || n > MaxSequenceKeyExprs {
		return invalid("key: %d expressions, want 1 to %d", n, MaxSequenceKeyExprs)
	}
	s := &sequence{window: sq.Window.Duration, maxKeys: int(sq.MaxKeys)}
	switch {
	case s.maxKeys == 0:
		s.maxKeys = DefaultSequenceKeys
	case s.maxKeys < 0 || s.maxKeys > MaxSequenceKeys:
		return invalid("maxKeys %d is not between 1 and %d", sq.MaxKeys, MaxSequenceKeys)
	}
	compileKeys := func(field string, exprs []string) ([]cel.Program, error) {
		var out []cel.Program
		for i, k := range exprs {
			f := fmt.Sprintf("%s[%d]", field, i)
			a, _, err := compileExpr(env, display, f, k, nil)
			if err != nil {
				return nil, err
			}
			p, err := program(env, a)
			if err != nil {
				return nil, fmt.Errorf("compile rule %q: %s: %w", display, f, err)
			}
			out = append(out, p)
		}
		return out, nil
	}
	keys, err := compileKeys("sequence.key", sq.Key)
	if err != nil {
		return err
	}
	var all []Constraints
	for i, st := range sq.Steps {
		field := fmt.Sprintf("sequence.steps[%d]", i)
		if st.Name == "" {
			return invalid("steps[%d] has no name", i)
		}
		for _, prev := range sq.Steps[:i] {
			if prev.Name == st.Name {
				return invalid("steps[%d]: name %q is used twice", i, st.Name)
			}
		}
		src := r.source
		if st.Source != "" {
			src = Source(st.Source)
			if src.Kinds() == nil {
				return invalid("steps[%d].source %q is not one of process, file, network, audit, object", i, st.Source)
			}
			if onNode(src) != onNode(r.source) {
				return invalid("steps[%d].source %q: node sources (process, file, network) run in the agents, audit and object in the controller; a sequence's steps stay on the side of its source %q", i, st.Source, r.source)
			}
		}
		a, cost, err := compileExpr(env, display, field+".condition", st.Condition, cel.BoolType)
		if err != nil {
			return err
		}
		p, err := program(env, a)
		if err != nil {
			return fmt.Errorf("compile rule %q: %s.condition: %w", display, field, err)
		}
		step := seqStep{name: st.Name, cond: p, condAst: a, keys: keys}
		if len(st.Key) > 0 {
			if len(st.Key) != len(sq.Key) {
				return invalid("steps[%d].key has %d expressions, the sequence's key %d: keys are compared value by value", i, len(st.Key), len(sq.Key))
			}
			if step.keys, err = compileKeys(field+".key", st.Key); err != nil {
				return err
			}
		}
		step.constraints = deriveConstraints(a.NativeRep().Expr(), src)
		step.constraints.Namespace = r.namespace
		step.kindSet = kindBits(step.constraints.Kinds)
		if step.kindSet == 0 {
			return invalid("steps[%d] can never match: its event.kind is outside source %q", i, src)
		}
		r.cost += cost
		s.steps = append(s.steps, step)
		all = append(all, step.constraints)
	}
	r.seq = s
	r.constraints = mergeConstraints(all)
	r.constraints.Namespace = r.namespace
	r.kindSet = kindBits(r.constraints.Kinds)
	return nil
}

// onNode reports whether a source's events are matched by the node agents.
func onNode(s Source) bool { return s != SourceAudit && s != SourceObject }

func kindBits(ks []Kind) uint64 {
	var b uint64
	for i, k := range AllKinds() {
		if slices.Contains(ks, k) {
			b |= 1 << i
		}
	}
	return b
}

// mergeConstraints is one conjunction implied by any of cs: the union of
// their kinds, and each other field only where every one constrains it (the
// union of the values), so an event admitted by one of cs is admitted by it.
func mergeConstraints(cs []Constraints) Constraints {
	out := Constraints{Kinds: []Kind{}, ContainerOnly: true}
	for _, c := range cs {
		for _, k := range c.Kinds {
			if !slices.Contains(out.Kinds, k) {
				out.Kinds = append(out.Kinds, k)
			}
		}
		out.ContainerOnly = out.ContainerOnly && c.ContainerOnly
	}
	slices.SortFunc(out.Kinds, func(a, b Kind) int { return kindIndex(a) - kindIndex(b) })
	out.Binaries = unionAll(cs, func(c *Constraints) []string { return c.Binaries })
	out.Basenames = unionAll(cs, func(c *Constraints) []string { return c.Basenames })
	out.PathPrefixes = unionAll(cs, func(c *Constraints) []string { return c.PathPrefixes })
	out.PeerPorts = unionAll(cs, func(c *Constraints) []int64 { return c.PeerPorts })
	out.LocalPorts = unionAll(cs, func(c *Constraints) []int64 { return c.LocalPorts })
	out.AuditVerbs = unionAll(cs, func(c *Constraints) []string { return c.AuditVerbs })
	out.AuditResources = unionAll(cs, func(c *Constraints) []string { return c.AuditResources })
	out.AuditSubresources = unionAll(cs, func(c *Constraints) []string { return c.AuditSubresources })
	out.ObjectKinds = unionAll(cs, func(c *Constraints) []string { return c.ObjectKinds })
	// PeerCIDRs stay unconstrained: merging prefixes soundly is not worth it
	// for the index, and the kernel gets each step's own (Prefilters).
	if len(cs) == 0 {
		out.ContainerOnly = false
	}
	return out
}

func unionAll[T string | int64](cs []Constraints, get func(*Constraints) []T) []T {
	var out []T
	for i := range cs {
		vals := get(&cs[i])
		if vals == nil {
			return nil
		}
		for _, v := range vals {
			if !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	if out == nil {
		return nil
	}
	slices.Sort(out)
	return out
}

// constraintsFor are the constraints of the steps that see kind k, merged:
// what the matcher indexes a sequence rule by in k's bucket.
func (r *Rule) constraintsFor(k Kind) *Constraints {
	if r.seq == nil {
		return &r.constraints
	}
	var cs []Constraints
	for _, s := range r.seq.steps {
		if slices.Contains(s.constraints.Kinds, k) {
			cs = append(cs, s.constraints)
		}
	}
	c := mergeConstraints(cs)
	return &c
}

// SequenceCounts are what sequence state did, summed over every Sequences of
// the process (the metrics) or for one Sequences (its Counts).
type SequenceCounts struct {
	Started   uint64 // chains started by a first step
	Completed uint64 // chains completed: matches
	Expired   uint64 // keys whose chains all fell out of the window
	Evicted   uint64 // keys evicted to stay within MaxKeys or MaxSequenceBytes
	Discarded uint64 // keys dropped with their rule (removed or changed)
}

type seqCounters struct {
	started, completed, expired, evicted, discarded atomic.Uint64
}

func (c *seqCounters) counts() SequenceCounts {
	return SequenceCounts{Started: c.started.Load(), Completed: c.completed.Load(), Expired: c.expired.Load(),
		Evicted: c.evicted.Load(), Discarded: c.discarded.Load()}
}

var totalSeq seqCounters

// SequenceTotals returns the sequence counts of every Sequences of the
// process, for metrics.
func SequenceTotals() SequenceCounts { return totalSeq.counts() }

// Sequences holds the partial chains of sequence rules, per rule and key.
// One Sequences may serve several matchers (the controller's audit workers)
// and outlive them: it is safe for concurrent use, and Retain carries the
// state of unchanged rules over a rule-set change.
type Sequences struct {
	mu    sync.Mutex
	rules map[*Rule]*seqState
	c     seqCounters
}

// NewSequences returns empty sequence state.
func NewSequences() *Sequences { return &Sequences{rules: map[*Rule]*seqState{}} }

// Counts returns what this state did so far.
func (s *Sequences) Counts() SequenceCounts { return s.c.counts() }

// Keys returns how many keys of rule r have a chain in progress.
func (s *Sequences) Keys(r *Rule) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.rules[r]; st != nil {
		return len(st.keys)
	}
	return 0
}

// Bytes returns the bytes rule r's partial chains hold, as counted against
// MaxSequenceBytes.
func (s *Sequences) Bytes(r *Rule) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.rules[r]; st != nil {
		return st.bytes
	}
	return 0
}

// Retain drops the state of every rule not in rules (counted as discarded).
func (s *Sequences) Retain(rules []*Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for r, st := range s.rules {
		if !slices.Contains(rules, r) {
			n := uint64(len(st.keys))
			s.c.discarded.Add(n)
			totalSeq.discarded.Add(n)
			delete(s.rules, r)
		}
	}
}

func (s *Sequences) count(c func(*seqCounters) *atomic.Uint64, n uint64) {
	c(&s.c).Add(n)
	c(&totalSeq).Add(n)
}

type seqState struct {
	keys  map[string]*list.Element // of *seqKey
	lru   list.List                // front: updated most recently
	bytes int
	now   time.Time // the latest event time seen
}

type seqKey struct {
	key   string
	last  time.Time
	bytes int
	// chains[i] completed steps 0..i, the one that started latest; nil if none.
	chains []*chainNode
}

// chainNode is a step event of a chain; chains share their earlier steps.
type chainNode struct {
	step   StepEvent
	start  time.Time // the chain's first event's time
	prev   *chainNode
	length int
}

func (n *chainNode) events() []StepEvent {
	out := make([]StepEvent, n.length)
	for c := n; c != nil; c = c.prev {
		out[c.length-1] = c.step
	}
	return out
}

// size is what a key costs against MaxSequenceBytes: its string and the
// distinct step events its chains hold.
func (k *seqKey) size() int {
	n := len(k.key) + 64
	var seen []*chainNode
	for _, c := range k.chains {
		for ; c != nil && !slices.Contains(seen, c); c = c.prev {
			seen = append(seen, c)
			n += len(c.step.Event) + 64
		}
	}
	return n
}

// stepOutcome is what one step event did to a sequence's state.
type stepOutcome struct {
	completed []StepEvent // the chain, when the event completed one
	excepted  string      // the exception that kept the event from completing a chain
}

// advance records that ev (at the event's time) satisfied step j with key
// key. except is asked, only when ev would complete a chain, for the
// exception that drops the match ("" for none); a dropped match leaves the
// chain in place.
func (s *Sequences) advance(r *Rule, j int, key string, ev *Event, except func() string) stepOutcome {
	sq := r.seq
	last := len(sq.steps) - 1
	t := ev.Time
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.rules[r]
	if st == nil {
		st = &seqState{keys: map[string]*list.Element{}}
		s.rules[r] = st
	}
	if t.After(st.now) {
		st.now = t
	}
	el := st.keys[key]
	var k *seqKey
	if el != nil {
		k = el.Value.(*seqKey)
		k.expire(t, sq.window)
	}
	if j > 0 {
		// Extend the chain that completed step j-1 and started latest.
		if k == nil || k.chains[j-1] == nil {
			return stepOutcome{}
		}
		prev := k.chains[j-1]
		if j == last {
			if ex := except(); ex != "" {
				return stepOutcome{excepted: ex}
			}
			done := append(prev.events(), stepEvent(sq.steps[j].name, ev))
			s.remove(st, el)
			s.count(func(c *seqCounters) *atomic.Uint64 { return &c.completed }, 1)
			return stepOutcome{completed: done}
		}
		if cur := k.chains[j]; cur != nil && cur.start.After(prev.start) {
			return stepOutcome{} // a chain that started later already reached step j
		}
		k.chains[j] = &chainNode{step: stepEvent(sq.steps[j].name, ev), start: prev.start, prev: prev, length: j + 1}
	} else {
		if k == nil {
			k = &seqKey{key: key, chains: make([]*chainNode, last)}
			el = s.insert(r, st, k)
		}
		k.chains[0] = &chainNode{step: stepEvent(sq.steps[0].name, ev), start: t, length: 1}
		s.count(func(c *seqCounters) *atomic.Uint64 { return &c.started }, 1)
	}
	k.last = t
	st.lru.MoveToFront(el)
	nb := k.size()
	st.bytes += nb - k.bytes
	k.bytes = nb
	for st.bytes > MaxSequenceBytes && st.lru.Len() > 1 {
		s.evictOldest(st, el)
	}
	return stepOutcome{}
}

// expire drops the key's chains that started more than window before t.
func (k *seqKey) expire(t time.Time, window time.Duration) {
	for i, c := range k.chains {
		if c != nil && t.Sub(c.start) > window {
			k.chains[i] = nil
		}
	}
}

// insert adds a new key, first dropping keys whose chains all expired, then,
// if the rule is at MaxKeys, evicting the key seen least recently.
func (s *Sequences) insert(r *Rule, st *seqState, k *seqKey) *list.Element {
	for e := st.lru.Back(); e != nil; e = st.lru.Back() {
		old := e.Value.(*seqKey)
		if st.now.Sub(old.last) <= r.seq.window {
			break
		}
		s.remove(st, e)
		s.count(func(c *seqCounters) *atomic.Uint64 { return &c.expired }, 1)
	}
	for len(st.keys) >= r.seq.maxKeys {
		s.evictOldest(st, nil)
	}
	el := st.lru.PushFront(k)
	st.keys[k.key] = el
	return el
}

func (s *Sequences) evictOldest(st *seqState, keep *list.Element) {
	e := st.lru.Back()
	if e == nil || e == keep {
		return
	}
	s.remove(st, e)
	s.count(func(c *seqCounters) *atomic.Uint64 { return &c.evicted }, 1)
}

func (s *Sequences) remove(st *seqState, e *list.Element) {
	k := e.Value.(*seqKey)
	st.lru.Remove(e)
	delete(st.keys, k.key)
	st.bytes -= k.bytes
}

// stepEvent renders ev for a chain, bounded to MaxStepEventBytes.
func stepEvent(step string, ev *Event) StepEvent {
	b, err := json.Marshal(ev)
	if err == nil && len(b) > MaxStepEventBytes {
		small := *ev
		small.Object = nil
		small.Audit.RequestObject, small.Audit.ResponseObject = nil, nil
		small.Process.Ancestors = nil
		if len(small.Process.Args) > 8 {
			small.Process.Args = small.Process.Args[:8]
		}
		small.Truncated = true
		b, err = json.Marshal(&small)
	}
	if err != nil || len(b) > MaxStepEventBytes {
		b = fmt.Appendf(nil, `{"kind":%q,"time":%q,"truncated":true}`, ev.Kind, ev.Time.Format(time.RFC3339Nano))
	}
	return StepEvent{Step: step, Time: ev.Time, Event: b}
}

// seqKeyOf renders a step's key for an event: each value length-prefixed,
// so no choice of values makes two different keys equal.
func seqKeyOf(keys []cel.Program, act *activation) (string, error) {
	var b strings.Builder
	for _, k := range keys {
		v, _, err := k.Eval(act)
		if err != nil {
			return "", err
		}
		s := valString(v)
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	return b.String(), nil
}

// seqResult is the outcome of one event for one sequence rule.
type seqResult struct {
	evaluated int // step conditions evaluated
	errs      []error
	completed []StepEvent
	excepted  string
}

// observe feeds one event to a sequence rule: each step whose kinds fit,
// from the last to the first (so one event never serves as two steps of a
// chain), advances the state of its key. conds and exceptions are the
// programs to evaluate (bounded ones for events from files).
func (r *Rule) observe(ctx context.Context, s *Sequences, act *activation, conds, exceptions []cel.Program) seqResult {
	var res seqResult
	ki := kindIndex(act.ev.Kind)
	if ki < 0 {
		return res
	}
	bit := uint64(1) << ki
	for j := len(r.seq.steps) - 1; j >= 0; j-- {
		st := &r.seq.steps[j]
		if st.kindSet&bit == 0 {
			continue
		}
		res.evaluated++
		out, err := evalIn(ctx, conds[j], act)
		if err != nil {
			res.errs = append(res.errs, fmt.Errorf("step %q: %w", st.name, err))
			continue
		}
		if out != types.True {
			continue
		}
		key, err := seqKeyOf(st.keys, act)
		if err != nil {
			res.errs = append(res.errs, fmt.Errorf("step %q key: %w", st.name, err))
			continue
		}
		o := s.advance(r, j, key, act.ev, func() string { return r.exceptionOf(ctx, act, exceptions) })
		if o.completed != nil {
			res.completed = o.completed
		}
		if o.excepted != "" {
			res.excepted = o.excepted
		}
	}
	return res
}

// exceptionOf returns the name of the first exception true for the event.
func (r *Rule) exceptionOf(ctx context.Context, act *activation, prgs []cel.Program) string {
	for i, ex := range r.exceptions {
		v, err := evalIn(ctx, prgs[i], act)
		if err == nil && v == types.True {
			return ex.name
		}
	}
	return ""
}

// evalIn evaluates p, stopping when ctx ends; a context that never ends
// (the live path) costs nothing.
func evalIn(ctx context.Context, p cel.Program, act *activation) (ref.Val, error) {
	if ctx.Done() == nil {
		v, _, err := p.Eval(act)
		return v, err
	}
	v, _, err := p.ContextEval(ctx, act)
	return v, err
}
