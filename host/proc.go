package host

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrGone means a process no longer exists: it exited (or its pid now
// names another process, which callers check through its cgroup).
var ErrGone = errors.New("process gone")

// Bounds on what is read from a process's /proc: a process chooses its own
// command line, environment and open files, so an attacker chooses their size.
const (
	MaxCmdlineBytes = 64 << 10
	MaxEnvironBytes = 256 << 10
	MaxFDs          = 4096
)

// Proc reads process facts from a proc file system. Everything under
// /proc/<pid> is the process's own to shape (its command line, its
// environment, its mount table), so callers treat the facts as what the
// process claims, bounded by the limits above; only the pid, its cgroup and
// its parent come from the kernel's own bookkeeping.
type Proc struct {
	// Root is the proc mount; "/proc" when empty.
	Root string
}

func (p Proc) root() string {
	if p.Root == "" {
		return "/proc"
	}
	return p.Root
}

// Dir returns /proc/<pid>.
func (p Proc) Dir(pid int) string { return filepath.Join(p.root(), strconv.Itoa(pid)) }

func gone(pid int, err error) error {
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, errESRCH) {
		return fmt.Errorf("process %d: %w", pid, ErrGone)
	}
	return fmt.Errorf("process %d: %w", pid, err)
}

// Stat is what /proc/<pid>/stat says about a process.
type Stat struct {
	PPID int
	// Comm is the kernel's task name (at most 15 bytes).
	Comm string
	// StartTicks is the start time in clock ticks after boot: with the pid it
	// identifies a process across pid reuse.
	StartTicks uint64
}

// Stat reads /proc/<pid>/stat.
func (p Proc) Stat(pid int) (Stat, error) {
	b, err := os.ReadFile(filepath.Join(p.Dir(pid), "stat"))
	if err != nil {
		return Stat{}, gone(pid, err)
	}
	// comm may hold spaces and parentheses: the fields start after the last ')'.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return Stat{}, fmt.Errorf("process %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("process %d: malformed stat", pid)
	}
	st := Stat{Comm: string(b[open+1 : end])}
	st.PPID, _ = strconv.Atoi(f[1])
	st.StartTicks, _ = strconv.ParseUint(f[19], 10, 64)
	return st, nil
}

// readBounded reads at most max bytes of path and reports whether more were there.
func readBounded(path string, max int64) ([]byte, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, false, err
	}
	if int64(len(b)) > max {
		return b[:max], true, nil
	}
	return b, false, nil
}

// Cmdline returns argv (bounded to MaxCmdlineBytes) and whether it was cut.
func (p Proc) Cmdline(pid int) ([]string, bool, error) {
	b, cut, err := readBounded(filepath.Join(p.Dir(pid), "cmdline"), MaxCmdlineBytes)
	if err != nil {
		return nil, false, gone(pid, err)
	}
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil, cut, nil
	}
	return strings.Split(string(b), "\x00"), cut, nil
}

// Exe returns where /proc/<pid>/exe points, without the " (deleted)" mark,
// and whether the file was deleted after the process started.
func (p Proc) Exe(pid int) (path string, deleted bool, err error) {
	t, err := os.Readlink(filepath.Join(p.Dir(pid), "exe"))
	if err != nil {
		return "", false, gone(pid, err)
	}
	path, deleted = strings.CutSuffix(t, " (deleted)")
	return path, deleted, nil
}

// Cwd returns the process's working directory, or "" when it cannot be read.
func (p Proc) Cwd(pid int) string {
	t, _ := os.Readlink(filepath.Join(p.Dir(pid), "cwd"))
	return t
}

