package host

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

var errESRCH = syscall.ESRCH

// ErrNotInCgroup means a process is not in the cgroup a kill was aimed at:
// its pid was reused by another process, or it left the container.
var ErrNotInCgroup = errors.New("process is not in the expected cgroup")

// ErrNotSameProcess means the process holding a pid started at another time
// than the one a kill was aimed at: the pid was reused.
var ErrNotSameProcess = errors.New("another process holds the pid")

// Expect says which process a kill is aimed at. At least one of CgroupDir
// and Host is set.
type Expect struct {
	// CgroupDir (absolute, under the cgroup v2 mount): the process runs in
	// this cgroup or below it, as that cgroup's own cgroup.procs lists it.
	// Membership is read from cgroupfs rather than from /proc/<pid>/cgroup,
	// whose paths depend on the reader's cgroup namespace.
	CgroupDir string
	// Host: the process runs in no container (its cgroup path names none).
	// Callers allow it only for host processes a playbook explicitly lets
	// them kill.
	Host bool
	// StartTicks, when not zero, is the process's start time in clock ticks
	// after boot (Stat.StartTicks) as recorded when it was seen: with the
	// pid it names one process across pid reuse.
	StartTicks uint64
}

// KillProcess sends SIGKILL to pid, but only if the process holding it is
// the one want describes. Pids are reused: killing an unrelated process
// would turn the response into the incident. The pidfd is opened before
// any check and the signal goes through it, and the checks read /proc and
// cgroupfs only while that process is alive (a pid is not reused while its
// process exists), so the process checked is the process killed. pid 1 and
// the caller itself are never killed.
func (p Proc) KillProcess(pid int, want Expect) error {
	if pid <= 1 || pid == os.Getpid() {
		return fmt.Errorf("refusing to kill pid %d", pid)
	}
	if want.CgroupDir == "" && !want.Host {
		return fmt.Errorf("refusing to kill pid %d: neither its container's cgroup nor a host process was named", pid)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("process %d: %w", pid, ErrGone)
		}
		return fmt.Errorf("open pidfd of %d: %w", pid, err)
	}
	defer unix.Close(fd)
	// alive reports whether the pidfd's process still runs: when it does,
	// whatever was read about pid since the pidfd was opened was about it.
	alive := func() bool { return unix.PidfdSendSignal(fd, 0, nil, 0) == nil }
	refuse := func(err error) error {
		if !alive() {
			return fmt.Errorf("process %d: %w", pid, ErrGone)
		}
		return err
	}
	if want.StartTicks != 0 {
		st, err := p.Stat(pid)
		if err != nil {
			return refuse(err)
		}
		if st.StartTicks != want.StartTicks {
			return refuse(fmt.Errorf("process %d started at tick %d, the one aimed at at tick %d: %w", pid, st.StartTicks, want.StartTicks, ErrNotSameProcess))
		}
	}
	if want.Host {
		cg, err := p.Cgroup(pid)
		if err != nil {
			return refuse(err)
		}
		if ref, ok := ParsePath(cg); ok {
			return refuse(fmt.Errorf("refusing to kill pid %d as a host process: it runs in container %s", pid, ref.ContainerID))
		}
	}
	if want.CgroupDir != "" {
		pids, err := PIDs(want.CgroupDir)
		if err != nil {
			return refuse(err)
		}
		if !slices.Contains(pids, pid) {
			return refuse(fmt.Errorf("process %d is not in cgroup %s: %w", pid, want.CgroupDir, ErrNotInCgroup))
		}
	}
	if !alive() {
		return fmt.Errorf("process %d: %w", pid, ErrGone)
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("process %d: %w", pid, ErrGone)
		}
		return fmt.Errorf("SIGKILL pid %d: %w", pid, err)
	}
	return nil
}
