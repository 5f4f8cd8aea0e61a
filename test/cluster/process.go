package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// process is one control-plane program running in its own process group with
// stdout and stderr going to <dir>/<name>.log.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited and been reaped
	err     error         // exit status, valid after done is closed
}

func startProcess(binDir, dir, name string, args []string) (*process, error) {
	path := filepath.Join(binDir, name)
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log for %s: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// No inherited environment: KUBECONFIG or ETCD_* variables of the developer
	// would otherwise change what the programs do.
	cmd.Env = []string{"HOME=" + dir, "PATH=/usr/bin:/bin", "TMPDIR=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own group, so Stop can kill the program and anything it forks at once.
		Setpgid: true,
		// If the test binary dies without running cleanups (a panic in TestMain,
		// SIGKILL, os.Exit), the kernel kills the child instead of leaving it.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process is gone, with its exit error.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop asks the group to terminate, and kills it if it has not exited within
// grace. It returns once the process has been reaped.
func (p *process) stop(grace time.Duration) {
	pgid := p.cmd.Process.Pid // == pgid because of Setpgid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Anything the leader forked and left behind in the group goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// tail returns the last n lines of the log, for error messages.
func (p *process) tail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- last %d lines of %s ---\n%s", len(lines), p.logPath, bytes.Join(lines, []byte("\n")))
}

// failure wraps err with the process's state and log tail, so a startup error
// shows why the program did not come up.
func (p *process) failure(what string, err error) error {
	state := "still running"
	if done, exitErr := p.exited(); done {
		state = fmt.Sprintf("exited: %v", exitErr)
	}
	return fmt.Errorf("%s: %s (%s): %w\n%s", what, p.name, state, err, p.tail(40))
}

// freePorts reserves n distinct loopback ports by listening on port 0, then
// releases them for the programs to bind. Another process could take one in
// between; Start retries once when a log says so (see isPortClash).
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a loopback port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func isPortClash(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

// errExited is returned by the readiness loops when the program died.
var errExited = errors.New("process exited before it was ready")
