package agent

import (
	"bytes"
	"context"
	"errors"
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
	"github.com/riposte-dev/riposte/engine"
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
	enforced []engine.Event
	events   []engine.Event
}

func start(t *testing.T) *started {
	t.Helper()
	st := &started{log: &bytes.Buffer{}, reg: prometheus.NewRegistry()}
	a, err := New(Config{
		Node: "test", Log: slog.New(slog.NewTextHandler(st.log, nil)), Registry: st.reg,
		OnMatch: func(ev *engine.Event, m []engine.Match) {
			st.mu.Lock()
			st.matches = append(st.matches, *ev)
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
// action is creating a file is killed by the exec hook; the file never
// appears, and an enforce event names the rule.
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
	// Control: without the rule the dropper does create its file.
	control := filepath.Join(dir, "control")
	if out, err := exec.Command(dropper, control).CombinedOutput(); err != nil {
		t.Fatalf("control run: %v %s", err, out)
	}
	if _, err := os.Stat(control); err != nil {
		t.Fatalf("the dropper does not work: %v", err)
	}

	rule := compile(t, "block-dropper", `event.kind == "exec" && process.binary == "`+dropper+`"`)
	skipped, err := st.a.SetRules([]*engine.Rule{rule}, []*engine.Rule{rule})
	if err != nil || len(skipped) > 0 {
		t.Fatalf("set rules: %v, skipped %v", err, skipped)
	}
	target := filepath.Join(dir, "dropped")
	cmd := exec.Command(dropper, target)
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("dropper exit: %v, want killed by SIGKILL", err)
	}
	// The dropper has been reaped: whatever it wrote is on disk.
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the dropper's file exists (stat: %v): it ran before the kill", err)
	}
	pid := int64(cmd.Process.Pid)
	enf := st.wait(t, "enforce event", &st.enforced, func(e *engine.Event) bool { return e.Process.PID == pid })
	if enf.Kind != engine.KindEnforce || enf.Enforcement != (engine.Enforcement{Rule: "block-dropper", Action: "kill", Layer: "bpf_send_signal"}) || enf.Process.Binary != dropper {
		t.Errorf("enforce event = %+v %+v", enf.Enforcement, enf.Process)
	}
	// The exec also matched the rule in user space.
	st.wait(t, "match", &st.matches, func(e *engine.Event) bool { return e.Process.PID == pid && e.Kind == engine.KindExec })
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

func TestExactExec(t *testing.T) {
	cases := []struct {
		cond       string
		exceptions []string
		bins       []string
		names      []string
		exact      bool
	}{
		{cond: `event.kind == "exec" && process.binary == "/usr/bin/nc"`, bins: []string{"/usr/bin/nc"}, exact: true},
		{cond: `process.binary in ["/a", "/b"] && event.kind == "exec"`, bins: []string{"/a", "/b"}, exact: true},
		{cond: `event.kind in ["exec"] && (process.name == "nc" || process.binary.endsWith("/ncat"))`, names: []string{"nc", "ncat"}, exact: true},
		{cond: `event.kind == "exec" && process.binary.endsWith("/sh") && container.id != ""`},
		{cond: `event.kind == "exec" && process.binary == "/bin/sh"`, exceptions: []string{`process.uid == 0`}},
		{cond: `process.binary == "/bin/sh"`},
		{cond: `event.kind == "exec" && process.binary.endsWith("sh")`},
		{cond: `event.kind == "exec" && process.binary == "/a" && process.name == "a"`},
	}
	for _, c := range cases {
		r := compile(t, "r", c.cond, c.exceptions...)
		bins, names, err := ExactExec(r)
		if c.exact != (err == nil) {
			t.Errorf("%s: err = %v, want exact %v", c.cond, err, c.exact)
			continue
		}
		if err != nil && !errors.Is(err, ErrNotExact) {
			t.Errorf("%s: err = %v, want ErrNotExact", c.cond, err)
		}
		if strings.Join(bins, ",") != strings.Join(c.bins, ",") || strings.Join(names, ",") != strings.Join(c.names, ",") {
			t.Errorf("%s: bins %q names %q, want %q %q", c.cond, bins, names, c.bins, c.names)
		}
	}
}

func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	g.Write(&m)
	return m.GetGauge().GetValue()
}
