package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultCgroupRoot is where the cgroup v2 hierarchy is mounted on this kind of
// node (hybrid mode); on a unified-only node it is /sys/fs/cgroup.
const DefaultCgroupRoot = "/sys/fs/cgroup/unified"

// ErrNotFound means the pod or container has no cgroup on this node.
var ErrNotFound = errors.New("no cgroup on this node")

// podDirNames are the names kubelet gives a pod's cgroup: pod<uid> with the
// cgroupfs driver, kubepods-<qos>-pod<uid_with_underscores>.slice with systemd.
func podDirNames(uid string) (string, string) {
	return "pod" + uid, "pod" + strings.ReplaceAll(uid, "-", "_") + ".slice"
}

// PodCgroup finds the pod's cgroup directory under root (kubepods/…/pod<uid>).
func PodCgroup(root, uid string) (string, error) {
	if uid == "" || strings.ContainsAny(uid, "/.") {
		return "", fmt.Errorf("pod uid %q is invalid", uid)
	}
	plain, slice := podDirNames(uid)
	var found string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			return nil // a cgroup removed while walking
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if name == plain || strings.HasSuffix(name, slice) {
			found = path
			return fs.SkipAll
		}
		// Pods sit at most three levels down (kubepods/besteffort/pod…), below a
		// configured cgroupRoot possibly a few more.
		if strings.Count(strings.TrimPrefix(path, root), string(os.PathSeparator)) >= 5 {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("search %s for pod %s: %w", root, uid, err)
	}
	if found == "" {
		return "", fmt.Errorf("pod %s: %w", uid, ErrNotFound)
	}
	return found, nil
}

// trimRuntime drops the runtime prefix of a containerID (containerd://abc → abc).
func trimRuntime(id string) string {
	if i := strings.Index(id, "://"); i >= 0 {
		return id[i+3:]
	}
	return id
}

// ContainerCgroup finds the container's directory inside the pod's cgroup
// (<id> with cgroupfs, cri-containerd-<id>.scope with systemd).
func ContainerCgroup(root, podUID, containerID string) (string, error) {
	pod, err := PodCgroup(root, podUID)
	if err != nil {
		return "", err
	}
	id := trimRuntime(containerID)
	if id == "" {
		return "", fmt.Errorf("container id is empty")
	}
	entries, err := os.ReadDir(pod)
	if err != nil {
		return "", fmt.Errorf("read pod cgroup %s: %w", pod, err)
	}
	for _, e := range entries {
		if e.IsDir() && strings.Contains(e.Name(), id) {
			return filepath.Join(pod, e.Name()), nil
		}
	}
	return "", fmt.Errorf("container %s of pod %s: %w", id, podUID, ErrNotFound)
}
