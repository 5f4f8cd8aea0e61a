package bpf

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/riposte-dev/riposte/engine"
)

// TestKernelPrefilterDropsAndAgreesWithModel drives real execs and opens
// through the attached programs and checks that the kernel dropped the
// non-matching ones (counters), submitted exactly those the Go model passes,
// and that a new filter takes effect live, without reattaching.
func TestKernelPrefilterDropsAndAgreesWithModel(t *testing.T) {
	s, c := loadForTest(t, Options{})
	trueBin, falseBin := realPath(t, "/bin/true"), realPath(t, "/bin/false")
	dir := realPath(t, t.TempDir())
	keep, drop := filepath.Join(dir, "keep"), filepath.Join(dir, "drop")
	for _, d := range []string{keep, drop} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "f"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f := NewFilter([]RuleConstraints{
		{Name: "true-runs", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindExec}, Binaries: []string{trueBin}}},
		{Name: "keep-opens", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindOpen}, PathPrefixes: []string{keep + "/"}}},
	})
	if err := s.SetFilter(f); err != nil {
		t.Fatal(err)
	}
	before, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	pids := map[int64]string{}
	start := func(name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Run() // false exits 1 on purpose
		pids[int64(cmd.Process.Pid)] = name
	}
	const n = 40
	for range n {
		start(falseBin)
	}
	for range 5 {
		start(trueBin)
	}
	start("/bin/cat", filepath.Join(keep, "f"))
	start("/bin/cat", filepath.Join(drop, "f"))
	// A last true is the marker: the ring buffer is ordered, so once its
	// exec is read every earlier event that passed has been read too.
	marker := exec.Command(trueBin)
	if err := marker.Run(); err != nil {
		t.Fatal(err)
	}
	pids[int64(marker.Process.Pid)] = trueBin
	c.wait(t, "exec of the marker", func(e *engine.Event) bool {
		return e.Kind == engine.KindExec && e.Process.PID == int64(marker.Process.Pid)
	})
	after, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	execDropped := after[engine.KindExec][1] - before[engine.KindExec][1]
	openDropped := after[engine.KindOpen][1] - before[engine.KindOpen][1]
	if execDropped < n+2 { // the falses and the two cats
		t.Errorf("exec dropped in the kernel: %d, want at least %d", execDropped, n+2)
	}
	if openDropped == 0 {
		t.Errorf("no open dropped in the kernel")
	}
	// Every event of our children that reached user space passes the model;
	// every one the model passes reached user space.
	got := map[int64]int{}
	for _, ev := range c.snapshot() {
		if _, ours := pids[ev.Process.PID]; !ours {
			continue
		}
		if !f.Pass(ViewOf(&ev, s.HostMntNS)) {
			t.Errorf("kernel submitted an event the model drops: %s %s %s", ev.Kind, ev.Process.Binary, ev.File.Path)
		}
		if ev.Kind == engine.KindExec || ev.Kind == engine.KindOpen {
			got[ev.Process.PID]++
		}
	}
	for pid, name := range pids {
		want := 0
		switch name {
		case trueBin:
			want = 1 // its exec; true opens only libraries
		case "/bin/cat":
			if c.count(func(e *engine.Event) bool { return e.Process.PID == pid && e.File.Path == filepath.Join(keep, "f") }) == 1 {
				want = 1
			}
		}
		if got[pid] != want && !(name == "/bin/cat" && got[pid] == 1) {
			t.Errorf("pid %d (%s): %d exec/open events reached user space, want %d", pid, name, got[pid], want)
		}
	}
	t.Logf("kernel dropped %d execs and %d opens; counters %v", execDropped, openDropped, after[engine.KindExec])

	// Live update: false now passes, with the same programs attached.
	f2 := NewFilter([]RuleConstraints{{Name: "false-runs", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindExec}, Basenames: []string{"false"}}}})
	if err := s.SetFilter(f2); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(falseBin)
	cmd.Run()
	pid := int64(cmd.Process.Pid)
	c.wait(t, "exec of false after the live update", func(e *engine.Event) bool { return e.Kind == engine.KindExec && e.Process.PID == pid })
}
