package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/riposte-dev/riposte/bpf"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/responders"
)

// Local acts on the node it runs on; it implements responders.Node on the
// host layer (package host): cgroups found by the kubelet's names, kills
// checked against cgroup membership, kernel isolation attached to the pod's
// cgroup.
type Local struct {
	// Cgroups is the cgroup v2 hierarchy; its Root defaults to
	// host.DefaultCgroupRoot() (found by file system type).
	Cgroups host.Cgroups
	// Proc is the proc file system (default /proc, the host's: the agent
	// runs with the host's pid namespace).
	Proc host.Proc
	// HostPID is a process in the host's mount namespace (default 1, init):
	// its mount table holds the container runtime's mounts of containers'
	// root file systems, and its root (/proc/<pid>/root) is how the agent,
	// in a mount namespace of its own, reaches the paths in it.
	HostPID int
	// HostMountinfo overrides /proc/<HostPID>/mountinfo (tests).
	HostMountinfo string
	// PinDir is a bpffs folder where isolation links are pinned so they
	// survive an agent restart; empty keeps them in this process only.
	PinDir string
	// FlightRecorder, when set, returns the pod's recent events in their JSON
	// form (the agent keeps the last N per pod in memory) for capture.
	FlightRecorder func(podUID string) [][]byte
	// Limits bound what a capture copies (zero: the defaults, MaxBundle…).
	Limits Limits
	// SpoolDir is where a capture streams executables and files until the
	// bundle is written (default the system's temporary folder); on the
	// evidence store's file system the bundle takes them by rename.
	SpoolDir string

	mu    sync.Mutex
	links map[string][]link.Link
}

var _ responders.Node = (*Local)(nil)

func (l *Local) cgroups() host.Cgroups {
	if l.Cgroups.Root == "" {
		return host.Cgroups{Root: host.DefaultCgroupRoot()}
	}
	return l.Cgroups
}

func (l *Local) hostPID() int {
	if l.HostPID > 0 {
		return l.HostPID
	}
	return 1
}

func (l *Local) mountinfo() string {
	if l.HostMountinfo != "" {
		return l.HostMountinfo
	}
	return filepath.Join(l.Proc.Dir(l.hostPID()), "mountinfo")
}

// hostPath is where the agent reaches a path of the host's file system.
func (l *Local) hostPath(p string) string {
	return filepath.Join(l.Proc.Dir(l.hostPID()), "root", p)
}

var directions = []struct {
	name    string
	attach  ebpf.AttachType
	ingress bool
}{
	{"ingress", ebpf.AttachCGroupInetIngress, true},
	{"egress", ebpf.AttachCGroupInetEgress, false},
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
	dir, err := l.cgroups().PodDir(uid)
	if err != nil {
		return "", err
	}
	if l.Isolated(uid) {
		// The same words as the attach: reporting it twice must not change it.
		return fmt.Sprintf("cgroup_skb ingress+egress attached to %s, allowing %s", dir, responders.DescribePeers(allow)), nil
	}
	var attached []link.Link
	undo := func() {
		for _, lk := range attached {
			_ = lk.Unpin()
			_ = lk.Close()
		}
	}
	for _, d := range directions {
		prog, err := bpf.IsolationProgram(allow, d.ingress)
		if err != nil {
			undo()
			return "", err
		}
		// The link keeps the program alive; our handle is not needed after attaching.
		lk, err := link.AttachCgroup(link.CgroupOptions{Path: dir, Attach: d.attach, Program: prog})
		prog.Close()
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
	return fmt.Sprintf("cgroup_skb ingress+egress attached to %s, allowing %s", dir, responders.DescribePeers(allow)), nil
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

// IsolatedPods lists the pod UIDs this Local holds or finds pinned.
func (l *Local) IsolatedPods() []string {
	l.mu.Lock()
	set := map[string]bool{}
	for uid := range l.links {
		set[uid] = true
	}
	l.mu.Unlock()
	if l.PinDir != "" {
		ents, _ := os.ReadDir(l.PinDir)
		for _, e := range ents {
			if uid, ok := strings.CutPrefix(e.Name(), "isolate-"); ok {
				if uid, ok = strings.CutSuffix(uid, "-egress"); ok {
					set[uid] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for uid := range set {
		out = append(out, uid)
	}
	return out
}

// PodOnNode reports whether the pod has a cgroup on this node.
func (l *Local) PodOnNode(uid string) bool {
	_, err := l.cgroups().PodDir(uid)
	return err == nil
}

// KillProcess implements responders.Node. A container's process is killed
// only while it still runs in that container's cgroup (pids are reused); a
// target without a container is a host process and is killed only when the
// target says Host and the process runs in no container. The container's
// cgroup comes from the kubelet's layout, never from what the process
// claims. Every check happens through a pidfd opened first (host.KillProcess),
// with the start time too when the target carries one.
func (l *Local) KillProcess(ctx context.Context, t responders.ProcessTarget) error {
	want := host.Expect{StartTicks: t.StartTicks}
	switch {
	case t.ContainerID != "":
		dir, err := l.cgroups().ContainerDir(t.PodUID, t.ContainerID)
		if err != nil {
			return err
		}
		want.CgroupDir = dir
	case !t.Host:
		return fmt.Errorf("refusing to kill pid %d: it is not in a container and the playbook does not allow host processes", t.PID)
	default:
		want.Host = true
	}
	return mapGone(l.Proc.KillProcess(t.PID, want))
}

// mapGone turns host.ErrGone into responders.ErrGone for the actions.
func mapGone(err error) error {
	if errors.Is(err, host.ErrGone) {
		return fmt.Errorf("%w: %v", responders.ErrGone, err)
	}
	return err
}

// KillContainer implements responders.Node through cgroup.kill (Linux 5.14+),
// which kills every process of the cgroup at once, forks included.
func (l *Local) KillContainer(ctx context.Context, podUID, containerID string) error {
	dir, err := l.cgroups().ContainerDir(podUID, containerID)
	if err != nil {
		return err
	}
	return host.KillCgroup(dir)
}
