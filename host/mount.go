package host

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount is one line of a mountinfo file (proc(5)).
type Mount struct {
	ID, Parent int
	// Root is the mounted directory of the file system, Point where it is
	// mounted (octal escapes undone).
	Root, Point string
	FSType      string
	Source      string
	// Options are the per-mount options, SuperOptions the file system's
	// (for overlay: lowerdir=…,upperdir=…,workdir=…).
	Options, SuperOptions string
}

// maxMounts bounds a mount table read: a container chooses how many mounts
// its own namespace has.
const maxMounts = 1 << 16

// ReadMounts parses a mountinfo file such as /proc/self/mountinfo.
// Malformed lines are skipped.
func ReadMounts(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(out) >= maxMounts {
			return out, fmt.Errorf("read mount table %s: more than %d mounts", path, maxMounts)
		}
		if m, ok := ParseMount(sc.Text()); ok {
			out = append(out, m)
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("read mount table %s: %w", path, err)
	}
	return out, nil
}

// ParseMount parses one mountinfo line:
// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue".
func ParseMount(line string) (Mount, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return Mount{}, false
	}
	f := strings.Fields(pre)
	a := strings.Fields(post)
	if len(f) < 6 || len(a) < 2 {
		return Mount{}, false
	}
	m := Mount{Root: unescape(f[3]), Point: unescape(f[4]), Options: f[5], FSType: a[0], Source: unescape(a[1])}
	var err1, err2 error
	m.ID, err1 = strconv.Atoi(f[0])
	m.Parent, err2 = strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return Mount{}, false
	}
	if len(a) > 2 {
		m.SuperOptions = a[2]
	}
	return m, true
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
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

// Option returns the value of key=value in a comma-separated option list.
func Option(opts, key string) (string, bool) {
	for _, o := range strings.Split(opts, ",") {
		if v, ok := strings.CutPrefix(o, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// ErrNoRootfs means the host's mount table has no runtime mount for a
// container's root file system: riposte does not know where its files are.
var ErrNoRootfs = errors.New("no root file system mount for the container in the host's mount table")

// RootfsUpper returns the overlay upper directory of a container's root
// file system — where everything the container wrote since it started is —
// as the container runtime mounted it in the host's mount namespace
// (containerd: <state>/io.containerd.runtime.v2.task/<namespace>/<id>/rootfs).
// hostMountinfo is the host's table (/proc/1/mountinfo with the host's pid
// namespace). The container's own mountinfo is never used: a container
// that can mount (in a user namespace) writes whatever upperdir it likes
// there, and reading it in the agent's mount namespace would copy host files.
func RootfsUpper(hostMountinfo, containerID string) (string, error) {
	_, id := SplitContainerID(containerID)
	if !isHexID(id) {
		return "", fmt.Errorf("container id %q is not a runtime id", containerID)
	}
	mounts, err := ReadMounts(hostMountinfo)
	if err != nil {
		return "", err
	}
	suffix := "/" + id + "/rootfs"
	var found []string
	for _, m := range mounts {
		if m.FSType != "overlay" || !strings.HasSuffix(m.Point, suffix) ||
			!strings.Contains(m.Point, "/io.containerd.runtime.v2.task/") {
			continue
		}
		upper, ok := Option(m.SuperOptions, "upperdir")
		if !ok || !filepath.IsAbs(upper) || filepath.Clean(upper) != upper {
			continue
		}
		found = append(found, upper)
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("container %s: %w", id, ErrNoRootfs)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("container %s: %d root file system mounts in the host's mount table, refusing to guess", id, len(found))
}
