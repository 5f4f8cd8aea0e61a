package host_test

import (
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
