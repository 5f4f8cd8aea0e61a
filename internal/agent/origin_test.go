package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/engine"
)

// TestOriginIsDecidedByTheKernelAtTheNamespaceCrossing: a process below a
// pid namespace's init (a container's entrypoint) has origin entrypoint; a
// process below one that joined that namespace later (what runc exec does
// for kubectl exec) has origin exec, with OriginPID the joining process; a
// process of that exec tree that makes itself pid 1 of a nested namespace
// (unshare --pid --fork) keeps origin exec: the origin is inherited, never
// chosen; a host process has none.
func TestOriginIsDecidedByTheKernelAtTheNamespaceCrossing(t *testing.T) {
	for _, tool := range []string{"unshare", "nsenter", "cat", "sleep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test needs %s (util-linux, coreutils): %v", tool, err)
		}
	}
	st := start(t)
	if _, err := st.a.SetRules([]*engine.Rule{compile(t, "cat", `event.kind == "exec" && process.name == "cat"`)}, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	marker := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	entry, execd, nested, hostm := marker("entrypoint"), marker("exec"), marker("nested"), marker("host")

	// The "container": a new pid namespace whose init runs cat, then waits.
	ready := filepath.Join(dir, "ready")
	init := exec.Command("unshare", "--pid", "--fork", "/bin/sh", "-c",
		fmt.Sprintf("cat %s; echo $$ > %s; exec sleep 60", entry, ready))
	if err := init.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = init.Process.Kill(); _ = init.Wait() })
	// The namespace's pid 1 is the child of unshare: find it from the host.
	var initPID int
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end) && initPID == 0; time.Sleep(10 * time.Millisecond) {
		initPID = childOf(init.Process.Pid)
	}
	if initPID == 0 {
		t.Fatal("unshare's child (the namespace's init) did not appear within 5s")
	}
	ev := st.wait(t, "exec of cat by the namespace's init", &st.events, func(e *engine.Event) bool { return hasArg(e, entry) })
	if ev.Process.Origin != engine.OriginEntrypoint || ev.Process.OriginPID != int64(initPID) {
		t.Errorf("entrypoint tree: origin %q from pid %d, want %q from %d", ev.Process.Origin, ev.Process.OriginPID, engine.OriginEntrypoint, initPID)
	}

	// The "runtime exec": join the namespace from the host.
	out, err := exec.Command("nsenter", "--target", strconv.Itoa(initPID), "--pid", "--", "/bin/sh", "-c",
		fmt.Sprintf("cat %s; unshare --pid --fork /bin/sh -c 'cat %s'", execd, nested)).CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter: %v\n%s", err, out)
	}
	ev = st.wait(t, "exec of cat in the joined namespace", &st.events, func(e *engine.Event) bool { return hasArg(e, execd) })
	if ev.Process.Origin != engine.OriginExec || ev.Process.OriginPID == 0 || ev.Process.OriginPID == int64(initPID) || ev.Process.OriginTime.IsZero() {
		t.Errorf("exec tree: origin %q from pid %d at %s, want %q from the process nsenter forked into the namespace", ev.Process.Origin, ev.Process.OriginPID, ev.Process.OriginTime, engine.OriginExec)
	}
	execRoot := ev.Process.OriginPID
	ev = st.wait(t, "exec of cat as pid 1 of a nested namespace", &st.events, func(e *engine.Event) bool { return hasArg(e, nested) })
	if ev.Process.Origin != engine.OriginExec || ev.Process.OriginPID != execRoot {
		t.Errorf("nested namespace made by the exec tree: origin %q from pid %d, want %q from %d (inherited)", ev.Process.Origin, ev.Process.OriginPID, engine.OriginExec, execRoot)
	}

	if out, err := exec.Command("cat", hostm).CombinedOutput(); err != nil {
		t.Fatalf("cat: %v\n%s", err, out)
	}
	ev = st.wait(t, "exec of cat on the host", &st.events, func(e *engine.Event) bool { return hasArg(e, hostm) })
	if ev.Process.Origin != "" || ev.Process.OriginPID != 0 {
		t.Errorf("host process: origin %q from pid %d, want none", ev.Process.Origin, ev.Process.OriginPID)
	}
}

func hasArg(e *engine.Event, arg string) bool {
	if e.Kind != engine.KindExec {
		return false
	}
	for _, a := range e.Process.Args {
		if a == arg {
			return true
		}
	}
	return false
}

// childOf returns a child of pid from /proc/<pid>/task/<pid>/children, 0 if none.
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}
