package bpf

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enginetest"
)

// TestKernelFilterAgreesWithOracle checks the loaded programs against the
// independent oracle (engine/enginetest: each rule's CEL evaluated as
// written) on real events. Two copies of the sensors are attached at once:
// a reference copy that passes everything and the copy under test, which
// holds the filter of a random rule set. Every round a script runs in four
// placements — on the host, in a cgroup enrichment calls a container's, in a
// new mount namespace, and both — and does what every sensor reports: it
// execs binaries whose paths and base names sit at and beyond the kernel's
// key limits (254/255/256/300-byte paths, 62/63/64-byte names, deeper than
// the kernel walks), opens files of the same shapes, listens, accepts and
// connects over IPv4, IPv6 and IPv4-mapped IPv6 (TCP and UDP, local and
// peer ports), and makes every privilege and escape system call. Rule sets
// hold container-only rules, and every fourth one has more distinct rules
// than MaxSlots so the shared overflow slot is used.
//
// For each event the reference copy saw, of the script's processes:
//
//   - an event some rule matches (by the oracle) reached user space through
//     the filter under test, and the Go model's mask has each such rule's slot;
//   - the filter under test passed it exactly when the Go model says so;
//   - the indexed matcher returns exactly the oracle's rules.
//
// The filter under test passes nothing the reference did not see. The seed
// changes every run (RIPOSTE_ORACLE_SEED repeats one; the ports are picked
// afresh); a failure prints it with the rule, the event and the filter.
// With `||` derived like `&&` in engine/constraints.go (the mutation tried
// and reverted) it fails in the first rounds, on the fork of a script:
//
//	round 1: fork [host]: rule r7 matches (oracle) but the model drops it
//	shrunk rule:
//	source: process
//	condition: (event.kind == "unshare" || audit.verb == "")
//	event: {"kind":"fork",…,"process":{"pid":30359,…,"comm":"bpf.test",…}}
//	kernel filter: 5 slot(s) of 64
//	  …
//	  slot 4 [r7]: kind in [unshare]
func TestKernelFilterAgreesWithOracle(t *testing.T) {
	seed := enginetest.Seed(t)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	w := newOracleWorld(t)
	ref := loadTracking(t, w)
	s, c := loadForTest(t, Options{})
	for _, x := range []*Sensors{ref.s, s} {
		if err := x.SetContainerCgroup(w.cgroupID, CgroupUnknown); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { x.RemoveContainerCgroup(w.cgroupID) })
	}
	if err := ref.s.SetFilter(passAll()); err != nil {
		t.Fatal(err)
	}
	pools := w.pools()
	cov := map[string]int{}
	for round := range 16 {
		n := 1 + r.IntN(12)
		if round%4 == 3 {
			n = MaxSlots + 10 + r.IntN(30)
		}
		cases := make([]*enginetest.RuleCase, n)
		for i := range cases {
			cases[i] = pools.Rule(r, fmt.Sprintf("r%d", i))
			if n > MaxSlots {
				cases[i].Cond = distinct(r, pools, cases[i].Cond, i)
			}
		}
		rules, oracles, in := oracleRules(t, cases)
		f := NewFilter(in)
		if len(f.Slots) == MaxSlots {
			cov["rounds with the overflow slot"]++
		}
		for _, rule := range rules {
			if rule.Constraints().ContainerOnly {
				cov["container-only rules"]++
			}
		}
		ref.reset()
		c.mu.Lock()
		c.evs, c.metas = nil, nil
		c.mu.Unlock()
		lostBefore := lost(t, ref.s) + lost(t, s)
		if err := s.SetFilter(f); err != nil {
			t.Fatal(err)
		}
		placements := w.run(t)
		// The marker exec passes both copies and comes after every event of
		// the round in both ring buffers.
		if err := s.SetFilter(NewFilter([]RuleConstraints{{Name: "marker", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindExec}, Binaries: []string{w.marker}}}})); err != nil {
			t.Fatal(err)
		}
		mk := exec.Command(w.marker)
		if err := mk.Run(); err != nil {
			t.Fatal(err)
		}
		mpid := int64(mk.Process.Pid)
		isMarker := func(e *engine.Event) bool { return e.Kind == engine.KindExec && e.Process.PID == mpid }
		c.wait(t, "marker exec (filter under test)", isMarker)
		ref.c.wait(t, "marker exec (reference)", isMarker)
		if d := lost(t, ref.s) + lost(t, s) - lostBefore; d != 0 {
			t.Fatalf("round %d: the ring buffers lost %d events (the machine is too busy for this comparison)", round, d)
		}

		refEvs, refMetas := ref.round(mpid)
		tracked := map[int64]bool{}
		for _, e := range refEvs {
			tracked[e.Process.PID] = true
		}
		got := map[string]int{}
		for _, e := range c.snapshot() {
			if tracked[e.Process.PID] {
				got[eventKey(&e)]++
			}
		}
		slot := slotsOf(f)
		m := engine.NewMatcher(rules)
		for i := range refEvs {
			ev, meta := &refEvs[i], refMetas[i]
			where := placements[ev.Process.PID]
			inContainer := uint32(ev.Process.MntNS) != s.HostMntNS || ev.Process.CgroupID == w.cgroupID
			if ev.Process.CgroupID == w.cgroupID {
				ev.Container.ID = "oracle-container" // what enrichment names a registered cgroup
			}
			engine.Normalize(ev)
			view := ViewOf(ev, s.HostMntNS)
			view.InContainer, view.PathIncomplete = inContainer, meta.PathIncomplete
			w.cover(cov, ev, view)
			mask := f.Mask(view)
			var matched []string
			for j, o := range oracles {
				if !o.Matches(ev) {
					continue
				}
				matched = append(matched, rules[j].Name())
				cov["matches"]++
				if mask&(1<<slot[rules[j].Name()]) == 0 {
					t.Fatalf("seed %d round %d: %s [%s]: rule %s matches (oracle) but the model drops it\n%s\nview %+v\n%s",
						seed, round, ev.Kind, where, rules[j].Name(), shrinkModel(t, cases[j], ev, view), view, f.Explain())
				}
			}
			k := eventKey(ev)
			passed := got[k] > 0
			if passed {
				got[k]--
				cov["passed"]++
			} else {
				cov["dropped"]++
			}
			if len(matched) > 0 && !passed {
				t.Fatalf("seed %d round %d: %s pid %d [%s]: rules %v match (oracle) but the kernel dropped the event\n%s\nevent: %s\nview %+v\n%s",
					seed, round, ev.Kind, ev.Process.PID, where, matched, describe(cases, matched), jsonOf(ev), view, f.Explain())
			}
			if passed != (mask != 0) {
				t.Fatalf("seed %d round %d: %s pid %d [%s]: kernel passed=%v, model mask %b\nevent: %s\nview %+v\n%s",
					seed, round, ev.Kind, ev.Process.PID, where, passed, mask, jsonOf(ev), view, f.Explain())
			}
			idx := matchNames(m.Match(ev, nil))
			sort.Strings(matched)
			if !slices.Equal(idx, matched) {
				t.Fatalf("seed %d round %d: %s [%s]: indexed matcher %v, oracle %v\nevent: %s", seed, round, ev.Kind, where, idx, matched, jsonOf(ev))
			}
		}
		for k, n := range got {
			if n > 0 {
				t.Fatalf("seed %d round %d: the filter under test passed %d event(s) the reference never saw: %s", seed, round, n, k)
			}
		}
	}
	t.Logf("coverage: %v", cov)
	for _, need := range append(w.mustCover(), "rounds with the overflow slot", "container-only rules", "matches", "passed", "dropped") {
		if cov[need] == 0 {
			t.Errorf("seed %d: nothing covered %q: the test proves less than it says", seed, need)
		}
	}
}

