package bpf

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enginetest"
)

// modelPools are the values random rules and events of the model test draw
// from: kernel kinds, and strings at and beyond the kernel's key limits
// (binaries of 254/255/256+ bytes, base names of 62/63/64+, paths and
// prefixes beyond 255 bytes).
func modelPools() *enginetest.Pools {
	p := enginetest.DefaultPools()
	p.Kinds = []engine.Kind{engine.KindExec, engine.KindOpen, engine.KindConnect, engine.KindAccept, engine.KindListen,
		engine.KindFork, engine.KindExit, engine.KindSetuid, engine.KindMount, engine.KindBPF, engine.KindPtrace,
		engine.KindModule, engine.KindCapset, engine.KindUnshare, engine.KindSetns}
	p.Sources = []string{"process", "file", "network", "audit"}
	bin := func(n int) string { return "/" + strings.Repeat("d", n-4) + "/sh" } // n bytes, base name sh
	name := func(n int) string { return strings.Repeat("n", n) }
	p.Binaries = []string{"/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/curl", "/tmp/sh", "/usr/local/bin/kubectl",
		"/usr/bin/nc", bin(254), bin(255), bin(256), bin(300), "/" + strings.Repeat("x", 254), "relative/sh", "",
		"/bin/" + name(62), "/bin/" + name(63), "/bin/" + name(64), "/bin/" + name(70)}
	p.Names = []string{"sh", "bash", "curl", "nc", "kubectl", name(62), name(63), name(64), name(70)}
	p.Paths = []string{"/etc/shadow", "/etc/passwd", "/etc", "/etcetera", "/var/run/secrets/kubernetes.io/serviceaccount/token",
		"/proc/1/mem", "/proc/self/mem", "/tmp/x", "/", "/" + strings.Repeat("p", 254), "/" + strings.Repeat("p", 200) + "/q"}
	p.Prefixes = []string{"/etc/", "/etc", "/var/run/secrets/kubernetes.io/serviceaccount/", "/proc/", "/tmp", "",
		"/" + strings.Repeat("p", 300), "/" + strings.Repeat("p", 200), "/" + strings.Repeat("p", 254), "/" + strings.Repeat("p", 255)}
	p.Ports = []int64{22, 80, 443, 4444, 0, 6443, 70000, -1, 65535}
	p.IPs = []string{"10.1.2.3", "192.168.0.1", "8.8.8.8", "::1", "fd00::5", "::ffff:10.9.9.9", "2001:db8::1", "0.0.0.0", ""}
	p.CIDRs = []string{"10.0.0.0/8", "192.168.0.0/16", "8.8.8.8", "fd00::/8", "::/0", "0.0.0.0/0", "::ffff:10.0.0.0/104", "2001:db8::/32"}
	p.Extras = []string{`process.uid == 0`, `file.write`, `size(process.args) > 1`, `process.comm == "sh"`,
		`!(process.binary == "/bin/sh")`, `net.protocol == "tcp"`, `process.name.startsWith("s")`,
		`file.path.contains("mem")`, `true`, `process.exe.upper`, `syscall.name == "mount"`}
	p.NamespacedRules = 0
	return p
}

const hostNS = 4026531840

// rounds of random rule sets; RIPOSTE_SOUNDNESS_ROUNDS raises it for a long run.
var rounds = 120

