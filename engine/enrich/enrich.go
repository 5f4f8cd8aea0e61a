package enrich

import (
	"time"

	"github.com/riposte-dev/riposte/engine"
)

// Enrich fills the event's container, pod and workload from its cgroup id
// (or container id), its network peer from the pod or service that held the
// peer IP at the event's time, and an audit event's source pod the same way.
// Fields already set are left alone, so replayed events keep what they
// recorded. What cannot be resolved stays empty and is counted in Stats.
// Enrich takes no lock and does not allocate.
func (s *Store) Enrich(ev *engine.Event) {
	v := s.view.Load()
	t := ev.Time
	if t.IsZero() {
		t = s.now()
	}
	if ev.Pod.UID == "" {
		switch {
		case ev.Container.ID != "":
			s.applyIdentity(ev, v.containers[ev.Container.ID], t)
		case ev.Process.CgroupID != 0:
			ident := v.cgroups[ev.Process.CgroupID]
			if ident == nil {
				if _, ok := v.hosts[ev.Process.CgroupID]; ok {
					s.stats.count(KindContainer, Host)
					break
				}
				// Ask the scanner to look; never block the event path.
				select {
				case s.misses <- ev.Process.CgroupID:
				default:
				}
			}
			s.applyIdentity(ev, ident, t)
		}
	}
	if p := &ev.Net.Peer; p.IP != "" && p.PodUID == "" && p.Service == "" {
		s.stats.count(KindPeer, s.resolvePeer(v, p, t))
	}
	// An audit event's source: the pod its bound token names, else the
	// address the API server accepted the connection from (the last of
	// sourceIPs; the others are the client's X-Forwarded-For).
	if ev.Kind == engine.KindAudit && ev.Audit.SourcePod.IP == "" && ev.Audit.SourcePod.PodUID == "" {
		if p, ok := engine.SourcePodClaims(&ev.Audit); ok {
			ev.Audit.SourcePod = p
		} else if ip := engine.ConnectionIP(&ev.Audit); ip != "" {
			p := &ev.Audit.SourcePod
			p.IP = ip
			s.stats.count(KindAuditSource, s.resolvePeer(v, p, t))
		}
	}
}

func (s *Store) applyIdentity(ev *engine.Event, ident *Identity, t time.Time) {
	out := s.live(ident, t)
	s.stats.count(KindContainer, out)
	if out == Unresolved {
		return
	}
	ev.Container = ident.Container
	if ident.Pod.UID != "" {
		ev.Pod = ident.Pod
		ev.Workload = ident.Workload
	}
}

// live says whether an identity may be used for an event at time t: a
// tombstone answers only until its retention ends, even before GC runs.
func (s *Store) live(ident *Identity, t time.Time) Outcome {
	switch {
	case ident == nil:
		return Unresolved
	case ident.Gone.IsZero():
		return Resolved
	case t.After(ident.Gone.Add(s.retention)):
		return Unresolved
	default:
		return Tombstoned
	}
}

// resolvePeer fills p from the pod that held p.IP at t (the most recent
// lease that began at or before t, if it had not ended by t) or else from
// the Service with that cluster IP.
func (s *Store) resolvePeer(v *view, p *engine.Peer, t time.Time) Outcome {
	hs := v.holders[p.IP]
	for i := len(hs) - 1; i >= 0; i-- {
		h := &hs[i]
		if h.from.After(t) {
			continue
		}
		if !h.to.IsZero() && !t.Before(h.to) {
			break // the newest lease before t had ended: nobody held the IP
		}
		p.Pod = h.pod.Name
		p.Namespace = h.pod.Namespace
		p.PodUID = h.pod.UID
		p.Workload = h.pod.Workload
		if h.pod.DeletedAt.IsZero() {
			return Resolved
		}
		return Tombstoned
	}
	if svc := v.services[p.IP]; svc != nil {
		p.Service = svc.Name
		p.Namespace = svc.Namespace
		return Resolved
	}
	return Unresolved
}

// Cgroup returns the identity of the container in the given cgroup, which
// may be a tombstone (Identity.Gone set).
func (s *Store) Cgroup(id uint64) (*Identity, bool) {
	ident := s.view.Load().cgroups[id]
	return ident, ident != nil
}

// Container returns the identity of a container by runtime id.
func (s *Store) Container(id string) (*Identity, bool) {
	ident := s.view.Load().containers[id]
	return ident, ident != nil
}

// PeerAt resolves ip at time t as Enrich does for network peers.
func (s *Store) PeerAt(ip string, t time.Time) (engine.Peer, bool) {
	p := engine.Peer{IP: ip}
	return p, s.resolvePeer(s.view.Load(), &p, t) != Unresolved
}

// PodPeer names the stored pod with uid as a network or audit peer (name,
// namespace, workload), false when the store does not know it.
func (s *Store) PodPeer(uid string) (engine.Peer, bool) {
	p := s.Pod(uid)
	if p == nil {
		return engine.Peer{}, false
	}
	return engine.Peer{Pod: p.Name, Namespace: p.Namespace, PodUID: p.UID, Workload: p.Workload}, true
}

// Pod returns the stored pod with the given uid (possibly a tombstone), or
// nil. It reads memdb, not the view: for evidence and tests, not per event.
func (s *Store) Pod(uid string) *Pod {
	o, err := s.db.Txn(false).First(tablePods, "id", uid)
	if err != nil || o == nil {
		return nil
	}
	return o.(*Pod)
}
