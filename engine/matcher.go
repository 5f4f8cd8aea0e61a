package engine

import (
	"context"
	"slices"
	"strings"
)

// Match is one rule matching one event.
type Match struct {
	Rule *Rule
	// Output is the rule's output rendered for the event.
	Output string
	// Steps are the events of each step of a sequence rule, in order; the
	// last is the event matched.
	Steps []StepEvent
}

// Stats counts what the matcher did. Counters are per matcher and not
// synchronised: one matcher serves one goroutine.
type Stats struct {
	Events     uint64 // events offered
	Candidates uint64 // rule evaluations
	Matches    uint64
	// SequenceSteps counts sequence step conditions evaluated.
	SequenceSteps uint64
	Exceptions    uint64 // matches dropped by an exception
	EvalErrors    uint64 // evaluations that failed (counted as no match)
	NoCandidate   uint64 // events with no candidate rule
}

// Matcher evaluates events against a fixed set of rules, each event only
// against its candidate rules: those whose kind, namespace and literal
// constraints (binary, base name, audit verb/resource/subresource, object
// kind, ports) fit
// the event. A Matcher is built once per rule-set change.
type Matcher struct {
	rules  []*Rule
	byKind [64]*bucket
	naive  bool
	seqs   *Sequences
	Stats  Stats
	// OnError, when set, is called for each evaluation error.
	OnError func(r *Rule, ev *Event, err error)
}

// bucket holds the rules of one event kind, split by their index key.
type bucket struct {
	rest        []*Rule // no usable index key: always candidates
	binary      map[string][]*Rule
	basename    map[string][]*Rule
	subresource map[string][]*Rule
	resource    map[string][]*Rule
	verb        map[string][]*Rule
	objectKind  map[string][]*Rule
	peerPort    map[int64][]*Rule
	localPort   map[int64][]*Rule
	// pathDir files rules by the leading directories of their file.path
	// prefixes: "/etc/" or "/var/run/" (at most two levels).
	pathDir map[string][]*Rule
}

// NewMatcher indexes rules for matching, with sequence state of its own.
func NewMatcher(rules []*Rule) *Matcher { return NewMatcherWith(rules, NewSequences()) }

// NewMatcherWith indexes rules for matching and keeps the partial chains of
// sequence rules in seqs, which may be shared with other matchers and
// outlive this one: the state of rules not in rules is dropped.
func NewMatcherWith(rules []*Rule, seqs *Sequences) *Matcher {
	seqs.Retain(rules)
	m := &Matcher{rules: rules, seqs: seqs}
	for i, k := range kinds {
		var b *bucket
		for _, r := range rules {
			if r.kindSet&(1<<i) == 0 {
				continue
			}
			if b == nil {
				b = &bucket{}
			}
			b.add(k, r)
		}
		m.byKind[i] = b
	}
	return m
}

// NewNaiveMatcher evaluates every rule's program on every event; it exists as
// the baseline the indexed matcher is measured and property-tested against.
func NewNaiveMatcher(rules []*Rule) *Matcher {
	return &Matcher{rules: rules, naive: true, seqs: NewSequences()}
}

// Rules returns the rules the matcher was built with.
func (m *Matcher) Rules() []*Rule { return m.rules }

func addTo[K comparable](m *map[K][]*Rule, keys []K, r *Rule) {
	if *m == nil {
		*m = map[K][]*Rule{}
	}
	for i, k := range keys {
		if slices.Contains(keys[:i], k) {
			continue // a key listed twice must not make the rule a candidate twice
		}
		(*m)[k] = append((*m)[k], r)
	}
}

// add files a rule under its most selective key for kind k.
func (b *bucket) add(k Kind, r *Rule) {
	c := r.constraintsFor(k)
	switch k.Source() {
	case SourceProcess:
		if c.Binaries != nil {
			addTo(&b.binary, c.Binaries, r)
			return
		}
		if c.Basenames != nil {
			addTo(&b.basename, c.Basenames, r)
			return
		}
	case SourceAudit:
		switch {
		// Most requests have no subresource: "" selects nothing.
		case c.AuditSubresources != nil && !slices.Contains(c.AuditSubresources, ""):
			addTo(&b.subresource, c.AuditSubresources, r)
			return
		case c.AuditResources != nil:
			addTo(&b.resource, c.AuditResources, r)
			return
		case c.AuditVerbs != nil:
			addTo(&b.verb, c.AuditVerbs, r)
			return
		}
	case SourceObject:
		if c.ObjectKinds != nil {
			addTo(&b.objectKind, c.ObjectKinds, r)
			return
		}
	case SourceFile:
		if dirs, ok := pathDirs(c.PathPrefixes); ok {
			addTo(&b.pathDir, dirs, r)
			return
		}
	case SourceNetwork:
		if c.PeerPorts != nil {
			addTo(&b.peerPort, c.PeerPorts, r)
			return
		}
		if c.LocalPorts != nil {
			addTo(&b.localPort, c.LocalPorts, r)
			return
		}
	}
	b.rest = append(b.rest, r)
}

