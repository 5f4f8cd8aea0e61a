package profile

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

func podEvent(pod, kind string) engine.Event {
	return engine.Event{
		Kind:      engine.Kind(kind),
		Container: engine.Container{ID: "c-" + pod, Name: "nginx", Image: "registry.example/web:1.2"},
		Pod:       engine.Pod{UID: pod, Name: pod, Namespace: "shop"},
		Workload:  engine.Workload{Kind: "Deployment", Name: "web", Namespace: "shop"},
	}
}

func TestLearnerRecordsCanonicalBehaviourPerWorkloadAndContainer(t *testing.T) {
	l := NewLearner(Options{})
	for _, pod := range []string{"web-1", "web-2", "web-1"} {
		ev := podEvent(pod, "exec")
		ev.Process = engine.Process{Binary: "/usr/sbin/nginx", Parent: engine.Ancestor{Binary: "/docker-entrypoint.sh"}}
		l.Observe(&ev)
		ev = podEvent(pod, "open")
		ev.File = engine.File{Path: "/var/cache/nginx/proxy/1", Write: true}
		l.Observe(&ev)
		ev = podEvent(pod, "open")
		ev.File = engine.File{Path: "/etc/nginx/nginx.conf"} // a read: no entry
		l.Observe(&ev)
		ev = podEvent(pod, "connect")
		ev.Net = engine.Net{Protocol: "tcp", Peer: engine.Peer{IP: "10.96.0.10", Port: 5432, Service: "db", Namespace: "shop"}}
		l.Observe(&ev)
		ev = podEvent(pod, "listen")
		ev.Net = engine.Net{Protocol: "tcp", Local: engine.Endpoint{Port: 8080}}
		l.Observe(&ev)
	}
	ev := podEvent("web-1", "exec")
	ev.Process.Binary = "/docker-entrypoint.sh" // the first process: parent outside the container
	l.Observe(&ev)
	// Not learnt: the host, a bare pod, a static pod.
	host := engine.Event{Kind: engine.KindExec, Process: engine.Process{Binary: "/bin/bash"}}
	l.Observe(&host)
	bare := podEvent("p", "exec")
	bare.Workload = engine.Workload{Kind: "Pod", Name: "p", Namespace: "shop"}
	bare.Process.Binary = "/bin/sh"
	l.Observe(&bare)

	reports := l.Drain()
	if len(reports) != 1 {
		t.Fatalf("got %d reports, want 1: %+v", len(reports), reports)
	}
	r := reports[0]
	want := Report{
		Key: Key{Namespace: "shop", Kind: "Deployment", Workload: "web", Container: "nginx"}, Image: "registry.example/web:1.2", Pods: 2,
		Behaviour: v1alpha1.ProfileBehaviour{
			Executables:      []string{"/docker-entrypoint.sh", "/usr/sbin/nginx"},
			ProcessPairs:     []v1alpha1.ProcessPair{{Parent: "/docker-entrypoint.sh", Child: "/usr/sbin/nginx"}},
			WriteDirectories: []string{"/var/cache/nginx/proxy"},
			Outbound:         []v1alpha1.ProfilePeer{{Service: "shop/db", Port: 5432, Protocol: "tcp"}},
			Listening:        []v1alpha1.ProfilePort{{Port: 8080, Protocol: "tcp"}},
		},
	}
	if fmt.Sprintf("%+v", r) != fmt.Sprintf("%+v", want) {
		t.Errorf("report\n %+v\nwant\n %+v", r, want)
	}
	if r.Key.Name() != "deployment-web-nginx" {
		t.Errorf("name %q", r.Key.Name())
	}
	if got := l.Drain(); len(got) != 0 {
		t.Errorf("a second drain reported %+v", got)
	}

	// What the learner learnt is what a Ready profile of it allows.
	p, err := engine.NewProfile("shop/deployment-web-nginx", true, r.Behaviour)
	if err != nil {
		t.Fatal(err)
	}
	ok := podEvent("web-3", "exec")
	ok.Process = engine.Process{Binary: "/usr/sbin/nginx", Parent: engine.Ancestor{Binary: "/docker-entrypoint.sh"}}
	if m := p.Missing(&ok); m != "" {
		t.Errorf("learnt exec is missing %q", m)
	}
}

