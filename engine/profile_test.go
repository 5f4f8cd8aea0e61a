package engine

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

func webProfile(t testing.TB, ready bool) *Profile {
	t.Helper()
	p, err := NewProfile("shop/web-nginx", ready, v1alpha1.ProfileBehaviour{
		Executables:      []string{"/docker-entrypoint.sh", "/usr/sbin/nginx"},
		ProcessPairs:     []v1alpha1.ProcessPair{{Parent: "/docker-entrypoint.sh", Child: "/usr/sbin/nginx"}},
		WriteDirectories: []string{"/tmp", "/var/cache/nginx/**"},
		Outbound: []v1alpha1.ProfilePeer{
			{Service: "shop/db", Port: 5432, Protocol: "tcp"},
			{Workload: "Deployment/shop/api", Port: 0},
			{CIDR: "10.9.0.0/16", Port: 443, Protocol: "tcp"},
		},
		Listening: []v1alpha1.ProfilePort{{Port: 8080, Protocol: "tcp"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProfileAllowsAndNamesTheMissingEntry(t *testing.T) {
	p := webProfile(t, true)
	c := Container{ID: "c1"}
	exec := func(parent, bin string) *Event {
		return &Event{Kind: KindExec, Container: c, Process: Process{Binary: bin, Parent: Ancestor{Binary: parent}}}
	}
	write := func(path, cwd string) *Event {
		return &Event{Kind: KindOpen, Container: c, File: File{Path: path, Write: true}, Process: Process{Cwd: cwd}}
	}
	conn := func(peer Peer, proto string) *Event {
		return &Event{Kind: KindConnect, Container: c, Net: Net{Protocol: proto, Peer: peer}}
	}
	cases := []struct {
		name    string
		ev      *Event
		missing string
	}{
		{"learnt exec", exec("/docker-entrypoint.sh", "/usr/sbin/nginx"), ""},
		{"exec with an unknown parent needs only the executable", exec("", "/usr/sbin/nginx"), ""},
		{"shell", exec("/usr/bin/runc", "/bin/sh"), "executable /bin/sh"},
		{"known executable from a new parent", exec("/usr/sbin/nginx", "/docker-entrypoint.sh"), "process pair /usr/sbin/nginx -> /docker-entrypoint.sh"},
		{"write in a learnt directory", write("/tmp/x", "/"), ""},
		{"write in a subtree entry", write("/var/cache/nginx/a/b/c", "/"), ""},
		{"the subtree entry's own directory", write("/var/cache/nginx/x", "/"), ""},
		{"a sibling of the subtree is outside", write("/var/cache/nginxx/x", "/"), "write directory /var/cache/nginxx"},
		{"read is no write", &Event{Kind: KindOpen, Container: c, File: File{Path: "/etc/shadow"}}, ""},
		{"write outside", write("/etc/passwd", "/"), "write directory /etc"},
		{"dot-dot cannot claim a learnt directory", write("/tmp/../etc/passwd", "/"), "write directory /etc"},
		{"relative path from the working directory", write("passwd", "/etc"), "write directory /etc"},
		{"relative path into a learnt directory", write("x", "/tmp"), ""},
		{"relative path climbing out", write("../../etc/x", "/tmp"), "write directory /etc"},
		{"service", conn(Peer{IP: "10.96.0.5", Port: 5432, Service: "db", Namespace: "shop"}, "tcp"), ""},
		{"service on another port", conn(Peer{IP: "10.96.0.5", Port: 22, Service: "db", Namespace: "shop"}, "tcp"), "outbound service shop/db:22/tcp"},
		{"same service name, other namespace", conn(Peer{IP: "10.96.0.6", Port: 5432, Service: "db", Namespace: "evil"}, "tcp"), "outbound service evil/db:5432/tcp"},
		{"workload on any port", conn(Peer{IP: "10.1.0.7", Port: 9999, Namespace: "shop", Workload: Workload{Kind: "Deployment", Name: "api", Namespace: "shop"}}, "udp"), ""},
		{"CIDR", conn(Peer{IP: "10.9.3.4", Port: 443}, "tcp"), ""},
		{"CIDR, v4-mapped v6", conn(Peer{IP: "::ffff:10.9.3.4", Port: 443}, "tcp"), ""},
		{"CIDR, other protocol", conn(Peer{IP: "10.9.3.4", Port: 443}, "udp"), "outbound 10.9.3.4/32:443/udp"},
		{"outside every peer", conn(Peer{IP: "203.0.113.9", Port: 4444}, "tcp"), "outbound 203.0.113.9/32:4444/tcp"},
		{"learnt listen", &Event{Kind: KindListen, Container: c, Net: Net{Protocol: "tcp", Local: Endpoint{Port: 8080}}}, ""},
		{"new listen", &Event{Kind: KindListen, Container: c, Net: Net{Protocol: "tcp", Local: Endpoint{Port: 4444}}}, "listening 4444/tcp"},
		{"host events are no profile's", &Event{Kind: KindExec, Process: Process{Binary: "/bin/sh"}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Missing(tc.ev); got != tc.missing {
				t.Errorf("Missing = %q, want %q", got, tc.missing)
			}
			if got := p.Allows(tc.ev); got != (tc.missing == "") {
				t.Errorf("Allows = %v, want %v", got, tc.missing == "")
			}
		})
	}
	notReady := webProfile(t, false)
	if !notReady.Allows(exec("/usr/bin/runc", "/bin/sh")) {
		t.Error("a profile that is not Ready must allow everything")
	}
}

func TestProfileRuleInCEL(t *testing.T) {
	r := mustCompile(t, "outside-profile", &v1alpha1.DetectionRuleSpec{
		Source: "process", Severity: "high",
		Condition: `event.kind == "exec" && profile.ready && !profile.allows(event)`,
		Output:    `"outside profile " + profile.name + ": " + profile.missing(event)`,
	})
	ev := &Event{Kind: KindExec, Container: Container{ID: "c1"}, Process: Process{Binary: "/bin/sh", Parent: Ancestor{Binary: "/usr/bin/runc"}}}
	if v := r.Eval(ev); v.Matched || v.Err != nil {
		t.Fatalf("without a profile: %+v, want no match", v)
	}
	ev.Profile = webProfile(t, true)
	if v := r.Eval(ev); !v.Matched {
		t.Fatalf("with a Ready profile: %+v, want a match", v)
	}
	if got, want := r.Output(ev), "outside profile shop/web-nginx: executable /bin/sh"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	ev.Process.Binary, ev.Process.Parent.Binary = "/usr/sbin/nginx", "/docker-entrypoint.sh"
	if v := r.Eval(ev); v.Matched {
		t.Errorf("learnt exec matched")
	}
}

func TestProfileJSONInEventsAndBounds(t *testing.T) {
	ev := mustDecode(t, `{"kind":"exec","container":{"id":"c"},"process":{"binary":"/bin/sh"},
		"profile":{"name":"shop/p","ready":true,"executables":["/usr/sbin/nginx"],"listening":[{"port":80,"protocol":"tcp"}]}}`)
	if ev.Profile == nil || !ev.Profile.Ready || ev.Profile.Missing(&ev) != "executable /bin/sh" {
		t.Fatalf("decoded profile %+v", ev.Profile)
	}
	b, err := json.Marshal(ev.Profile)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"name":"shop/p","ready":true,"executables":["/usr/sbin/nginx"],"listening":[{"port":80,"protocol":"tcp"}]}`; string(b) != want {
		t.Errorf("marshal %s\nwant %s", b, want)
	}

	tooMany := make([]string, MaxProfileExecutables+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("\"/bin/x%d\"", i)
	}
	bad := []struct{ js, want string }{
		{`{"executables":[` + strings.Join(tooMany, ",") + `]}`, "executables: 257 entries, at most 256"},
		{`{"writeDirectories":["tmp"]}`, `writeDirectories[0]: "tmp" is not an absolute path`},
		{`{"outbound":[{"service":"db","port":1}]}`, `outbound[0].service: "db" is not namespace/name`},
		{`{"outbound":[{"port":1}]}`, `outbound[0]: set exactly one of service, workload and cidr`},
		{`{"outbound":[{"cidr":"10.0.0.0/33","port":1}]}`, `outbound[0].cidr: invalid CIDR "10.0.0.0/33"`},
		{`{"outbound":[{"workload":"a/b","port":1}]}`, `outbound[0].workload: "a/b" is not Kind/namespace/name`},
	}
	for _, tc := range bad {
		var p Profile
		err := json.Unmarshal([]byte(tc.js), &p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.js[:min(len(tc.js), 40)], err, tc.want)
		}
	}
}

func TestEntryOf(t *testing.T) {
	cases := []struct {
		ev   Event
		want ProfileEntry
		ok   bool
	}{
		{Event{Kind: KindExec, Container: Container{ID: "c"}, Process: Process{Binary: "/b", Parent: Ancestor{Binary: "/a"}}},
			ProfileEntry{Kind: ProfileExec, Executable: "/b", Pair: v1alpha1.ProcessPair{Parent: "/a", Child: "/b"}}, true},
		{Event{Kind: KindOpen, Container: Container{ID: "c"}, File: File{Path: "/a/b/c", Write: true}},
			ProfileEntry{Kind: ProfileWrite, WriteDirectory: "/a/b"}, true},
		{Event{Kind: KindOpen, Container: Container{ID: "c"}, File: File{Path: "/f", Write: true}},
			ProfileEntry{Kind: ProfileWrite, WriteDirectory: "/"}, true},
		{Event{Kind: KindConnect, Container: Container{ID: "c"}, Net: Net{Protocol: "tcp", Peer: Peer{IP: "2001:db8::1", Port: 53}}},
			ProfileEntry{Kind: ProfileConnect, Peer: v1alpha1.ProfilePeer{CIDR: "2001:db8::1/128", Port: 53, Protocol: "tcp"}}, true},
		{Event{Kind: KindConnect, Container: Container{ID: "c"}, Net: Net{Protocol: "tcp", Peer: Peer{IP: "10.1.1.1", Port: 80, Namespace: "a", Workload: Workload{Kind: "StatefulSet", Name: "s"}}}},
			ProfileEntry{Kind: ProfileConnect, Peer: v1alpha1.ProfilePeer{Workload: "StatefulSet/a/s", Port: 80, Protocol: "tcp"}}, true},
		{Event{Kind: KindExit, Container: Container{ID: "c"}}, ProfileEntry{}, false},
		{Event{Kind: KindExec, Process: Process{Binary: "/b"}}, ProfileEntry{}, false},
	}
	for i, tc := range cases {
		got, ok := EntryOf(&tc.ev)
		if ok != tc.ok || got != tc.want {
			t.Errorf("%d: EntryOf = %+v, %v; want %+v, %v", i, got, ok, tc.want, tc.ok)
		}
	}
}

// BenchmarkProfileAllows is the per-event cost of a profile rule on an
// event inside the profile (the common case) for each kind.
func BenchmarkProfileAllows(b *testing.B) {
	p := webProfile(b, true)
	r := mustCompile(b, "outside-profile", &v1alpha1.DetectionRuleSpec{
		Source: "process", Severity: "high",
		Condition: `profile.ready && !profile.allows(event)`,
	})
	c := Container{ID: "c1"}
	evs := map[string]*Event{
		"exec":                 {Kind: KindExec, Container: c, Profile: p, Process: Process{Binary: "/usr/sbin/nginx", Parent: Ancestor{Binary: "/docker-entrypoint.sh"}}},
		"write":                {Kind: KindOpen, Container: c, Profile: p, File: File{Path: "/var/cache/nginx/a/b", Write: true}},
		"connect":              {Kind: KindConnect, Container: c, Profile: p, Net: Net{Protocol: "tcp", Peer: Peer{IP: "10.9.3.4", Port: 443}}},
		"exec-without-profile": {Kind: KindExec, Container: c, Process: Process{Binary: "/usr/sbin/nginx"}},
	}
	for _, k := range []string{"exec", "write", "connect", "exec-without-profile"} {
		ev := evs[k]
		b.Run(k, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if v := r.Eval(ev); v.Matched {
					b.Fatal("matched")
				}
			}
		})
	}
}

// FuzzProfileJSON: any bytes either fail to decode with an error or give a
// profile whose checks run without panicking, within the bounds.
func FuzzProfileJSON(f *testing.F) {
	f.Add([]byte(`{"name":"a/b","ready":true,"executables":["/bin/sh"],"writeDirectories":["/tmp/**"],"outbound":[{"cidr":"10.0.0.0/8","port":0}],"listening":[{"port":80}]}`))
	f.Add([]byte(`{"outbound":[{"service":"a/b","port":1},{"workload":"K/n/w","port":2,"protocol":"udp"}]}`))
	f.Add([]byte(`{"writeDirectories":["/**"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Profile
		if err := json.Unmarshal(b, &p); err != nil {
			return
		}
		bh := p.Behaviour()
		if len(bh.Executables) > MaxProfileExecutables || len(bh.Outbound) > MaxProfileOutbound {
			t.Fatalf("over the bounds: %d executables, %d peers", len(bh.Executables), len(bh.Outbound))
		}
		p.Ready = true
		c := Container{ID: "c"}
		for _, ev := range []*Event{
			{Kind: KindExec, Container: c, Process: Process{Binary: "/bin/sh", Parent: Ancestor{Binary: "/x"}}},
			{Kind: KindOpen, Container: c, File: File{Path: "../a/./b", Write: true}, Process: Process{Cwd: "rel"}},
			{Kind: KindConnect, Container: c, Net: Net{Peer: Peer{IP: "::ffff:10.1.2.3", Port: 80}}},
			{Kind: KindListen, Container: c, Net: Net{Local: Endpoint{Port: 80}}},
		} {
			if p.Allows(ev) != (p.Missing(ev) == "") {
				t.Fatalf("Allows and Missing disagree on %s", ev.Kind)
			}
		}
	})
}
