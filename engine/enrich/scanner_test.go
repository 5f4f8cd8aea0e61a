package enrich

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/host/hosttest"
)

// TestScannerOnTheRealKernel: on the node side, a miss wakes the scanner,
// which maps the container's cgroup so the next event resolves, and a host
// process is counted as host rather than as a miss.
func TestScannerOnTheRealKernel(t *testing.T) {
	c := host.Cgroups{Root: host.DefaultCgroupRoot()}
	cmd, _ := hosttest.KubeletCgroup(t, c.Root, testUID, testID)
	_, id := hosttest.ProcCgroupID(t, c, cmd.Process.Pid)
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
	_, self := hosttest.ProcCgroupID(t, c, os.Getpid())
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

const (
	testID  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testUID = "8d3f2a1c-1b2c-4d5e-8f90-123456789abc"
)
