package node

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// process is a program of the node (containerd, kubelet) in its own process
// group, with stdout and stderr in <dir>/<name>.log.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process is reaped
	err     error
}

// spawn starts the program from one OS thread that lives as long as the test
// binary: Pdeathsig fires when the forking *thread* exits, and the kernel then
// kills the program if the test binary dies without cleaning up.
func spawn(dir, name, path string, args []string, env []string) (*process, error) {
	spawnerOnce.Do(func() {
		spawner = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked
			for f := range spawner {
				f()
			}
		}()
	})
	var p *process
	var err error
	done := make(chan struct{})
	spawner <- func() {
		p, err = startProcess(dir, name, path, args, env)
		close(done)
	}
	<-done
	return p, err
}

var (
	spawnerOnce sync.Once
	spawner     chan func()
)

func startProcess(dir, name, path string, args, env []string) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log for %s: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// No inherited environment: a developer's KUBECONFIG or CONTAINERD_*
	// would change what the programs do.
	cmd.Env = append([]string{"HOME=" + dir, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR=" + dir}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
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

func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the group, SIGKILL after grace, and returns once the
// leader is reaped and the group is gone.
func (p *process) stop(grace time.Duration) {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// tail is the end of the program's log, for error messages.
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

// failure wraps err with the program's state and log tail.
func (p *process) failure(what string, err error) error {
	state := "still running"
	if done, exitErr := p.exited(); done {
		state = fmt.Sprintf("exited: %v", exitErr)
	}
	return fmt.Errorf("%s: %s (%s): %w\n%s", what, p.name, state, err, p.tail(40))
}
