package bpf

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// Value pools shared by random rules and random events, so that matches are
// frequent enough to test something.
var (
	poolBins = []string{"/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/curl", "/tmp/sh", "/usr/local/bin/kubectl",
		"/usr/bin/nc", "/" + strings.Repeat("d", 240) + "/sh", "/" + strings.Repeat("x", 254), "relative/sh", ""}
	poolPaths = []string{"/etc/shadow", "/etc/passwd", "/etc", "/etcetera", "/var/run/secrets/kubernetes.io/serviceaccount/token",
		"/proc/1/mem", "/proc/self/mem", "/tmp/x", "/", "/" + strings.Repeat("p", 254), "/" + strings.Repeat("p", 200) + "/q"}
	poolPrefixes = []string{"/etc/", "/etc", "/var/run/secrets/kubernetes.io/serviceaccount/", "/proc/", "/tmp", "",
		"/" + strings.Repeat("p", 300), "/" + strings.Repeat("p", 200)}
	poolPorts = []int64{22, 80, 443, 4444, 0, 6443, 70000, -1}
	poolIPs   = []string{"10.1.2.3", "192.168.0.1", "8.8.8.8", "::1", "fd00::5", "::ffff:10.9.9.9", "2001:db8::1", "0.0.0.0"}
	poolCIDRs = []string{"10.0.0.0/8", "192.168.0.0/16", "8.8.8.8", "fd00::/8", "::/0", "0.0.0.0/0", "::ffff:10.0.0.0/104", "2001:db8::/32"}
	poolKinds = []engine.Kind{engine.KindExec, engine.KindOpen, engine.KindConnect, engine.KindAccept, engine.KindListen,
		engine.KindFork, engine.KindExit, engine.KindSetuid, engine.KindMount, engine.KindBPF, engine.KindPtrace}
	// extras are conjuncts the kernel cannot check; they only narrow a rule.
	extras = []string{`process.uid == 0`, `file.write`, `size(process.args) > 1`, `process.comm == "sh"`,
		`!(process.binary == "/bin/sh")`, `net.protocol == "tcp"`, `process.name.startsWith("s")`,
		`file.path.contains("mem")`, `true`, `process.exe.upper`}
)

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func quote(s string) string { return fmt.Sprintf("%q", s) }

// randomAtom is one literal constraint form the analysis understands.
func randomAtom(r *rand.Rand) string {
	switch r.IntN(14) {
	case 0:
		return `event.kind == ` + quote(string(pick(r, poolKinds)))
	case 1:
		return fmt.Sprintf(`event.kind in [%q, %q]`, pick(r, poolKinds), pick(r, poolKinds))
	case 2:
		return `process.binary == ` + quote(pick(r, poolBins))
	case 3:
		return fmt.Sprintf(`process.binary in [%q, %q]`, pick(r, poolBins), pick(r, poolBins))
	case 4:
		return `process.binary.endsWith(` + quote("/"+pick(r, []string{"sh", "curl", "nc", "kubectl", strings.Repeat("x", 70)})) + `)`
	case 5:
		return `process.name == ` + quote(pick(r, []string{"sh", "bash", "curl", strings.Repeat("x", 254)}))
	case 6:
		return `file.path.startsWith(` + quote(pick(r, poolPrefixes)) + `)`
	case 7:
		return `file.path == ` + quote(pick(r, poolPaths))
	case 8:
		return fmt.Sprintf(`net.peer.port == %d`, pick(r, poolPorts))
	case 9:
		return fmt.Sprintf(`net.peer.port in [%d, %d]`, pick(r, poolPorts), pick(r, poolPorts))
	case 10:
		return fmt.Sprintf(`net.local.port == %d`, pick(r, poolPorts))
	case 11:
		return `net.peer.ip.inCIDR(` + quote(pick(r, poolCIDRs)) + `)`
	case 12:
		return `container.id != ""`
	default:
		return pick(r, extras)
	}
}

// randomCondition combines atoms and extras with &&, || and !.
func randomCondition(r *rand.Rand, depth int) string {
	if depth == 0 || r.IntN(3) == 0 {
		a := randomAtom(r)
		if r.IntN(8) == 0 {
			return "!(" + a + ")"
		}
		return a
	}
	op := " && "
	if r.IntN(3) == 0 {
		op = " || "
	}
	return "(" + randomCondition(r, depth-1) + op + randomCondition(r, depth-1) + ")"
}

func randomRules(t *testing.T, r *rand.Rand, n int) []*engine.Rule {
	t.Helper()
	var rules []*engine.Rule
	for i := 0; len(rules) < n; i++ {
		spec := &v1alpha1.DetectionRuleSpec{
			Source:    string(pick(r, []engine.Source{engine.SourceProcess, engine.SourceFile, engine.SourceNetwork})),
			Severity:  "high",
			Condition: randomCondition(r, 3),
		}
		rule, err := engine.Compile(fmt.Sprintf("r%d", i), "", spec)
		if err != nil {
			continue // a random condition may not type-check for its source; try another
		}
		rules = append(rules, rule)
	}
	return rules
}

const hostNS = 4026531840

// rounds of random rule sets; RIPOSTE_SOUNDNESS_ROUNDS raises it for a long run.
var rounds = 200

