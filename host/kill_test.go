package host_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/host/hosttest"
)

// TestKillProcessOnlyInItsCgroup: a kill aimed at a container's cgroup kills
// a process in it, and refuses one outside it (a reused pid), pid 1 and the
// caller itself; a process already gone reads as ErrGone.
func TestKillProcessOnlyInItsCgroup(t *testing.T) {
	c := host.Cgroups{Root: host.DefaultCgroupRoot()}
	in, rel := hosttest.KubeletCgroup(t, c.Root, hostTestUID, hostTestID)
	dir := filepath.Join(c.Root, rel)
	out := exec.Command("sleep", "60")
	if err := out.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = out.Process.Kill(); _ = out.Wait() })
	var p host.Proc

	if err := p.KillProcess(out.Process.Pid, host.Expect{CgroupDir: dir}); !errors.Is(err, host.ErrNotInCgroup) {
		t.Fatalf("kill of a process outside the cgroup: %v, want ErrNotInCgroup", err)
	}
	if err := syscall.Kill(out.Process.Pid, 0); err != nil {
		t.Fatalf("the process outside the cgroup is gone: %v", err)
	}
	for _, pid := range []int{1, os.Getpid(), 0, -5} {
		if err := p.KillProcess(pid, host.Expect{Host: true}); err == nil {
			t.Errorf("KillProcess(%d) succeeded, want a refusal", pid)
		}
	}
	if err := p.KillProcess(in.Process.Pid, host.Expect{CgroupDir: dir}); err != nil {
		t.Fatalf("kill in the cgroup: %v", err)
	}
	state, _ := in.Process.Wait()
	if ws := state.String(); ws != "signal: killed" {
		t.Errorf("process in the cgroup ended with %q, want signal: killed", ws)
	}
	if err := p.KillProcess(in.Process.Pid, host.Expect{CgroupDir: dir}); !errors.Is(err, host.ErrGone) {
		t.Errorf("second kill: %v, want ErrGone", err)
	}
}

// TestKillProcessChecksStartTimeAndHostThroughThePidfd: a process whose
// start time differs from the one aimed at holds a reused pid and is not
// killed; a host kill refuses a container's process; a kill that names
// neither a cgroup nor a host process is refused; the process whose start
// time and cgroup match is killed.
func TestKillProcessChecksStartTimeAndHostThroughThePidfd(t *testing.T) {
	c := host.Cgroups{Root: host.DefaultCgroupRoot()}
	var p host.Proc
	hostProc := exec.Command("sleep", "60")
	if err := hostProc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hostProc.Process.Kill(); _ = hostProc.Wait() })
	pid := hostProc.Process.Pid
	st, err := p.Stat(pid)
	if err != nil || st.StartTicks == 0 {
		t.Fatalf("stat of %d: %+v, %v", pid, st, err)
	}
	for _, other := range []uint64{st.StartTicks - 1, st.StartTicks + 1} {
		if err := p.KillProcess(pid, host.Expect{Host: true, StartTicks: other}); !errors.Is(err, host.ErrNotSameProcess) {
			t.Fatalf("kill with start tick %d (the process's is %d): %v, want ErrNotSameProcess", other, st.StartTicks, err)
		}
	}
	if err := p.KillProcess(pid, host.Expect{}); err == nil {
		t.Fatal("a kill that names neither a cgroup nor a host process was done")
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the process was killed by a refused kill: %v", err)
	}

	in, rel := hosttest.KubeletCgroup(t, c.Root, hostTestUID, hostTestID)
	if err := p.KillProcess(in.Process.Pid, host.Expect{Host: true}); err == nil || !strings.Contains(err.Error(), "runs in container "+hostTestID) {
		t.Fatalf("host kill of a container's process: %v, want a refusal naming the container", err)
	}
	inSt, _ := p.Stat(in.Process.Pid)
	if err := p.KillProcess(in.Process.Pid, host.Expect{CgroupDir: filepath.Join(c.Root, rel), StartTicks: inSt.StartTicks + 1}); !errors.Is(err, host.ErrNotSameProcess) {
		t.Fatalf("container kill with another start time: %v, want ErrNotSameProcess", err)
	}
	if err := p.KillProcess(in.Process.Pid, host.Expect{CgroupDir: filepath.Join(c.Root, rel), StartTicks: inSt.StartTicks}); err != nil {
		t.Fatalf("container kill with its start time: %v", err)
	}

	if err := p.KillProcess(pid, host.Expect{Host: true, StartTicks: st.StartTicks}); err != nil {
		t.Fatalf("kill with the process's own start time: %v", err)
	}
	state, _ := hostProc.Process.Wait()
	if ws := state.String(); ws != "signal: killed" {
		t.Errorf("the host process ended with %q, want signal: killed", ws)
	}
}

// TestContainerDirAndPIDs finds a kubelet-like container cgroup by pod uid
// and container id (with or without the runtime prefix) and lists its process.
func TestContainerDirAndPIDs(t *testing.T) {
	c := host.Cgroups{Root: host.DefaultCgroupRoot()}
	cmd, rel := hosttest.KubeletCgroup(t, c.Root, hostTestUID, hostTestID)
	// The test's own root: another run of these tests at the same time has
	// a kubelet tree with the same pod uid at the same depth.
	top, rel, _ := strings.Cut(strings.TrimPrefix(rel, "/"), "/")
	c.Root, rel = filepath.Join(c.Root, top), "/"+rel
	for _, id := range []string{hostTestID, "containerd://" + hostTestID} {
		dir, err := c.ContainerDir(hostTestUID, id)
		if err != nil {
			t.Fatalf("ContainerDir(%s): %v", id, err)
		}
		if want := filepath.Join(c.Root, rel); dir != want {
			t.Errorf("ContainerDir = %s, want %s", dir, want)
		}
		pids, err := host.PIDs(dir)
		if err != nil || len(pids) != 1 || pids[0] != cmd.Process.Pid {
			t.Errorf("PIDs = %v, %v; want [%d]", pids, err, cmd.Process.Pid)
		}
	}
	if _, err := c.ContainerDir("aaaaaaaa-1b2c-4d5e-8f90-123456789abc", hostTestID); !errors.Is(err, host.ErrNoCgroup) {
		t.Errorf("unknown pod: %v, want ErrNoCgroup", err)
	}
	for _, bad := range []string{"../..", "pod/../x", ""} {
		if _, err := c.PodDir(bad); err == nil || errors.Is(err, host.ErrNoCgroup) {
			t.Errorf("PodDir(%q) = %v, want an invalid-uid error", bad, err)
		}
	}
}
