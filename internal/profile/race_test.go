package profile

import (
	"fmt"
	"sync"
	"testing"
)

// The agent's reading goroutine observes and attaches while the syncer
// drains and the profile watch sets: run under -race. Every exec of the
// loop is learnt or counted (nothing lost between drains).
func TestLearnerAndIndexConcurrently(t *testing.T) {
	var x Index
	l := NewLearner(Options{Reviewed: x.Reviewed})
	const n = 2000
	var wg sync.WaitGroup
	var reports []Report
	stop := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				reports = append(reports, l.Drain()...)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 50 {
			wp := reviewedProfile(fmt.Sprintf("other-%d", i), "", "/bin/x")
			wp.Spec.Workload.Name = wp.Name // other workloads: web-1's stays learnt
			if err := x.Set(wp); err != nil {
				t.Error(err)
			}
		}
	}()
	for i := range n {
		ev := podEvent("web-1", "exec")
		ev.Process.Binary = fmt.Sprintf("/bin/p%d", i%100)
		x.Attach(&ev)
		l.Observe(&ev)
	}
	close(stop)
	wg.Wait()
	reports = append(reports, l.Drain()...)
	seen := map[string]bool{}
	for _, r := range reports {
		for _, e := range r.Behaviour.Executables {
			seen[e] = true
		}
	}
	if len(seen) != 100 {
		t.Errorf("%d distinct executables learnt, want 100", len(seen))
	}
}
