package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/ruleset"
)

// stormProducer is a perl loop that opens a file or execs a binary at a
// paced rate for a duration, then prints how many it did. Several run at
// once to reach rates one process cannot.
const stormProducer = `use Time::HiRes qw(time);
my ($mode, $rate, $dur, $path) = @ARGV;
my ($n, $t0) = (0, time);
while (1) {
  my $el = time - $t0;
  last if $el >= $dur;
  my $want = int($el * $rate);
  while ($n < $want) {
    if ($mode eq "open") { open(my $f, "<", $path); close($f); }
    else { my $pid = fork(); if ($pid == 0) { exec { $path } "true"; exit 1; } waitpid($pid, 0); }
    $n++;
  }
}
print "$n\n";`

// stormStep is what one step of a storm did and what the agent made of it.
type stormStep struct {
	kind                engine.Kind
	rate                int // asked for, events/s
	produced, processed uint64
	lost                uint64 // ring-buffer losses of every kind during the step
	lostByCPU           []uint64
	seconds             float64 // wall time of the step
	agentCPU            float64 // CPU seconds the agent's process used
}

func (s stormStep) String() string {
	perCore, rate := 0.0, 0.0
	if s.seconds > 0 {
		rate = float64(s.produced) / s.seconds
	}
	if s.agentCPU > 0 {
		perCore = float64(s.processed) / s.agentCPU
	}
	return fmt.Sprintf("%-4s asked %7d/s: produced %8d (%7.0f/s), processed end to end %8d, lost %7d (per CPU %v); agent CPU %.2f s = %.0f events/s per core",
		s.kind, s.rate, s.produced, rate, s.processed, s.lost, s.lostByCPU, s.agentCPU, perCore)
}