// An attacker in a container runs ever new binaries, writes everywhere and
// connects everywhere to grow the agent's memory: each list stops at the
// CRD's bound and every entry left out is counted.
func TestLearnerBoundsEachListAndCountsTruncation(t *testing.T) {
	l := NewLearner(Options{})
	const n = 3000
	for i := range n {
		ev := podEvent("web-1", "exec")
		ev.Process = engine.Process{Binary: fmt.Sprintf("/tmp/x%d", i), Parent: engine.Ancestor{Binary: "/bin/sh"}}
		l.Observe(&ev)
		ev = podEvent("web-1", "connect")
		ev.Net = engine.Net{Protocol: "tcp", Peer: engine.Peer{IP: fmt.Sprintf("203.0.%d.%d", i/256, i%256), Port: 443}}
		l.Observe(&ev)
	}
	r := l.Drain()[0]
	if len(r.Behaviour.Executables) != engine.MaxProfileExecutables || len(r.Behaviour.ProcessPairs) != engine.MaxProfilePairs ||
		len(r.Behaviour.Outbound) != engine.MaxProfileOutbound {
		t.Errorf("lists %d executables, %d pairs, %d peers: want the bounds", len(r.Behaviour.Executables), len(r.Behaviour.ProcessPairs), len(r.Behaviour.Outbound))
	}
	// An exec adding neither executable nor pair counts once.
	want := int64(n-engine.MaxProfileExecutables) + int64(n-engine.MaxProfileOutbound)
	if r.Truncated != want || l.Stats().Truncated != uint64(want) {
		t.Errorf("truncated %d (stats %d), want %d", r.Truncated, l.Stats().Truncated, want)
	}
}

// Pods of ever new workloads cannot grow the number of profiles past the
// bound; their events are counted.
func TestLearnerBoundsWorkloadsAndLearnsNoBehaviourOfReviewed(t *testing.T) {
	reviewed := Key{Namespace: "shop", Kind: "Deployment", Workload: "w-reviewed", Container: "nginx"}
	l := NewLearner(Options{MaxWorkloads: 11, Reviewed: func(k Key) bool { return k == reviewed }})
	ev := podEvent("p", "exec")
	ev.Workload.Name = "w-reviewed"
	ev.Container.Image = "registry.example/web:1.3"
	ev.Process.Binary = "/bin/sh"
	l.Observe(&ev)
	for i := range 25 {
		ev := podEvent("p", "exec")
		ev.Workload.Name = fmt.Sprintf("w-%d", i)
		ev.Process.Binary = "/bin/app"
		l.Observe(&ev)
	}
	rs := l.Drain()
	if len(rs) != 11 {
		t.Errorf("%d profiles learnt, want 11", len(rs))
	}
	for _, r := range rs {
		if r.Key == reviewed && (r.Image != "registry.example/web:1.3" || len(r.Behaviour.Executables) != 0) {
			t.Errorf("reviewed profile's report %+v: want its image and no behaviour", r)
		}
	}
	if got := l.Stats().DroppedWorkloadEvents; got != 15 {
		t.Errorf("dropped %d events, want 15", got)
	}
}

// Long paths cannot make one profile hold more than MaxProfileBytes of
// strings; what does not fit is counted.
func TestLearnerBoundsBytesPerProfile(t *testing.T) {
	l := NewLearner(Options{})
	long := strings.Repeat("d", 4000)
	for i := range 100 {
		ev := podEvent("web-1", "open")
		ev.File = engine.File{Path: fmt.Sprintf("/%s/%03d/f", long, i), Write: true}
		l.Observe(&ev)
		l.Observe(&ev) // a repeat of a kept entry adds nothing; of a cut one, counts again
	}
	r := l.Drain()[0]
	n := 0
	for _, d := range r.Behaviour.WriteDirectories {
		n += len(d)
	}
	if n > MaxProfileBytes || len(r.Behaviour.WriteDirectories) != MaxProfileBytes/4005 {
		t.Errorf("%d directories of %d bytes kept, want %d within %d", len(r.Behaviour.WriteDirectories), n, MaxProfileBytes/4005, MaxProfileBytes)
	}
	if want := int64(2 * (100 - MaxProfileBytes/4005)); r.Truncated != want {
		t.Errorf("truncated %d, want %d", r.Truncated, want)
	}
}