// randomEvent is an event as the agent decodes it: strings no longer than
// the kernel reports, container.id set exactly when the mount namespace is
// not the host's.
func randomEvent(r *rand.Rand) engine.Event {
	ev := engine.Event{Kind: pick(r, poolKinds)}
	p := &ev.Process
	p.Binary = pick(r, poolBins)
	p.Args = []string{"a", "b"}[:r.IntN(3)]
	p.UID = int64(r.IntN(2))
	p.Comm = "sh"
	p.MntNS = hostNS
	if r.IntN(2) == 0 {
		p.MntNS = hostNS + 7
		ev.Container.ID = "c0ffee"
	}
	switch ev.Kind {
	case engine.KindOpen:
		ev.File.Path = pick(r, poolPaths)
		ev.File.Flags = int64(r.IntN(3))
	case engine.KindConnect, engine.KindAccept, engine.KindListen:
		ev.Net.Protocol = "tcp"
		ev.Net.Local.Port = int64(uint16(pick(r, poolPorts)))
		if ev.Kind != engine.KindListen {
			ev.Net.Peer.Port = int64(uint16(pick(r, poolPorts)))
			ev.Net.Peer.IP = pick(r, poolIPs)
		}
	}
	engine.Normalize(&ev)
	return ev
}

// TestFilterIsSound is the soundness property: for random rule sets and
// random events, every event some rule matches in user space passes the
// kernel filter's model, with that rule's slot set.
func TestFilterIsSound(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var matched, dropped, events int
	for round := range rounds {
		rules := randomRules(t, r, 1+r.IntN(12))
		in := make([]RuleConstraints, len(rules))
		for i, rule := range rules {
			in[i] = RuleConstraints{Name: rule.Name(), Constraints: rule.Constraints()}
		}
		f := NewFilter(in)
		slot := map[string]int{}
		for i, names := range f.Slots {
			for _, n := range names {
				slot[n] = i
			}
		}
		m := engine.NewMatcher(rules)
		var dst []engine.Match
		for range 300 {
			ev := randomEvent(r)
			events++
			mask := f.Mask(ViewOf(&ev, hostNS))
			if mask == 0 {
				dropped++
			}
			dst = m.Match(&ev, dst[:0])
			for _, mt := range dst {
				matched++
				if mask&(1<<slot[mt.Rule.Name()]) == 0 {
					t.Fatalf("round %d: rule %s (%s) matched an event the kernel drops\nkernel: %s\nevent: %+v",
						round, mt.Rule.Name(), mt.Rule.Spec().Condition, explainKernel(f.constraints[slot[mt.Rule.Name()]]), ev)
				}
			}
		}
	}
	t.Logf("%d events, %d matches, %d dropped by the kernel filter (%.0f%%)", events, matched, dropped, 100*float64(dropped)/float64(events))
	if matched < 1000 || dropped < events/5 {
		t.Fatalf("the property is too weak to mean anything: %d matches, %d drops of %d events", matched, dropped, events)
	}
}

func TestFilterTranslation(t *testing.T) {
	f := NewFilter([]RuleConstraints{
		{Name: "shell", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindExec}, Basenames: []string{"sh"}, ContainerOnly: true}},
		{Name: "secrets", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindOpen}, PathPrefixes: []string{"/etc/", "/etc/shadow"}}},
		{Name: "miner", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindConnect}, PeerPorts: []int64{4444},
			PeerCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}},
		{Name: "audit-only", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindAudit}}},
	})
	cases := []struct {
		v    View
		want bool
	}{
		{View{Kind: engine.KindExec, Binary: "/bin/sh", InContainer: true}, true},
		{View{Kind: engine.KindExec, Binary: "/bin/sh"}, false}, // on the host
		{View{Kind: engine.KindExec, Binary: "/bin/bash", InContainer: true}, false},
		{View{Kind: engine.KindOpen, Path: "/etc/shadow"}, true},
		{View{Kind: engine.KindOpen, Path: "/etc"}, false},
		{View{Kind: engine.KindOpen, Path: "/tmp/x"}, false},
		{View{Kind: engine.KindConnect, PeerPort: 4444, Peer: netip.MustParseAddr("10.2.3.4")}, true},
		{View{Kind: engine.KindConnect, PeerPort: 4444, Peer: netip.MustParseAddr("::ffff:10.2.3.4")}, true},
		{View{Kind: engine.KindConnect, PeerPort: 4444, Peer: netip.MustParseAddr("11.2.3.4")}, false},
		{View{Kind: engine.KindConnect, PeerPort: 443, Peer: netip.MustParseAddr("10.2.3.4")}, false},
		{View{Kind: engine.KindFork}, false},
	}
	for _, c := range cases {
		if got := f.Pass(c.v); got != c.want {
			t.Errorf("Pass(%+v) = %v, want %v", c.v, got, c.want)
		}
	}
	if len(f.Slots) != 3 {
		t.Errorf("slots = %v, want 3 (the audit rule takes none)", f.Slots)
	}
	if got := f.paths["/etc/shadow"]; got != f.paths["/etc/"] {
		t.Errorf("the longer prefix must carry the shorter one's slots: %b vs %b", got, f.paths["/etc/"])
	}
	t.Log("\n" + f.Explain())
}

func init() {
	if v := os.Getenv("RIPOSTE_SOUNDNESS_ROUNDS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			rounds = n
		}
	}
}
