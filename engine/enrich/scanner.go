package enrich

import (
	"context"
	"fmt"
	"time"

	"github.com/riposte-dev/riposte/host"
)

// Scanner keeps a store's cgroup ids current by scanning the cgroup tree
// periodically and soon after Enrich misses an id.
type Scanner struct {
	Store   *Store
	Cgroups host.Cgroups
	// Interval between full scans; 30s when zero.
	Interval time.Duration
	// MinGap is the least time between two scans, so a burst of misses
	// (host processes have cgroups too) costs one scan; 200ms when zero.
	MinGap time.Duration
	// OnScan, when set, sees every scan once it is in the store (the agent
	// registers container cgroups with the kernel from it).
	OnScan func(found []host.Cgroup)
}

// Scan runs one scan and writes it to the store.
func (sc *Scanner) Scan() error {
	found, err := sc.Cgroups.Scan()
	if err != nil {
		return err
	}
	if err := sc.Store.Update(func(t *Txn) error { return t.SyncCgroups(found) }); err != nil {
		return fmt.Errorf("store cgroup scan: %w", err)
	}
	if sc.OnScan != nil {
		sc.OnScan(found)
	}
	return nil
}

// Run scans until ctx ends. Errors of single scans are reported to onErr
// (which may be nil) and do not stop it.
func (sc *Scanner) Run(ctx context.Context, onErr func(error)) {
	interval, gap := sc.Interval, sc.MinGap
	if interval <= 0 {
		interval = 30 * time.Second
	}
	if gap <= 0 {
		gap = 200 * time.Millisecond
	}
	// Ids a scan did not find are not containers (or not yet): ignore their
	// misses for a while. Bounded: reset when it grows too large.
	ignore := map[uint64]time.Time{}
	var last time.Time
	scan := func() {
		last = time.Now()
		if err := sc.Scan(); err != nil && onErr != nil {
			onErr(err)
		}
	}
	scan()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var pending []uint64
	var wait <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			scan()
		case id := <-sc.Store.Misses():
			if until, ok := ignore[id]; ok && time.Now().Before(until) {
				continue
			}
			pending = append(pending, id)
			if wait == nil {
				wait = time.After(max(0, gap-time.Since(last)))
			}
		case <-wait:
			wait = nil
			scan()
			if len(ignore) > 65536 {
				clear(ignore)
			}
			for _, id := range pending {
				if _, ok := sc.Store.Cgroup(id); !ok {
					ignore[id] = time.Now().Add(interval)
				}
			}
			pending = pending[:0]
		}
	}
}
