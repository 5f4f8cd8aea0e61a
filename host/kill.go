package host

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	syscallNoFollow = syscall.O_NOFOLLOW
	syscallNonBlock = syscall.O_NONBLOCK
)

var errESRCH = syscall.ESRCH

// ErrNotInCgroup means a process is not in the cgroup a kill was aimed at:
// its pid was reused by another process, or it left the container.
var ErrNotInCgroup = errors.New("process is not in the expected cgroup")

// KillProcess sends SIGKILL to pid, but only if the process runs in the
// cgroup directory cgroupDir (absolute, under the cgroup v2 mount) or below
// it, as that cgroup's own cgroup.procs lists it. Pids are reused: killing an
// unrelated process would turn the response into the incident. It holds a
// pidfd from before the check until the signal, so the process checked is
// the process killed. Membership is read from cgroupfs rather than from
// /proc/<pid>/cgroup, whose paths depend on the reader's cgroup namespace.
// cgroupDir "" skips the check; callers allow that only for host processes a
// playbook explicitly lets them kill. pid 1 and the caller itself are never
// killed.
func (p Proc) KillProcess(pid int, cgroupDir string) error {
	if pid <= 1 || pid == os.Getpid() {
		return fmt.Errorf("refusing to kill pid %d", pid)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("process %d: %w", pid, ErrGone)
		}
		return fmt.Errorf("open pidfd of %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if cgroupDir != "" {
		pids, err := PIDs(cgroupDir)
		if err != nil {
			return err
		}
		if !slices.Contains(pids, pid) {
			// Gone, or another process: either way not the one to kill.
			if unix.PidfdSendSignal(fd, 0, nil, 0) != nil {
				return fmt.Errorf("process %d: %w", pid, ErrGone)
			}
			return fmt.Errorf("process %d is not in cgroup %s: %w", pid, cgroupDir, ErrNotInCgroup)
		}
		// The listing named the pidfd's process only if it still lives: a
		// pid is not reused while its process exists.
		if err := unix.PidfdSendSignal(fd, 0, nil, 0); err != nil {
			return fmt.Errorf("process %d: %w", pid, ErrGone)
		}
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("process %d: %w", pid, ErrGone)
		}
		return fmt.Errorf("SIGKILL pid %d: %w", pid, err)
	}
	return nil
}
