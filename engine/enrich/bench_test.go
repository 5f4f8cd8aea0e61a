package enrich

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/host"
)

// fill loads pods pods with perPod containers each, written in batches of
// 500 as a source would, with realistic label and annotation sizes.
func fill(tb testing.TB, s *Store, pods, perPod int) {
	tb.Helper()
	const batch = 500
	for start := 0; start < pods; start += batch {
		mustUpdate(tb, s, func(tx *Txn) error {
			for i := start; i < min(start+batch, pods); i++ {
				uid := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
				name := fmt.Sprintf("web-%d-7f9c8d6b5-x%04d", i/10, i)
				p := &Pod{
					Pod: engine.Pod{UID: uid, Name: name, Namespace: fmt.Sprintf("team-%d", i%50), Node: fmt.Sprintf("node-%d", i%100),
						ServiceAccount: "default",
						Labels: map[string]string{"app": fmt.Sprintf("web-%d", i/10), "pod-template-hash": "7f9c8d6b5",
							"app.kubernetes.io/part-of": "shop", "version": "v1"},
						Annotations: map[string]string{"kubectl.kubernetes.io/default-container": "app"},
						OwnerReferences: []engine.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet",
							Name: fmt.Sprintf("web-%d-7f9c8d6b5", i/10), UID: fmt.Sprintf("rs-%d", i/10), Controller: true}},
						IP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)},
					Workload: engine.Workload{Kind: "Deployment", Name: fmt.Sprintf("web-%d", i/10), Namespace: fmt.Sprintf("team-%d", i%50), UID: fmt.Sprintf("dep-%d", i/10)},
					IPs:      []string{fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)},
				}
				var cs []*Container
				for j := range perPod {
					cs = append(cs, &Container{ID: fmt.Sprintf("%056x%08x", i, j), Runtime: "containerd", Name: fmt.Sprintf("c%d", j),
						Image: "registry.example.com/shop/web:1.2.3", ImageDigest: "sha256:" + fmt.Sprintf("%064x", i/10), StartedAt: t0})
				}
				if err := tx.PutPod(p, cs); err != nil {
					return err
				}
				for j, c := range cs {
					if err := tx.PutCgroup(host.Ref{ContainerID: c.ID, PodUID: uid}, uint64(i*perPod+j+1)); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
}

// BenchmarkLookup measures the per-event path on a store of 10,000 pods and
// 30,000 containers. Targets: cgroup → pod under 1 µs and 0 allocations.
func BenchmarkLookup(b *testing.B) {
	s, _ := newTestStore(b)
	fill(b, s, 10_000, 3)
	const cg = 12_345
	at := t0.Add(time.Minute)
	b.Run("cgroup", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if id, ok := s.Cgroup(cg); !ok || id.Pod.UID == "" {
				b.Fatal("miss")
			}
		}
	})
	b.Run("enrich-exec", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ev := engine.Event{Kind: engine.KindExec, Time: at, Process: engine.Process{CgroupID: cg}}
			s.Enrich(&ev)
			if ev.Workload.Kind == "" {
				b.Fatal("not enriched")
			}
		}
	})
	b.Run("enrich-connect-peer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ev := engine.Event{Kind: engine.KindConnect, Time: at, Process: engine.Process{CgroupID: cg},
				Net: engine.Net{Peer: engine.Peer{IP: "10.0.20.1", Port: 8080}}}
			s.Enrich(&ev)
			if ev.Net.Peer.Pod == "" {
				b.Fatal("peer not resolved")
			}
		}
	})
	b.Run("enrich-audit-source", func(b *testing.B) {
		b.ReportAllocs()
		ips := []string{"10.0.20.1"}
		for b.Loop() {
			ev := engine.Event{Kind: engine.KindAudit, Time: at, Audit: engine.Audit{SourceIPs: ips}}
			s.Enrich(&ev)
			if ev.Audit.SourcePod.Pod == "" {
				b.Fatal("source not resolved")
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ev := engine.Event{Kind: engine.KindExec, Time: at, Process: engine.Process{CgroupID: 1 << 40}}
			s.Enrich(&ev)
		}
	})
}

// BenchmarkUpdate measures one batched write of 100 pod updates (3
// containers each) into a store of 10,000 pods: the cost a source pays.
func BenchmarkUpdate(b *testing.B) {
	s, _ := newTestStore(b)
	fill(b, s, 10_000, 3)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		mustUpdate(b, s, func(tx *Txn) error {
			for range 100 {
				uid := fmt.Sprintf("%08x-0000-4000-8000-%012x", i%10_000, i%10_000)
				p := testPod(uid, "web", fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
				if err := tx.PutPod(p, []*Container{{ID: fmt.Sprintf("%056x%08x", i%10_000, 0), Name: "c0"}}); err != nil {
					return err
				}
				i++
			}
			return nil
		})
	}
}

// BenchmarkMemory reports the heap held by a store of 10,000 pods and
// 30,000 containers (memdb records and indexes plus the read view).
func BenchmarkMemory(b *testing.B) {
	for b.Loop() {
		before := heap()
		s, _ := newTestStore(b)
		fill(b, s, 10_000, 3)
		after := heap()
		runtime.KeepAlive(s)
		total := float64(after - before)
		b.ReportMetric(total/(1<<20), "MiB/10k-pods")
		b.ReportMetric(total/10_000, "B/pod(3-containers)")
		// Measure containers alone: same pods without containers.
		before = heap()
		s2, _ := newTestStore(b)
		fill(b, s2, 10_000, 0)
		podsOnly := float64(heap() - before)
		runtime.KeepAlive(s2)
		b.ReportMetric(podsOnly/10_000, "B/pod")
		b.ReportMetric((total-podsOnly)/30_000, "B/container")

		// Other nodes' pods as an agent keeps them (kube.Source.PeerPods):
		// identity, owner and IP only.
		before = heap()
		s3, _ := newTestStore(b)
		for start := 0; start < 10_000; start += 500 {
			mustUpdate(b, s3, func(tx *Txn) error {
				for i := start; i < start+500; i++ {
					ip := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
					p := &Pod{Pod: engine.Pod{UID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Name: fmt.Sprintf("web-%d-7f9c8d6b5-x%04d", i/10, i),
						Namespace: fmt.Sprintf("team-%d", i%50), Node: "other", IP: ip, Ownerless: false},
						Workload: engine.Workload{Kind: "Deployment", Name: fmt.Sprintf("web-%d", i/10), Namespace: fmt.Sprintf("team-%d", i%50), UID: fmt.Sprintf("dep-%d", i/10)},
						IPs:      []string{ip}}
					if err := tx.PutPod(p, nil); err != nil {
						return err
					}
				}
				return nil
			})
		}
		b.ReportMetric(float64(heap()-before)/10_000, "B/peer-pod")
		runtime.KeepAlive(s3)
	}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
