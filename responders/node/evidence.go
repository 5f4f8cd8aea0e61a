package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/riposte-dev/riposte/evidence"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/responders"
)

// Bounds on what a capture copies: executables, and the files a container
// changed (an attacker decides how many and how large).
const (
	MaxExecutable   = 64 << 20
	MaxChangedFile  = 1 << 20
	MaxChangedTotal = 64 << 20
	MaxChangedFiles = 10000
)

// Changed is a file a container created, modified or deleted since it started.
type Changed struct {
	// Container is the container whose root file system holds the file.
	Container string `json:"container"`
	// Path as the container sees it.
	Path    string    `json:"path"`
	Deleted bool      `json:"deleted,omitempty"`
	Size    int64     `json:"size,omitempty"`
	Mode    string    `json:"mode,omitempty"`
	ModTime time.Time `json:"modTime,omitzero"`
	SHA256  string    `json:"sha256,omitempty"`
	// Copied says the content is in the bundle under changed/<container>/<path>.
	Copied bool `json:"copied,omitempty"`
}

// Evidence implements responders.Node: the processes of the container (of
// every container of the pod when the target names no container, or the one
// host process of a target with neither) with command lines, open files and
// sockets, the socket tables of their network namespace, a copy of each
// distinct executable read through /proc/<pid>/exe (so a binary deleted after
// start is still captured), the files each container changed since it
// started (its overlay upper directory, located through the runtime's mount
// in the host's mount table), and the flight recorder. Environment values
// are left out unless includeSecrets.
func (l *Local) Evidence(ctx context.Context, t responders.ProcessTarget, includeSecrets bool) ([]evidence.File, error) {
	cg := l.cgroups()
	var pids []int
	var containers []string
	var notes []string
	switch {
	case t.ContainerID != "":
		dir, err := cg.ContainerDir(t.PodUID, t.ContainerID)
		if err != nil {
			return nil, err
		}
		if pids, err = host.PIDs(dir); err != nil {
			return nil, err
		}
		_, id := host.SplitContainerID(t.ContainerID)
		containers = []string{id}
	case t.PodUID != "":
		dir, err := cg.PodDir(t.PodUID)
		if err != nil {
			return nil, err
		}
		if pids, err = host.PIDs(dir); err != nil {
			return nil, err
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if ref, ok := host.ParsePath("/" + e.Name()); ok && e.IsDir() {
				containers = append(containers, ref.ContainerID)
			}
		}
	case t.PID > 0:
		pids = []int{t.PID}
	default:
		return nil, errors.New("the capture names no pod, container or process")
	}

	var files []evidence.File
	var procs []host.Process
	seenExe := map[string]bool{}
	for _, pid := range pids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p, err := l.Proc.Process(pid, includeSecrets)
		if err != nil {
			continue // exited while we looked
		}
		procs = append(procs, p)
		if key := p.Exe; !seenExe[key] {
			seenExe[key] = true
			if b, err := readExe(filepath.Join(l.Proc.Dir(pid), "exe")); err == nil {
				files = append(files, evidence.File{Name: fmt.Sprintf("exe/%d-%s", pid, filepath.Base(p.Exe)), Data: b})
			} else {
				notes = append(notes, fmt.Sprintf("executable of pid %d (%s): %v", pid, p.Exe, err))
			}
		}
	}

	budget := int64(MaxChangedTotal)
	var changed []Changed
	for _, id := range containers {
		upper, err := host.RootfsUpper(l.mountinfo(), id)
		if err != nil {
			notes = append(notes, fmt.Sprintf("changed files of container %s: %v", id, err))
			continue
		}
		// The path is the host's; the agent (in its own mount namespace as a
		// DaemonSet pod) reaches the host's file system through init's root.
		list, copied := changedFiles(l.hostPath(upper), id, &budget)
		changed = append(changed, list...)
		files = append(files, copied...)
	}
	if len(containers) > 0 {
		cj, _ := json.MarshalIndent(changed, "", "  ")
		files = append(files, evidence.File{Name: "node/changed-files.json", Data: cj})
	}
	js, _ := json.MarshalIndent(procs, "", "  ")
	files = append(files, evidence.File{Name: "node/processes.json", Data: js}, evidence.File{Name: "node/pstree.txt", Data: host.Tree(procs)})
	if len(procs) > 0 {
		// The containers of a pod share its network namespace.
		for _, n := range []string{"tcp", "tcp6", "udp", "udp6", "unix"} {
			if b, err := os.ReadFile(filepath.Join(l.Proc.Dir(procs[0].PID), "net", n)); err == nil {
				files = append(files, evidence.File{Name: "node/net/" + n, Data: b})
			}
		}
	}
	if l.FlightRecorder != nil && t.PodUID != "" {
		var buf bytes.Buffer
		for _, ev := range l.FlightRecorder(t.PodUID) {
			buf.Write(bytes.TrimSpace(ev))
			buf.WriteByte('\n')
		}
		files = append(files, evidence.File{Name: "node/flight-recorder.jsonl", Data: buf.Bytes()})
	}
	if len(notes) > 0 {
		sort.Strings(notes)
		files = append(files, evidence.File{Name: "node/not-captured.txt", Data: []byte(strings.Join(notes, "\n") + "\n")})
	}
	return files, nil
}

// readExe reads an executable through /proc/<pid>/exe, which is a magic link
// to the file the kernel runs: following it is the point.
func readExe(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxExecutable+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxExecutable {
		return nil, fmt.Errorf("larger than the capture limit of %d bytes", MaxExecutable)
	}
	return b, nil
}

// changedFiles lists (and copies, within bounds) the files of an overlay
// upper directory. A character device 0:0 is overlayfs' mark of a deletion.
// The container owns everything in it: links are not followed (WalkDir does
// not, host.ReadFile refuses a file swapped for one), and the count and size
// of what is copied are bounded.
func changedFiles(upper, container string, budget *int64) ([]Changed, []evidence.File) {
	var list []Changed
	var files []evidence.File
	_ = filepath.WalkDir(upper, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == upper {
			return nil
		}
		if len(list) >= MaxChangedFiles {
			return fs.SkipAll
		}
		rel := "/" + filepath.ToSlash(strings.TrimPrefix(path, upper+string(os.PathSeparator)))
		info, err := d.Info()
		if err != nil {
			return nil
		}
		c := Changed{Container: container, Path: rel, Mode: info.Mode().String(), ModTime: info.ModTime().UTC()}
		switch {
		case info.Mode()&fs.ModeCharDevice != 0:
			if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Rdev == 0 {
				c = Changed{Container: container, Path: rel, Deleted: true}
			}
		case info.Mode().IsRegular():
			c.Size = info.Size()
			if b, err := host.ReadFile(path, MaxChangedFile); err == nil {
				sum := sha256.Sum256(b)
				c.SHA256 = hex.EncodeToString(sum[:])
				if *budget >= int64(len(b)) {
					*budget -= int64(len(b))
					c.Copied = true
					files = append(files, evidence.File{Name: "changed/" + shortID(container) + rel, Data: b})
				}
			}
		case info.IsDir():
			return nil // its files are listed one by one
		}
		list = append(list, c)
		return nil
	})
	return list, files
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