// Match appends the matches of ev to dst and returns it. Events with no
// candidate rule cost a few map lookups and allocate nothing.
func (m *Matcher) Match(ev *Event, dst []Match) []Match {
	m.Stats.Events++
	if m.naive {
		return m.matchNaive(ev, dst)
	}
	i := kindIndex(ev.Kind)
	if i < 0 || m.byKind[i] == nil {
		m.Stats.NoCandidate++
		return dst
	}
	b := m.byKind[i]
	var act *activation
	evaluated := false
	try := func(rules []*Rule) {
		for _, r := range rules {
			if r.namespace != "" && ev.Namespace() != r.namespace {
				continue
			}
			if act == nil {
				act = &activation{ev: ev}
			}
			evaluated = true
			dst = m.eval(r, act, ev, dst)
		}
	}
	if len(b.rest) > 0 {
		try(b.rest)
	}
	if b.binary != nil {
		try(b.binary[ev.Process.Binary])
	}
	if b.basename != nil {
		try(b.basename[ev.Process.Name])
	}
	if b.subresource != nil {
		try(b.subresource[ev.Audit.ObjectRef.Subresource])
	}
	if b.resource != nil {
		try(b.resource[ev.Audit.ObjectRef.Resource])
	}
	if b.verb != nil {
		try(b.verb[ev.Audit.Verb])
	}
	if b.objectKind != nil {
		kind, _ := ev.Object["kind"].(string)
		try(b.objectKind[kind])
	}
	if b.pathDir != nil {
		d1, d2 := leadingDirs(ev.File.Path)
		if d1 != "" {
			try(b.pathDir[d1])
		}
		if d2 != "" {
			try(b.pathDir[d2])
		}
	}
	if b.peerPort != nil {
		try(b.peerPort[ev.Net.Peer.Port])
	}
	if b.localPort != nil {
		try(b.localPort[ev.Net.Local.Port])
	}
	if !evaluated {
		m.Stats.NoCandidate++
	}
	return dst
}

func (m *Matcher) matchNaive(ev *Event, dst []Match) []Match {
	act := &activation{ev: ev}
	for _, r := range m.rules {
		if r.seq != nil {
			if r.Applies(ev) {
				dst = m.evalSequence(r, act, ev, dst)
			}
			continue
		}
		v := r.eval(act)
		m.Stats.Candidates++
		if v.Matched && r.Applies(ev) {
			m.Stats.Matches++
			dst = append(dst, Match{Rule: r, Output: r.Output(ev)})
		}
	}
	return dst
}

func (m *Matcher) eval(r *Rule, act *activation, ev *Event, dst []Match) []Match {
	if r.seq != nil {
		return m.evalSequence(r, act, ev, dst)
	}
	m.Stats.Candidates++
	v := r.eval(act)
	switch {
	case v.Err != nil:
		m.Stats.EvalErrors++
		if m.OnError != nil {
			m.OnError(r, ev, v.Err)
		}
	case v.Exception != "":
		m.Stats.Exceptions++
	case v.Matched:
		m.Stats.Matches++
		dst = append(dst, Match{Rule: r, Output: r.Output(ev)})
	}
	return dst
}

func (m *Matcher) evalSequence(r *Rule, act *activation, ev *Event, dst []Match) []Match {
	m.Stats.Candidates++
	res := r.observe(context.Background(), m.seqs, act, r.seq.conds, r.seq.exceptions)
	m.Stats.SequenceSteps += uint64(res.evaluated)
	for _, err := range res.errs {
		m.Stats.EvalErrors++
		if m.OnError != nil {
			m.OnError(r, ev, err)
		}
	}
	switch {
	case res.completed != nil:
		m.Stats.Matches++
		dst = append(dst, Match{Rule: r, Output: r.Output(ev), Steps: res.completed})
	case res.excepted != "":
		m.Stats.Exceptions++
	}
	return dst
}

// leadingDirs returns the first one and two directory levels of a path with
// their trailing slash ("/var/", "/var/run/"), or "" where the path has none.
// Slicing allocates nothing.
func leadingDirs(p string) (d1, d2 string) {
	if len(p) < 2 || p[0] != '/' {
		return "", ""
	}
	i := strings.IndexByte(p[1:], '/')
	if i < 0 {
		return "", ""
	}
	d1 = p[:i+2]
	j := strings.IndexByte(p[len(d1):], '/')
	if j < 0 {
		return d1, ""
	}
	return d1, p[:len(d1)+j+1]
}

// pathDirs maps path prefixes to index keys: each prefix must contain at
// least one whole directory, and is filed under its deepest of the first two.
// A prefix like "/et" cannot be indexed and the rule stays always-candidate.
// Match looks an event up under both of its leading directories, so a rule
// must never be filed under a directory and one of its subdirectories (it
// would be a candidate twice): the directory alone covers both.
func pathDirs(prefixes []string) ([]string, bool) {
	if prefixes == nil {
		return nil, false
	}
	out := make([]string, 0, len(prefixes))
	for _, p := range prefixes {
		d1, d2 := leadingDirs(p)
		switch {
		case d2 != "":
			out = append(out, d2)
		case d1 != "":
			out = append(out, d1)
		default:
			return nil, false
		}
	}
	keys := out[:0:0]
	for _, k := range out {
		if d1, d2 := leadingDirs(k); d2 != "" && slices.Contains(out, d1) {
			continue
		}
		keys = append(keys, k)
	}
	return keys, true
}
