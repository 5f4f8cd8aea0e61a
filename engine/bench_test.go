package engine

import (
	"fmt"
	"testing"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// benchRules builds n rules in the proportions of a real library: exec rules
// on binaries and base names, file rules on directories, audit rules on
// resources and subresources, network rules on ports. Each has a second,
// unindexed conjunct so evaluation is not trivial.
func benchRules(b *testing.B, n int) []*Rule {
	b.Helper()
	rules := make([]*Rule, 0, n)
	for i := 0; i < n; i++ {
		var s v1alpha1.DetectionRuleSpec
		switch i % 5 {
		case 0:
			s = v1alpha1.DetectionRuleSpec{Source: "process", Condition: fmt.Sprintf(`event.kind == "exec" && process.binary == "/usr/bin/tool%d" && container.id != ""`, i)}
		case 1:
			s = v1alpha1.DetectionRuleSpec{Source: "process", Condition: fmt.Sprintf(`event.kind == "exec" && process.binary.endsWith("/bin%d") && process.args.exists(a, a == "-x")`, i)}
		case 2:
			s = v1alpha1.DetectionRuleSpec{Source: "file", Condition: fmt.Sprintf(`event.kind == "open" && file.write && file.path.startsWith("/srv/app%d/")`, i)}
		case 3:
			s = v1alpha1.DetectionRuleSpec{Source: "audit", Condition: fmt.Sprintf(`audit.objectRef.resource == "res%d" && audit.user.username.startsWith("system:serviceaccount:")`, i)}
		case 4:
			s = v1alpha1.DetectionRuleSpec{Source: "network", Condition: fmt.Sprintf(`event.kind == "connect" && net.peer.port == %d && !net.peer.ip.inCIDR("10.0.0.0/8")`, 10000+i)}
		}
		s.Severity = "low"
		s.Output = `"x"`
		r, err := Compile(fmt.Sprintf("rule-%d", i), "", &s)
		if err != nil {
			b.Fatal(err)
		}
		rules = append(rules, r)
	}
	return rules
}

// benchEvents is the mixed stream: most events hit no rule (as on a real
// node), some are candidates, a few match.
func benchEvents() []Event {
	var evs []Event
	for i := 0; i < 1000; i++ {
		var ev Event
		switch i % 5 {
		case 0:
			ev = Event{Kind: KindExec, Process: Process{Binary: fmt.Sprintf("/usr/bin/tool%d", i%50), Args: []string{"tool", "-x"}}, Container: Container{ID: "c1"}}
		case 1:
			ev = Event{Kind: KindExec, Process: Process{Binary: "/usr/lib/systemd/systemd-journald"}}
		case 2:
			ev = Event{Kind: KindOpen, File: File{Path: fmt.Sprintf("/srv/app%d/data.db", i%60), Flags: 1}}
		case 3:
			ev = Event{Kind: KindAudit, Audit: Audit{Verb: "get", User: UserInfo{Username: "system:serviceaccount:a:b"}, ObjectRef: AuditObjectRef{Resource: fmt.Sprintf("res%d", i%40)}}}
		case 4:
			ev = Event{Kind: KindConnect, Net: Net{Peer: Peer{IP: "203.0.113.5", Port: int64(10000 + i%70)}}}
		}
		Normalize(&ev)
		evs = append(evs, ev)
	}
	return evs
}

// noCandidateEvents hit no rule's index key: the common case on a node.
func noCandidateEvents() []Event {
	evs := []Event{
		{Kind: KindExec, Process: Process{Binary: "/usr/sbin/nginx"}},
		{Kind: KindOpen, File: File{Path: "/usr/share/zoneinfo/UTC"}},
		{Kind: KindAudit, Audit: Audit{Verb: "get", ObjectRef: AuditObjectRef{Resource: "configmaps"}}},
		{Kind: KindConnect, Net: Net{Peer: Peer{IP: "10.96.0.1", Port: 443}}},
		{Kind: KindExit, Process: Process{Binary: "/usr/sbin/nginx"}},
	}
	for i := range evs {
		Normalize(&evs[i])
	}
	return evs
}

func BenchmarkMatch(b *testing.B) {
	events := benchEvents()
	for _, mode := range []string{"indexed", "naive"} {
		for _, n := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("%s/rules=%d", mode, n), func(b *testing.B) {
				rules := benchRules(b, n)
				m := NewMatcher(rules)
				if mode == "naive" {
					m = NewNaiveMatcher(rules)
				}
				var dst []Match
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					dst = m.Match(&events[i%len(events)], dst[:0])
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

func BenchmarkMatchNoCandidate(b *testing.B) {
	events := noCandidateEvents()
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			m := NewMatcher(benchRules(b, n))
			var dst []Match
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dst = m.Match(&events[i%len(events)], dst[:0])
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if m.Stats.NoCandidate != m.Stats.Events {
				b.Fatalf("%d of %d events had candidates", m.Stats.Events-m.Stats.NoCandidate, m.Stats.Events)
			}
		})
	}
}

// TestNoCandidatePathAllocatesNothing proves the zero-allocation promise
// without timing anything.
func TestNoCandidatePathAllocatesNothing(t *testing.T) {
	events := noCandidateEvents()
	var rules []*Rule
	res := testing.Benchmark(func(b *testing.B) { rules = benchRules(b, 1000) })
	_ = res
	m := NewMatcher(rules)
	allocs := testing.AllocsPerRun(1000, func() {
		for i := range events {
			_ = m.Match(&events[i], nil)
		}
	})
	if allocs != 0 {
		t.Fatalf("no-candidate path allocates %.1f times per %d events", allocs, len(events))
	}
	if m.Stats.Matches != 0 || m.Stats.Candidates != 0 {
		t.Fatalf("events had candidates: %+v", m.Stats)
	}
}
