package scenario

import (
	"bufio"
	"bytes"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/engine"
)

// cpuClock measures the CPU time this process spends (user and system, GC
// included): on a machine shared with other work, events per CPU-second is
// the per-core throughput, where events per wall-clock second also measures
// the neighbours.
type cpuClock struct{ start time.Duration }

func startCPU() cpuClock { return cpuClock{processCPU()} }

func (c cpuClock) seconds() float64 { return (processCPU() - c.start).Seconds() }

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReplayAuditLog replays the recorded audit log of the live
// scenario (a real kube-apiserver's log, the shipped audit policy) through
// the shipped library, one goroutine: every line decoded (DecodeLine: told
// apart by its shape), matched, and the object event it carries derived and
// matched, as `riposte replay` and the controller's audit source do. It
// reports audit events per second, per wall-clock second and per CPU-second
// of the process (run it with -cpu 1 for one core). Baselines in the same run:
// decoding alone, and the naive matcher that evaluates every rule on every
// event.
func BenchmarkReplayAuditLog(b *testing.B) {
	raw, err := io.ReadAll(openRecording(b, auditFile))
	if err != nil {
		b.Fatal(err)
	}
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		lines = append(lines, append([]byte(nil), sc.Bytes()...))
	}
	rules := library(b)
	var auditRules []*engine.Rule
	for _, r := range rules {
		if s := r.Source(); s == engine.SourceAudit || s == engine.SourceObject {
			auditRules = append(auditRules, r)
		}
	}
	run := func(b *testing.B, m *engine.Matcher) {
		var matches []engine.Match
		n, hits := 0, 0
		start := time.Now()
		cpu := startCPU()
		for b.Loop() {
			for _, line := range lines {
				ev, err := engine.DecodeLine(line)
				if err != nil {
					b.Fatal(err)
				}
				n++
				if m == nil {
					continue
				}
				matches = m.Match(&ev, matches[:0])
				hits += len(matches)
				if obj, ok := engine.ObjectFromAudit(&ev); ok {
					matches = m.Match(&obj, matches[:0])
					hits += len(matches)
				}
			}
		}
		elapsed := time.Since(start)
		b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
		b.ReportMetric(float64(n)/cpu.seconds(), "events/cpu-s")
		b.ReportMetric(float64(len(raw))/float64(len(lines)), "bytes/event")
		_ = hits
	}
	// match alone: the lines decoded once, before the clock runs.
	decoded := make([]engine.Event, len(lines))
	for i, line := range lines {
		if decoded[i], err = engine.DecodeLine(line); err != nil {
			b.Fatal(err)
		}
	}
	matchOnly := func(b *testing.B, m *engine.Matcher) {
		var matches []engine.Match
		n := 0
		start := time.Now()
		cpu := startCPU()
		for b.Loop() {
			for i := range decoded {
				ev := &decoded[i]
				n++
				matches = m.Match(ev, matches[:0])
				if obj, ok := engine.ObjectFromAudit(ev); ok {
					matches = m.Match(&obj, matches[:0])
				}
			}
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
		b.ReportMetric(float64(n)/cpu.seconds(), "events/cpu-s")
	}
	b.Logf("%d audit events (%d bytes), %d audit and object rules", len(lines), len(raw), len(auditRules))
	b.Run("match", func(b *testing.B) { matchOnly(b, engine.NewMatcher(auditRules)) })
	b.Run("decode", func(b *testing.B) { run(b, nil) })
	b.Run("decode+match", func(b *testing.B) { run(b, engine.NewMatcher(auditRules)) })
	b.Run("decode+match-naive", func(b *testing.B) { run(b, engine.NewNaiveMatcher(auditRules)) })
}
