package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// TestSequenceFiresOnTheRealKernel: a sequence rule (a file written, then
// the same path executed) loaded into the agent lets both steps' events
// through the kernel filter and fires once, on the exec of the file written
// under its eyes, carrying both steps' events. An exec of a file written
// before the rule was live (a step alone) and a write never executed (the
// other step alone) do not fire: the chain's match, which comes after them
// in the ring buffer, is the marker that they were seen.
func TestSequenceFiresOnTheRealKernel(t *testing.T) {
	var (
		mu      sync.Mutex
		matches []engine.Match
		events  []engine.Event
	)
	a, err := New(Config{
		Node: "test", Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		OnMatch: func(ev *engine.Event, m []engine.Match) {
			mu.Lock()
			defer mu.Unlock()
			for _, x := range m {
				matches = append(matches, x)
				events = append(events, *ev)
			}
		},
	})
	if err != nil {
		t.Fatalf("the agent must start on this machine (root, BTF): %v", err)
	}
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

	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	trueBin, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	cp := func(dst string) {
		t.Helper()
		if out, err := exec.Command("cp", trueBin, dst).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
	}
	before, alone, chain := filepath.Join(dir, "before"), filepath.Join(dir, "alone"), filepath.Join(dir, "chain")
	cp(before) // written while no rule is live

	spec := &v1alpha1.DetectionRuleSpec{Source: "file", Severity: "high", Sequence: &v1alpha1.Sequence{
		Key: []string{"file.path"}, Window: metav1.Duration{Duration: time.Minute},
		Steps: []v1alpha1.SequenceStep{
			{Name: "write", Condition: `event.kind == "open" && file.write && file.path.startsWith("` + dir + `/")`},
			{Name: "exec", Source: "process", Condition: `event.kind == "exec" && process.binary.startsWith("` + dir + `/")`, Key: []string{"process.binary"}},
		}}}
	rule, err := engine.Compile("write-then-exec", "", spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetRules([]*engine.Rule{rule}, nil); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command(before).Run(); err != nil {
		t.Fatal(err)
	}
	cp(alone)
	cp(chain)
	if err := exec.Command(chain).Run(); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(matches)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("no sequence match within 5s")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(matches) != 1 || events[0].Process.Binary != chain {
		t.Fatalf("%d matches, the first on %s: want one, on the exec of %s", len(matches), events[0].Process.Binary, chain)
	}
	steps := matches[0].Steps
	if len(steps) != 2 || steps[0].Step != "write" || steps[1].Step != "exec" {
		t.Fatalf("steps %+v", steps)
	}
	var w, x engine.Event
	if json.Unmarshal(steps[0].Event, &w) != nil || json.Unmarshal(steps[1].Event, &x) != nil ||
		w.Kind != engine.KindOpen || w.File.Path != chain || x.Kind != engine.KindExec || x.Process.Binary != chain {
		t.Fatalf("step events: %s then %s", steps[0].Event, steps[1].Event)
	}
}
