package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// ErrNotFound is returned when no cgroup has the asked-for id.
var ErrNotFound = errors.New("not found")

// Cgroups reads a cgroup v2 hierarchy. In cgroup v2 the kernel's cgroup id
// (what bpf_get_current_cgroup_id returns) is the inode number of the
// cgroup's directory, so ids map to paths by stat(2).
type Cgroups struct {
	// Root is the cgroup v2 mount, /sys/fs/cgroup on a unified host or
	// /sys/fs/cgroup/unified on a hybrid one.
	Root string
}

// cgroup2Magic is CGROUP2_SUPER_MAGIC, what statfs(2) reports for a cgroup
// v2 mount.
const cgroup2Magic = 0x63677270

// DefaultCgroupRoot returns the cgroup v2 mount of this host:
// /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one
// (cgroup v1 controllers beside a v2 hierarchy), checked by file system
// type rather than assumed. It returns /sys/fs/cgroup when neither is
// cgroup v2, so the error names the usual place.
func DefaultCgroupRoot() string {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st syscall.Statfs_t
		if syscall.Statfs(p, &st) == nil && st.Type == cgroup2Magic {
			return p
		}
	}
	return "/sys/fs/cgroup"
}

// IsCgroup2 reports whether dir is on a cgroup v2 file system.
func IsCgroup2(dir string) bool {
	var st syscall.Statfs_t
	return syscall.Statfs(dir, &st) == nil && st.Type == cgroup2Magic
}

// Cgroup is one cgroup found by Scan. Ref is empty for cgroups that are
// not a container's (the host's slices, kubepods, pod-level cgroups).
type Cgroup struct {
	Ref
	ID uint64
	// Path is relative to Root and starts with "/", like /proc/<pid>/cgroup.
	Path string
}

// ID returns the cgroup id of path (relative to Root).
func (c Cgroups) ID(path string) (uint64, error) {
	fi, err := os.Stat(filepath.Join(c.Root, path))
	if err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", path, err)
	}
	return inode(fi), nil
}

// Find returns the path (relative to Root) of the cgroup with the given id.
func (c Cgroups) Find(id uint64) (string, error) {
	var found string
	err := c.walk(func(path string, ino uint64) bool {
		if ino == id {
			found = path
			return false
		}
		return true
	})
	if err != nil {
		return "", fmt.Errorf("find cgroup %d: %w", id, err)
	}
	if found == "" {
		return "", fmt.Errorf("find cgroup %d under %s: %w", id, c.Root, ErrNotFound)
	}
	return found, nil
}

// Scan returns every cgroup under Root, with Ref set where the path names
// a container.
func (c Cgroups) Scan() ([]Cgroup, error) {
	var out []Cgroup
	err := c.walk(func(path string, ino uint64) bool {
		ref, _ := ParsePath(path)
		out = append(out, Cgroup{Ref: ref, ID: ino, Path: path})
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("scan cgroups under %s: %w", c.Root, err)
	}
	return out, nil
}

// walk calls fn for every cgroup directory until fn returns false. Cgroups
// removed while walking are skipped: containers come and go all the time.
func (c Cgroups) walk(fn func(path string, ino uint64) bool) error {
	stop := errors.New("stop")
	err := filepath.WalkDir(c.Root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fs.SkipDir
			}
			return err
		}
		rel, _ := filepath.Rel(c.Root, p)
		if rel == "." {
			rel = ""
		}
		if !fn("/"+filepath.ToSlash(rel), inode(fi)) {
			return stop
		}
		return nil
	})
	if err == stop {
		return nil
	}
	return err
}

func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// ErrNoCgroup means a pod or container has no cgroup on this node: it is
// gone, not started yet, or runs on another node.
var ErrNoCgroup = errors.New("no cgroup on this node")

// maxKubepodsDepth bounds the search for the kubelet's top cgroup: it is
// /kubepods or /kubepods.slice, below a configured cgroupRoot a few levels
// more.
const maxKubepodsDepth = 4

