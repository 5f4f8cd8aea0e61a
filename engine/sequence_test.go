package engine_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enginetest"
)

func seqSpec(window time.Duration, maxKeys int32, conds ...string) *v1alpha1.DetectionRuleSpec {
	s := &v1alpha1.DetectionRuleSpec{Source: "process", Severity: "high",
		Sequence: &v1alpha1.Sequence{Key: []string{"container.id"}, Window: metav1.Duration{Duration: window}, MaxKeys: maxKeys}}
	for i, c := range conds {
		s.Sequence.Steps = append(s.Sequence.Steps, v1alpha1.SequenceStep{Name: fmt.Sprintf("s%d", i), Condition: c})
	}
	return s
}

func compileSeq(t testing.TB, s *v1alpha1.DetectionRuleSpec) *engine.Rule {
	t.Helper()
	r, err := engine.Compile("seq", "", s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func execIn(container, name string, at time.Duration, pid int64) *engine.Event {
	return &engine.Event{Kind: engine.KindExec, Time: t0.Add(at), Container: engine.Container{ID: container},
		Process: engine.Process{PID: pid, Name: name, Binary: "/bin/" + name}}
}

func TestSequenceCompileErrorsNameTheStep(t *testing.T) {
	base := func(mut func(*v1alpha1.DetectionRuleSpec)) *v1alpha1.DetectionRuleSpec {
		s := seqSpec(time.Minute, 0, `process.name == "a"`, `process.name == "b"`)
		mut(s)
		return s
	}
	cases := []struct {
		name string
		spec *v1alpha1.DetectionRuleSpec
		// field, line and column of a CEL error; msg for the others
		field     string
		line, col int
		msg       string
	}{
		{"bad CEL in the second step", base(func(s *v1alpha1.DetectionRuleSpec) {
			s.Sequence.Steps[1].Condition = "process.name == \"b\" &&\n  proces.binary == \"x\""
		}), "sequence.steps[1].condition", 2, 3, "undeclared reference to 'proces'"},
		{"bad key", base(func(s *v1alpha1.DetectionRuleSpec) { s.Sequence.Key = []string{"container.idd"} }),
			"sequence.key[0]", 1, 10, "undefined field 'idd'"},
		{"bad step key", base(func(s *v1alpha1.DetectionRuleSpec) { s.Sequence.Steps[0].Key = []string{"file.pth"} }),
			"sequence.steps[0].key[0]", 1, 5, "undefined field 'pth'"},
		{"condition and sequence", base(func(s *v1alpha1.DetectionRuleSpec) { s.Condition = "true" }), "", 0, 0, "set condition or sequence, not both"},
		{"one step", base(func(s *v1alpha1.DetectionRuleSpec) { s.Sequence.Steps = s.Sequence.Steps[:1] }), "", 0, 0, "sequence.steps: 1 steps, want 2 to 8"},
		{"no window", base(func(s *v1alpha1.DetectionRuleSpec) { s.Sequence.Window.Duration = 0 }), "", 0, 0, "sequence.window must be positive"},
		{"step key of another length", base(func(s *v1alpha1.DetectionRuleSpec) { s.Sequence.Steps[1].Key = []string{"a", "b"} }), "", 0, 0, "sequence.steps[1].key has 2 expressions, the sequence's key 1"},
		{"step of an unknown source", base(func(s *v1alpha1.DetectionRuleSpec) { s.Sequence.Steps[1].Source = "dns" }), "", 0, 0, `sequence.steps[1].source "dns"`},
		{"step that can never match", base(func(s *v1alpha1.DetectionRuleSpec) { s.Sequence.Steps[1].Condition = `event.kind == "open"` }), "", 0, 0, "sequence.steps[1] can never match"},
		{"steps on both sides", base(func(s *v1alpha1.DetectionRuleSpec) { s.Sequence.Steps[1].Source = "audit" }), "", 0, 0, `sequence.steps[1].source "audit": node sources`},
		{"two steps of one name", base(func(s *v1alpha1.DetectionRuleSpec) { s.Sequence.Steps[1].Name = "s0" }), "", 0, 0, `name "s0" is used twice`},
		{"too many keys", base(func(s *v1alpha1.DetectionRuleSpec) { s.Sequence.MaxKeys = 1 << 20 }), "", 0, 0, "maxKeys 1048576 is not between 1 and 65536"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := engine.Compile("r", "", tc.spec)
			if err == nil {
				t.Fatal("compiled")
			}
			var ce *engine.CompileError
			if tc.field != "" {
				if !errors.As(err, &ce) || ce.Field != tc.field || ce.Line != tc.line || ce.Column != tc.col || !strings.Contains(ce.Msg, tc.msg) {
					t.Fatalf("got %v (%+v), want %s %d:%d %s", err, ce, tc.field, tc.line, tc.col, tc.msg)
				}
				return
			}
			if !errors.Is(err, engine.ErrInvalidRule) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want an invalid rule saying %q", err, tc.msg)
			}
		})
	}
}

