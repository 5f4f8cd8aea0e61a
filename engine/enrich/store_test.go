package enrich

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/host"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func newTestStore(t testing.TB) (*Store, *clock) {
	t.Helper()
	c := &clock{t: t0}
	s, err := New(Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func testPod(uid, name string, ips ...string) *Pod {
	return &Pod{
		Pod: engine.Pod{UID: uid, Name: name, Namespace: "shop", Node: "node-1",
			Labels: map[string]string{"app": name}},
		Workload: engine.Workload{Kind: "Deployment", Name: name, Namespace: "shop", UID: "w-" + uid},
		IPs:      ips,
	}
}

func mustUpdate(t testing.TB, s *Store, fn func(*Txn) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestEnrichJoinsCgroupContainerPodWorkload(t *testing.T) {
	s, _ := newTestStore(t)
	mustUpdate(t, s, func(tx *Txn) error {
		return tx.PutPod(testPod(testUID, "web", "10.0.0.5"), []*Container{{ID: testID, Runtime: "containerd", Name: "nginx",
			Image: "nginx:1.27", ImageDigest: "sha256:aa", StartedAt: t0}})
	})
	mustUpdate(t, s, func(tx *Txn) error { return tx.PutCgroup(host.Ref{ContainerID: testID, PodUID: testUID}, 4242) })

	ev := engine.Event{Kind: engine.KindExec, Time: t0.Add(time.Second), Process: engine.Process{CgroupID: 4242}}
	s.Enrich(&ev)
	if ev.Container.ID != testID || ev.Container.ImageDigest != "sha256:aa" || ev.Container.Runtime != "containerd" {
		t.Errorf("container = %+v", ev.Container)
	}
	if ev.Pod.UID != testUID || ev.Pod.Name != "web" || ev.Pod.Node != "node-1" {
		t.Errorf("pod = %+v", ev.Pod)
	}
	if ev.Workload.Kind != "Deployment" || ev.Workload.Name != "web" {
		t.Errorf("workload = %+v", ev.Workload)
	}
	if got := s.Stats().Get(KindContainer, Resolved); got != 1 {
		t.Errorf("resolved = %d, want 1", got)
	}
}

func TestCgroupBeforePodStatusResolvesByPathPodUID(t *testing.T) {
	s, _ := newTestStore(t)
	// The scanner sees the container before the kubelet reports it.
	mustUpdate(t, s, func(tx *Txn) error { return tx.PutCgroup(host.Ref{ContainerID: testID, PodUID: testUID}, 7) })
	mustUpdate(t, s, func(tx *Txn) error { return tx.PutPod(testPod(testUID, "web"), nil) })
	ev := engine.Event{Time: t0, Process: engine.Process{CgroupID: 7}}
	s.Enrich(&ev)
	if ev.Container.ID != testID || ev.Pod.Name != "web" || ev.Workload.Name != "web" {
		t.Errorf("event = %+v %+v %+v", ev.Container, ev.Pod, ev.Workload)
	}
}

func TestUnknownCgroupStaysEmptyAndIsCounted(t *testing.T) {
	s, _ := newTestStore(t)
	ev := engine.Event{Time: t0, Process: engine.Process{CgroupID: 99}}
	s.Enrich(&ev)
	if ev.Container != (engine.Container{}) || ev.Pod.UID != "" || ev.Workload != (engine.Workload{}) {
		t.Errorf("unknown cgroup filled identity: %+v", ev)
	}
	if got := s.Stats().Get(KindContainer, Unresolved); got != 1 {
		t.Errorf("unresolved = %d, want 1", got)
	}
	select {
	case id := <-s.Misses():
		if id != 99 {
			t.Errorf("miss = %d", id)
		}
	default:
		t.Error("miss not reported to the scanner")
	}
}

func TestIPReuseResolvesToHolderAtEventTime(t *testing.T) {
	s, c := newTestStore(t)
	const ip = "10.0.0.7"
	tA := t0
	mustUpdate(t, s, func(tx *Txn) error { return tx.PutPod(testPod("uid-a", "a", ip), nil) })
	t1 := t0.Add(10 * time.Second)
	mustUpdate(t, s, func(tx *Txn) error { return tx.DeletePod("uid-a", t1) })
	t2 := t0.Add(20 * time.Second)
	c.Set(t2)
	mustUpdate(t, s, func(tx *Txn) error { return tx.PutPod(testPod("uid-b", "b", ip), nil) })

	for _, tc := range []struct {
		at      time.Time
		wantPod string
		outcome Outcome
	}{
		{tA.Add(5 * time.Second), "a", Tombstoned}, // t0: A held it (A is deleted now)
		{t1.Add(5 * time.Second), "", Unresolved},  // between t1 and t2: nobody
		{t2.Add(5 * time.Second), "b", Resolved},   // after t2: B
		{tA.Add(-time.Second), "", Unresolved},     // before anyone
	} {
		before := s.Stats().Get(KindPeer, tc.outcome)
		ev := engine.Event{Kind: engine.KindConnect, Time: tc.at, Net: engine.Net{Peer: engine.Peer{IP: ip, Port: 80}}}
		s.Enrich(&ev)
		if ev.Net.Peer.Pod != tc.wantPod {
			t.Errorf("peer at %v = %q, want %q", tc.at.Sub(t0), ev.Net.Peer.Pod, tc.wantPod)
		}
		if tc.wantPod != "" && (ev.Net.Peer.Namespace != "shop" || ev.Net.Peer.Workload.Name != tc.wantPod) {
			t.Errorf("peer = %+v", ev.Net.Peer)
		}
		if got := s.Stats().Get(KindPeer, tc.outcome); got != before+1 {
			t.Errorf("peer at %v: %s count %d → %d", tc.at.Sub(t0), tc.outcome, before, got)
		}
	}
}

func TestOverlappingLeasesNewestHolderWins(t *testing.T) {
	// The CNI can hand an IP to a new pod before the old pod's object is
	// deleted; from the new lease on, the IP is the new pod's.
	s, c := newTestStore(t)
	mustUpdate(t, s, func(tx *Txn) error { return tx.PutPod(testPod("uid-a", "a", "10.0.0.9"), nil) })
	c.Set(t0.Add(10 * time.Second))
	mustUpdate(t, s, func(tx *Txn) error { return tx.PutPod(testPod("uid-b", "b", "10.0.0.9"), nil) })
	if p, _ := s.PeerAt("10.0.0.9", t0.Add(5*time.Second)); p.Pod != "a" {
		t.Errorf("before B: %q", p.Pod)
	}
	if p, _ := s.PeerAt("10.0.0.9", t0.Add(15*time.Second)); p.Pod != "b" {
		t.Errorf("after B: %q", p.Pod)
	}
}

func TestFinishedPodReleasesIP(t *testing.T) {
	s, c := newTestStore(t)
	mustUpdate(t, s, func(tx *Txn) error { return tx.PutPod(testPod("uid-a", "a", "10.0.0.8"), nil) })
	c.Set(t0.Add(time.Minute))
	mustUpdate(t, s, func(tx *Txn) error { return tx.PutPod(testPod("uid-a", "a"), nil) }) // Succeeded: no IPs
	if _, ok := s.PeerAt("10.0.0.8", t0.Add(2*time.Minute)); ok {
		t.Error("finished pod still holds its IP")
	}
	if p, _ := s.PeerAt("10.0.0.8", t0.Add(30*time.Second)); p.Pod != "a" {
		t.Errorf("while running: %q", p.Pod)
	}
}

func TestDeletedPodResolvesWithinTombstoneWindowOnly(t *testing.T) {
	s, c := newTestStore(t)
	mustUpdate(t, s, func(tx *Txn) error {
		if err := tx.PutPod(testPod(testUID, "web"), []*Container{{ID: testID, Name: "nginx", ImageDigest: "sha256:aa"}}); err != nil {
			return err
		}
		return tx.PutCgroup(host.Ref{ContainerID: testID}, 11)
	})
	deleted := t0.Add(time.Minute)
	mustUpdate(t, s, func(tx *Txn) error { return tx.DeletePod(testUID, deleted) })

	late := engine.Event{Time: deleted.Add(DefaultRetention - time.Second), Process: engine.Process{CgroupID: 11}}
	s.Enrich(&late)
	if late.Pod.Name != "web" || late.Container.ImageDigest != "sha256:aa" {
		t.Errorf("event within the window not resolved: %+v", late.Pod)
	}
	if got := s.Stats().Get(KindContainer, Tombstoned); got != 1 {
		t.Errorf("tombstoned = %d, want 1", got)
	}

	// After the window, even before GC runs, the tombstone does not answer.
	after := engine.Event{Time: deleted.Add(DefaultRetention + time.Second), Process: engine.Process{CgroupID: 11}}
	s.Enrich(&after)
	if after.Pod.UID != "" || after.Container.ID != "" {
		t.Errorf("event after the window resolved: %+v", after.Pod)
	}
	if got := s.Stats().Get(KindContainer, Unresolved); got != 1 {
		t.Errorf("unresolved = %d, want 1", got)
	}

	c.Set(deleted.Add(DefaultRetention - time.Second))
	if n := s.GC(); n != 0 {
		t.Errorf("GC inside the window removed %d records", n)
	}
	c.Set(deleted.Add(DefaultRetention + time.Second))
	if n := s.GC(); n != 3 { // container, pod, workload
		t.Errorf("GC after the window removed %d records, want 3", n)
	}
	if _, ok := s.Cgroup(11); ok {
		t.Error("cgroup still mapped after GC")
	}
}

func TestRestartedContainerIsRetired(t *testing.T) {
	s, c := newTestStore(t)
	old, cur := testID, "f"+testID[1:]
	mustUpdate(t, s, func(tx *Txn) error {
		return tx.PutPod(testPod(testUID, "web"), []*Container{{ID: old, Name: "app"}})
	})
	c.Set(t0.Add(time.Minute))
	mustUpdate(t, s, func(tx *Txn) error {
		return tx.PutPod(testPod(testUID, "web"), []*Container{{ID: cur, Name: "app"}})
	})
	if id, _ := s.Container(old); id == nil || !id.Gone.Equal(t0.Add(time.Minute)) {
		t.Errorf("old container = %+v, want a tombstone from the update", id)
	}
	if id, _ := s.Container(cur); id == nil || !id.Gone.IsZero() {
		t.Errorf("new container = %+v", id)
	}
}

func TestServiceClusterIP(t *testing.T) {
	s, _ := newTestStore(t)
	mustUpdate(t, s, func(tx *Txn) error { return tx.PutService("shop", "cart", []string{"10.96.0.10", "None"}) })
	ev := engine.Event{Time: t0, Net: engine.Net{Peer: engine.Peer{IP: "10.96.0.10", Port: 443}}}
	s.Enrich(&ev)
	if ev.Net.Peer.Service != "cart" || ev.Net.Peer.Namespace != "shop" || ev.Net.Peer.Pod != "" {
		t.Errorf("peer = %+v", ev.Net.Peer)
	}
	mustUpdate(t, s, func(tx *Txn) error { return tx.DeleteService("shop", "cart") })
	if _, ok := s.PeerAt("10.96.0.10", t0); ok {
		t.Error("deleted service still resolves")
	}
}

// TestAuditSourcePod: the source pod is the one holding the address the API
// server accepted the connection from (the last of sourceIPs); the entries
// before it come from the client's X-Forwarded-For header and never name a
// pod.
func TestAuditSourcePod(t *testing.T) {
	s, _ := newTestStore(t)
	mustUpdate(t, s, func(tx *Txn) error {
		if err := tx.PutPod(testPod("uid-r", "recon", "10.0.0.30"), nil); err != nil {
			return err
		}
		return tx.PutPod(testPod("uid-v", "victim", "10.0.0.40"), nil)
	})
	ev := engine.Event{Kind: engine.KindAudit, Time: t0.Add(time.Second),
		Audit: engine.Audit{Verb: "create", SourceIPs: []string{"10.0.0.40", "10.0.0.30"}}}
	s.Enrich(&ev)
	if sp := ev.Audit.SourcePod; sp.IP != "10.0.0.30" || sp.Pod != "recon" || sp.Workload.Kind != "Deployment" {
		t.Errorf("sourcePod = %+v, want recon (the connection's address), never the forwarded victim", sp)
	}
	if got := s.Stats().Get(KindAuditSource, Resolved); got != 1 {
		t.Errorf("audit resolved = %d", got)
	}
}

func TestEnrichKeepsRecordedIdentity(t *testing.T) {
	s, _ := newTestStore(t)
	mustUpdate(t, s, func(tx *Txn) error {
		if err := tx.PutPod(testPod(testUID, "web"), []*Container{{ID: testID}}); err != nil {
			return err
		}
		return tx.PutCgroup(host.Ref{ContainerID: testID}, 5)
	})
	ev := engine.Event{Time: t0, Process: engine.Process{CgroupID: 5}, Pod: engine.Pod{UID: "recorded", Name: "replayed"}}
	s.Enrich(&ev)
	if ev.Pod.Name != "replayed" || ev.Container.ID != "" {
		t.Errorf("replayed identity overwritten: %+v %+v", ev.Pod, ev.Container)
	}
}

func TestSyncCgroupsRetiresVanishedUnlistedContainers(t *testing.T) {
	s, _ := newTestStore(t)
	mustUpdate(t, s, func(tx *Txn) error {
		return tx.SyncCgroups([]host.Cgroup{{Ref: host.Ref{ContainerID: testID, PodUID: testUID}, ID: 3}})
	})
	mustUpdate(t, s, func(tx *Txn) error { return tx.SyncCgroups(nil) })
	if id, ok := s.Cgroup(3); !ok || id.Gone.IsZero() {
		t.Errorf("vanished cgroup container = %+v, want a tombstone", id)
	}
}

// TestConcurrentReadersSeeConsistentViews runs writers and Enrich together
// under -race: readers must never see a half-applied commit.
func TestConcurrentReadersSeeConsistentViews(t *testing.T) {
	s, _ := newTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				ev := engine.Event{Time: t0, Process: engine.Process{CgroupID: uint64(r%2 + 1)}, Net: engine.Net{Peer: engine.Peer{IP: "10.0.0.1"}}}
				s.Enrich(&ev)
				if ev.Container.ID != "" && ev.Pod.UID != "" && ev.Pod.Name != "p-"+ev.Pod.UID {
					t.Errorf("torn identity: %+v", ev.Pod)
					return
				}
			}
		}()
	}
	for i := range 200 {
		uid := fmt.Sprintf("u%d", i%5)
		mustUpdate(t, s, func(tx *Txn) error {
			p := testPod(uid, "p-"+uid, "10.0.0.1")
			if err := tx.PutPod(p, []*Container{{ID: fmt.Sprintf("%064d", i%3)}}); err != nil {
				return err
			}
			return tx.PutCgroup(host.Ref{ContainerID: fmt.Sprintf("%064d", i%3)}, uint64(i%3+1))
		})
	}
	cancel()
	wg.Wait()
}