// PodDir finds the cgroup directory of the pod with uid (absolute path). It
// matches only where the kubelet puts pods, below a kubelet top cgroup:
//
//	kubepods/pod<uid>, kubepods/<qos>/pod<uid>                       (cgroupfs)
//	kubepods.slice/kubepods-pod<u_i_d>.slice,
//	kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<u_i_d>.slice (systemd)
//
// The search for kubepods never enters a pod's or a container's cgroup,
// where a container that can create cgroups (privileged, or delegated)
// could make one named like a neighbour's pod. Should two kubelet trees hold
// the uid, the shallower wins and equal depths are refused.
func (c Cgroups) PodDir(uid string) (string, error) {
	if uid == "" || canonicalUID(uid) != uid {
		return "", fmt.Errorf("pod uid %q is not a uid", uid)
	}
	var roots []string
	err := filepath.WalkDir(c.Root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == c.Root {
				return err
			}
			return nil // removed while walking
		}
		if !d.IsDir() || path == c.Root {
			return nil
		}
		name := d.Name()
		switch {
		case name == "kubepods" || name == "kubepods.slice":
			roots = append(roots, path)
			return fs.SkipDir
		case parsePodSegment(name) != "":
			return fs.SkipDir
		}
		if _, ok := parseContainerSegment(name); ok {
			return fs.SkipDir
		}
		if strings.Count(strings.TrimPrefix(path, c.Root), string(os.PathSeparator)) >= maxKubepodsDepth {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("search %s for pod %s: %w", c.Root, uid, err)
	}
	var found []string
	depth := -1
	for _, root := range roots {
		for _, rel := range podPaths(filepath.Base(root), uid) {
			p := filepath.Join(root, rel)
			if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
				continue
			}
			switch d := strings.Count(root, string(os.PathSeparator)); {
			case depth < 0 || d < depth:
				found, depth = []string{p}, d
			case d == depth:
				found = append(found, p)
			}
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("pod %s: %w", uid, ErrNoCgroup)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("pod %s: %d kubelet cgroups (%s), refusing to guess", uid, len(found), strings.Join(found, ", "))
}

// podPaths are where the kubelet puts the pod cgroup of uid below its top
// cgroup named top, for each QoS class.
func podPaths(top, uid string) []string {
	if top == "kubepods.slice" {
		u := strings.ReplaceAll(uid, "-", "_")
		return []string{
			"kubepods-pod" + u + ".slice",
			"kubepods-besteffort.slice/kubepods-besteffort-pod" + u + ".slice",
			"kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice",
		}
	}
	return []string{"pod" + uid, "besteffort/pod" + uid, "burstable/pod" + uid}
}

// ContainerDir finds the cgroup directory of a container of a pod
// (absolute path). containerID may carry its runtime prefix
// (containerd://…) as the pod status reports it.
func (c Cgroups) ContainerDir(podUID, containerID string) (string, error) {
	_, id := SplitContainerID(containerID)
	if !isHexID(id) {
		return "", fmt.Errorf("container id %q is not a runtime id", containerID)
	}
	pod, err := c.PodDir(podUID)
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(pod)
	if err != nil {
		return "", fmt.Errorf("read pod cgroup %s: %w", pod, err)
	}
	for _, e := range entries {
		if ref, ok := parseContainerSegment(e.Name()); e.IsDir() && ok && ref.ContainerID == id {
			return filepath.Join(pod, e.Name()), nil
		}
	}
	return "", fmt.Errorf("container %s of pod %s: %w", id, podUID, ErrNoCgroup)
}

// PIDs lists the processes of the cgroup dir and of its descendants, sorted.
func PIDs(dir string) ([]int, error) {
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

// KillCgroup kills every process of the cgroup dir and its descendants at
// once through cgroup.kill (Linux 5.14+), forks included. The cgroup file
// system must be mounted writable.
func KillCgroup(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		return fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	return nil
}
