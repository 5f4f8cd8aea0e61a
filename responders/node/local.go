package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/riposte-dev/riposte/responders"
)

// Local acts on the node it runs on; it implements responders.Node.
type Local struct {
	// CgroupRoot is the cgroup v2 mount (default DefaultCgroupRoot).
	CgroupRoot string
	// PinDir is a bpffs folder where isolation links are pinned so they
	// survive an agent restart; empty keeps them in this process only.
	PinDir string
	// ProcRoot is the proc mount (default /proc).
	ProcRoot string
	// FlightRecorder, when set, returns the pod's recent events in their JSON
	// form (the agent keeps the last N per pod in memory) for capture.
	FlightRecorder func(podUID string) [][]byte

	mu    sync.Mutex
	links map[string][]link.Link
}

var _ responders.Node = (*Local)(nil)

func (l *Local) root() string {
	if l.CgroupRoot != "" {
		return l.CgroupRoot
	}
	return DefaultCgroupRoot
}

func (l *Local) proc() string {
	if l.ProcRoot != "" {
		return l.ProcRoot
	}
	return "/proc"
}

var directions = []struct {
	name   string
	attach ebpf.AttachType
}{
	{"ingress", ebpf.AttachCGroupInetIngress},
	{"egress", ebpf.AttachCGroupInetEgress},
}

func (l *Local) pinPath(uid, dir string) string {
	return filepath.Join(l.PinDir, "isolate-"+uid+"-"+dir)
}

// Isolated reports whether this Local (or a pin it left) holds an isolation for uid.
func (l *Local) Isolated(uid string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.links[uid]) > 0 {
		return true
	}
	if l.PinDir == "" {
		return false
	}
	_, err := os.Stat(l.pinPath(uid, "egress"))
	return err == nil
}

// IsolatePod implements responders.Node. Isolating an isolated pod is a no-op.
func (l *Local) IsolatePod(ctx context.Context, uid string, allow []responders.Peer) (string, error) {
	dir, err := PodCgroup(l.root(), uid)
	if err != nil {
		return "", err
	}
	if l.Isolated(uid) {
		return fmt.Sprintf("cgroup_skb ingress+egress already attached to %s", dir), nil
	}
	prog, err := Program(allow)
	if err != nil {
		return "", err
	}
	// The links keep the program alive; our handle is not needed after attaching.
	defer prog.Close()
	var attached []link.Link
	undo := func() {
		for _, lk := range attached {
			_ = lk.Unpin()
			_ = lk.Close()
		}
	}
	for _, d := range directions {
		lk, err := link.AttachCgroup(link.CgroupOptions{Path: dir, Attach: d.attach, Program: prog})
		if err != nil {
			undo()
			return "", fmt.Errorf("attach cgroup_skb %s to %s: %w", d.name, dir, err)
		}
		attached = append(attached, lk)
		if l.PinDir != "" {
			if err := lk.Pin(l.pinPath(uid, d.name)); err != nil {
				undo()
				return "", fmt.Errorf("pin cgroup_skb %s link of pod %s: %w", d.name, uid, err)
			}
		}
	}
	l.mu.Lock()
	if l.links == nil {
		l.links = map[string][]link.Link{}
	}
	l.links[uid] = attached
	l.mu.Unlock()
	return fmt.Sprintf("cgroup_skb ingress+egress attached to %s, allowing %s", dir, describe(allow)), nil
}

func describe(allow []responders.Peer) string {
	if len(allow) == 0 {
		return "nothing"
	}
	var s []string
	for _, p := range allow {
		d := "any"
		if p.Net != nil {
			d = p.Net.String()
		}
		if p.Port != 0 {
			d += fmt.Sprintf(":%d", p.Port)
		}
		s = append(s, d)
	}
	return strings.Join(s, ", ")
}

// Close drops this process's handles. Pinned isolations stay in force (an
// agent shutting down must not un-isolate pods); unpinned ones end with it.
func (l *Local) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for uid, links := range l.links {
		for _, lk := range links {
			errs = append(errs, lk.Close())
		}
		delete(l.links, uid)
	}
	return errors.Join(errs...)
}

// ReleasePod implements responders.Node: it detaches what IsolatePod attached,
// in this process or pinned by an earlier one.
func (l *Local) ReleasePod(ctx context.Context, uid string) error {
	l.mu.Lock()
	links := l.links[uid]
	delete(l.links, uid)
	l.mu.Unlock()
	var errs []error
	for _, lk := range links {
		_ = lk.Unpin()
		if err := lk.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if l.PinDir != "" && len(links) == 0 {
		for _, d := range directions {
			p := l.pinPath(uid, d.name)
			lk, err := link.LoadPinnedLink(p, nil)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("load pinned link %s: %w", p, err))
				continue
			}
			// A pinned link stays attached until unpinned and closed.
			if err := lk.Unpin(); err != nil {
				errs = append(errs, err)
			}
			if err := lk.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release pod %s: %w", uid, err)
	}
	return nil
}

// KillProcess implements responders.Node. The PID must still be in the
// container's cgroup: PIDs are reused, and killing an unrelated process would
// turn the response into the incident.
func (l *Local) KillProcess(ctx context.Context, pid int, containerID string) error {
	if pid <= 1 {
		return fmt.Errorf("refusing to kill pid %d", pid)
	}
	cg, err := os.ReadFile(filepath.Join(l.proc(), fmt.Sprint(pid), "cgroup"))
	if errors.Is(err, os.ErrNotExist) {
		return responders.ErrGone
	}
	if err != nil {
		return fmt.Errorf("read cgroup of pid %d: %w", pid, err)
	}
	if id := trimRuntime(containerID); id != "" && !strings.Contains(string(cg), id) {
		return fmt.Errorf("pid %d is not in container %s (PID reused?)", pid, id)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); errors.Is(err, syscall.ESRCH) {
		return responders.ErrGone
	} else if err != nil {
		return fmt.Errorf("SIGKILL pid %d: %w", pid, err)
	}
	return nil
}

// KillContainer implements responders.Node through cgroup.kill (Linux 5.14+),
// which kills every process of the cgroup at once, forks included.
func (l *Local) KillContainer(ctx context.Context, podUID, containerID string) error {
	dir, err := ContainerCgroup(l.root(), podUID, containerID)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		return fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	return nil
}
