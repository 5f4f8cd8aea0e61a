package proctable

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/engine"
)

func TestSeedRecoversRunningProcessesFromProc(t *testing.T) {
	tb := New(Options{})
	if err := tb.Seed(); err != nil {
		t.Fatal(err)
	}
	e, err := tb.Get(int64(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	if e.Binary != exe || e.PPID != int64(os.Getppid()) || e.UID != int64(os.Getuid()) || !slices.Equal(e.Args, os.Args) {
		t.Errorf("self = %+v, want binary %s ppid %d args %q", e, exe, os.Getppid(), os.Args)
	}
	if tb.Len() < 2 {
		t.Errorf("seeded %d processes", tb.Len())
	}
}

func TestForkExecExitBuildTheAncestorChain(t *testing.T) {
	tb := New(Options{Proc: t.TempDir(), Grace: time.Minute}) // an empty /proc: only events count
	now := time.Unix(100, 0)
	ev := func(k engine.Kind, pid, ppid int64, bin string, args ...string) *engine.Event {
		return &engine.Event{Kind: k, Time: now, Process: engine.Process{PID: pid, PPID: ppid, Binary: bin, Args: args}}
	}
	tb.Observe(ev(engine.KindExec, 10, 1, "/usr/bin/containerd-shim"), 1)
	tb.Observe(ev(engine.KindFork, 20, 10, ""), 0)
	tb.Observe(ev(engine.KindExec, 20, 10, "/bin/sh", "sh", "-c", "curl x"), 2)
	tb.Observe(ev(engine.KindFork, 30, 20, ""), 0)
	tb.Observe(ev(engine.KindExec, 30, 20, "/usr/bin/curl", "curl", "x"), 3)

	open := &engine.Event{Kind: engine.KindOpen, Process: engine.Process{PID: 30}}
	tb.Fill(open)
	if open.Process.Binary != "/usr/bin/curl" || open.Process.PPID != 20 {
		t.Errorf("open process = %+v, want curl with ppid 20", open.Process)
	}
	var chain []string
	for _, a := range open.Process.Ancestors {
		chain = append(chain, a.Binary)
	}
	if want := []string{"/bin/sh", "/usr/bin/containerd-shim"}; !slices.Equal(chain, want) {
		t.Errorf("ancestors = %q, want %q", chain, want)
	}
	if open.Process.Parent.Binary != "/bin/sh" || !slices.Equal(open.Process.Parent.Args, []string{"sh", "-c", "curl x"}) {
		t.Errorf("parent = %+v", open.Process.Parent)
	}

	// The shell exits; a late event of its child still resolves it.
	tb.Observe(ev(engine.KindExit, 20, 10, ""), 0)
	late := &engine.Event{Kind: engine.KindConnect, Process: engine.Process{PID: 30, PPID: 20}}
	tb.Fill(late)
	if late.Process.Parent.Binary != "/bin/sh" {
		t.Errorf("late event parent = %+v, want the exited shell", late.Process.Parent)
	}
	if n := tb.GC(now.Add(30 * time.Second)); n != 0 {
		t.Errorf("GC within the grace period removed %d", n)
	}
	if n := tb.GC(now.Add(2 * time.Minute)); n != 1 {
		t.Errorf("GC after the grace period removed %d, want 1", n)
	}
	if _, err := tb.Get(20); err == nil {
		t.Errorf("exited process still resolves after GC")
	}
}

func TestStaleEntryIsReadAgainFromProc(t *testing.T) {
	pid := int64(os.Getpid())
	kernel := func(p uint32) (KernelProc, bool) { return KernelProc{ExecTime: 99}, p == uint32(pid) }
	tb := New(Options{Kernel: kernel})
	// The table believes we run /bin/old (an exec it missed since).
	tb.Observe(&engine.Event{Kind: engine.KindExec, Process: engine.Process{PID: pid, Binary: "/bin/old"}}, 5)
	e, err := tb.Get(pid)
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	if e.Binary != exe || e.ExecTime != 99 {
		t.Errorf("entry = %+v, want re-read binary %s with exec clock 99", e, exe)
	}
}

func TestExitedProcessIsNamedByTheKernelRecord(t *testing.T) {
	kernel := func(p uint32) (KernelProc, bool) {
		return map[uint32]KernelProc{40: {ExecTime: 7, PPID: 30, Binary: "/usr/bin/cat"}, 30: {ExecTime: 6, PPID: 1, Binary: "/bin/sh"}}[p], p == 40 || p == 30
	}
	tb := New(Options{Proc: t.TempDir(), Kernel: kernel}) // /proc knows nothing: both exited
	ev := &engine.Event{Kind: engine.KindOpen, Process: engine.Process{PID: 40, PPID: 30}}
	tb.Fill(ev)
	if ev.Process.Binary != "/usr/bin/cat" || ev.Process.Parent.Binary != "/bin/sh" || ev.Process.Parent.PID != 30 {
		t.Errorf("process %q parent %d %q, want cat with parent 30 /bin/sh", ev.Process.Binary, ev.Process.Parent.PID, ev.Process.Parent.Binary)
	}
}

func TestTableIsSafeForConcurrentUse(t *testing.T) {
	tb := New(Options{Proc: t.TempDir()})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				pid := int64(w*10000 + i + 2)
				tb.Observe(&engine.Event{Kind: engine.KindExec, Process: engine.Process{PID: pid, PPID: pid - 1, Binary: "/bin/x"}}, 1)
				ev := &engine.Event{Kind: engine.KindOpen, Process: engine.Process{PID: pid}}
				tb.Fill(ev)
				tb.Observe(&engine.Event{Kind: engine.KindExit, Process: engine.Process{PID: pid}}, 0)
			}
		}()
	}
	wg.Wait()
	tb.GC(time.Now().Add(time.Hour))
}