// oracleWorld is what the script touches, created once per test.
type oracleWorld struct {
	root, script, marker string
	bins, files          []string
	ports                []int64
	refused              int64
	cgroupDir            string
	cgroupID             uint64
	longBin, deepBin     string
}

func newOracleWorld(t *testing.T) *oracleWorld {
	t.Helper()
	w := &oracleWorld{root: realPath(t, t.TempDir())}
	trueBin, err := os.ReadFile(realPath(t, "/bin/true"))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(p string, data []byte, mode os.FileMode) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// exact returns a path of exactly n bytes under dir ending in /leaf.
	exact := func(dir string, n int, leaf string) string {
		rest := n - len(dir) - 1 - len(leaf)
		if rest < 0 || rest == 1 {
			t.Fatalf("cannot make a path of %d bytes under %s", n, dir)
		}
		p := dir
		for rest > 0 {
			part := min(rest, 200)
			if rest-part == 1 {
				part--
			}
			p += "/" + strings.Repeat("l", part-1)
			rest -= part
		}
		return p + "/" + leaf
	}
	deep := func(dir string, levels int, leaf string) string {
		return dir + strings.Repeat("/d", levels) + "/" + leaf
	}
	for _, name := range []string{"sh", "nc", "curl", strings.Repeat("n", 61), strings.Repeat("n", 62), strings.Repeat("n", 63), strings.Repeat("n", 64)} {
		w.bins = append(w.bins, mk(filepath.Join(w.root, "bin", name), trueBin, 0o755))
	}
	for _, n := range []int{254, 255, 256, 300} {
		w.bins = append(w.bins, mk(exact(w.root+"/b"+strconv.Itoa(n), n, "sh"), trueBin, 0o755))
	}
	w.longBin = w.bins[len(w.bins)-1]
	w.deepBin = mk(deep(w.root+"/deepbin", 70, "sh"), trueBin, 0o755)
	w.bins = append(w.bins, w.deepBin)
	for _, p := range []string{"etc/shadow", "etc/ssl/a", "etcx/a", "var/run/secrets/token"} {
		w.files = append(w.files, mk(filepath.Join(w.root, p), nil, 0o644))
	}
	for _, n := range []int{254, 255, 256, 300} {
		w.files = append(w.files, mk(exact(w.root+"/f"+strconv.Itoa(n), n, "f"), nil, 0o644))
	}
	w.files = append(w.files, mk(deep(w.root+"/deepfile", 70, "f"), nil, 0o644))
	w.marker = mk(filepath.Join(w.root, "marker"), trueBin, 0o755)
	for range 3 {
		w.ports = append(w.ports, freePort(t))
	}
	w.refused, w.ports = w.ports[2], w.ports[:2]

	var sc strings.Builder
	sc.WriteString("for b in")
	for _, b := range w.bins {
		sc.WriteString(" " + b)
	}
	sc.WriteString("; do \"$b\"; done\ncat")
	for _, f := range w.files {
		sc.WriteString(" " + f)
	}
	fmt.Fprintf(&sc, " >/dev/null\n: >> %s\n", w.files[0])
	fmt.Fprintf(&sc, "exec /usr/bin/perl -e '%s' %d %d %d\n", perlScript, w.refused, w.ports[0], w.ports[1])
	w.script = mk(filepath.Join(w.root, "script.sh"), []byte(sc.String()), 0o755)

	mnt := cgroup2Mount(t)
	w.cgroupDir = filepath.Join(mnt, fmt.Sprintf("riposte-oracle-%d", os.Getpid()))
	if err := os.Mkdir(w.cgroupDir, 0o755); err != nil {
		t.Fatalf("create a cgroup for the container placement: %v", err)
	}
	t.Cleanup(func() { os.Remove(w.cgroupDir) })
	var st syscall.Stat_t
	if err := syscall.Stat(w.cgroupDir, &st); err != nil {
		t.Fatal(err)
	}
	w.cgroupID = st.Ino
	return w
}