// randomEvent is an event as the agent decodes it: strings no longer than
// the kernel reports, container.id set exactly when the mount namespace is
// not the host's (enrichment names containers).
func randomEvent(r *rand.Rand, p *enginetest.Pools) *enginetest.EventCase {
	c := &enginetest.EventCase{Kind: p.Kinds[r.IntN(len(p.Kinds))]}
	add := func(field string, set func(*engine.Event)) {
		if r.IntN(4) > 0 {
			c.Steps = append(c.Steps, enginetest.Step{Field: field, Set: set})
		}
	}
	pickS := func(xs []string) string { return xs[r.IntN(len(xs))] }
	trunc := func(s string) string { return s[:min(len(s), 255)] }
	bin := trunc(pickS(p.Binaries))
	add("process.binary", func(e *engine.Event) { e.Process.Binary = bin })
	args := []string{"a", "b"}[:r.IntN(3)]
	add("process.args", func(e *engine.Event) { e.Process.Args = args })
	uid := int64(r.IntN(2))
	add("process.uid", func(e *engine.Event) { e.Process.UID = uid })
	add("process.comm", func(e *engine.Event) { e.Process.Comm = "sh" })
	inContainer := r.IntN(2) == 0
	add("process.mntns", func(e *engine.Event) {
		e.Process.MntNS = hostNS
		if inContainer {
			e.Process.MntNS = hostNS + 7
			e.Container.ID = "c0ffee"
		}
	})
	switch c.Kind {
	case engine.KindOpen:
		path := trunc(pickS(p.Paths))
		add("file.path", func(e *engine.Event) { e.File.Path = path })
		flags := int64(r.IntN(3))
		add("file.flags", func(e *engine.Event) { e.File.Flags = flags })
	case engine.KindConnect, engine.KindAccept, engine.KindListen:
		add("net.protocol", func(e *engine.Event) { e.Net.Protocol = "tcp" })
		lport := int64(uint16(p.Ports[r.IntN(len(p.Ports))]))
		add("net.local.port", func(e *engine.Event) { e.Net.Local.Port = lport })
		if c.Kind != engine.KindListen {
			pport := int64(uint16(p.Ports[r.IntN(len(p.Ports))]))
			add("net.peer.port", func(e *engine.Event) { e.Net.Peer.Port = pport })
			ip := pickS(p.IPs)
			add("net.peer.ip", func(e *engine.Event) { e.Net.Peer.IP = ip })
		}
	case engine.KindMount:
		add("syscall.name", func(e *engine.Event) { e.Syscall.Name = "mount" })
	}
	return c
}

// oracleRules compiles generated rules with the engine (for their
// constraints) and with the oracle (for the truth).
func oracleRules(t *testing.T, cases []*enginetest.RuleCase) ([]*engine.Rule, []*enginetest.Rule, []RuleConstraints) {
	t.Helper()
	rules := make([]*engine.Rule, len(cases))
	oracles := make([]*enginetest.Rule, len(cases))
	in := make([]RuleConstraints, len(cases))
	for i, rc := range cases {
		rule, err := engine.Compile(rc.Name, rc.Namespace, rc.Spec())
		if err != nil {
			t.Fatalf("a generated rule does not compile: %v\n%s", err, rc)
		}
		if oracles[i], err = enginetest.Compile(rule.Name(), rc.Namespace, rc.Spec()); err != nil {
			t.Fatal(err)
		}
		rules[i] = rule
		in[i] = RuleConstraints{Name: rule.Name(), Constraints: rule.Constraints()}
	}
	return rules, oracles, in
}

// slotsOf maps each rule name to its filter slot.
func slotsOf(f *Filter) map[string]int {
	slot := map[string]int{}
	for i, names := range f.Slots {
		for _, n := range names {
			slot[n] = i
		}
	}
	return slot
}

// modelDrops is the failure a shrink keeps: the oracle matches the event
// and the filter of that one rule drops it.
func modelDrops(t *testing.T, rc *enginetest.RuleCase, ec *enginetest.EventCase, view func(*engine.Event) View) bool {
	t.Helper()
	_, oracles, in := oracleRules(t, []*enginetest.RuleCase{rc})
	ev := ec.Event()
	return oracles[0].Matches(ev) && NewFilter(in).Mask(view(ev))&1 == 0
}

// distinct gives a rule constraints no other rule of the set has (a binary
// set of its own), so that a large set fills every slot and overflows.
func distinct(r *rand.Rand, p *enginetest.Pools, c *enginetest.Cond, i int) *enginetest.Cond {
	bins := []string{}
	for len(bins) < 2 {
		if b := p.Binaries[r.IntN(len(p.Binaries))]; len(b) <= maxBinary { // longer ones leave the binary unconstrained
			bins = append(bins, fmt.Sprintf("%q", b))
		}
	}
	atom := fmt.Sprintf("(process.binary in [%s] || process.binary == \"/opt/r%d\")", strings.Join(bins, ", "), i)
	return &enginetest.Cond{Op: "&&", Args: []*enginetest.Cond{c, {Op: "atom", Atom: atom}}}
}

