package enrich

import (
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/host"
)

// Txn is one batch of writes. It is only valid inside Store.Update.
type Txn struct {
	tx  *memdb.Txn
	now time.Time

	// What changed, so the commit republishes only that.
	containers map[string]struct{}
	pods       map[string]struct{}
	ips        map[string]struct{}
	serviceIPs map[string]struct{}
	hosts      map[uint64]struct{} // non-nil: replaces the view's host cgroups
}

// Now is the store's clock at the start of the transaction; it stamps lease
// starts and tombstones.
func (t *Txn) Now() time.Time { return t.now }

// PutPod records a pod as it is now, with the containers its status lists.
// It opens IP leases for IPs the pod newly holds and closes those it no
// longer holds; listed containers that disappear from the status are
// retired as tombstones.
func (t *Txn) PutPod(p *Pod, containers []*Container) error {
	uid := p.UID
	if uid == "" {
		return fmt.Errorf("put pod %s/%s: no uid", p.Namespace, p.Name)
	}
	if err := t.tx.Insert(tablePods, p); err != nil {
		return fmt.Errorf("put pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	t.pods[uid] = struct{}{}
	if p.Workload.UID != "" {
		if err := t.tx.Insert(tableWorkloads, &WorkloadRecord{Workload: p.Workload}); err != nil {
			return fmt.Errorf("put workload of pod %s/%s: %w", p.Namespace, p.Name, err)
		}
	}

	listed := make(map[string]struct{}, len(containers))
	for _, c := range containers {
		listed[c.ID] = struct{}{}
		n := *c
		n.PodUID = uid
		n.Listed = true
		if o, _ := t.tx.First(tableContainers, "id", c.ID); o != nil {
			old := o.(*Container)
			if n.CgroupID == 0 {
				n.CgroupID = old.CgroupID
			}
			if n.Runtime == "" {
				n.Runtime = old.Runtime
			}
			if n == *old {
				continue
			}
		}
		if err := t.putContainer(&n); err != nil {
			return err
		}
	}
	it, err := t.tx.Get(tableContainers, "pod", uid)
	if err != nil {
		return fmt.Errorf("list containers of pod %s: %w", uid, err)
	}
	var gone []*Container
	for o := it.Next(); o != nil; o = it.Next() {
		c := o.(*Container)
		if _, ok := listed[c.ID]; !ok && c.Listed && c.ExitedAt.IsZero() {
			gone = append(gone, c)
		}
	}
	for _, c := range gone {
		n := *c
		n.ExitedAt = t.now
		if err := t.putContainer(&n); err != nil {
			return err
		}
	}
	return t.syncLeases(uid, p.IPs, t.now)
}

// syncLeases makes the pod's open leases exactly ips, closing others at end.
func (t *Txn) syncLeases(uid string, ips []string, end time.Time) error {
	it, err := t.tx.Get(tableLeases, "pod", uid)
	if err != nil {
		return fmt.Errorf("list leases of pod %s: %w", uid, err)
	}
	open := map[string]*Lease{}
	var closing []*Lease
	for o := it.Next(); o != nil; o = it.Next() {
		l := o.(*Lease)
		if !l.To.IsZero() {
			continue
		}
		if slices.Contains(ips, l.IP) {
			open[l.IP] = l
		} else {
			closing = append(closing, l)
		}
	}
	for _, l := range closing {
		n := *l
		n.To = end
		if err := t.putLease(&n); err != nil {
			return err
		}
	}
	for _, ip := range ips {
		if _, ok := open[ip]; ok || ip == "" {
			continue
		}
		if err := t.putLease(&Lease{Key: ip + " " + uid, IP: ip, PodUID: uid, From: t.now}); err != nil {
			return err
		}
	}
	return nil
}

// DeletePod turns a pod, its containers and its leases into tombstones that
// end at the given time.
func (t *Txn) DeletePod(uid string, at time.Time) error {
	o, _ := t.tx.First(tablePods, "id", uid)
	if o == nil {
		return nil
	}
	p := *o.(*Pod)
	if p.DeletedAt.IsZero() {
		p.DeletedAt = at
	}
	if err := t.tx.Insert(tablePods, &p); err != nil {
		return fmt.Errorf("delete pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	t.pods[uid] = struct{}{}
	it, err := t.tx.Get(tableContainers, "pod", uid)
	if err != nil {
		return fmt.Errorf("list containers of pod %s: %w", uid, err)
	}
	var running []*Container
	for o := it.Next(); o != nil; o = it.Next() {
		if c := o.(*Container); c.ExitedAt.IsZero() {
			running = append(running, c)
		}
	}
	for _, c := range running {
		n := *c
		n.ExitedAt = at
		if err := t.putContainer(&n); err != nil {
			return err
		}
	}
	return t.syncLeases(uid, nil, at)
}

// PutCgroup records which cgroup a container runs in, as found on the node.
// The container may not be in any pod status yet; it joins its pod when
// the pod (or the pod uid from the cgroup path) is known.
func (t *Txn) PutCgroup(ref host.Ref, id uint64) error {
	if ref.ContainerID == "" || id == 0 {
		return nil
	}
	var n Container
	if o, _ := t.tx.First(tableContainers, "id", ref.ContainerID); o != nil {
		n = *o.(*Container)
		if n.CgroupID == id && (n.PodUID != "" || ref.PodUID == "") {
			return nil
		}
	} else {
		n = Container{ID: ref.ContainerID, Runtime: ref.Runtime, StartedAt: t.now}
	}
	n.CgroupID = id
	if n.PodUID == "" {
		n.PodUID = ref.PodUID
	}
	return t.putContainer(&n)
}

// SyncCgroups records a full scan: every container cgroup, the set of
// cgroups that are not containers', and retires containers known only from
// a cgroup that the scan no longer finds.
func (t *Txn) SyncCgroups(scan []host.Cgroup) error {
	seen := make(map[uint64]struct{}, len(scan))
	t.hosts = map[uint64]struct{}{}
	for _, c := range scan {
		if c.ContainerID == "" {
			t.hosts[c.ID] = struct{}{}
			continue
		}
		seen[c.ID] = struct{}{}
		if err := t.PutCgroup(c.Ref, c.ID); err != nil {
			return err
		}
	}
	it, err := t.tx.Get(tableContainers, "id")
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	var gone []*Container
	for o := it.Next(); o != nil; o = it.Next() {
		c := o.(*Container)
		if _, ok := seen[c.CgroupID]; !ok && !c.Listed && c.ExitedAt.IsZero() {
			gone = append(gone, c)
		}
	}
	for _, c := range gone {
		n := *c
		n.ExitedAt = t.now
		if err := t.putContainer(&n); err != nil {
			return err
		}
	}
	return nil
}

// PutService records a Service's cluster IPs ("None" and empty are ignored).
func (t *Txn) PutService(namespace, name string, ips []string) error {
	key := namespace + "/" + name
	var keep []string
	for _, ip := range ips {
		if ip != "" && ip != "None" {
			keep = append(keep, ip)
		}
	}
	if o, _ := t.tx.First(tableServices, "id", key); o != nil {
		for _, ip := range o.(*Service).IPs {
			t.serviceIPs[ip] = struct{}{}
		}
	}
	for _, ip := range keep {
		t.serviceIPs[ip] = struct{}{}
	}
	if err := t.tx.Insert(tableServices, &Service{Key: key, Namespace: namespace, Name: name, IPs: keep}); err != nil {
		return fmt.Errorf("put service %s: %w", key, err)
	}
	return nil
}

// DeleteService forgets a Service. Cluster IPs are not kept as tombstones:
// an IP no longer served has no service to report.
func (t *Txn) DeleteService(namespace, name string) error {
	key := namespace + "/" + name
	o, _ := t.tx.First(tableServices, "id", key)
	if o == nil {
		return nil
	}
	for _, ip := range o.(*Service).IPs {
		t.serviceIPs[ip] = struct{}{}
	}
	if err := t.tx.Delete(tableServices, o); err != nil {
		return fmt.Errorf("delete service %s: %w", key, err)
	}
	return nil
}

func (t *Txn) putContainer(c *Container) error {
	if err := t.tx.Insert(tableContainers, c); err != nil {
		return fmt.Errorf("put container %s: %w", c.ID, err)
	}
	t.containers[c.ID] = struct{}{}
	return nil
}

func (t *Txn) putLease(l *Lease) error {
	if err := t.tx.Insert(tableLeases, l); err != nil {
		return fmt.Errorf("put lease of %s to pod %s: %w", l.IP, l.PodUID, err)
	}
	t.ips[l.IP] = struct{}{}
	return nil
}

// gc deletes tombstones that ended before cutoff and workloads no pod
// references, and returns how many records it deleted.
func (t *Txn) gc(cutoff time.Time) int {
	n := 0
	del := func(table string, objs []any, mark func(any)) {
		for _, o := range objs {
			if t.tx.Delete(table, o) == nil {
				mark(o)
				n++
			}
		}
	}
	var objs []any
	it, _ := t.tx.Get(tableContainers, "id")
	for o := it.Next(); o != nil; o = it.Next() {
		if c := o.(*Container); !c.ExitedAt.IsZero() && c.ExitedAt.Before(cutoff) {
			objs = append(objs, o)
		}
	}
	del(tableContainers, objs, func(o any) { t.containers[o.(*Container).ID] = struct{}{} })

	objs = objs[:0]
	it, _ = t.tx.Get(tableLeases, "id")
	for o := it.Next(); o != nil; o = it.Next() {
		if l := o.(*Lease); !l.To.IsZero() && l.To.Before(cutoff) {
			objs = append(objs, o)
		}
	}
	del(tableLeases, objs, func(o any) { t.ips[o.(*Lease).IP] = struct{}{} })

	objs = objs[:0]
	live := map[string]struct{}{}
	it, _ = t.tx.Get(tablePods, "id")
	for o := it.Next(); o != nil; o = it.Next() {
		p := o.(*Pod)
		if !p.DeletedAt.IsZero() && p.DeletedAt.Before(cutoff) {
			objs = append(objs, o)
		} else if p.Workload.UID != "" {
			live[p.Workload.UID] = struct{}{}
		}
	}
	del(tablePods, objs, func(o any) { t.pods[o.(*Pod).UID] = struct{}{} })

	objs = objs[:0]
	it, _ = t.tx.Get(tableWorkloads, "id")
	for o := it.Next(); o != nil; o = it.Next() {
		if _, ok := live[o.(*WorkloadRecord).UID]; !ok {
			objs = append(objs, o)
		}
	}
	del(tableWorkloads, objs, func(any) {})
	return n
}

// containerOf is the engine's view of a stored container.
func containerOf(c *Container) engine.Container {
	return engine.Container{
		ID:          c.ID,
		Name:        c.Name,
		Image:       c.Image,
		ImageDigest: c.ImageDigest,
		Runtime:     c.Runtime,
		Privileged:  c.Privileged,
		StartedAt:   c.StartedAt,
	}
}