// perlScript listens, accepts and connects (IPv4, IPv6, IPv4-mapped, TCP
// and UDP, refused ports) and makes every privilege and escape system call
// the sensors report, each one harmless: bad arguments or a no-op.
const perlScript = `use IO::Socket::IP;
my ($refused, @ports) = @ARGV;
for my $h ("127.0.0.1", "::1") { for my $p (@ports) {
  my $s = IO::Socket::IP->new(LocalHost => $h, LocalPort => $p, Listen => 5, ReuseAddr => 1) or next;
  my $c = IO::Socket::IP->new(PeerHost => $h, PeerPort => $p) or next;
  my $a = $s->accept;
} }
IO::Socket::IP->new(PeerHost => $_, PeerPort => $refused) for ("127.0.0.2", "::ffff:127.0.0.1", "::1");
IO::Socket::IP->new(PeerHost => "127.0.0.1", PeerPort => 53, Proto => "udp");
syscall(105, 0);
syscall(126, 0, 0);
syscall(101, 0xffff, 0, 0, 0);
syscall(272, 0);
syscall(308, -1, 0);
my ($src, $dst, $fs, $empty) = ("none", "/nonexistent-riposte-oracle", "none", "");
syscall(165, $src, $dst, $fs, 0, 0);
syscall(175, 0, 0, $empty);
syscall(313, -1, $empty, 0);
syscall(321, -1, 0, 0);`

