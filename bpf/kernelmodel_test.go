package bpf

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/engine"
)

// TestKernelFilterEqualsModel runs random filters through the real maps and
// programs: for each round, random path-prefix, binary and base-name rules
// are written live, a child opens every file of a small tree and every
// binary of a set is executed; the events that reached user space must be
// exactly those the Go model passes. This is what makes the model-based
// soundness property (TestFilterIsSound) a statement about the kernel.
func TestKernelFilterEqualsModel(t *testing.T) {
	s, c := loadForTest(t, Options{})
	root := realPath(t, t.TempDir())
	var files, dirs []string
	for _, d := range []string{"etc", "etc/ssl", "etcx", "proc1", "var/run/secrets"} {
		dirs = append(dirs, filepath.Join(root, d))
		os.MkdirAll(filepath.Join(root, d), 0o755)
		for _, f := range []string{"a", "b"} {
			p := filepath.Join(root, d, f)
			os.WriteFile(p, nil, 0o644)
			files = append(files, p)
		}
	}
	bin, _ := os.ReadFile(realPath(t, "/bin/true"))
	var bins []string
	for _, n := range []string{"sh", "nc", "curl", "kubectl"} {
		p := filepath.Join(root, "bin", n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, bin, 0o755)
		bins = append(bins, p)
	}
	names := []string{"sh", "nc", "curl", "kubectl", "bash"}
	r := rand.New(rand.NewPCG(7, 8))
	some := func(xs []string) []string {
		var out []string
		for _, x := range xs {
			if r.IntN(3) == 0 {
				out = append(out, x)
			}
		}
		return out
	}
	passed, dropped := 0, 0
	tally := func(pass bool) {
		if pass {
			passed++
		} else {
			dropped++
		}
	}
	for round := range 8 {
		var rules []RuleConstraints
		for i := range 1 + r.IntN(3) {
			c := engine.Constraints{Kinds: []engine.Kind{engine.KindOpen, engine.KindExec}[r.IntN(2):][:1]}
			switch c.Kinds[0] {
			case engine.KindOpen:
				var prefixes []string
				for _, d := range some(append(dirs, root+"/et", root+"/etc/ssl/a")) {
					if r.IntN(2) == 0 {
						d += "/"
					}
					prefixes = append(prefixes, d)
				}
				c.PathPrefixes = append([]string{}, prefixes...)
			case engine.KindExec:
				if r.IntN(2) == 0 {
					c.Binaries = append([]string{}, some(bins)...)
				} else {
					c.Basenames = append([]string{}, some(names)...)
				}
			}
			rules = append(rules, RuleConstraints{Name: string(rune('a' + i)), Constraints: c})
		}
		f := NewFilter(rules)
		if err := s.SetFilter(f); err != nil {
			t.Fatal(err)
		}
		cat := exec.Command("/bin/cat", files...)
		if out, err := cat.CombinedOutput(); err != nil {
			t.Fatalf("cat: %v %s", err, out)
		}
		var pids []int64
		for _, b := range bins {
			cmd := exec.Command(b)
			if err := cmd.Run(); err != nil {
				t.Fatal(err)
			}
			pids = append(pids, int64(cmd.Process.Pid))
		}
		// A sentinel open that always passes marks the end of the round.
		sentinel := filepath.Join(root, "sentinel")
		os.WriteFile(sentinel, nil, 0o644)
		s.SetFilter(NewFilter([]RuleConstraints{{Name: "sentinel", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindOpen}, PathPrefixes: []string{sentinel}}}}))
		sc := exec.Command("/bin/cat", sentinel)
		sc.Run()
		c.wait(t, "sentinel", func(e *engine.Event) bool { return e.Process.PID == int64(sc.Process.Pid) && e.File.Path == sentinel })
		time.Sleep(20 * time.Millisecond)

		catPID := int64(cat.Process.Pid)
		for _, p := range files {
			want := f.Pass(View{Kind: engine.KindOpen, Path: p, InContainer: false})
			got := c.count(func(e *engine.Event) bool { return e.Process.PID == catPID && e.File.Path == p }) > 0
			tally(want)
			if got != want {
				t.Errorf("round %d: open %s: kernel passed %v, model %v\n%s", round, p, got, want, f.Explain())
			}
		}
		for i, b := range bins {
			want := f.Pass(View{Kind: engine.KindExec, Binary: b})
			got := c.count(func(e *engine.Event) bool { return e.Process.PID == pids[i] && e.Kind == engine.KindExec }) > 0
			tally(want)
			if got != want {
				t.Errorf("round %d: exec %s: kernel passed %v, model %v\n%s", round, b, got, want, f.Explain())
			}
		}
	}
	t.Logf("%d events passed and %d dropped, kernel and model agreeing", passed, dropped)
	if passed < 10 || dropped < 10 {
		t.Errorf("too few passes (%d) or drops (%d) to test anything", passed, dropped)
	}
}
