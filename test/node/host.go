package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// TempDirPrefix starts the name of every node's temp dir (under
// os.TempDir()); the node's cgroup root and CNI network are named after it.
const TempDirPrefix = "riposte-node-"

// lockName is the host-wide lock a running node holds (under os.TempDir()).
// Its content is the sysctls as they were before the first kubelet changed
// them, so a run that died without Stop still gets them restored.
const lockName = "riposte-node.lock"

// kubeletSysctls are the values the kubelet sets on the whole host at start
// (pkg/kubelet/cm setupKernelTunables); Stop puts the previous ones back.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// hostLock is the held host-wide lock.
type hostLock struct {
	f     *os.File
	saved map[string]string
}

// lockHost waits for the host-wide lock, then records the sysctls to
// restore: those a crashed earlier run left in the lock file, or the
// current ones.
func lockHost(ctx context.Context) (*hostLock, error) {
	path := filepath.Join(os.TempDir(), lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open node lock %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for %s (another test node runs on this machine): %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	l := &hostLock{f: f, saved: map[string]string{}}
	if data, _ := os.ReadFile(path); len(data) > 0 && json.Unmarshal(data, &l.saved) == nil && len(l.saved) > 0 {
		return l, nil // a run died before restoring: its values are the host's
	}
	for _, name := range kubeletSysctls {
		v, err := os.ReadFile(filepath.Join("/proc/sys", name))
		if err != nil {
			l.unlock()
			return nil, fmt.Errorf("read sysctl %s: %w", name, err)
		}
		l.saved[name] = strings.TrimSpace(string(v))
	}
	data, _ := json.Marshal(l.saved)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		l.unlock()
		return nil, fmt.Errorf("record sysctls in %s: %w", path, err)
	}
	return l, nil
}

// restore writes the recorded sysctls back, empties the lock file and
// releases the lock.
func (l *hostLock) restore() error {
	var errs []error
	for _, name := range kubeletSysctls {
		v, ok := l.saved[name]
		if !ok {
			continue
		}
		cur, _ := os.ReadFile(filepath.Join("/proc/sys", name))
		if strings.TrimSpace(string(cur)) == v {
			continue
		}
		if err := os.WriteFile(filepath.Join("/proc/sys", name), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", name, v, err))
		}
	}
	if len(errs) == 0 {
		_ = l.f.Truncate(0)
	}
	l.unlock()
	return errors.Join(errs...)
}

func (l *hostLock) unlock() {
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
}

// state is what cleanup needs to remove a node, kept in <dir>/state.json so
// the next Start can clean up after a test binary that died.
type state struct {
	Dir        string `json:"dir"`
	Owner      int    `json:"owner"`
	CgroupRoot string `json:"cgroupRoot"` // e.g. /riposte-node-123
	Bridge     string `json:"bridge"`
	Address    string `json:"address"` // containerd's socket
	// Created are the host folders outside Dir that did not exist before
	// the node and that the kubelet or containerd create in fixed places.
	Created []string `json:"created,omitempty"`
}

// fixedHostDirs are created by the kubelet, containerd or the CNI library
// at paths no setting moves: the device-plugin socket
// (/var/lib/kubelet/device-plugins), the containers' log links
// (/var/log/containers), the CNI result cache (/var/lib/cni/results) and the
// shims' sockets (/run/containerd/s).
var fixedHostDirs = []string{"/var/lib/kubelet", "/var/log/containers", "/var/lib/cni", "/run/containerd"}

// absentHostDirs returns the fixedHostDirs that do not exist yet: the node
// owns them and cleanup removes them.
func absentHostDirs() []string {
	var out []string
	for _, d := range fixedHostDirs {
		if _, err := os.Lstat(d); errors.Is(err, os.ErrNotExist) {
			out = append(out, d)
		}
	}
	return out
}

// removeCNIResults deletes the CNI library's cached results of the node's
// sandboxes (files named <network>-<sandbox id>-eth0, and the loopback's
// cni-loopback-<sandbox id>-lo), which stay because the sandboxes are
// killed, not torn down through CNI.
func removeCNIResults(network string) {
	const dir = "/var/lib/cni/results"
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), network+"-")
		if !ok {
			continue
		}
		_ = os.Remove(filepath.Join(dir, e.Name()))
		if id, _, ok := strings.Cut(rest, "-"); ok {
			_ = os.Remove(filepath.Join(dir, "cni-loopback-"+id+"-lo"))
		}
	}
}

func (s *state) write() error {
	data, _ := json.Marshal(s)
	return os.WriteFile(filepath.Join(s.Dir, "state.json"), data, 0o600)
}

// cgroupHierarchies are the mounted cgroup hierarchies: the v1 controllers
// and the v2 tree (/sys/fs/cgroup, or /sys/fs/cgroup/unified in hybrid mode).
func cgroupHierarchies() ([]string, error) {
	ms, err := mounts()
	var out []string
	for _, m := range ms {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m.point)
		}
	}
	return out, err
}

