package profile

import (
	"sync"
	"sync/atomic"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// Index holds the reviewed profiles the agent judges events by. Attach is
// lock-free (a snapshot swapped whole on change); Set and Delete serialise.
type Index struct {
	mu     sync.Mutex
	byName map[string]indexed // namespace/name -> entry
	snap   atomic.Pointer[map[Key]*indexed]
}

type indexed struct {
	key     Key
	image   string
	profile *engine.Profile // Ready
}

// KeyOfProfile is the workload and container a WorkloadProfile is for.
func KeyOfProfile(wp *v1alpha1.WorkloadProfile) Key {
	return Key{Namespace: wp.Namespace, Kind: wp.Spec.Workload.Kind, Workload: wp.Spec.Workload.Name, Container: wp.Spec.Container}
}

// Set makes a profile known: a reviewed one is judged by from now on, an
// unreviewed one is forgotten. A profile whose lists the engine refuses
// (over the bounds, an unparsable peer) is forgotten too and the error
// returned.
func (x *Index) Set(wp *v1alpha1.WorkloadProfile) error {
	name := wp.Namespace + "/" + wp.Name
	if !wp.Spec.Reviewed {
		x.Delete(name)
		return nil
	}
	p, err := engine.NewProfile(name, true, *wp.Spec.ProfileBehaviour.DeepCopy())
	if err != nil {
		x.Delete(name)
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.byName == nil {
		x.byName = map[string]indexed{}
	}
	x.byName[name] = indexed{key: KeyOfProfile(wp), image: wp.Spec.Image, profile: p}
	x.publish()
	return nil
}

// Delete forgets the profile namespace/name.
func (x *Index) Delete(name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.byName[name]; !ok {
		return
	}
	delete(x.byName, name)
	x.publish()
}

// publish rebuilds the snapshot. Two profiles for one workload and
// container: the first by name wins, so the outcome does not depend on the
// order they arrived in.
func (x *Index) publish() {
	m := make(map[Key]*indexed, len(x.byName))
	for name, e := range x.byName {
		if old, ok := m[e.key]; ok && old.profile.Name < name {
			continue
		}
		e := e
		m[e.key] = &e
	}
	x.snap.Store(&m)
}

// Reviewed reports whether a workload's container has a reviewed profile:
// learning stops for it.
func (x *Index) Reviewed(k Key) bool {
	m := x.snap.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[k]
	return ok
}

// Attach sets ev.Profile to the Ready profile of the event's workload and
// container, or nil: no reviewed profile, or the container runs another
// image than the one reviewed (the profile is Stale for it).
func (x *Index) Attach(ev *engine.Event) {
	ev.Profile = nil
	m := x.snap.Load()
	if m == nil || len(*m) == 0 {
		return
	}
	k, ok := KeyOf(ev)
	if !ok {
		return
	}
	e := (*m)[k]
	if e == nil || (e.image != "" && e.image != ev.Container.Image) {
		return
	}
	ev.Profile = e.profile
}
