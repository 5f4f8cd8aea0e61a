package profile

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// Key identifies one profile: a container of a workload.
type Key struct {
	Namespace string
	Kind      string // the workload's kind: Deployment, StatefulSet, …
	Workload  string
	Container string
}

// learnable are the workload kinds whose pods are alike: replicas of one
// template. A bare pod or a static pod has no siblings to learn from.
var learnable = map[string]bool{
	"Deployment": true, "StatefulSet": true, "DaemonSet": true,
	"ReplicaSet": true, "CronJob": true, "Job": true,
}

// KeyOf returns the profile an event belongs to, and false for events of
// the host, of bare or static pods, or without a container name.
func KeyOf(ev *engine.Event) (Key, bool) {
	w := &ev.Workload
	if ev.Container.ID == "" || ev.Container.Name == "" || w.Name == "" || !learnable[w.Kind] {
		return Key{}, false
	}
	ns := w.Namespace
	if ns == "" {
		ns = ev.Pod.Namespace
	}
	return Key{Namespace: ns, Kind: w.Kind, Workload: w.Name, Container: ev.Container.Name}, true
}

// Name is the WorkloadProfile's name for a key: kind-workload-container in
// lower case; a name over the 253 bytes a Kubernetes name may have is cut
// and ends in a hash of the whole.
func (k Key) Name() string {
	n := strings.ToLower(k.Kind) + "-" + k.Workload + "-" + k.Container
	if len(n) <= 253 {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	return n[:253-17] + "-" + hex.EncodeToString(sum[:8])
}

// Options bound a Learner.
type Options struct {
	// MaxWorkloads bounds how many profiles are learnt at once; events of
	// further ones are counted in Stats.DroppedWorkloadEvents. Default 256.
	MaxWorkloads int
	// Reviewed, when set, tells which keys have a reviewed profile: their
	// behaviour is not learnt, only the image their pods run (for Stale).
	Reviewed func(Key) bool
}

// Report is what was learnt for one profile since the last Drain.
type Report struct {
	Key   Key
	Image string
	// Pods counts the pods the behaviour came from.
	Pods      int
	Behaviour v1alpha1.ProfileBehaviour
	// Truncated counts observations whose entry was not recorded because a
	// bound was reached (a list, or the profile's bytes).
	Truncated int64
}

// Stats are the learner's counters since it started.
type Stats struct {
	// DroppedWorkloadEvents are events of profiles beyond MaxWorkloads.
	DroppedWorkloadEvents uint64
	// Truncated are observations not recorded because a profile was full.
	Truncated uint64
}

// Learner records per profile what the containers do, each list bounded by
// the WorkloadProfile CRD's bounds and the number of profiles by
// Options.MaxWorkloads. It is safe for concurrent use.
type Learner struct {
	opts  Options
	mu    sync.Mutex
	m     map[Key]*learnt
	stats Stats
}

// maxPodsPerProfile bounds the pod set of a profile (only its size is
// reported).
const maxPodsPerProfile = 1024

// MaxProfileBytes bounds the string bytes one learnt profile holds (paths
// may be kilobytes long): entries beyond it are truncated and counted.
const MaxProfileBytes = 64 << 10

type learnt struct {
	image     string
	pods      map[string]struct{}
	exec      map[string]struct{}
	pairs     map[v1alpha1.ProcessPair]struct{}
	dirs      map[string]struct{}
	peers     map[v1alpha1.ProfilePeer]struct{}
	listen    map[v1alpha1.ProfilePort]struct{}
	truncated int64
	bytes     int
}

// NewLearner returns an empty learner.
func NewLearner(opts Options) *Learner {
	if opts.MaxWorkloads <= 0 {
		opts.MaxWorkloads = 256
	}
	return &Learner{opts: opts, m: map[Key]*learnt{}}
}

// Observe records the behaviour an event shows, if it belongs to a profile
// being learnt.
func (l *Learner) Observe(ev *engine.Event) {
	e, ok := engine.EntryOf(ev)
	if !ok {
		return
	}
	k, ok := KeyOf(ev)
	if !ok {
		return
	}
	reviewed := l.opts.Reviewed != nil && l.opts.Reviewed(k)
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.m[k]
	if p == nil {
		if len(l.m) >= l.opts.MaxWorkloads {
			l.stats.DroppedWorkloadEvents++
			return
		}
		p = &learnt{pods: map[string]struct{}{}, exec: map[string]struct{}{}, pairs: map[v1alpha1.ProcessPair]struct{}{},
			dirs: map[string]struct{}{}, peers: map[v1alpha1.ProfilePeer]struct{}{}, listen: map[v1alpha1.ProfilePort]struct{}{}}
		l.m[k] = p
	}
	if ev.Container.Image != "" {
		p.image = ev.Container.Image
	}
	if len(p.pods) < maxPodsPerProfile {
		if _, ok := p.pods[ev.Pod.UID]; !ok {
			p.pods[ev.Pod.UID] = struct{}{}
		}
	}
	if reviewed {
		return
	}
	if p.has(e) {
		return
	}
	size := entrySize(e)
	if p.bytes+size > MaxProfileBytes {
		p.truncated++
		l.stats.Truncated++
		return
	}
	p.bytes += size
	var full bool
	switch e.Kind {
	case engine.ProfileExec:
		full = add(p.exec, e.Executable, engine.MaxProfileExecutables)
		if e.Pair.Parent != "" {
			full = add(p.pairs, e.Pair, engine.MaxProfilePairs) || full
		}
	case engine.ProfileWrite:
		full = add(p.dirs, e.WriteDirectory, engine.MaxProfileWriteDirs)
	case engine.ProfileConnect:
		full = add(p.peers, e.Peer, engine.MaxProfileOutbound)
	case engine.ProfileListen:
		full = add(p.listen, e.Port, engine.MaxProfileListening)
	}
	if full {
		p.truncated++
		l.stats.Truncated++
	}
}

// entrySize is the string bytes an entry can add to a profile.
func entrySize(e engine.ProfileEntry) int {
	return len(e.Executable) + len(e.Pair.Parent) + len(e.Pair.Child) + len(e.WriteDirectory) +
		len(e.Peer.Service) + len(e.Peer.Workload) + len(e.Peer.CIDR) + len(e.Peer.Protocol) + len(e.Port.Protocol)
}

// has reports whether the profile holds everything the entry needs.
func (p *learnt) has(e engine.ProfileEntry) bool {
	switch e.Kind {
	case engine.ProfileExec:
		_, a := p.exec[e.Executable]
		_, b := p.pairs[e.Pair]
		return a && (b || e.Pair.Parent == "")
	case engine.ProfileWrite:
		_, ok := p.dirs[e.WriteDirectory]
		return ok
	case engine.ProfileConnect:
		_, ok := p.peers[e.Peer]
		return ok
	case engine.ProfileListen:
		_, ok := p.listen[e.Port]
		return ok
	}
	return true
}

// add puts v in the set unless the set is full; it reports a full set that
// lacked v.
func add[T comparable](m map[T]struct{}, v T, limit int) bool {
	if _, ok := m[v]; ok {
		return false
	}
	if len(m) >= limit {
		return true
	}
	m[v] = struct{}{}
	return false
}

// Drain returns what was learnt since the last Drain, one canonical report
// per profile, and forgets it.
func (l *Learner) Drain() []Report {
	l.mu.Lock()
	m := l.m
	l.m = map[Key]*learnt{}
	l.mu.Unlock()
	out := make([]Report, 0, len(m))
	for k, p := range m {
		r := Report{Key: k, Image: p.image, Pods: len(p.pods), Truncated: p.truncated}
		b := &r.Behaviour
		b.Executables = keys(p.exec)
		b.ProcessPairs = keys(p.pairs)
		b.WriteDirectories = keys(p.dirs)
		b.Outbound = keys(p.peers)
		b.Listening = keys(p.listen)
		Canonical(b)
		out = append(out, r)
	}
	return out
}

// Stats returns the learner's counters.
func (l *Learner) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

func keys[T comparable](m map[T]struct{}) []T {
	out := make([]T, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Merge adds a report's behaviour to a profile's, keeping the CRD's bounds;
// it returns how many entries did not fit.
func Merge(dst *v1alpha1.ProfileBehaviour, src v1alpha1.ProfileBehaviour) int64 {
	var cut int64
	dst.Executables, cut = mergeList(dst.Executables, src.Executables, engine.MaxProfileExecutables, cut)
	dst.ProcessPairs, cut = mergeList(dst.ProcessPairs, src.ProcessPairs, engine.MaxProfilePairs, cut)
	dst.WriteDirectories, cut = mergeList(dst.WriteDirectories, src.WriteDirectories, engine.MaxProfileWriteDirs, cut)
	dst.Outbound, cut = mergeList(dst.Outbound, src.Outbound, engine.MaxProfileOutbound, cut)
	dst.Listening, cut = mergeList(dst.Listening, src.Listening, engine.MaxProfileListening, cut)
	Canonical(dst)
	return cut
}

func mergeList[T comparable](dst, src []T, limit int, cut int64) ([]T, int64) {
	have := make(map[T]struct{}, len(dst))
	for _, v := range dst {
		have[v] = struct{}{}
	}
	for _, v := range src {
		if _, ok := have[v]; ok {
			continue
		}
		if len(have) >= limit {
			cut++
			continue
		}
		have[v] = struct{}{}
		dst = append(dst, v)
	}
	return dst, cut
}
