// Package proc runs the programs of riposte's test harnesses (etcd,
// kube-apiserver, kube-controller-manager, containerd, the kubelet) as child
// processes that cannot outlive the test binary, and reserves loopback ports
// for them.
package proc

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Process is a program running in its own process group, with stdout and
// stderr in <dir>/<name>.log.
type Process struct {
	Name    string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // exit status, valid after done is closed
}

// Start runs path with args in dir. The environment is HOME and TMPDIR set
// to dir, a system PATH, and env: nothing is inherited, so a developer's
// KUBECONFIG, ETCD_* or CONTAINERD_* variables never change what the
// programs do.
//
// The program is forked from one OS thread that lives as long as the test
// binary: Pdeathsig fires when the forking *thread* exits (and Go may retire
// other threads while a test goes on), so the kernel kills the program only
// when the test binary itself dies without cleaning up.
func Start(dir, name, path string, args, env []string) (*Process, error) {
	spawnerOnce.Do(func() {
		spawner = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked
			for f := range spawner {
				f()
			}
		}()
	})
	var p *Process
	var err error
	done := make(chan struct{})
	spawner <- func() {
		p, err = start(dir, name, path, args, env)
		close(done)
	}
	<-done
	return p, err
}

var (
	spawnerOnce sync.Once
	spawner     chan func()
)

func start(dir, name, path string, args, env []string) (*Process, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log for %s: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append([]string{"HOME=" + dir, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR=" + dir}, env...)
	// Own group, so Stop kills the program and anything it forks at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the program's pid (also its process group id).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process is gone, with its exit error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the group, SIGKILL after grace, and returns once the
// leader is reaped; anything it forked and left in the group is killed too.
func (p *Process) Stop(grace time.Duration) {
	pgid := p.PID()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// Tail is the last n lines of the log, for error messages.
func (p *Process) Tail(n int) string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.LogPath, err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- last %d lines of %s ---\n%s", len(lines), p.LogPath, bytes.Join(lines, []byte("\n")))
}

// Failure wraps err with the process's state and log tail, so a start-up
// error shows why the program did not come up.
func (p *Process) Failure(what string, err error) error {
	state := "still running"
	if done, exitErr := p.Exited(); done {
		state = fmt.Sprintf("exited: %v", exitErr)
	}
	return fmt.Errorf("%s: %s (%s): %w\n%s", what, p.Name, state, err, p.Tail(40))
}

// FreePorts reserves n distinct loopback ports by listening on port 0, then
// releases them for the programs to bind. Another process could take one in
// between; callers retry when a program reports "address already in use".
func FreePorts(n int) ([]int, error) {
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
