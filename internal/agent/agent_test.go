package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/bpf"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/host"
)

func compile(t *testing.T, name, cond string, exceptions ...string) *engine.Rule {
	t.Helper()
	spec := &v1alpha1.DetectionRuleSpec{Source: "process", Severity: "high", Condition: cond}
	if strings.Contains(cond, "file.") {
		spec.Source = "file"
	}
	for i, e := range exceptions {
		spec.Exceptions = append(spec.Exceptions, v1alpha1.Exception{Name: "e" + string(rune('0'+i)), Condition: e})
	}
	r, err := engine.Compile(name, "", spec)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// started is an agent running in the background with what it reported.
type started struct {
	a        *Agent
	log      *bytes.Buffer
	reg      *prometheus.Registry
	mu       sync.Mutex
	matches  []engine.Event
	fired    map[string]int // matches by rule
	enforced []engine.Event
	events   []engine.Event
}

func start(t *testing.T) *started {
	t.Helper()
	st := &started{log: &bytes.Buffer{}, reg: prometheus.NewRegistry(), fired: map[string]int{}}
	a, err := New(Config{
		Node: "test", Log: slog.New(slog.NewTextHandler(st.log, nil)), Registry: st.reg,
		OnMatch: func(ev *engine.Event, m []engine.Match) {
			st.mu.Lock()
			st.matches = append(st.matches, *ev)
			for _, x := range m {
				st.fired[x.Rule.Name()]++
			}
			st.mu.Unlock()
		},
		OnEnforce: func(ev *engine.Event) {
			st.mu.Lock()
			st.enforced = append(st.enforced, *ev)
			st.mu.Unlock()
		},
		OnEvent: func(ev *engine.Event) {
			st.mu.Lock()
			st.events = append(st.events, *ev)
			st.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatalf("the agent must start on this machine (root, BTF): %v", err)
	}
	st.a = a
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		a.Close()
	})
	return st
}

func (st *started) wait(t *testing.T, what string, list *[]engine.Event, ok func(*engine.Event) bool) engine.Event {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		st.mu.Lock()
		for _, ev := range *list {
			if ok(&ev) {
				st.mu.Unlock()
				return ev
			}
		}
		st.mu.Unlock()
	}
	t.Fatalf("no %s within 5s", what)
	return engine.Event{}
}

// TestKillAtExecStopsTheBinaryBeforeItRuns: a copy of touch whose first
// action is creating a file is killed by the exec hook where its playbook
// allows it; the file never appears, and an enforce event names the rule.
// Where the playbook does not allow it — a host process without
// allowHostProcesses, a container of a protected namespace without
// allowProtectedNamespaces, a container whose pod riposte does not know
// yet — the binary runs and only the match is reported.
func TestKillAtExecStopsTheBinaryBeforeItRuns(t *testing.T) {
	st := start(t)
	dir := t.TempDir()
	dropper := filepath.Join(dir, "riposte-dropper")
	data, err := os.ReadFile("/usr/bin/touch")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dropper, data, 0o755); err != nil {
		t.Fatal(err)
	}
	// A cgroup of its own the dropper can be started in, registered with the
	// kernel as a container's in the cases below.
	cgDir, err := os.MkdirTemp(host.DefaultCgroupRoot(), "riposte-kill-test-")
	if err != nil {
		t.Fatalf("create a cgroup (needs root and cgroup v2): %v", err)
	}
	t.Cleanup(func() { _ = os.Remove(cgDir) })
	fi, err := os.Stat(cgDir)
	if err != nil {
		t.Fatal(err)
	}
	cgID := fi.Sys().(*syscall.Stat_t).Ino
	cgFD, err := syscall.Open(cgDir, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(cgFD) })

	// run starts the dropper (in the cgroup or on the host) and reports
	// whether the kernel killed it before it created its file.
	n := 0
	run := func(inCgroup bool) (killed bool, pid int64) {
		t.Helper()
		n++
		target := filepath.Join(dir, fmt.Sprintf("dropped-%d", n))
		cmd := exec.Command(dropper, target)
		if inCgroup {
			cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgFD}
		}
		err := cmd.Run()
		var ee *exec.ExitError
		killed = errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
		_, statErr := os.Stat(target)
		switch {
		case killed && !errors.Is(statErr, os.ErrNotExist):
			t.Fatalf("the dropper's file exists (stat: %v) although it was killed: it ran before the kill", statErr)
		case !killed && err != nil:
			t.Fatalf("dropper run %d: %v", n, err)
		case !killed && statErr != nil:
			t.Fatalf("the dropper ran but made no file: %v", statErr)
		}
		return killed, int64(cmd.Process.Pid)
	}
	if killed, _ := run(false); killed {
		t.Fatal("control run without rules was killed")
	}

	rule := compile(t, "block-dropper", `event.kind == "exec" && process.binary == "`+dropper+`"`)
	set := func(kr KillRule, class bpf.CgroupClass) {
		t.Helper()
		kr.Rule = rule
		if skipped, err := st.a.SetRules([]*engine.Rule{rule}, []KillRule{kr}); err != nil || len(skipped) > 0 {
			t.Fatalf("set rules: %v, skipped %v", err, skipped)
		}
		if class == 0 {
			if err := st.a.Sensors().RemoveContainerCgroup(cgID); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := st.a.Sensors().SetContainerCgroup(cgID, class); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		kill     KillRule
		class    bpf.CgroupClass // 0: the cgroup is not a container's
		inCgroup bool
		want     bool
	}{
		{"host process, playbook without allowHostProcesses", KillRule{}, 0, false, false},
		{"container of an unknown pod", KillRule{Host: true, Protected: true}, bpf.CgroupUnknown, true, false},
		{"container of a protected namespace", KillRule{Host: true}, bpf.CgroupProtected, true, false},
		{"container of a protected namespace, allowProtectedNamespaces", KillRule{Protected: true}, bpf.CgroupProtected, true, true},
		{"container of a known pod", KillRule{}, bpf.CgroupContainer, true, true},
		{"host process, allowHostProcesses", KillRule{Host: true}, 0, false, true},
	} {
		set(tc.kill, tc.class)
		killed, pid := run(tc.inCgroup)
		if killed != tc.want {
			t.Errorf("%s: killed = %v, want %v", tc.name, killed, tc.want)
			continue
		}
		// Killed or not, the exec matched the rule in user space.
		st.wait(t, tc.name+": match", &st.matches, func(e *engine.Event) bool { return e.Process.PID == pid && e.Kind == engine.KindExec })
		if !killed {
			continue
		}
		enf := st.wait(t, tc.name+": enforce event", &st.enforced, func(e *engine.Event) bool { return e.Process.PID == pid })
		if enf.Kind != engine.KindEnforce || enf.Enforcement != (engine.Enforcement{Rule: "block-dropper", Action: "kill", Layer: "bpf_send_signal"}) || enf.Process.Binary != dropper {
			t.Errorf("%s: enforce event = %+v %+v", tc.name, enf.Enforcement, enf.Process)
		}
	}
}

