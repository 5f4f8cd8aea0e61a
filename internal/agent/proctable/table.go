package proctable

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/riposte-dev/riposte/engine"
)

// MaxAncestors bounds process.ancestors.
const MaxAncestors = 8

// DefaultGrace is how long exited processes are kept.
const DefaultGrace = 30 * time.Second

// ErrNoProcess is returned when a process is neither in the table nor in /proc.
var ErrNoProcess = errors.New("no such process")

// Kernel is what the sensors remember of a process: the time of its last
// exec, its parent and binary; ok is false when the kernel has not seen it
// exec (or fork from a process that did) since the sensors loaded.
type Kernel func(pid uint32) (k KernelProc, ok bool)

// KernelProc is the kernel's record of a process.
type KernelProc struct {
	ExecTime uint64
	PPID     int64
	Binary   string
	// Origin is engine.OriginEntrypoint, engine.OriginExec or empty;
	// OriginPID and OriginTime name the process that entered the
	// container's pid namespace and when.
	Origin     string
	OriginPID  int64
	OriginTime time.Time
}

// Entry is one process. Entries are replaced, never mutated, once stored.
type Entry struct {
	PID, PPID int64
	UID       int64
	Binary    string
	Args      []string
	// Exe is what the exec event said of the executable (drift, memfd);
	// zero for processes read from /proc.
	Exe engine.Exe
	// ExecTime is the kernel clock of the exec the entry reflects (0: read
	// from /proc without one).
	ExecTime uint64
	// Exited is when the process ended; zero while it runs.
	Exited time.Time
}

// Table is the process table. It is safe for concurrent use.
type Table struct {
	mu    sync.RWMutex
	procs map[int64]*Entry
	// Proc is the proc file system root ("/proc").
	proc   string
	grace  time.Duration
	kernel Kernel
}

// Options configure a table.
type Options struct {
	Proc   string        // default /proc
	Grace  time.Duration // default DefaultGrace
	Kernel Kernel        // nil: entries are never stale, exited processes unknown
}

// New returns an empty table.
func New(o Options) *Table {
	if o.Proc == "" {
		o.Proc = "/proc"
	}
	if o.Grace == 0 {
		o.Grace = DefaultGrace
	}
	return &Table{procs: map[int64]*Entry{}, proc: o.Proc, grace: o.Grace, kernel: o.Kernel}
}

// Seed reads every process of /proc. Processes that vanish while being read
// are skipped.
func (t *Table) Seed() error {
	ents, err := os.ReadDir(t.proc)
	if err != nil {
		return fmt.Errorf("seed process table from %s: %w", t.proc, err)
	}
	fresh := make(map[int64]*Entry, len(ents))
	for _, d := range ents {
		pid, err := strconv.ParseInt(d.Name(), 10, 64)
		if err != nil {
			continue
		}
		if e, err := t.read(pid); err == nil {
			fresh[pid] = e
		}
	}
	t.mu.Lock()
	for pid, e := range fresh {
		t.procs[pid] = e
	}
	t.mu.Unlock()
	return nil
}

// read builds an entry from /proc/<pid>.
func (t *Table) read(pid int64) (*Entry, error) {
	dir := filepath.Join(t.proc, strconv.FormatInt(pid, 10))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return nil, fmt.Errorf("read process %d: %w", pid, ErrNoProcess)
	}
	// comm may hold spaces and parentheses: the fields start after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, fmt.Errorf("read process %d: malformed stat", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return nil, fmt.Errorf("read process %d: malformed stat", pid)
	}
	e := &Entry{PID: pid}
	e.PPID, _ = strconv.ParseInt(f[1], 10, 64)
	if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		e.Binary = strings.TrimSuffix(exe, " (deleted)")
	}
	if cl, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		cl = bytes.TrimRight(cl, "\x00")
		if len(cl) > 0 {
			e.Args = strings.Split(string(cl), "\x00")
		}
	}
	if st, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
		for _, line := range strings.Split(string(st), "\n") {
			if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
				if uf := strings.Fields(rest); len(uf) > 0 {
					e.UID, _ = strconv.ParseInt(uf[0], 10, 64)
				}
				break
			}
		}
	}
	if k, ok := t.kernelProc(pid); ok {
		e.ExecTime = k.ExecTime
		if e.Binary == "" {
			e.Binary = k.Binary // a zombie: /proc has no exe any more
		}
	}
	return e, nil
}

