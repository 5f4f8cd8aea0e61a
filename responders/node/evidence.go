package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/riposte-dev/riposte/evidence"
)

// MaxExecutable bounds each executable copied into a bundle.
const MaxExecutable = 64 << 20

// Process is one process of a container as captured from /proc.
type Process struct {
	PID     int      `json:"pid"`
	PPID    int      `json:"ppid"`
	Name    string   `json:"name"`
	UID     string   `json:"uid"`
	Cmdline []string `json:"cmdline"`
	// Exe is where /proc/<pid>/exe points; " (deleted)" marks a binary removed
	// from disk, which the copy in exe/ still preserves.
	Exe string `json:"exe"`
	Cwd string `json:"cwd"`
	// Env lists variable names; values only with includeSecrets.
	Env []string          `json:"env,omitempty"`
	FDs map[string]string `json:"fds"`
}

// Evidence implements responders.Node: the processes of the container (of
// every container of the pod when containerID is empty) with command lines,
// open files and sockets, the socket tables of the pod's network namespace,
// a copy of each distinct executable read through /proc/<pid>/exe (so a binary
// deleted after start is still captured), the files changed since the
// container started (its overlay upper directory), and the flight recorder.
func (l *Local) Evidence(ctx context.Context, podUID, containerID string, includeSecrets bool) ([]evidence.File, error) {
	var dir string
	var err error
	if containerID != "" {
		dir, err = ContainerCgroup(l.root(), podUID, containerID)
	} else {
		dir, err = PodCgroup(l.root(), podUID)
	}
	if err != nil {
		return nil, err
	}
	pids, err := cgroupPIDs(dir)
	if err != nil {
		return nil, err
	}
	var files []evidence.File
	var procs []Process
	seenExe := map[string]bool{}
	for _, pid := range pids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p, ok := l.process(pid, includeSecrets)
		if !ok {
			continue // exited while we looked
		}
		procs = append(procs, p)
		if key := p.Exe; !seenExe[key] {
			seenExe[key] = true
			if b, err := readBounded(filepath.Join(l.proc(), strconv.Itoa(pid), "exe"), MaxExecutable); err == nil {
				files = append(files, evidence.File{Name: fmt.Sprintf("exe/%d-%s", pid, filepath.Base(strings.TrimSuffix(p.Exe, " (deleted)"))), Data: b})
			}
		}
	}
	// Files changed since start, once per container root (its overlay upper dir).
	budget := int64(MaxChangedTotal)
	var changed []Changed
	seenUpper := map[string]bool{}
	for _, p := range procs {
		upper := l.upperDir(p.PID)
		if upper == "" || seenUpper[upper] {
			continue
		}
		seenUpper[upper] = true
		list, copied := changedFiles(upper, p.PID, &budget)
		changed = append(changed, list...)
		files = append(files, copied...)
	}
	if len(seenUpper) > 0 {
		cj, _ := json.MarshalIndent(changed, "", "  ")
		files = append(files, evidence.File{Name: "node/changed-files.json", Data: cj})
	}
	js, _ := json.MarshalIndent(procs, "", "  ")
	files = append(files, evidence.File{Name: "node/processes.json", Data: js}, evidence.File{Name: "node/pstree.txt", Data: tree(procs)})
	if len(pids) > 0 {
		// All containers of a pod share its network namespace.
		for _, t := range []string{"tcp", "tcp6", "udp", "udp6", "unix"} {
			if b, err := os.ReadFile(filepath.Join(l.proc(), strconv.Itoa(pids[0]), "net", t)); err == nil {
				files = append(files, evidence.File{Name: "node/net/" + t, Data: b})
			}
		}
	}
	if l.FlightRecorder != nil {
		var buf bytes.Buffer
		for _, ev := range l.FlightRecorder(podUID) {
			buf.Write(bytes.TrimSpace(ev))
			buf.WriteByte('\n')
		}
		files = append(files, evidence.File{Name: "node/flight-recorder.jsonl", Data: buf.Bytes()})
	}
	return files, nil
}

// cgroupPIDs lists the processes of dir and its descendants.
func cgroupPIDs(dir string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list processes of %s: %w", dir, err)
	}
	sort.Ints(pids)
	return pids, nil
}

func (l *Local) process(pid int, includeSecrets bool) (Process, bool) {
	base := filepath.Join(l.proc(), strconv.Itoa(pid))
	status, err := os.ReadFile(filepath.Join(base, "status"))
	if err != nil {
		return Process{}, false
	}
	p := Process{PID: pid, FDs: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "Name":
			p.Name = v
		case "PPid":
			p.PPID, _ = strconv.Atoi(v)
		case "Uid":
			p.UID = strings.Fields(v)[0]
		}
	}
	if b, err := os.ReadFile(filepath.Join(base, "cmdline")); err == nil {
		p.Cmdline = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	}
	p.Exe, _ = os.Readlink(filepath.Join(base, "exe"))
	p.Cwd, _ = os.Readlink(filepath.Join(base, "cwd"))
	if b, err := os.ReadFile(filepath.Join(base, "environ")); err == nil {
		for _, kv := range strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") {
			if !includeSecrets {
				kv, _, _ = strings.Cut(kv, "=")
			}
			if kv != "" {
				p.Env = append(p.Env, kv)
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(base, "fd")); err == nil {
		for _, e := range ents {
			if t, err := os.Readlink(filepath.Join(base, "fd", e.Name())); err == nil {
				p.FDs[e.Name()] = t
			}
		}
	}
	return p, true
}

func tree(procs []Process) []byte {
	children := map[int][]Process{}
	in := map[int]bool{}
	for _, p := range procs {
		in[p.PID] = true
	}
	var roots []Process
	for _, p := range procs {
		if in[p.PPID] {
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

func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, errors.New("executable larger than the capture limit")
	}
	return b, nil
}
