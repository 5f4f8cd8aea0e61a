package enrich

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"
)

// DefaultRetention is how long deleted pods, exited containers and ended IP
// leases stay resolvable: late events and evidence capture still need them.
const DefaultRetention = 15 * time.Minute

const (
	tableContainers = "containers"
	tablePods       = "pods"
	tableLeases     = "leases"
	tableServices   = "services"
	tableWorkloads  = "workloads"
)

var schema = &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
	tableContainers: {Name: tableContainers, Indexes: map[string]*memdb.IndexSchema{
		// No cgroup index: cgroup lookups go to the view, and every index
		// costs memory per container.
		"id":  {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"pod": {Name: "pod", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "PodUID"}},
	}},
	tablePods: {Name: tablePods, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "UID"}},
	}},
	tableLeases: {Name: tableLeases, Indexes: map[string]*memdb.IndexSchema{
		"id":  {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
		"ip":  {Name: "ip", Indexer: &memdb.StringFieldIndex{Field: "IP"}},
		"pod": {Name: "pod", Indexer: &memdb.StringFieldIndex{Field: "PodUID"}},
	}},
	tableServices: {Name: tableServices, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
		"ip": {Name: "ip", AllowMissing: true, Indexer: &memdb.StringSliceFieldIndex{Field: "IPs"}},
	}},
	tableWorkloads: {Name: tableWorkloads, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "UID"}},
	}},
}}

// Options configure a Store.
type Options struct {
	// Retention is how long tombstones stay; DefaultRetention when zero.
	Retention time.Duration
	// Now is the clock; time.Now when nil. Tests set it.
	Now func() time.Time
}

// Store holds the identity state. Writes go through Update (one writer at a
// time, batched into one memdb transaction); reads go to an immutable view
// swapped atomically after each commit, so the per-event path takes no lock.
type Store struct {
	retention time.Duration
	now       func() time.Time

	mu   sync.Mutex // serialises writers
	db   *memdb.MemDB
	view atomic.Pointer[view]

	misses chan uint64
	stats  Stats
}

// view is the read-optimised snapshot. Its maps are never written after
// they are published; a commit clones the maps it changes.
type view struct {
	cgroups    map[uint64]*Identity
	containers map[string]*Identity
	holders    map[string][]holder // by IP, sorted by from
	services   map[string]*Service // by cluster IP
	// hosts are cgroups the last scan found that are no container's, so
	// host processes are counted apart from real misses.
	hosts map[uint64]struct{}
}