func TestKeyNameIsAValidLengthAndStable(t *testing.T) {
	long := Key{Kind: "Deployment", Workload: strings.Repeat("a", 253), Container: "c"}
	n := long.Name()
	if len(n) != 253 || n != long.Name() {
		t.Fatalf("name of %d bytes", len(n))
	}
	other := long
	other.Container = "d"
	if other.Name() == n {
		t.Error("two long keys share a name")
	}
}

func TestMergeKeepsBoundsAndCountsTheRest(t *testing.T) {
	dst := v1alpha1.ProfileBehaviour{Executables: []string{"/b"}}
	src := v1alpha1.ProfileBehaviour{}
	for i := range engine.MaxProfileExecutables + 5 {
		src.Executables = append(src.Executables, fmt.Sprintf("/x/%04d", i))
	}
	src.Executables = append(src.Executables, "/b")
	cut := Merge(&dst, src)
	if len(dst.Executables) != engine.MaxProfileExecutables || cut != 6 || dst.Executables[0] != "/b" {
		t.Errorf("merged %d executables (first %q), cut %d; want %d, /b, 6", len(dst.Executables), dst.Executables[0], cut, engine.MaxProfileExecutables)
	}
}

// BenchmarkLearnerObserve is the agent's per-event cost of learning for an
// event already in the profile (the steady state).
func BenchmarkLearnerObserve(b *testing.B) {
	l := NewLearner(Options{})
	ev := podEvent("web-1", "exec")
	ev.Process = engine.Process{Binary: "/usr/sbin/nginx", Parent: engine.Ancestor{Binary: "/docker-entrypoint.sh"}}
	b.ReportAllocs()
	for b.Loop() {
		l.Observe(&ev)
	}
}

// BenchmarkLearnerMemory reports the heap a learnt profile holds: a typical
// one (8 executables, 8 pairs, 4 directories, 6 peers, 2 ports) and one at
// every list's bound (the most an attacker can make one hold).
func BenchmarkLearnerMemory(b *testing.B) {
	for _, tc := range []struct {
		name                       string
		exes, dirs, peers, listens int
	}{
		{"typical", 8, 4, 6, 2},
		{"at-bounds", engine.MaxProfileExecutables * 2, engine.MaxProfileWriteDirs, engine.MaxProfileOutbound, engine.MaxProfileListening},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const workloads = 100
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				l := NewLearner(Options{MaxWorkloads: workloads})
				for w := range workloads {
					fill := func(kind string, set func(*engine.Event)) {
						ev := podEvent("web-1", kind)
						ev.Workload.Name = fmt.Sprintf("workload-%03d", w)
						set(&ev)
						l.Observe(&ev)
					}
					for i := range tc.exes {
						fill("exec", func(ev *engine.Event) {
							ev.Process = engine.Process{Binary: fmt.Sprintf("/usr/local/bin/program-%04d", i/2), Parent: engine.Ancestor{Binary: fmt.Sprintf("/usr/local/bin/program-%04d", i)}}
						})
					}
					for i := range tc.dirs {
						fill("open", func(ev *engine.Event) {
							ev.File = engine.File{Path: fmt.Sprintf("/var/lib/app/data-%04d/f", i), Write: true}
						})
					}
					for i := range tc.peers {
						fill("connect", func(ev *engine.Event) {
							ev.Net = engine.Net{Protocol: "tcp", Peer: engine.Peer{IP: fmt.Sprintf("10.1.%d.%d", i/256, i%256), Port: 443}}
						})
					}
					for i := range tc.listens {
						fill("listen", func(ev *engine.Event) {
							ev.Net = engine.Net{Protocol: "tcp", Local: engine.Endpoint{Port: int64(8000 + i)}}
						})
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/workloads, "B/profile")
				runtime.KeepAlive(l)
			}
		})
	}
}
