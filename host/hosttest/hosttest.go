// Package hosttest makes kubelet-like cgroups with a process in them on the
// real kernel, for tests of code that reads or acts on cgroups.
package hosttest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/host"
)

// KubeletCgroup creates <root>/riposte-test-<pid>/kubepods/besteffort/pod<uid>/<id>
// as the kubelet's cgroupfs driver would, starts `sleep 60` in it and returns
// the process and the cgroup's path relative to root. Everything is removed
// at the end of the test. It fails (never skips) without a writable cgroup v2.
func KubeletCgroup(t testing.TB, root, uid, id string) (*exec.Cmd, string) {
	t.Helper()
	testRoot := fmt.Sprintf("/riposte-test-%d", os.Getpid())
	rel := testRoot + "/kubepods/besteffort/pod" + uid + "/" + id
	dir := filepath.Join(root, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create kubelet-like cgroup (needs root and cgroup v2 at %s): %v", root, err)
	}
	t.Cleanup(func() {
		// Cgroup directories are removed one by one, leaf first.
		for p := dir; p != filepath.Dir(filepath.Join(root, testRoot)); p = filepath.Dir(p) {
			_ = os.Remove(p)
		}
	})
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start process: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatalf("move pid %d into %s: %v", cmd.Process.Pid, rel, err)
	}
	return cmd, rel
}

// ProcCgroupID reads the cgroup v2 path of pid from /proc and returns it
// with the kernel's id for it (the directory's inode).
func ProcCgroupID(t testing.TB, c host.Cgroups, pid int) (string, uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			id, err := c.ID(p)
			if err != nil {
				t.Fatal(err)
			}
			return p, id
		}
	}
	t.Fatalf("no cgroup v2 line in /proc/%d/cgroup: %q", pid, b)
	return "", 0
}