// TestFilterIsSound is the soundness property of the kernel filter's Go
// model against the independent oracle (engine/enginetest, plain CEL
// evaluation): for random rule sets, some larger than MaxSlots so that rules
// share the overflow slot, and random events with values at and beyond the
// kernel's key limits, every rule the oracle matches has its slot set in the
// filter's mask. The seed changes each run; a failure prints it and a
// reproduction shrunk to one rule and the fields of one event.
//
// With `||` derived like `&&` in engine/constraints.go (the mutation tried
// and reverted) it fails in the first round:
//
//	source: network
//	condition: (!(net.peer.port in [22, 443]) || net.peer.port == 6443)
//	event: {"kind":"listen","time":"0001-01-01T00:00:00Z"}
//	kernel: kind in [accept,connect,listen] && peer port in [6443]
func TestFilterIsSound(t *testing.T) {
	seed := enginetest.Seed(t)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := modelPools()
	view := func(ev *engine.Event) View { return ViewOf(ev, hostNS) }
	var matched, dropped, events, overflowRounds int
	for round := range rounds {
		n := 1 + r.IntN(12)
		if round%10 == 0 {
			n = MaxSlots + 40 + r.IntN(40)
		}
		cases := make([]*enginetest.RuleCase, n)
		for i := range cases {
			cases[i] = p.Rule(r, fmt.Sprintf("r%d", i))
			if n > MaxSlots {
				cases[i].Cond = distinct(r, p, cases[i].Cond, i)
			}
		}
		rules, oracles, in := oracleRules(t, cases)
		f := NewFilter(in)
		if len(f.Slots) == MaxSlots {
			overflowRounds++
		}
		slot := slotsOf(f)
		for range 300 {
			ec := randomEvent(r, p)
			ev := ec.Event()
			events++
			mask := f.Mask(view(ev))
			if mask == 0 {
				dropped++
			}
			for i, o := range oracles {
				if !o.Matches(ev) {
					continue
				}
				matched++
				if mask&(1<<slot[rules[i].Name()]) != 0 {
					continue
				}
				msg := fmt.Sprintf("seed %d round %d: rule %s matches an event the kernel filter drops\nrule:\n%s\nevent: %s\nkernel: %s",
					seed, round, rules[i].Name(), cases[i], ec.JSON(), explainKernel(f.constraints[slot[rules[i].Name()]]))
				fails := func(rc *enginetest.RuleCase, ec *enginetest.EventCase) bool { return modelDrops(t, rc, ec, view) }
				if fails(cases[i], ec) {
					rc, sec := enginetest.Shrink(cases[i], ec, fails)
					_, _, sin := oracleRules(t, []*enginetest.RuleCase{rc})
					msg += fmt.Sprintf("\nshrunk reproduction (RIPOSTE_ORACLE_SEED=%d go test -run %s ./bpf):\n%s\nevent: %s\nkernel: %s",
						seed, t.Name(), rc, sec.JSON(), explainKernel(kernelView(sin[0].Constraints)))
				} else {
					msg += "\n(the rule alone passes: the failure needs the other rules of the set)\n" + f.Explain()
				}
				t.Fatal(msg)
			}
		}
	}
	t.Logf("%d events, %d matches, %d dropped by the kernel filter (%.0f%%); %d rounds used the shared overflow slot",
		events, matched, dropped, 100*float64(dropped)/float64(events), overflowRounds)
	if matched < events/10 || dropped < events/5 || overflowRounds == 0 {
		t.Fatalf("seed %d: the property is too weak to mean anything: %d matches, %d drops of %d events, %d overflow rounds",
			seed, matched, dropped, events, overflowRounds)
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