// BenchmarkMemory10kProcesses reports the heap the table holds for 10,000
// processes with realistic binaries and arguments.
func BenchmarkMemory10kProcesses(b *testing.B) {
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tb := New(Options{Proc: b.TempDir()})
		for i := range 10000 {
			tb.Observe(&engine.Event{Kind: engine.KindExec, Process: engine.Process{
				// Distinct strings, as decoded events carry.
				PID: int64(i + 2), PPID: int64(i/10 + 1), Binary: fmt.Sprintf("/usr/local/bin/service-%d", i),
				Args: []string{fmt.Sprintf("/usr/local/bin/service-%d", i), "--config", fmt.Sprintf("/etc/service/%d.yaml", i), fmt.Sprintf("--port=%d", 8000+i)},
			}}, uint64(i))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB/10k-procs")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/10000, "B/proc")
		runtime.KeepAlive(tb)
	}
}

func BenchmarkFill(b *testing.B) {
	tb := New(Options{Proc: b.TempDir()})
	for i := range 10000 {
		tb.Observe(&engine.Event{Kind: engine.KindExec, Process: engine.Process{PID: int64(i + 2), PPID: int64(i/10 + 1), Binary: "/bin/x"}}, 1)
	}
	ev := &engine.Event{Kind: engine.KindOpen, Process: engine.Process{PID: 9999}}
	b.ReportAllocs()
	for b.Loop() {
		ev.Process.Binary = ""
		tb.Fill(ev)
	}
}

// TestCompleteBinaryTakesOnlyAPathThatAgreesWithTheKernel: /proc/<pid>/exe
// completes the part of a path the kernel kept only when it agrees with it
// (a prefix, or for a tail a part within it), so a process that exec'd
// something else since is not given that binary.
func TestCompleteBinaryTakesOnlyAPathThatAgreesWithTheKernel(t *testing.T) {
	proc := t.TempDir()
	long := "/tmp/" + strings.Repeat("a", 300) + "/sh"
	deep := strings.Repeat("/d", 80) + "/sh"
	for pid, target := range map[string]string{"10": long, "11": long + " (deleted)", "12": "/usr/bin/other", "13": deep, "14": "/bin/short"} {
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(proc, pid, "exe")); err != nil {
			t.Fatal(err)
		}
	}
	tb := New(Options{Proc: proc})
	for _, c := range []struct {
		pid  int64
		part string
		tail bool
		want string
	}{
		{10, long[:255], false, long},
		{11, long[:255], false, long},             // deleted since: still its path
		{12, long[:255], false, ""},               // exec'd another binary since
		{13, deep[len(deep)-100:], true, deep},    // the tail of a deep path
		{13, deep[:100] + "/x", true, ""},         // not within it
		{14, "/bin/short", false, "/bin/short"},   // nothing was missing
		{14, "/bin/shorter-than-this", false, ""}, // shorter than what the kernel saw
		{99, long[:255], false, ""},               // gone
	} {
		got, ok := tb.CompleteBinary(c.pid, c.part, c.tail)
		if got != c.want || ok != (c.want != "") {
			t.Errorf("CompleteBinary(%d, %.20q…, tail %v) = %.30q, %v; want %.30q", c.pid, c.part, c.tail, got, ok, c.want)
		}
	}
}