// TestLSMProbeFallsBackToKillAndAnnouncesIt: this kernel refuses BPF LSM
// programs; the agent says so in one log line and in a metric.
func TestLSMProbeFallsBackToKillAndAnnouncesIt(t *testing.T) {
	st := start(t)
	e := st.a.Enforcement
	if e.Mode != ModeKill || !strings.Contains(e.Reason, "operation not permitted") {
		t.Fatalf("enforcement = %+v, want the kill fallback because the LSM load is refused with EPERM", e)
	}
	var lines []string
	for _, l := range strings.Split(st.log.String(), "\n") {
		if strings.Contains(l, "enforcement:") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "falling back to kill at exec") || !strings.Contains(lines[0], "mode=kill") {
		t.Errorf("announcement lines = %q, want one naming the kill fallback", lines)
	}
	if v := gaugeValue(enforcementGauge.WithLabelValues(ModeKill)); v != 1 {
		t.Errorf("riposte_agent_enforcement{mode=kill} = %v, want 1", v)
	}
	if v := gaugeValue(enforcementGauge.WithLabelValues(ModeLSM)); v != 0 {
		t.Errorf("riposte_agent_enforcement{mode=lsm} = %v, want 0", v)
	}
}

// TestMatchCarriesAncestryAndCountersAreExported: an open matched in user
// space carries its parent from the process table, and the kernel counters
// are exported as riposte_agent_events_total.
func TestMatchCarriesAncestryAndCountersAreExported(t *testing.T) {
	st := start(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "token")
	os.WriteFile(secret, []byte("x"), 0o600)
	secret, _ = filepath.EvalSymlinks(secret)
	rule := compile(t, "token-read", `event.kind == "open" && file.path.startsWith("`+filepath.Dir(secret)+`/")`)
	if _, err := st.a.SetRules([]*engine.Rule{rule}, nil); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", "/bin/cat "+secret+" >/dev/null; true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	shPID := int64(cmd.Process.Pid)
	m := st.wait(t, "match", &st.matches, func(e *engine.Event) bool { return e.File.Path == secret })
	sh, _ := filepath.EvalSymlinks("/bin/sh")
	cat, _ := filepath.EvalSymlinks("/bin/cat")
	if m.Process.Binary != cat || m.Process.Parent.PID != shPID || m.Process.Parent.Binary != sh {
		t.Errorf("matched process %s (parent %d %s), want %s with parent %d %s", m.Process.Binary, m.Process.Parent.PID, m.Process.Parent.Binary, cat, shPID, sh)
	}
	if len(m.Process.Ancestors) < 2 || m.Process.Ancestors[1].PID != int64(os.Getpid()) {
		t.Errorf("ancestors = %+v, want sh then this test", m.Process.Ancestors)
	}
	mfs, err := st.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var submitted, dropped float64
	series := 0
	for _, mf := range mfs {
		if mf.GetName() != "riposte_agent_events_total" {
			continue
		}
		series += len(mf.GetMetric())
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == "open" && labels["outcome"] == "submitted" {
				submitted = mt.GetCounter().GetValue()
			}
			if labels["kind"] == "open" && labels["outcome"] == "dropped" {
				dropped = mt.GetCounter().GetValue()
			}
		}
	}
	if series < 4*15 {
		t.Errorf("riposte_agent_events_total has %d series, want every kind and outcome", series)
	}
	if submitted < 1 || dropped < 1 {
		t.Errorf("open submitted %v dropped %v: want both counted", submitted, dropped)
	}
}