func TestSequenceFiresOnItsChainOnly(t *testing.T) {
	r := compileSeq(t, seqSpec(time.Minute, 0, `process.name == "a"`, `process.name == "b"`, `process.name == "c"`))
	cases := []struct {
		name   string
		events []*engine.Event
		want   int // index of the event that completes the chain, -1 for none
	}{
		{"in order", []*engine.Event{execIn("x", "a", 0, 1), execIn("x", "b", time.Second, 2), execIn("x", "c", 2*time.Second, 3)}, 2},
		{"with noise between", []*engine.Event{execIn("x", "a", 0, 1), execIn("x", "z", 1, 2), execIn("y", "b", 2, 3), execIn("x", "b", 3, 4), execIn("x", "c", 4, 5)}, 4},
		{"out of order", []*engine.Event{execIn("x", "b", 0, 1), execIn("x", "a", 1, 2), execIn("x", "c", 2, 3)}, -1},
		{"steps alone", []*engine.Event{execIn("x", "c", 0, 1), execIn("x", "a", 1, 2)}, -1},
		{"other keys", []*engine.Event{execIn("x", "a", 0, 1), execIn("y", "b", 1, 2), execIn("x", "c", 2, 3)}, -1},
		{"out of window", []*engine.Event{execIn("x", "a", 0, 1), execIn("x", "b", time.Second, 2), execIn("x", "c", time.Minute+time.Second, 3)}, -1},
		{"a later start fits the window", []*engine.Event{execIn("x", "a", 0, 1), execIn("x", "a", 50*time.Second, 2), execIn("x", "b", 55*time.Second, 3), execIn("x", "c", 70*time.Second, 4)}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := engine.NewMatcher([]*engine.Rule{r})
			got := -1
			var steps []engine.StepEvent
			for i, ev := range tc.events {
				if ms := m.Match(ev, nil); len(ms) > 0 {
					if got >= 0 {
						t.Fatalf("fired twice, at %d and %d", got, i)
					}
					got, steps = i, ms[0].Steps
				}
			}
			if got != tc.want {
				t.Fatalf("fired at %d, want %d", got, tc.want)
			}
			if got >= 0 {
				var names []string
				for _, s := range steps {
					names = append(names, s.Step)
					var ev engine.Event
					if err := json.Unmarshal(s.Event, &ev); err != nil || ev.Kind != engine.KindExec {
						t.Errorf("step %s carries %s (%v), want its exec event", s.Step, s.Event, err)
					}
				}
				if strings.Join(names, ",") != "s0,s1,s2" {
					t.Errorf("steps %v", names)
				}
			}
		})
	}
}