// New returns an empty store.
func New(opts Options) (*Store, error) {
	db, err := memdb.NewMemDB(schema)
	if err != nil {
		return nil, fmt.Errorf("create enrichment store: %w", err)
	}
	s := &Store{
		retention: opts.Retention,
		now:       opts.Now,
		db:        db,
		misses:    make(chan uint64, 1024),
	}
	if s.retention <= 0 {
		s.retention = DefaultRetention
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.view.Store(&view{
		cgroups:    map[uint64]*Identity{},
		containers: map[string]*Identity{},
		holders:    map[string][]holder{},
		services:   map[string]*Service{},
		hosts:      map[uint64]struct{}{},
	})
	return s, nil
}

// Retention is how long tombstones stay resolvable.
func (s *Store) Retention() time.Duration { return s.retention }

// Misses delivers cgroup ids that events carried but the store did not know,
// at most one per event and dropped when nobody keeps up. A cgroup scanner
// (RunCgroupScanner) consumes them.
func (s *Store) Misses() <-chan uint64 { return s.misses }

// Update runs fn in one write transaction and publishes the new view when fn
// returns nil. Batch many changes into one call: a memdb write costs tens of
// microseconds and every commit republishes the changed parts of the view.
func (s *Store) Update(fn func(*Txn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &Txn{
		tx:         s.db.Txn(true),
		now:        s.now(),
		containers: map[string]struct{}{},
		pods:       map[string]struct{}{},
		ips:        map[string]struct{}{},
		serviceIPs: map[string]struct{}{},
	}
	if err := fn(t); err != nil {
		t.tx.Abort()
		return err
	}
	s.publish(t)
	t.tx.Commit()
	return nil
}

// publish derives the next view from the transaction's changes.
func (s *Store) publish(t *Txn) {
	old := s.view.Load()
	next := *old
	// A changed pod changes the identity of each of its containers.
	for uid := range t.pods {
		it, err := t.tx.Get(tableContainers, "pod", uid)
		if err != nil {
			continue
		}
		for o := it.Next(); o != nil; o = it.Next() {
			t.containers[o.(*Container).ID] = struct{}{}
		}
		lt, err := t.tx.Get(tableLeases, "pod", uid)
		if err != nil {
			continue
		}
		for o := lt.Next(); o != nil; o = lt.Next() {
			t.ips[o.(*Lease).IP] = struct{}{}
		}
	}
	if len(t.containers) > 0 {
		next.cgroups = maps.Clone(old.cgroups)
		next.containers = maps.Clone(old.containers)
		for id := range t.containers {
			if prev := old.containers[id]; prev != nil {
				delete(next.containers, id)
				if next.cgroups[prev.cgroupID] == prev {
					delete(next.cgroups, prev.cgroupID)
				}
			}
			o, _ := t.tx.First(tableContainers, "id", id)
			if o == nil {
				continue
			}
			c := o.(*Container)
			ident := identity(t, c)
			next.containers[id] = ident
			if c.CgroupID != 0 {
				next.cgroups[c.CgroupID] = ident
			}
		}
	}
	if len(t.ips) > 0 {
		next.holders = maps.Clone(old.holders)
		for ip := range t.ips {
			delete(next.holders, ip)
			it, err := t.tx.Get(tableLeases, "ip", ip)
			if err != nil {
				continue
			}
			var hs []holder
			for o := it.Next(); o != nil; o = it.Next() {
				l := o.(*Lease)
				p, _ := t.tx.First(tablePods, "id", l.PodUID)
				if p == nil {
					continue
				}
				hs = append(hs, holder{from: l.From, to: l.To, pod: p.(*Pod)})
			}
			if len(hs) > 0 {
				slices.SortFunc(hs, func(a, b holder) int { return a.from.Compare(b.from) })
				next.holders[ip] = hs
			}
		}
	}
	if len(t.serviceIPs) > 0 {
		next.services = maps.Clone(old.services)
		for ip := range t.serviceIPs {
			delete(next.services, ip)
			if o, _ := t.tx.First(tableServices, "ip", ip); o != nil {
				next.services[ip] = o.(*Service)
			}
		}
	}
	if t.hosts != nil {
		next.hosts = t.hosts
	}
	s.view.Store(&next)
}

// identity joins a container with its pod and workload.
func identity(t *Txn, c *Container) *Identity {
	ident := &Identity{
		Container: containerOf(c),
		Gone:      c.ExitedAt,
		cgroupID:  c.CgroupID,
	}
	if c.PodUID == "" {
		return ident
	}
	o, _ := t.tx.First(tablePods, "id", c.PodUID)
	if o == nil {
		return ident
	}
	p := o.(*Pod)
	ident.Pod = p.Pod
	ident.Workload = p.Workload
	if !p.DeletedAt.IsZero() && (ident.Gone.IsZero() || p.DeletedAt.Before(ident.Gone)) {
		ident.Gone = p.DeletedAt
	}
	return ident
}

// GC removes tombstones older than the retention and returns how many
// records it removed.
func (s *Store) GC() int {
	n := 0
	_ = s.Update(func(t *Txn) error {
		n = t.gc(t.now.Add(-s.retention))
		return nil
	})
	return n
}

// Run collects garbage every interval until ctx ends.
func (s *Store) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.GC()
		}
	}
}
