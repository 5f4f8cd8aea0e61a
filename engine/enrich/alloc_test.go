package enrich

import (
	"testing"
	"time"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/host"
)

// TestEnrichAllocatesNothing proves the per-event path's zero-allocation
// claim for resolved, tombstoned and unknown identities, peers and audit
// sources (timings live in BenchmarkLookup, never in tests).
func TestEnrichAllocatesNothing(t *testing.T) {
	s, _ := newTestStore(t)
	mustUpdate(t, s, func(tx *Txn) error {
		if err := tx.PutPod(testPod(testUID, "web", "10.0.0.5"), []*Container{{ID: testID, ImageDigest: "sha256:aa"}}); err != nil {
			return err
		}
		return tx.PutCgroup(host.Ref{ContainerID: testID}, 42)
	})
	at := t0.Add(time.Second)
	ips := []string{"10.0.0.5"}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, cg := range []uint64{42, 43} {
			ev := engine.Event{Kind: engine.KindConnect, Time: at, Process: engine.Process{CgroupID: cg},
				Net: engine.Net{Peer: engine.Peer{IP: "10.0.0.5"}}}
			s.Enrich(&ev)
		}
		ev := engine.Event{Kind: engine.KindAudit, Time: at, Audit: engine.Audit{SourceIPs: ips}}
		s.Enrich(&ev)
	})
	if allocs != 0 {
		t.Errorf("Enrich allocated %.1f times per run, want 0", allocs)
	}
}