// TestRingBufferStormLossesAreCountedAndTheAgentKeepsGoing drives exec and
// open storms through the running agent (the shipped rule library plus a
// rule that matches every storm event, so each one is decoded, enriched from
// the process table and matched) at doubling rates until the ring buffer
// overflows. At every step each event the producers made is either
// processed end to end or counted as lost: produced = processed + lost
// (storm events lost are part of all losses). Losses are counted per CPU,
// sum to the per-kind counters and are exported as
// riposte_agent_ringbuf_lost_total{cpu}; the agent logs them; after the
// storm the same agent, never restarted, loses nothing at the last lossless
// rate and still matches a marker. Each step is logged: the highest
// lossless rate and the events/s per core of the agent's CPU there are the
// capacity figures of docs/reliability.md (`make faults`, without -race).
func TestRingBufferStormLossesAreCountedAndTheAgentKeepsGoing(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "open", "target")
	os.MkdirAll(filepath.Dir(target), 0o755)
	os.WriteFile(target, []byte("x"), 0o644)
	marker := filepath.Join(dir, "open", "marker")
	os.WriteFile(marker, []byte("x"), 0o644)
	bin := filepath.Join(dir, "storm-exec")
	data, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("the exec storm runs busybox-static (hack/setup.sh installs it): %v", err)
	}
	os.WriteFile(bin, data, 0o755)

	var processed [2]atomic.Uint64 // open, exec
	var markerSeen atomic.Int64
	var logBuf lockedBuffer
	reg := prometheus.NewRegistry()
	a, err := New(Config{Node: "storm", Log: slog.New(slog.NewTextHandler(&logBuf, nil)), Registry: reg,
		OnMatch: func(ev *engine.Event, _ []engine.Match) {
			switch {
			case ev.Kind == engine.KindOpen && ev.File.Path == target:
				processed[0].Add(1)
			case ev.Kind == engine.KindExec && ev.Process.Binary == bin:
				processed[1].Add(1)
			case ev.Kind == engine.KindOpen && ev.File.Path == marker:
				markerSeen.Store(ev.Process.PID)
			}
		}})
	if err != nil {
		t.Fatalf("the agent must start on this machine (root, BTF): %v", err)
	}
	set, errs := ruleset.Load("../../rules")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	rules := set.Compiled()
	for name, src := range map[string]struct{ source, cond string }{
		"storm-open": {"file", `event.kind == "open" && file.path.startsWith("` + filepath.Dir(target) + `/")`},
		"storm-exec": {"process", `event.kind == "exec" && process.binary == "` + bin + `"`},
	} {
		r, err := engine.Compile(name, "", &v1alpha1.DetectionRuleSpec{Source: src.source, Severity: "low", Condition: src.cond})
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, r)
	}
	if _, err := a.SetRules(rules, nil); err != nil {
		t.Fatal(err)
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

	// drain waits until everything submitted before it has been processed:
	// a marker open comes after it in the ring buffer.
	drain := func() {
		t.Helper()
		cmd := exec.Command("/bin/cat", marker)
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		pid := int64(cmd.Process.Pid)
		for end := time.Now().Add(30 * time.Second); markerSeen.Load() != pid; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("the marker open was not matched within 30 s: the agent stopped processing")
			}
		}
	}
	lostTotal := func() uint64 {
		c, err := a.Sensors().Counters()
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, v := range c {
			n += v[3]
		}
		return n
	}
	lostCPU := func() []uint64 {
		l, err := a.Sensors().LostByCPU()
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	step := func(kind engine.Kind, rate, producers int, dur time.Duration) stormStep {
		t.Helper()
		drain()
		idx, path := 0, target
		if kind == engine.KindExec {
			idx, path = 1, bin
		}
		s := stormStep{kind: kind, rate: rate}
		p0, l0, c0, u0 := processed[idx].Load(), lostTotal(), lostCPU(), agentCPU(t)
		t0 := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := exec.Command("/usr/bin/perl", "-e", stormProducer, string(kind),
					strconv.Itoa(rate/producers), fmt.Sprint(dur.Seconds()), path).Output()
				if err != nil {
					t.Errorf("storm producer: %v", err)
					return
				}
				n, _ := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
				mu.Lock()
				s.produced += n
				mu.Unlock()
			}()
		}
		wg.Wait()
		s.seconds = time.Since(t0).Seconds()
		drain()
		s.agentCPU = agentCPU(t) - u0
		s.processed = processed[idx].Load() - p0
		s.lost = lostTotal() - l0
		c1 := lostCPU()
		var byCPU uint64
		for i := range c1 {
			s.lostByCPU = append(s.lostByCPU, c1[i]-c0[i])
			byCPU += c1[i] - c0[i]
		}
		t.Log(s)
		if s.processed > s.produced {
			t.Errorf("%s: processed %d storm events, more than the %d produced", kind, s.processed, s.produced)
		}
		if s.processed+s.lost < s.produced {
			t.Errorf("%s: %d produced, %d processed and %d lost: %d events vanished without being counted",
				kind, s.produced, s.processed, s.lost, s.produced-s.processed-s.lost)
		}
		if byCPU != s.lost {
			t.Errorf("%s: losses per CPU sum to %d, the per-kind counters to %d", kind, byCPU, s.lost)
		}
		return s
	}

	const dur = 2 * time.Second
	var lossless []stormStep
	var lossy stormStep
	for _, storm := range []struct {
		kind       engine.Kind
		start, max int
	}{
		{engine.KindExec, 250, 64000},
		{engine.KindOpen, 2000, 4096000},
	} {
		for rate := storm.start; rate <= storm.max; rate *= 2 {
			s := step(storm.kind, rate, 4, dur)
			if s.lost > 0 {
				lossy = s
				break
			}
			lossless = append(lossless, s)
			if float64(s.produced) < 0.7*float64(rate)*dur.Seconds() {
				t.Logf("%s: the producers reach %.0f/s of the %d/s asked: the machine's limit, with no loss", storm.kind, float64(s.produced)/s.seconds, rate)
				break
			}
		}
	}
	if lossy.lost == 0 {
		t.Fatalf("no storm filled the ring buffer: the loss accounting was not exercised")
	}
	var best stormStep
	for _, s := range lossless {
		if s.kind == lossy.kind && s.rate > best.rate {
			best = s
		}
	}
	t.Logf("capacity: %s storm, last lossless step: %s", lossy.kind, best)
	t.Logf("first loss: %s", lossy)

	// The exported metric carries the same losses, per CPU.
	var exported float64
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "riposte_agent_ringbuf_lost_total" {
			for _, m := range mf.GetMetric() {
				exported += m.GetCounter().GetValue()
			}
		}
	}
	if exported != float64(lostTotal()) || exported == 0 {
		t.Errorf("riposte_agent_ringbuf_lost_total sums to %v, the kernel counters to %d", exported, lostTotal())
	}
	// The same agent, not restarted, loses nothing at the last lossless
	// rate (or a low one) and keeps matching.
	again := best.rate
	if again == 0 {
		again = 1000
	}
	if s := step(lossy.kind, again, 4, dur); s.lost != 0 || s.processed != s.produced {
		t.Errorf("after the storm at %d/s: %d lost, %d of %d processed", again, s.lost, s.processed, s.produced)
	}
	// Losses were logged, rate-limited, in one line at most every 10 s.
	if n := strings.Count(logBuf.String(), "ring buffer full: events lost"); n == 0 {
		t.Errorf("no log line reports the losses:\n%s", logBuf.String())
	}
}

// agentCPU is the CPU time (user and system) this process has used: the
// agent's, the storm producers being other processes.
func agentCPU(t *testing.T) float64 {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// lockedBuffer is a log destination safe for the agent's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
