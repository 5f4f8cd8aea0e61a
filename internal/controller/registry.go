package controller

import (
	"sort"
	"sync"

	"github.com/riposte-dev/riposte/engine"
)

// Registry is the set of live rules. Rule reconcilers write it; event
// sources read snapshots of it and rebuild their matchers when the version
// changes. It is safe for concurrent use.
type Registry struct {
	mu      sync.Mutex
	rules   map[string]*engine.Rule
	gens    map[string]int64
	version uint64
	snap    []*engine.Rule
	dirty   bool
	// onChange, when set, is called (outside the lock) after every change.
	onChange []func()
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{rules: map[string]*engine.Rule{}, gens: map[string]int64{}}
}

// RegistryKey names a rule in the registry: kind/namespace/name.
func RegistryKey(kind, namespace, name string) string { return kind + "/" + namespace + "/" + name }

// Put makes rule live under key, replacing an earlier version. generation
// is the object's generation the rule was compiled from.
func (r *Registry) Put(key string, rule *engine.Rule, generation int64) {
	r.mu.Lock()
	if r.rules[key] == rule && r.gens[key] == generation {
		r.mu.Unlock()
		return // unchanged: matchers need not be rebuilt
	}
	r.rules[key] = rule
	r.gens[key] = generation
	r.version++
	r.dirty = true
	fns := r.onChange
	r.mu.Unlock()
	for _, f := range fns {
		f()
	}
}

// Delete takes the rule under key out of the live set.
func (r *Registry) Delete(key string) {
	r.mu.Lock()
	_, ok := r.rules[key]
	if ok {
		delete(r.rules, key)
		delete(r.gens, key)
		r.version++
		r.dirty = true
	}
	fns := r.onChange
	r.mu.Unlock()
	if ok {
		for _, f := range fns {
			f()
		}
	}
}

// Get returns the live rule under key and the generation it was compiled
// from.
func (r *Registry) Get(key string) (*engine.Rule, int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rule, ok := r.rules[key]
	return rule, r.gens[key], ok
}

// OnChange registers f to run after every change of the live set.
func (r *Registry) OnChange(f func()) {
	r.mu.Lock()
	r.onChange = append(r.onChange, f)
	r.mu.Unlock()
}

// Snapshot returns the live rules, sorted by key, and the version of the set.
// The slice is shared and must not be modified.
func (r *Registry) Snapshot() (uint64, []*engine.Rule) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dirty || r.snap == nil {
		keys := make([]string, 0, len(r.rules))
		for k := range r.rules {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		snap := make([]*engine.Rule, len(keys))
		for i, k := range keys {
			snap[i] = r.rules[k]
		}
		r.snap, r.dirty = snap, false
	}
	return r.version, r.snap
}

// Keys lists the keys of the live set, sorted.
func (r *Registry) Keys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.rules))
	for k := range r.rules {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Version is the version of the live set; it grows on every change.
func (r *Registry) Version() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.version
}
