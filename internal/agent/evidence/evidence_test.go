package evidence

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/engine"
)

func TestCaptureCopiesProcFactsAndExecutableWithManifest(t *testing.T) {
	cmd := exec.Command("/bin/sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	ev := &engine.Event{Kind: engine.KindExec, Time: time.Now(), Process: engine.Process{PID: int64(cmd.Process.Pid), Binary: "/bin/sleep"}}
	out, m, err := Capture(t.TempDir(), "ns/rule", ev)
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.ReadFile("/bin/sleep")
	got, _ := os.ReadFile(filepath.Join(out, "exe"))
	if !bytes.Equal(exe, got) {
		t.Errorf("captured executable differs from /bin/sleep (%d vs %d bytes)", len(got), len(exe))
	}
	cl, _ := os.ReadFile(filepath.Join(out, "proc/cmdline"))
	if string(cl) != "/bin/sleep\x0030\x00" {
		t.Errorf("cmdline = %q", cl)
	}
	for _, f := range []string{"proc/status", "proc/maps", "proc/links.txt", "event.json", "exe"} {
		if m.Files[f] == "" {
			t.Errorf("manifest lacks %s: %v (missing %v)", f, m.Files, m.Missing)
		}
	}
	if err := Verify(out); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(out, "exe"), []byte("tampered"), 0o600)
	if err := Verify(out); err == nil {
		t.Errorf("Verify accepted a tampered executable")
	}
}
