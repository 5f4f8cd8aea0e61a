package enrich

import (
	"context"
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

// kubeletCgroup creates <root>/<testroot>/kubepods/besteffort/pod<uid>/<id>
// like the kubelet's cgroupfs driver, starts a process in it and returns the
// process and the cgroup's path relative to root. Everything is removed at
// the end of the test. It fails (never skips) without a writable cgroup v2.
func kubeletCgroup(t *testing.T, root, uid, id string) (*exec.Cmd, string) {
	t.Helper()
	testRoot := fmt.Sprintf("/riposte-test-%d", os.Getpid())
	rel := testRoot + "/kubepods/besteffort/pod" + uid + "/" + id
	dir := filepath.Join(root, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create kubelet-like cgroup (needs root and cgroup v2 at %s): %v", root, err)
	}
	t.Cleanup(func() {
		// Remove leaf first: cgroup directories are removed one by one.
		for p := dir; p != filepath.Dir(filepath.Join(root, testRoot)); p = filepath.Dir(p) {
			_ = os.Remove(p)
		}
	})
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start process: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatalf("move pid %d into %s: %v", cmd.Process.Pid, rel, err)
	}
	return cmd, rel
}

// procCgroupID reads the cgroup v2 path of pid from /proc and returns the
// kernel's id for it (the directory inode).
func procCgroupID(t *testing.T, c Cgroups, pid int) (string, uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			id, err := c.ID(p)
			if err != nil {
				t.Fatal(err)
			}
			return p, id
		}
	}
	t.Fatalf("no cgroup v2 line in /proc/%d/cgroup: %q", pid, b)
	return "", 0
}

func TestCgroupsOnTheRealKernel(t *testing.T) {
	c := Cgroups{Root: DefaultCgroupRoot()}
	cmd, rel := kubeletCgroup(t, c.Root, testUID, testID)
	path, id := procCgroupID(t, c, cmd.Process.Pid)
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
	var got *Cgroup
	for i := range scan {
		if scan[i].ID == id {
			got = &scan[i]
		}
	}
	if got == nil || got.ContainerID != testID || got.PodUID != testUID || got.Path != rel {
		t.Errorf("scan entry = %+v", got)
	}

	// End to end on the node side: a miss wakes the scanner, which maps
	// the cgroup so the next event resolves.
	s, _ := newTestStore(t)
	mustUpdate(t, s, func(tx *Txn) error {
		return tx.PutPod(testPod(testUID, "web"), []*Container{{ID: testID, ImageDigest: "sha256:aa"}})
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sc := &Scanner{Store: s, Cgroups: c, Interval: time.Hour, MinGap: time.Millisecond}
	ev := engine.Event{Kind: engine.KindExec, Time: time.Now(), Process: engine.Process{PID: int64(cmd.Process.Pid), CgroupID: id}}
	s.Enrich(&ev) // miss, before the scanner's first scan is certain
	go sc.Run(ctx, func(err error) { t.Error(err) })
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev = engine.Event{Kind: engine.KindExec, Time: t0, Process: engine.Process{CgroupID: id}}
		s.Enrich(&ev)
		if ev.Pod.UID != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ev.Pod.Name != "web" || ev.Container.ImageDigest != "sha256:aa" {
		t.Errorf("event not enriched after scan: %+v", ev)
	}

	// The test's own process runs in a host cgroup: no identity, counted
	// as host rather than as a miss.
	_, self := procCgroupID(t, c, os.Getpid())
	unresolved := s.Stats().Get(KindContainer, Unresolved)
	host := engine.Event{Kind: engine.KindExec, Time: t0, Process: engine.Process{CgroupID: self}}
	s.Enrich(&host)
	if host.Container.ID != "" || host.Pod.UID != "" {
		t.Errorf("host process got identity %+v", host.Pod)
	}
	if got := s.Stats().Get(KindContainer, Host); got != 1 {
		t.Errorf("host = %d, want 1", got)
	}
	if got := s.Stats().Get(KindContainer, Unresolved); got != unresolved {
		t.Errorf("host process counted as unresolved (%d → %d)", unresolved, got)
	}
}