// UID returns the real user id from /proc/<pid>/status.
func (p Proc) UID(pid int) (int64, error) {
	f, err := os.Open(filepath.Join(p.Dir(pid), "status"))
	if err != nil {
		return 0, gone(pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			if uf := strings.Fields(rest); len(uf) > 0 {
				return strconv.ParseInt(uf[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("process %d: no Uid in status", pid)
}

// Environ returns the environment's variable names, with their values only
// when keepValues is set: values hold credentials more often than not.
// It is bounded by MaxEnvironBytes.
func (p Proc) Environ(pid int, keepValues bool) ([]string, error) {
	b, _, err := readBounded(filepath.Join(p.Dir(pid), "environ"), MaxEnvironBytes)
	if err != nil {
		return nil, gone(pid, err)
	}
	var out []string
	for _, kv := range strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") {
		if !keepValues {
			kv, _, _ = strings.Cut(kv, "=")
		}
		if kv != "" {
			out = append(out, kv)
		}
	}
	return out, nil
}

// FDs returns the process's open files by descriptor number (at most MaxFDs).
func (p Proc) FDs(pid int) map[string]string {
	out := map[string]string{}
	dir := filepath.Join(p.Dir(pid), "fd")
	f, err := os.Open(dir)
	if err != nil {
		return out
	}
	defer f.Close()
	names, _ := f.Readdirnames(MaxFDs)
	for _, n := range names {
		if t, err := os.Readlink(filepath.Join(dir, n)); err == nil {
			out[n] = t
		}
	}
	return out
}

// Cgroup returns the process's cgroup v2 path (the "0::" line of
// /proc/<pid>/cgroup), relative to the cgroup v2 root.
func (p Proc) Cgroup(pid int) (string, error) {
	b, _, err := readBounded(filepath.Join(p.Dir(pid), "cgroup"), 64<<10)
	if err != nil {
		return "", gone(pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return path, nil
		}
	}
	return "", fmt.Errorf("process %d: no cgroup v2 line in /proc/%d/cgroup", pid, pid)
}

// PIDs lists the processes of the proc file system.
func (p Proc) PIDs() ([]int, error) {
	ents, err := os.ReadDir(p.root())
	if err != nil {
		return nil, fmt.Errorf("list processes in %s: %w", p.root(), err)
	}
	var out []int
	for _, d := range ents {
		if pid, err := strconv.Atoi(d.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out, nil
}

// Process is a process as captured from /proc for evidence.
type Process struct {
	PID     int      `json:"pid"`
	PPID    int      `json:"ppid"`
	Name    string   `json:"name"`
	UID     int64    `json:"uid"`
	Cmdline []string `json:"cmdline"`
	// CmdlineCut is true when the command line was longer than the bound.
	CmdlineCut bool `json:"cmdlineCut,omitempty"`
	// Exe is where /proc/<pid>/exe points; ExeDeleted marks a binary removed
	// from disk, which a copy read through /proc/<pid>/exe still preserves.
	Exe        string `json:"exe"`
	ExeDeleted bool   `json:"exeDeleted,omitempty"`
	Cwd        string `json:"cwd"`
	Cgroup     string `json:"cgroup"`
	// Env lists variable names; values only when asked for.
	Env []string          `json:"env,omitempty"`
	FDs map[string]string `json:"fds"`
}

// Process reads the facts evidence keeps about a process. Environment
// values are left out unless keepEnvValues.
func (p Proc) Process(pid int, keepEnvValues bool) (Process, error) {
	st, err := p.Stat(pid)
	if err != nil {
		return Process{}, err
	}
	out := Process{PID: pid, PPID: st.PPID, Name: st.Comm}
	out.UID, _ = p.UID(pid)
	out.Cmdline, out.CmdlineCut, _ = p.Cmdline(pid)
	out.Exe, out.ExeDeleted, _ = p.Exe(pid)
	out.Cwd = p.Cwd(pid)
	out.Cgroup, _ = p.Cgroup(pid)
	out.Env, _ = p.Environ(pid, keepEnvValues)
	out.FDs = p.FDs(pid)
	return out, nil
}

// Tree renders processes as an indented tree, one "pid cmdline" per line,
// children below their parent.
func Tree(procs []Process) []byte {
	children := map[int][]Process{}
	in := map[int]bool{}
	for _, p := range procs {
		in[p.PID] = true
	}
	var roots []Process
	for _, p := range procs {
		if in[p.PPID] && p.PPID != p.PID {
			children[p.PPID] = append(children[p.PPID], p)
		} else {
			roots = append(roots, p)
		}
	}
	var buf bytes.Buffer
	var walk func(p Process, depth int)
	walk = func(p Process, depth int) {
		fmt.Fprintf(&buf, "%s%d %s\n", strings.Repeat("  ", depth), p.PID, strings.Join(p.Cmdline, " "))
		for _, c := range children[p.PID] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return buf.Bytes()
}