// mount is one line of /proc/self/mountinfo.
type mount struct{ point, fstype string }

// mounts reads /proc/self/mountinfo.
func mounts() ([]mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		m := mount{point: unescape(fields[4])}
		if i := indexOf(fields, "-"); i >= 0 && i+1 < len(fields) {
			m.fstype = fields[i+1]
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// createCgroupRoot makes the kubelet's cgroupRoot in every hierarchy (the
// kubelet refuses a root that does not exist). A new cpuset cgroup starts
// with no CPUs and memory nodes; it gets its parent's.
func createCgroupRoot(root string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		dir := filepath.Join(h, root)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		for _, name := range []string{"cpuset.cpus", "cpuset.mems"} {
			parent, err := os.ReadFile(filepath.Join(h, name))
			if err != nil {
				continue // not a cpuset v1 hierarchy
			}
			if cur, _ := os.ReadFile(filepath.Join(dir, name)); strings.TrimSpace(string(cur)) == "" {
				if err := os.WriteFile(filepath.Join(dir, name), parent, 0o644); err != nil {
					return fmt.Errorf("set %s of %s: %w", name, dir, err)
				}
			}
		}
	}
	return nil
}

// killCgroupProcesses SIGKILLs every process below the cgroup root in every
// hierarchy (container processes outlive their shim otherwise).
func killCgroupProcesses(root string) {
	hs, _ := cgroupHierarchies()
	for _, h := range hs {
		_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			data, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
}

// removeCgroupRoot removes the cgroup root and everything below it in every
// hierarchy, deepest first; a cgroup is removable once its processes are
// gone, which takes a moment after SIGKILL.
func removeCgroupRoot(root string, wait time.Duration) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for {
		var left []string
		for _, h := range hs {
			var dirs []string
			_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, path)
				}
				return nil
			})
			sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
			for _, d := range dirs {
				if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
					left = append(left, fmt.Sprintf("%s: %v", d, err))
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroups: %s", strings.Join(left, "; "))
		}
		killCgroupProcesses(root)
		time.Sleep(100 * time.Millisecond)
	}
}

// mountsBelow lists the mount points at or below dir, deepest first.
func mountsBelow(dir string) ([]string, error) {
	ms, err := mounts()
	var out []string
	for _, m := range ms {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			out = append(out, m.point)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, err
}

// unmountBelow detaches every mount at or below dir (container root file
// systems, shm, network namespaces, the kubelet's bind mount of its root
// dir, pod volumes); stacked mounts need several rounds.
func unmountBelow(dir string) error {
	for range 10 {
		mps, err := mountsBelow(dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		for _, mp := range mps {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	}
	mps, _ := mountsBelow(dir)
	if len(mps) > 0 {
		return fmt.Errorf("mounts left below %s: %s", dir, strings.Join(mps, ", "))
	}
	return nil
}

// processesMentioning returns the pids (other than ours) whose command line
// contains s: the containerd shims, which leave containerd's process group.
func processesMentioning(s string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killShims stops the shims of the node's containerd (SIGKILL; their
// containers are already dead) and waits until they are gone.
func killShims(address string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		pids := processesMentioning(address)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of containerd %s still running: %v", address, pids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deleteBridge removes the node's CNI bridge from the host.
func deleteBridge(ip, name string) error {
	if name == "" {
		return nil
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command(ip, "link", "delete", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip link delete %s: %w: %s", name, err, out)
	}
	return nil
}

// cleanup removes what a node left on the host; it is idempotent and runs
// after the node's programs are stopped (or died).
func cleanup(s *state, ip string) error {
	var errs []error
	if s.CgroupRoot != "" {
		killCgroupProcesses(s.CgroupRoot)
	}
	if s.Address != "" {
		errs = append(errs, killShims(s.Address, 10*time.Second))
	}
	if s.CgroupRoot != "" {
		errs = append(errs, removeCgroupRoot(s.CgroupRoot, 10*time.Second))
	}
	errs = append(errs, deleteBridge(ip, s.Bridge))
	removeCNIResults(filepath.Base(s.Dir))
	for _, d := range s.Created {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
		}
	}
	if err := unmountBelow(s.Dir); err != nil {
		errs = append(errs, err)
	} else if err := os.RemoveAll(s.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove node dir: %w", err))
	}
	return errors.Join(errs...)
}

// sweepStale cleans up after nodes whose test binary died without Stop
// (their kubelet and containerd died with it; shims and containers did not).
func sweepStale(ip string) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), TempDirPrefix+"*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil {
			continue
		}
		var s state
		if json.Unmarshal(data, &s) != nil || s.Owner <= 0 || s.Dir != dir {
			continue
		}
		if err := syscall.Kill(s.Owner, 0); errors.Is(err, syscall.ESRCH) {
			_ = cleanup(&s, ip)
		}
	}
}

func indexOf(fields []string, s string) int {
	for i, f := range fields {
		if f == s {
			return i
		}
	}
	return -1
}

// unescape decodes the octal escapes (\040 for space) of /proc mount paths.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
