package host_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/host"
)

// fakeProc writes a /proc/<pid> the way a process could shape it.
func fakeProc(t *testing.T, pid string, files map[string]string) host.Proc {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, pid, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return host.Proc{Root: root}
}

// TestProcReadsWhatAProcessShapesWithinBounds: a comm with parentheses and
// spaces, a command line over the bound, and environment values (which stay
// out unless asked for).
func TestProcReadsWhatAProcessShapesWithinBounds(t *testing.T) {
	stat := "42 (a) b) (c) S 7 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10"
	long := strings.Repeat("A", host.MaxCmdlineBytes+100)
	p := fakeProc(t, "42", map[string]string{
		"stat":    stat,
		"cmdline": "/bin/miner\x00-o\x00" + long + "\x00",
		"environ": "TOKEN=s3cret\x00PATH=/bin\x00",
		"status":  "Name:\tminer\nUid:\t1000\t1000\t1000\t1000\n",
		"cgroup":  "12:memory:/x\n0::/kubepods/besteffort/podu/c\n",
	})
	st, err := p.Stat(42)
	if err != nil || st.Comm != "a) b) (c" || st.PPID != 7 || st.StartTicks != 98765 {
		t.Errorf("Stat = %+v, %v", st, err)
	}
	args, cut, err := p.Cmdline(42)
	if err != nil || !cut || len(strings.Join(args, "\x00")) > host.MaxCmdlineBytes {
		t.Errorf("Cmdline: %d bytes, cut %v, %v", len(strings.Join(args, "\x00")), cut, err)
	}
	env, _ := p.Environ(42, false)
	if strings.Join(env, ",") != "TOKEN,PATH" {
		t.Errorf("Environ without values = %v", env)
	}
	env, _ = p.Environ(42, true)
	if strings.Join(env, ",") != "TOKEN=s3cret,PATH=/bin" {
		t.Errorf("Environ with values = %v", env)
	}
	if cg, err := p.Cgroup(42); err != nil || cg != "/kubepods/besteffort/podu/c" {
		t.Errorf("Cgroup = %q, %v", cg, err)
	}
	if uid, err := p.UID(42); err != nil || uid != 1000 {
		t.Errorf("UID = %d, %v", uid, err)
	}
	proc, err := p.Process(42, false)
	if err != nil || proc.Name != "a) b) (c" || strings.Contains(strings.Join(proc.Env, ","), "s3cret") {
		t.Errorf("Process = %+v, %v", proc, err)
	}
}