// run runs the script in its four placements and returns each process's
// placement, by root pid.
func (w *oracleWorld) run(t *testing.T) map[int64]string {
	t.Helper()
	join := "echo $$ > " + w.cgroupDir + "/cgroup.procs && exec "
	placements := []struct {
		name string
		argv []string
	}{
		{"host", []string{"/bin/sh", w.script}},
		{"container cgroup, host mount namespace", []string{"/bin/sh", "-c", join + "/bin/sh " + w.script}},
		{"new mount namespace, host cgroup", []string{"unshare", "-m", "/bin/sh", w.script}},
		{"container cgroup and mount namespace", []string{"/bin/sh", "-c", join + "unshare -m /bin/sh " + w.script}},
	}
	out := map[int64]string{}
	for _, p := range placements {
		cmd := exec.Command(p.argv[0], p.argv[1:]...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("script (%s): %v\n%s", p.name, err, b)
		}
		out[int64(cmd.Process.Pid)] = p.name
	}
	return out
}

// pools are the values rules draw from: those the script produces, their
// kernel truncations, and decoys.
func (w *oracleWorld) pools() *enginetest.Pools {
	p := modelPools()
	p.Sources = []string{"process", "file", "network"}
	sysBins := []string{realPathOr("/bin/sh"), realPathOr("/usr/bin/cat"), "/usr/bin/perl", realPathOr("/usr/bin/unshare"), "/bin/sh"}
	p.Binaries = append(append(slices.Clone(w.bins), sysBins...), w.longBin[:255], w.longBin[:254], "/usr/bin/curl")
	p.Names = []string{"sh", "nc", "curl", "cat", "perl", "dash", "unshare", "true",
		strings.Repeat("n", 61), strings.Repeat("n", 62), strings.Repeat("n", 63), strings.Repeat("n", 64)}
	p.Paths = append(slices.Clone(w.files), "/etc/ld.so.cache", w.files[len(w.files)-2][:255])
	p.Prefixes = []string{w.root + "/etc/", w.root + "/etc", w.root + "/et", w.root + "/", w.root + "/var/run/secrets/",
		"/etc/", "/usr/lib/", "/", "", w.files[len(w.files)-2][:254], w.files[len(w.files)-2][:255], w.files[len(w.files)-2][:280],
		w.root + "/deepfile/d/d/"}
	p.Ports = append(slices.Clone(w.ports), w.refused, 53, 0, 22)
	p.CIDRs = []string{"127.0.0.0/8", "127.0.0.2", "127.0.0.1", "::1/128", "::/0", "::ffff:127.0.0.0/104", "10.0.0.0/8", "0.0.0.0/0", "fd00::/8"}
	p.Extras = []string{`process.uid == 0`, `file.write`, `size(process.args) > 1`, `process.comm == "cat"`,
		`net.protocol == "udp"`, `net.family == "ipv6"`, `process.name.startsWith("s")`, `syscall.name == "mount"`,
		`true`, `syscall.ret < 0`, `net.peer.ip == "::1"`, `process.args.exists(a, a.endsWith(".sh"))`}
	return p
}

