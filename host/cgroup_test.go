package host_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/host/hosttest"
)

const (
	hostTestID  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	hostTestUID = "8d3f2a1c-1b2c-4d5e-8f90-123456789abc"
)

func TestCgroupsOnTheRealKernel(t *testing.T) {
	c := host.Cgroups{Root: host.DefaultCgroupRoot()}
	cmd, rel := hosttest.KubeletCgroup(t, c.Root, hostTestUID, hostTestID)
	path, id := hosttest.ProcCgroupID(t, c, cmd.Process.Pid)
	if path != rel {
		t.Fatalf("/proc says %s, want %s", path, rel)
	}
	if found, err := c.Find(id); err != nil || found != rel {
		t.Errorf("Find(%d) = %q, %v; want %q", id, found, err, rel)
	}
	scan, err := c.Scan()
	if err != nil {
		t.Fatal(err)
	}
	var got *host.Cgroup
	for i := range scan {
		if scan[i].ID == id {
			got = &scan[i]
		}
	}
	if got == nil || got.ContainerID != hostTestID || got.PodUID != hostTestUID || got.Path != rel {
		t.Errorf("scan entry = %+v", got)
	}
}

// cgroupTree creates the cgroup directories rels (slash-separated, relative
// to a fresh private root in the real cgroup v2 hierarchy) and removes them,
// deepest first, at the end of the test.
func cgroupTree(t *testing.T, rels ...string) string {
	t.Helper()
	root, err := os.MkdirTemp(host.DefaultCgroupRoot(), "riposte-test-")
	if err != nil {
		t.Fatalf("create a test cgroup (needs root and cgroup v2 at %s): %v", host.DefaultCgroupRoot(), err)
	}
	t.Cleanup(func() {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	})
	for _, rel := range rels {
		if err := os.MkdirAll(filepath.Join(root, filepath.FromSlash(rel)), 0o755); err != nil {
			t.Fatalf("create cgroup %s: %v", rel, err)
		}
	}
	return root
}

// TestPodDirOnlyAtTheKubeletsPlace: a container that can create cgroups
// below its own makes one named like a neighbour's pod and container. For
// both cgroup drivers, PodDir (and so isolation and kills) never takes it
// for the neighbour's: without the real pod on the node the pod is not
// found, with it the real one is, whatever the walk order.
func TestPodDirOnlyAtTheKubeletsPlace(t *testing.T) {
	const (
		ownUID    = "11111111-2222-4333-8444-555555555555"
		victimUID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
		victimID  = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	)
	u := func(uid string) string { return strings.ReplaceAll(uid, "-", "_") }
	for _, d := range []struct {
		driver, own, fake, real string
	}{
		{"systemd",
			"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + u(ownUID) + ".slice/cri-containerd-" + hostTestID + ".scope",
			"/kubepods-besteffort-pod" + u(victimUID) + ".slice/cri-containerd-" + victimID + ".scope",
			"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u(victimUID) + ".slice"},
		{"cgroupfs",
			"kubepods/besteffort/pod" + ownUID + "/" + hostTestID,
			"/kubepods/pod" + victimUID + "/" + victimID,
			"kubepods/burstable/pod" + victimUID},
	} {
		t.Run(d.driver, func(t *testing.T) {
			root := cgroupTree(t, d.own+d.fake)
			c := host.Cgroups{Root: root}
			if dir, err := c.PodDir(ownUID); err != nil || dir != filepath.Join(root, filepath.Dir(filepath.FromSlash(d.own))) {
				t.Fatalf("PodDir(own) = %q, %v", dir, err)
			}
			if dir, err := c.PodDir(victimUID); !errors.Is(err, host.ErrNoCgroup) {
				t.Fatalf("PodDir(victim) = %q, %v; the fake inside a container was taken for the pod", dir, err)
			}
			if dir, err := c.ContainerDir(victimUID, victimID); !errors.Is(err, host.ErrNoCgroup) {
				t.Fatalf("ContainerDir(victim) = %q, %v", dir, err)
			}
			if err := os.MkdirAll(filepath.Join(root, filepath.FromSlash(d.real)), 0o755); err != nil {
				t.Fatal(err)
			}
			if dir, err := c.PodDir(victimUID); err != nil || dir != filepath.Join(root, filepath.FromSlash(d.real)) {
				t.Fatalf("PodDir(victim) with the real pod present = %q, %v; want %s", dir, err, d.real)
			}
		})
	}
}

// TestPodDirRefusesTwoKubeletTreesAtOneDepth: two kubelet-shaped trees at
// the same depth holding one uid cannot be told apart; the shallower of two
// wins.
func TestPodDirRefusesTwoKubeletTreesAtOneDepth(t *testing.T) {
	root := cgroupTree(t, "a/kubepods/pod"+hostTestUID, "b/kubepods.slice/kubepods-pod"+strings.ReplaceAll(hostTestUID, "-", "_")+".slice")
	c := host.Cgroups{Root: root}
	if dir, err := c.PodDir(hostTestUID); err == nil || !strings.Contains(err.Error(), "refusing to guess") {
		t.Fatalf("PodDir = %q, %v; want a refusal", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(root, "kubepods", "burstable", "pod"+hostTestUID), 0o755); err != nil {
		t.Fatal(err)
	}
	if dir, err := c.PodDir(hostTestUID); err != nil || dir != filepath.Join(root, "kubepods", "burstable", "pod"+hostTestUID) {
		t.Fatalf("PodDir = %q, %v; want the shallowest", dir, err)
	}
}