// The prefilter of a sequence is the union of its steps': the agent loads
// each step's constraints, and the matcher's index admits every step's
// events, so a step of another source is never filtered out by the other's
// fields.
func TestSequencePrefilterIsTheUnionOfItsSteps(t *testing.T) {
	s := &v1alpha1.DetectionRuleSpec{Source: "file", Severity: "high", Sequence: &v1alpha1.Sequence{
		Key: []string{"container.id"}, Window: metav1.Duration{Duration: time.Minute},
		Steps: []v1alpha1.SequenceStep{
			{Name: "token", Condition: `file.path.startsWith("/var/run/secrets/kubernetes.io/serviceaccount/") && container.id != ""`},
			{Name: "api", Source: "network", Condition: `event.kind == "connect" && net.peer.port in [443, 6443]`},
		}}}
	r := compileSeq(t, s)
	pf := r.Prefilters()
	if len(pf) != 2 || pf[0].PathPrefixes == nil || pf[1].PeerPorts == nil || !slices.Equal(pf[1].Kinds, []engine.Kind{engine.KindConnect}) {
		t.Fatalf("prefilters %+v", pf)
	}
	c := r.Constraints()
	if c.PathPrefixes != nil || c.PeerPorts != nil || !slices.Equal(c.Kinds, []engine.Kind{engine.KindOpen, engine.KindConnect}) {
		t.Fatalf("merged constraints %s", c.Explain())
	}
	open := &engine.Event{Kind: engine.KindOpen, Time: t0, Container: engine.Container{ID: "x"}, File: engine.File{Path: "/var/run/secrets/kubernetes.io/serviceaccount/token"}}
	conn := &engine.Event{Kind: engine.KindConnect, Time: t0.Add(time.Second), Container: engine.Container{ID: "x"}, Net: engine.Net{Peer: engine.Peer{IP: "10.96.0.1", Port: 443}}}
	for _, ev := range []*engine.Event{open, conn} {
		admitted := false
		for _, p := range pf {
			admitted = admitted || p.Admits(ev)
		}
		if !admitted || !c.Admits(ev) {
			t.Errorf("%s event not admitted", ev.Kind)
		}
	}
	m := engine.NewMatcher([]*engine.Rule{r})
	if len(m.Match(open, nil)) != 0 || len(m.Match(conn, nil)) != 1 {
		t.Fatal("token read then API connection did not fire")
	}
	if _, _, _, err := r.ExactExec(); !errors.Is(err, engine.ErrNotExact) {
		t.Errorf("a sequence is not for the kernel to kill: %v", err)
	}
}