func realPathOr(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// mustCover lists what every run must have met at least once.
func (w *oracleWorld) mustCover() []string {
	var out []string
	for _, k := range []engine.Kind{engine.KindExec, engine.KindExit, engine.KindFork, engine.KindSetuid, engine.KindCapset,
		engine.KindPtrace, engine.KindUnshare, engine.KindSetns, engine.KindMount, engine.KindModule, engine.KindBPF,
		engine.KindOpen, engine.KindConnect, engine.KindAccept, engine.KindListen} {
		out = append(out, "kind "+string(k))
	}
	return append(out, "exec of a 255-byte (truncated) binary", "exec deeper than the kernel walks", "open of a truncated path",
		"open deeper than the kernel walks", "IPv6 peer", "IPv4-mapped peer", "UDP", "in a container", "on the host")
}

func (w *oracleWorld) cover(cov map[string]int, ev *engine.Event, v View) {
	cov["kind "+string(ev.Kind)]++
	switch {
	case ev.Kind == engine.KindExec && len(ev.Process.Binary) == 255:
		cov["exec of a 255-byte (truncated) binary"]++
	case ev.Kind == engine.KindExec && v.PathIncomplete:
		cov["exec deeper than the kernel walks"]++
	case ev.Kind == engine.KindOpen && len(ev.File.Path) == 255:
		cov["open of a truncated path"]++
	case ev.Kind == engine.KindOpen && v.PathIncomplete:
		cov["open deeper than the kernel walks"]++
	}
	if v.Peer.Is6() && !v.Peer.Is4In6() {
		cov["IPv6 peer"]++
	}
	if v.Peer.Is4In6() {
		cov["IPv4-mapped peer"]++
	}
	if ev.Net.Protocol == "udp" {
		cov["UDP"]++
	}
	if v.InContainer {
		cov["in a container"]++
	} else {
		cov["on the host"]++
	}
}

// tracking is a reference copy of the sensors that keeps only the events of
// this test's child processes and their descendants (it follows forks), so
// a busy machine does not fill memory.
type tracking struct {
	s       *Sensors
	c       *collector
	mu      sync.Mutex
	tracked map[int64]bool
}

func loadTracking(t *testing.T, w *oracleWorld) *tracking {
	t.Helper()
	s, err := Load(Options{})
	if err != nil {
		t.Fatalf("the sensors must load on this machine (run the tests as root on a kernel with BTF): %v", err)
	}
	tr := &tracking{s: s, c: &collector{s: s}, tracked: map[int64]bool{int64(os.Getpid()): true}}
	tr.c.wg.Add(1)
	go func() {
		defer tr.c.wg.Done()
		d := Decoder{Boot: BootTime()}
		var rec ringbuf.Record
		for {
			if err := s.Read(&rec); err != nil {
				if errors.Is(err, ringbuf.ErrClosed) {
					return
				}
				continue
			}
			var ev engine.Event
			m, err := d.Decode(rec.RawSample, &ev)
			tr.mu.Lock()
			if err == nil && ev.Kind == engine.KindFork && tr.tracked[ev.Process.PPID] {
				tr.tracked[ev.Process.PID] = true
			}
			keep := err == nil && tr.tracked[ev.Process.PID] && ev.Process.PID != int64(os.Getpid())
			tr.mu.Unlock()
			tr.c.mu.Lock()
			switch {
			case err != nil:
				tr.c.bad = append(tr.c.bad, err)
			case keep:
				tr.c.evs = append(tr.c.evs, ev)
				tr.c.metas = append(tr.c.metas, m)
			}
			tr.c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		s.Close()
		tr.c.wg.Wait()
		if len(tr.c.bad) > 0 {
			t.Errorf("undecodable records: %v", tr.c.bad)
		}
	})
	return tr
}

func (tr *tracking) reset() {
	tr.c.mu.Lock()
	tr.c.evs, tr.c.metas = nil, nil
	tr.c.mu.Unlock()
}

// round returns the events kept since reset, without the marker's.
func (tr *tracking) round(marker int64) ([]engine.Event, []Meta) {
	tr.c.mu.Lock()
	defer tr.c.mu.Unlock()
	var evs []engine.Event
	var metas []Meta
	for i, e := range tr.c.evs {
		if e.Process.PID != marker {
			evs, metas = append(evs, e), append(metas, tr.c.metas[i])
		}
	}
	return evs, metas
}

// eventKey identifies one real event in both copies: everything the kernel
// reports but the time.
func eventKey(e *engine.Event) string {
	p := e.Process
	return fmt.Sprintf("%s|%d|%d|%d|%s|%q|%s|%d|%+v|%s|%d|%d|%d", e.Kind, p.PID, p.TID, p.PPID, p.Binary, p.Args,
		e.File.Path, e.File.Flags, e.Net, e.Syscall.Name, e.Syscall.Ret, p.CgroupID, p.MntNS)
}

func lost(t *testing.T, s *Sensors) uint64 {
	t.Helper()
	c, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, v := range c {
		n += v[3]
	}
	return n
}

func describe(cases []*enginetest.RuleCase, names []string) string {
	var b strings.Builder
	for _, rc := range cases {
		if slices.Contains(names, rc.Name) {
			fmt.Fprintf(&b, "rule %s: %s\n", rc.Name, rc)
		}
	}
	return b.String()
}

// shrinkModel shrinks a rule against the model for one real event.
func shrinkModel(t *testing.T, rc *enginetest.RuleCase, ev *engine.Event, v View) string {
	fixed := &enginetest.EventCase{Kind: ev.Kind, Steps: []enginetest.Step{{Field: "the real event", Set: func(e *engine.Event) { *e = *ev }}}}
	view := func(*engine.Event) View { return v }
	fails := func(rc *enginetest.RuleCase, ec *enginetest.EventCase) bool { return modelDrops(t, rc, ec, view) }
	if !fails(rc, fixed) {
		return fmt.Sprintf("rule %s\nevent: %s\n(the rule alone passes: the failure needs the other rules of the set)", rc, jsonOf(ev))
	}
	rc, _ = enginetest.Shrink(rc, fixed, fails)
	return fmt.Sprintf("shrunk rule:\n%s\nevent: %s", rc, jsonOf(ev))
}

func jsonOf(ev *engine.Event) string {
	return (&enginetest.EventCase{Kind: ev.Kind, Steps: []enginetest.Step{{Set: func(e *engine.Event) { *e = *ev }}}}).JSON()
}

func matchNames(ms []engine.Match) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Rule.Name())
	}
	sort.Strings(out)
	return out
}

// freePort returns a TCP port free on 127.0.0.1 and ::1 when asked.
func freePort(t *testing.T) int64 {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l6, err := net.Listen("tcp6", fmt.Sprintf("[::1]:%d", port))
		l.Close()
		if err == nil {
			l6.Close()
			return int64(port)
		}
	}
	t.Fatal("no port free on both 127.0.0.1 and ::1")
	return 0
}

// cgroup2Mount is where the cgroup v2 hierarchy is mounted
// (/sys/fs/cgroup, or /sys/fs/cgroup/unified in hybrid mode).
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, x := range fields {
			if x == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" {
				return fields[4]
			}
		}
	}
	t.Fatal("no cgroup v2 hierarchy is mounted: the container placement needs one")
	return ""
}