// TestCompleteArgsTakesOnlyACommandLineThatAgreesWithTheKernel: the whole
// command line replaces the kernel's first bytes only when those are its
// prefix.
func TestCompleteArgsTakesOnlyACommandLineThatAgreesWithTheKernel(t *testing.T) {
	proc := t.TempDir()
	pad := strings.Repeat("x", 1100)
	for pid, cl := range map[string]string{"10": "sh\x00-c\x00" + pad + "\x00--donate-level\x00", "11": "sh\x00-c\x00other\x00"} {
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, pid, "cmdline"), []byte(cl), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tb := New(Options{Proc: proc})
	part := []string{"sh", "-c", pad[:1000]}
	if got, ok := tb.CompleteArgs(10, part); !ok || !slices.Equal(got, []string{"sh", "-c", pad, "--donate-level"}) {
		t.Errorf("CompleteArgs(10) = %d args, %v; want the whole command line", len(got), ok)
	}
	if got, ok := tb.CompleteArgs(11, part); ok {
		t.Errorf("CompleteArgs(11) = %.40q, %v; want no completion from a command line that does not agree", got, ok)
	}
	if _, ok := tb.CompleteArgs(12, part); ok {
		t.Error("CompleteArgs of a process that is gone completed")
	}
}

// A connection made by a dropped binary says so: the exec's drift and memfd
// flags follow the process to its other events and to its forked children.
func TestExecutableFlagsFollowTheProcess(t *testing.T) {
	tb := New(Options{Proc: t.TempDir(), Grace: time.Minute})
	exec := &engine.Event{Kind: engine.KindExec, Process: engine.Process{PID: 40, PPID: 1, Binary: "/tmp/x", Exe: engine.Exe{Upper: true, Inode: 9}}}
	tb.Observe(exec, 1)
	tb.Observe(&engine.Event{Kind: engine.KindFork, Process: engine.Process{PID: 41, PPID: 40}}, 0)
	for _, pid := range []int64{40, 41} {
		conn := &engine.Event{Kind: engine.KindConnect, Process: engine.Process{PID: pid}}
		tb.Fill(conn)
		if !conn.Process.Exe.Upper || conn.Process.Binary != "/tmp/x" {
			t.Errorf("pid %d: connect process %+v, want /tmp/x with exe.upper", pid, conn.Process)
		}
	}
	tb.Observe(&engine.Event{Kind: engine.KindExec, Process: engine.Process{PID: 41, PPID: 40, Binary: "/bin/true"}}, 2)
	conn := &engine.Event{Kind: engine.KindConnect, Process: engine.Process{PID: 41}}
	tb.Fill(conn)
	if conn.Process.Exe.Upper {
		t.Errorf("after exec of an image binary the process still counts as drifted: %+v", conn.Process)
	}
}

// The exec event's timestamp is read a moment after the kernel's record of
// the exec: that entry is current, not stale, so it keeps what only the exec
// event told (its executable's drift flags) instead of being read again from
// /proc on every later event of the process.
func TestExecSeenByItsEventIsNotStale(t *testing.T) {
	kernel := func(p uint32) (KernelProc, bool) {
		return KernelProc{ExecTime: 1_000_000, PPID: 1, Binary: "/tmp/x"}, p == 40
	}
	tb := New(Options{Proc: t.TempDir(), Kernel: kernel})
	tb.Observe(&engine.Event{Kind: engine.KindExec, Process: engine.Process{PID: 40, PPID: 1, Binary: "/tmp/x", Exe: engine.Exe{Upper: true}}}, 1_002_500)
	conn := &engine.Event{Kind: engine.KindConnect, Process: engine.Process{PID: 40}}
	tb.Fill(conn)
	if !conn.Process.Exe.Upper {
		t.Errorf("the entry of the exec just seen was taken for stale: %+v", conn.Process)
	}
	// An exec the kernel saw later (its event dropped) makes it stale.
	later := func(p uint32) (KernelProc, bool) {
		return KernelProc{ExecTime: 9_000_000, PPID: 1, Binary: "/bin/true"}, p == 40
	}
	tb2 := New(Options{Proc: t.TempDir(), Kernel: later})
	tb2.Observe(&engine.Event{Kind: engine.KindExec, Process: engine.Process{PID: 40, PPID: 1, Binary: "/tmp/x", Exe: engine.Exe{Upper: true}}}, 1_002_500)
	conn = &engine.Event{Kind: engine.KindConnect, Process: engine.Process{PID: 40}}
	tb2.Fill(conn)
	if conn.Process.Binary != "/bin/true" || conn.Process.Exe.Upper {
		t.Errorf("after an exec the table missed: %+v, want the kernel's /bin/true", conn.Process)
	}
}