// TestSequenceStateStaysBoundedAndLosesNothingSilently: over random streams
// (several keys, steps whose conditions overlap, non-decreasing times,
// windows short and long, MaxKeys small and large), through the indexed
// matcher:
//
//   - the keys in progress never exceed MaxKeys;
//   - every match is a real chain of the stream: its step events are
//     distinct events in stream order, each satisfies its step, all share
//     the key, all within the window of the first;
//   - with no eviction counted, the matches are exactly the brute-force
//     oracle's: every chain of events the oracle finds by search over the
//     whole stream (after the key's previous match) fires, where it
//     completes, and nothing else; a difference is only allowed when an
//     eviction was counted.
//
// The oracle shares no code with engine/sequence.go: it reads the step
// predicates as Go functions and searches the stream.
func TestSequenceStateStaysBoundedAndLosesNothingSilently(t *testing.T) {
	seed := enginetest.Seed(t)
	rnd := rand.New(rand.NewPCG(seed, seed^0x5eed))
	names := []string{"a", "b", "c", "d"}
	var rounds, withEvictions, fired int
	for round := range 400 {
		n := 2 + rnd.IntN(3)
		// Step j accepts a random non-empty subset of names.
		sets := make([][]string, n)
		conds := make([]string, n)
		for j := range n {
			for _, nm := range names {
				if rnd.IntN(3) == 0 {
					sets[j] = append(sets[j], nm)
				}
			}
			if sets[j] == nil {
				sets[j] = []string{names[rnd.IntN(len(names))]}
			}
			conds[j] = fmt.Sprintf("process.name in %s", quoteList(sets[j]))
		}
		window := time.Duration(1+rnd.IntN(20)) * time.Second
		maxKeys := int32(1 + rnd.IntN(6))
		if rnd.IntN(2) == 0 {
			maxKeys = 1000
		}
		r := compileSeq(t, seqSpec(window, maxKeys, conds...))
		seqs := engine.NewSequences()
		m := engine.NewMatcherWith([]*engine.Rule{r}, seqs)
		nkeys := 1 + rnd.IntN(8)
		stream := make([]*engine.Event, 20+rnd.IntN(60))
		at := time.Duration(0)
		for i := range stream {
			at += time.Duration(rnd.IntN(3000)) * time.Millisecond
			stream[i] = execIn(fmt.Sprintf("k%d", rnd.IntN(nkeys)), names[rnd.IntN(len(names))], at, int64(i))
		}
		var got []int
		for i, ev := range stream {
			for _, mt := range m.Match(ev, nil) {
				got = append(got, i)
				checkChain(t, round, stream, sets, window, mt.Steps, i)
			}
			if k := seqs.Keys(r); k > int(maxKeys) {
				t.Fatalf("round %d (seed %d): %d keys in progress, MaxKeys %d", round, seed, k, maxKeys)
			}
		}
		want := bruteForce(stream, sets, window)
		evicted := seqs.Counts().Evicted
		if evicted > 0 {
			withEvictions++
		}
		if !slices.Equal(got, want) && evicted == 0 {
			t.Fatalf("round %d (seed %d): fired at %v, the oracle at %v, and no eviction counted\nsteps %v window %v\nstream %s",
				round, seed, got, want, sets, window, dumpStream(stream))
		}
		if int(seqs.Counts().Completed) != len(got) {
			t.Fatalf("completed %d, matches %d", seqs.Counts().Completed, len(got))
		}
		rounds++
		fired += len(got)
	}
	if withEvictions == 0 || fired == 0 {
		t.Fatalf("the generator is too weak: %d rounds with evictions, %d matches", withEvictions, fired)
	}
	t.Logf("%d rounds, %d with evictions, %d matches", rounds, withEvictions, fired)
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func dumpStream(s []*engine.Event) string {
	var b strings.Builder
	for i, ev := range s {
		fmt.Fprintf(&b, "%d:%s/%s@%v ", i, ev.Container.ID, ev.Process.Name, ev.Time.Sub(t0))
	}
	return b.String()
}

// bruteForce returns the stream positions where the oracle's sequence
// fires: position p fires when a search finds positions i0 < i1 < … < p of
// one key, each satisfying its step, with i0 at or after the key's previous
// firing position, and every event within window of the first.
func bruteForce(stream []*engine.Event, sets [][]string, window time.Duration) []int {
	n := len(sets)
	after := map[string]int{}
	var out []int
	sat := func(i, j int) bool { return slices.Contains(sets[j], stream[i].Process.Name) }
	for p := range stream {
		key := stream[p].Container.ID
		if !sat(p, n-1) {
			continue
		}
		lo := after[key]
		var find func(step, from int, start time.Time) bool
		find = func(step, from int, start time.Time) bool {
			if step == n-1 {
				return stream[p].Time.Sub(start) <= window
			}
			for i := from; i < p; i++ {
				if stream[i].Container.ID != key || !sat(i, step) {
					continue
				}
				s := start
				if step == 0 {
					s = stream[i].Time
				}
				if stream[i].Time.Sub(s) > window {
					continue
				}
				if find(step+1, i+1, s) {
					return true
				}
			}
			return false
		}
		if find(0, lo, time.Time{}) {
			out = append(out, p)
			after[key] = p
		}
	}
	return out
}

// checkChain checks that a reported chain is real: the step events are
// stream events (by pid, their position), in order, of one key, each
// satisfying its step, within the window, the last the event matched.
func checkChain(t *testing.T, round int, stream []*engine.Event, sets [][]string, window time.Duration, steps []engine.StepEvent, at int) {
	t.Helper()
	if len(steps) != len(sets) {
		t.Fatalf("round %d: %d step events, %d steps", round, len(steps), len(sets))
	}
	prev := -1
	var first time.Time
	for j, s := range steps {
		var ev engine.Event
		if err := json.Unmarshal(s.Event, &ev); err != nil {
			t.Fatalf("round %d: step %d: %v", round, j, err)
		}
		i := int(ev.Process.PID)
		if i <= prev || i > at || stream[i].Container.ID != stream[at].Container.ID || !slices.Contains(sets[j], stream[i].Process.Name) {
			t.Fatalf("round %d: step %d is stream event %d (after %d, match at %d): not a chain\n%s", round, j, i, prev, at, dumpStream(stream))
		}
		if j == 0 {
			first = stream[i].Time
		}
		if stream[i].Time.Sub(first) > window {
			t.Fatalf("round %d: step %d out of the window", round, j)
		}
		prev = i
	}
	if prev != at {
		t.Fatalf("round %d: the last step is event %d, the match %d", round, prev, at)
	}
}

// A flood of distinct keys (an attacker starting chains in many containers,
// or as many users) cannot grow the state past MaxKeys: each key beyond it
// evicts the one seen least recently, and every eviction is counted; the
// victim chain the flood pushed out does not fire, and the loss is in the
// count.
func TestSequenceKeyFloodIsBoundedAndCounted(t *testing.T) {
	r := compileSeq(t, seqSpec(time.Hour, 100, `process.name == "a"`, `process.name == "b"`))
	seqs := engine.NewSequences()
	m := engine.NewMatcherWith([]*engine.Rule{r}, seqs)
	m.Match(execIn("victim", "a", 0, 1), nil)
	const flood = 10000
	for i := range flood {
		m.Match(execIn(fmt.Sprintf("flood-%d", i), "a", time.Millisecond, int64(i)), nil)
		if k := seqs.Keys(r); k > 100 {
			t.Fatalf("%d keys after %d flood events", k, i+1)
		}
	}
	if got := m.Match(execIn("victim", "b", time.Second, 2), nil); len(got) != 0 {
		t.Fatal("the evicted chain fired")
	}
	c := seqs.Counts()
	if c.Evicted != flood+1-100 || c.Started != flood+1 || seqs.Keys(r) != 100 {
		t.Fatalf("counts %+v, %d keys: want %d evicted, %d started, 100 keys", c, seqs.Keys(r), flood+1-100, flood+1)
	}
	// A chain started after the flood still fires.
	m.Match(execIn("late", "a", 2*time.Second, 3), nil)
	if got := m.Match(execIn("late", "b", 3*time.Second, 4), nil); len(got) != 1 {
		t.Fatal("a fresh chain did not fire after the flood")
	}
}

// Keys whose events are large (long argument lists kept for the Incident)
// are bounded in bytes as well: MaxSequenceBytes per rule, whatever MaxKeys
// allows, evictions counted.
func TestSequenceBytesAreBoundedAndCounted(t *testing.T) {
	r := compileSeq(t, seqSpec(time.Hour, engine.MaxSequenceKeys, `process.name == "a"`, `process.name == "b"`))
	seqs := engine.NewSequences()
	m := engine.NewMatcherWith([]*engine.Rule{r}, seqs)
	long := strings.Repeat("x", engine.MaxString)
	const flood = 8000
	for i := range flood {
		ev := execIn(fmt.Sprintf("%s-%d", long, i), "a", 0, int64(i))
		ev.Process.Args = []string{long, long, long}
		m.Match(ev, nil)
		if b := seqs.Bytes(r); b > engine.MaxSequenceBytes {
			t.Fatalf("%d bytes after %d events, bound %d", b, i+1, engine.MaxSequenceBytes)
		}
	}
	c := seqs.Counts()
	if c.Evicted == 0 || c.Evicted+uint64(seqs.Keys(r)) != flood {
		t.Fatalf("counts %+v with %d keys: every key is in progress or counted as evicted", c, seqs.Keys(r))
	}
	t.Logf("%d keys kept in %d bytes, %d evicted", seqs.Keys(r), seqs.Bytes(r), c.Evicted)
}

// Keys whose chains fell out of the window make room before any live key
// is evicted, and are counted as expired, not evicted.
func TestSequenceExpiredKeysGoFirst(t *testing.T) {
	r := compileSeq(t, seqSpec(time.Second, 2, `process.name == "a"`, `process.name == "b"`))
	seqs := engine.NewSequences()
	m := engine.NewMatcherWith([]*engine.Rule{r}, seqs)
	m.Match(execIn("old", "a", 0, 1), nil)
	m.Match(execIn("live", "a", 5*time.Second, 2), nil)
	m.Match(execIn("new", "a", 5*time.Second, 3), nil)
	if c := seqs.Counts(); c.Expired != 1 || c.Evicted != 0 {
		t.Fatalf("counts %+v: want the old key expired, none evicted", c)
	}
	if len(m.Match(execIn("live", "b", 5500*time.Millisecond, 4), nil)) != 1 {
		t.Fatal("the live chain did not fire")
	}
}

// Per-step keys correlate different fields: the file downloaded, then the
// same path executed, in the same container.
func TestSequenceStepKeysCorrelateDifferentFields(t *testing.T) {
	s := &v1alpha1.DetectionRuleSpec{Source: "file", Severity: "high", Sequence: &v1alpha1.Sequence{
		Key: []string{"container.id", "file.path"}, Window: metav1.Duration{Duration: time.Minute},
		Steps: []v1alpha1.SequenceStep{
			{Name: "write", Condition: `file.write`},
			{Name: "exec", Source: "process", Condition: `event.kind == "exec"`, Key: []string{"container.id", "process.binary"}},
		}}}
	r := compileSeq(t, s)
	m := engine.NewMatcher([]*engine.Rule{r})
	m.Match(&engine.Event{Kind: engine.KindOpen, Time: t0, Container: engine.Container{ID: "c"}, File: engine.File{Path: "/tmp/x", Write: true}}, nil)
	if len(m.Match(execIn("c", "y", time.Second, 1), nil)) != 0 {
		t.Fatal("another path fired")
	}
	ev := execIn("c", "x", time.Second, 2)
	ev.Process.Binary = "/tmp/x"
	if len(m.Match(ev, nil)) != 1 {
		t.Fatal("the written path's exec did not fire")
	}
	// Values are length-prefixed: "a|b" and "a", "b" are different keys.
	s.Sequence.Steps[1].Key = []string{`container.id + "|" + process.binary`, `""`}
	s.Sequence.Key = []string{"container.id", `"|" + file.path`}
	r = compileSeq(t, s)
	m = engine.NewMatcher([]*engine.Rule{r})
	m.Match(&engine.Event{Kind: engine.KindOpen, Time: t0, Container: engine.Container{ID: "c"}, File: engine.File{Path: "/tmp/x", Write: true}}, nil)
	ev = execIn("c", "x", time.Second, 2)
	ev.Process.Binary = "/tmp/x"
	if len(m.Match(ev, nil)) != 0 {
		t.Fatal("key values joined without their lengths collided")
	}
}

// Rule-set changes keep the chains of unchanged rules and drop (counting)
// those of rules that left.
func TestSequenceStateSurvivesRuleSetChanges(t *testing.T) {
	r := compileSeq(t, seqSpec(time.Minute, 0, `process.name == "a"`, `process.name == "b"`))
	other := compileSeq(t, seqSpec(time.Minute, 0, `process.name == "c"`, `process.name == "d"`))
	seqs := engine.NewSequences()
	engine.NewMatcherWith([]*engine.Rule{r, other}, seqs).Match(execIn("x", "a", 0, 1), nil)
	engine.NewMatcherWith([]*engine.Rule{r, other}, seqs).Match(execIn("x", "c", 0, 2), nil)
	m := engine.NewMatcherWith([]*engine.Rule{r}, seqs)
	if c := seqs.Counts(); c.Discarded != 1 {
		t.Fatalf("counts %+v: the removed rule's key is discarded and counted", c)
	}
	if len(m.Match(execIn("x", "b", time.Second, 3), nil)) != 1 {
		t.Fatal("the unchanged rule lost its chain")
	}
}

// FuzzSequence: no choice of step conditions, keys, window and bound
// panics the compiler or the matcher; a compile failure is an invalid rule
// or names the sequence field; and over any stream the state stays within MaxKeys
// and MaxSequenceBytes, and every match carries one event per step.
func FuzzSequence(f *testing.F) {
	f.Add(`process.name == "a"`, `process.name == "b"`, "container.id", uint8(3), uint8(10), []byte("abab\x00ba"))
	f.Add(`file.write`, `event.kind == "exec"`, "file.path", uint8(1), uint8(1), []byte("aaaaabbbbb"))
	f.Add(`true`, `true`, `process.args[5]`, uint8(0), uint8(0), []byte("ab"))
	f.Add(`process.args.exists(a, a.matches("["))`, `1 / 0 == 1`, `{"a": 1}["b"]`, uint8(2), uint8(200), []byte("\xff\x01"))
	f.Add(`event.kind == "open"`, `process.name in ["a"]`, `pod.labels["x"]`, uint8(7), uint8(3), []byte("abcabc"))
	f.Fuzz(func(t *testing.T, c0, c1, key string, maxKeys, window uint8, stream []byte) {
		spec := seqSpec(time.Duration(window)*time.Second, int32(maxKeys), c0, c1)
		spec.Sequence.Key = []string{key}
		r, err := engine.Compile("f", "", spec)
		if err != nil {
			// CEL errors name the field (a bad regular expression literal
			// fails when the program is built, without a position).
			if !errors.Is(err, engine.ErrInvalidRule) && !strings.HasPrefix(err.Error(), `compile rule "f": sequence.`) {
				t.Fatalf("a compile error that names no field: %v", err)
			}
			return
		}
		seqs := engine.NewSequences()
		m := engine.NewMatcherWith([]*engine.Rule{r}, seqs)
		bound := int(maxKeys)
		if bound == 0 {
			bound = engine.DefaultSequenceKeys
		}
		for i, b := range stream {
			ev := execIn(fmt.Sprintf("k%d", b%7), string(rune('a'+b%3)), time.Duration(i)*time.Second/2, int64(i))
			if b&0x80 != 0 {
				ev = &engine.Event{Kind: engine.KindOpen, Time: ev.Time, Container: ev.Container, Process: ev.Process,
					File: engine.File{Path: "/tmp/" + ev.Process.Name, Write: b&0x40 != 0}}
			}
			for _, mt := range m.Match(ev, nil) {
				if len(mt.Steps) != 2 {
					t.Fatalf("a match with %d step events, want 2", len(mt.Steps))
				}
			}
			if k := seqs.Keys(r); k > bound {
				t.Fatalf("%d keys, bound %d", k, bound)
			}
			if n := seqs.Bytes(r); n > engine.MaxSequenceBytes {
				t.Fatalf("%d bytes", n)
			}
		}
	})
}

// Matchers of several goroutines (the controller's audit workers) share one
// sequence state: under -race, every chain split across them completes
// exactly once.
func TestSequenceStateIsSharedSafely(t *testing.T) {
	r := compileSeq(t, seqSpec(time.Hour, 0, `process.name == "a"`, `process.name == "b"`))
	seqs := engine.NewSequences()
	const workers, keys = 4, 200
	// Every first step is in before any second step: the chains split
	// across workers are then independent of scheduling.
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := engine.NewMatcherWith([]*engine.Rule{r}, seqs)
			for k := w; k < keys; k += workers {
				m.Match(execIn(fmt.Sprintf("k%d", k), "a", 0, int64(k)), nil)
			}
		}()
	}
	wg.Wait()
	var fired atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := engine.NewMatcherWith([]*engine.Rule{r}, seqs)
			for k := (w + 1) % workers; k < keys; k += workers {
				fired.Add(int64(len(m.Match(execIn(fmt.Sprintf("k%d", k), "b", time.Second, int64(k)), nil))))
			}
		}()
	}
	wg.Wait()
	if fired.Load() != keys || seqs.Keys(r) != 0 || seqs.Counts().Completed != keys {
		t.Fatalf("fired %d, %d keys left, counts %+v: want %d chains completed once each", fired.Load(), seqs.Keys(r), seqs.Counts(), keys)
	}
}

// Tests of a sequence rule are held to the CRD's bound on their events in
// rule files too, and a plain rule's test cannot list events.
func TestSequenceTestEventsAreBounded(t *testing.T) {
	s := seqSpec(time.Minute, 0, `process.name == "a"`, `process.name == "b"`)
	tc := v1alpha1.RuleTest{Name: "many", Expect: v1alpha1.ExpectNoMatch}
	for range engine.MaxTestEvents + 1 {
		tc.Events = append(tc.Events, runtime.RawExtension{Raw: []byte(`{"kind":"exec"}`)})
	}
	s.Tests = []v1alpha1.RuleTest{tc}
	res := engine.RunTests(compileSeq(t, s))
	if res[0].Passed || !strings.Contains(res[0].Message, "65 events, at most 64") {
		t.Fatalf("%+v", res[0])
	}
	plain := &v1alpha1.DetectionRuleSpec{Source: "process", Severity: "low", Condition: "true", Tests: []v1alpha1.RuleTest{tc}}
	res = engine.RunTests(compileSeq(t, plain))
	if res[0].Passed || !strings.Contains(res[0].Message, "tests[0].events is for sequence rules") {
		t.Fatalf("%+v", res[0])
	}
}