// CompleteBinary returns the whole path of the binary process pid runs, for
// an exec whose record kept only part of it: the first bytes of a long path
// (part is a prefix of it), or with tail set the end of a deep one (part is
// within it). The path comes from /proc/<pid>/exe and is used only when it
// agrees with part; ok is false when the process is gone, runs another
// binary by now, or its path does not agree.
func (t *Table) CompleteBinary(pid int64, part string, tail bool) (full string, ok bool) {
	exe, err := os.Readlink(filepath.Join(t.proc, strconv.FormatInt(pid, 10), "exe"))
	if err != nil {
		return "", false
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	if len(exe) < len(part) {
		return "", false
	}
	if tail {
		ok = strings.Contains(exe, part)
	} else {
		ok = strings.HasPrefix(exe, part)
	}
	if !ok {
		return "", false
	}
	return exe, true
}

// maxCmdline bounds how much of /proc/<pid>/cmdline CompleteArgs reads; the
// event bounds (engine.Bound) cut further.
const maxCmdline = 256 << 10

// CompleteArgs returns the whole argument list of process pid, for an exec
// whose record kept only the first bytes of it: from /proc/<pid>/cmdline,
// used only when what the kernel kept is a prefix of it. ok is false when
// the process is gone or its command line does not agree (it exec'd again,
// or rewrote its arguments).
func (t *Table) CompleteArgs(pid int64, part []string) (full []string, ok bool) {
	f, err := os.Open(filepath.Join(t.proc, strconv.FormatInt(pid, 10), "cmdline"))
	if err != nil {
		return nil, false
	}
	defer f.Close()
	cl, err := io.ReadAll(io.LimitReader(f, maxCmdline))
	if err != nil {
		return nil, false
	}
	if !bytes.HasPrefix(cl, []byte(strings.Join(part, "\x00"))) {
		return nil, false
	}
	cl = bytes.TrimRight(cl, "\x00")
	if len(cl) == 0 {
		return nil, false
	}
	return strings.Split(string(cl), "\x00"), true
}

// Observe updates the table from an event: fork adds the child with its
// parent's image, exec replaces the image, exit marks the process exited.
// Other kinds add a process the table did not know.
func (t *Table) Observe(ev *engine.Event, ktime uint64) {
	p := &ev.Process
	switch ev.Kind {
	case engine.KindFork:
		t.mu.Lock()
		e := &Entry{PID: p.PID, PPID: p.PPID, UID: p.UID}
		if parent := t.procs[p.PPID]; parent != nil {
			e.Binary, e.Args, e.Exe, e.ExecTime = parent.Binary, parent.Args, parent.Exe, parent.ExecTime
		}
		t.procs[p.PID] = e
		t.mu.Unlock()
	case engine.KindExec:
		e := &Entry{PID: p.PID, PPID: p.PPID, UID: p.UID, Binary: p.Binary, Args: append([]string(nil), p.Args...), Exe: p.Exe, ExecTime: ktime}
		t.mu.Lock()
		t.procs[p.PID] = e
		t.mu.Unlock()
	case engine.KindExit:
		t.mu.Lock()
		if old := t.procs[p.PID]; old != nil {
			e := *old
			e.Exited = ev.Time
			t.procs[p.PID] = &e
		}
		t.mu.Unlock()
	}
}

// Get returns a process, reading /proc when the table does not know it or
// its entry went stale (the kernel saw an exec the table did not).
func (t *Table) Get(pid int64) (*Entry, error) {
	t.mu.RLock()
	e := t.procs[pid]
	t.mu.RUnlock()
	if e != nil && (e.Exited.IsZero() && t.stale(e)) {
		e = nil
	}
	if e != nil {
		return e, nil
	}
	e, err := t.read(pid)
	if err != nil {
		// Gone already (short-lived processes are the rule): what the
		// kernel remembers still names it.
		k, ok := t.kernelProc(pid)
		if !ok {
			return nil, err
		}
		e = &Entry{PID: pid, PPID: k.PPID, Binary: k.Binary, ExecTime: k.ExecTime}
	}
	t.mu.Lock()
	t.procs[pid] = e
	t.mu.Unlock()
	return e, nil
}

// execClockSlack is how much later than the kernel's record of an exec the
// exec event's own timestamp may be: the exec sensor reads the clock twice in
// one run, for the process map and for the event.
const execClockSlack = uint64(time.Millisecond)

// stale reports whether the kernel saw an exec of the process after the one
// the entry reflects (the prefilter dropped its event).
func (t *Table) stale(e *Entry) bool {
	k, ok := t.kernelProc(e.PID)
	if !ok {
		return false
	}
	return k.ExecTime > e.ExecTime || e.ExecTime-k.ExecTime > execClockSlack
}

func (t *Table) kernelProc(pid int64) (KernelProc, bool) {
	if t.kernel == nil {
		return KernelProc{}, false
	}
	return t.kernel(uint32(pid))
}

// Fill completes an event's process: binary, arguments and executable
// (drift, memfd) when the event lacks them (every kind but exec), then the
// parent and ancestor chain.
func (t *Table) Fill(ev *engine.Event) {
	p := &ev.Process
	if p.PID == 0 {
		return
	}
	if p.Binary == "" && ev.Kind != engine.KindExec {
		if e, err := t.Get(p.PID); err == nil {
			p.Binary, p.Args = e.Binary, e.Args
			if p.Exe == (engine.Exe{}) {
				p.Exe = e.Exe
			}
			if p.PPID == 0 {
				p.PPID = e.PPID
			}
		}
	}
	p.Origin, p.OriginPID, p.OriginTime = "", 0, time.Time{}
	if k, ok := t.kernelProc(p.PID); ok && k.Origin != "" {
		p.Origin, p.OriginPID, p.OriginTime = k.Origin, k.OriginPID, k.OriginTime
	}
	p.Ancestors = p.Ancestors[:0]
	seen := map[int64]bool{p.PID: true}
	for pid := p.PPID; pid > 0 && len(p.Ancestors) < MaxAncestors && !seen[pid]; {
		seen[pid] = true
		e, err := t.Get(pid)
		if err != nil {
			break
		}
		p.Ancestors = append(p.Ancestors, engine.Ancestor{PID: e.PID, UID: e.UID, Binary: e.Binary, Args: e.Args})
		pid = e.PPID
	}
	if len(p.Ancestors) > 0 {
		p.Parent = p.Ancestors[0]
	}
}

// GC forgets processes that exited more than the grace period before now,
// and processes that vanished from /proc without an exit event (the
// prefilter may drop exits) once they are older than the grace period.
func (t *Table) GC(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for pid, e := range t.procs {
		if !e.Exited.IsZero() && now.Sub(e.Exited) > t.grace {
			delete(t.procs, pid)
			n++
		}
	}
	return n
}

// Sweep marks processes that no longer exist in /proc as exited at now, so
// GC removes them after the grace period.
func (t *Table) Sweep(now time.Time) {
	t.mu.RLock()
	var gone []int64
	for pid, e := range t.procs {
		if e.Exited.IsZero() {
			if _, err := os.Stat(filepath.Join(t.proc, strconv.FormatInt(pid, 10))); err != nil {
				gone = append(gone, pid)
			}
		}
	}
	t.mu.RUnlock()
	t.mu.Lock()
	for _, pid := range gone {
		if old := t.procs[pid]; old != nil && old.Exited.IsZero() {
			e := *old
			e.Exited = now
			t.procs[pid] = &e
		}
	}
	t.mu.Unlock()
}

// Len is the number of entries, exited ones included.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.procs)
}
