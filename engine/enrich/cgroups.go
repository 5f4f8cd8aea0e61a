package enrich

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

// DefaultCgroupRoot returns the cgroup v2 mount of this host.
func DefaultCgroupRoot() string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "/sys/fs/cgroup"
	}
	return "/sys/fs/cgroup/unified"
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