func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	g.Write(&m)
	return m.GetGauge().GetValue()
}

// TestLongAndDeepExecPathsAreMatchedWhole: the kernel keeps the first 255
// bytes of a binary's path, or only the tail of a path deeper than it
// walks; an attacker running a shell from such a path would otherwise hide
// its base name (or its directory) from the rules. The agent completes the
// path from /proc and rules on the base name and the whole path match.
func TestLongAndDeepExecPathsAreMatchedWhole(t *testing.T) {
	st := start(t)
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(root, strings.Repeat("a", 200), strings.Repeat("b", 100), "riposte-long-sh")
	deep := filepath.Join(root, strings.Repeat("d/", 70)+"riposte-deep-sh")
	for _, p := range []string{long, deep} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rules := []*engine.Rule{
		compile(t, "long-name", `event.kind == "exec" && process.name == "riposte-long-sh"`),
		compile(t, "deep-name", `event.kind == "exec" && process.name == "riposte-deep-sh"`),
		compile(t, "deep-dir", `event.kind == "exec" && process.binary.startsWith("`+root+`/d/d/")`),
	}
	if _, err := st.a.SetRules(rules, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{long, deep} {
		// It runs for a second: the agent reads /proc/<pid>/exe as the
		// record arrives.
		if out, err := exec.Command(p, "1").CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", p, err, out)
		}
	}
	for _, c := range []struct{ rule, binary string }{{"long-name", long}, {"deep-name", deep}, {"deep-dir", deep}} {
		st.wait(t, "match of "+c.rule, &st.matches, func(e *engine.Event) bool {
			return e.Kind == engine.KindExec && e.Process.Binary == c.binary
		})
	}
	// The event's own truncated flag also covers its ancestors, whose
	// command lines belong to whoever runs the test; the outcomes say
	// whether the path itself was completed.
	if got := st.outcome(t, "exec", "path_completed"); got < 2 {
		t.Errorf("path_completed = %v, want both paths completed", got)
	}
	if got := st.outcome(t, "exec", "path_partial"); got != 0 {
		t.Errorf("path_partial = %v, want none", got)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, r := range rules {
		if st.fired[r.Name()] == 0 {
			t.Errorf("rule %s did not fire on the whole path (fired: %v)", r.Name(), st.fired)
		}
	}
}

// TestPaddedArgumentsDoNotHideTheRest: the kernel keeps the first 1,023
// bytes of an exec's arguments; a miner's flags after a long padding
// argument would be invisible. The agent completes the arguments from
// /proc/<pid>/cmdline and the rule on a later argument matches.
func TestPaddedArgumentsDoNotHideTheRest(t *testing.T) {
	st := start(t)
	rule := compile(t, "miner-flag", `event.kind == "exec" && process.args.exists(a, a == "--riposte-donate-level")`)
	if _, err := st.a.SetRules([]*engine.Rule{rule}, nil); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("p", 1500)
	// "; true" keeps the shell from exec'ing sleep in its place, so its
	// command line is still there when the agent reads it.
	if out, err := exec.Command("/bin/sh", "-c", "sleep 1; true", pad, "--riposte-donate-level").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	m := st.wait(t, "match of miner-flag", &st.matches, func(e *engine.Event) bool { return e.Kind == engine.KindExec })
	if n := len(m.Process.Args); n != 5 || m.Process.Args[3] != pad {
		t.Errorf("matched exec has %d arguments, want the 5 of the command line with the padding whole", n)
	}
	if got := st.outcome(t, "exec", "args_completed"); got < 1 {
		t.Errorf("args_completed = %v, want the padded exec completed", got)
	}
	if got := st.outcome(t, "exec", "args_partial"); got != 0 {
		t.Errorf("args_partial = %v, want none", got)
	}
}

// outcome is riposte_agent_events_total for one kind and outcome.
func (st *started) outcome(t *testing.T, kind, outcome string) float64 {
	t.Helper()
	mfs, err := st.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "riposte_agent_events_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == kind && labels["outcome"] == outcome {
				return mt.GetCounter().GetValue()
			}
		}
	}
	return 0
}
