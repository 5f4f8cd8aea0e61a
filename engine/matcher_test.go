package engine

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// Pools shared by the random rule and event generators, small so that rules
// and events collide often.
var (
	poolBinaries = []string{"/bin/sh", "/usr/bin/bash", "/usr/bin/curl", "/tmp/x", "/bin/busybox", "sh", ""}
	poolNames    = []string{"sh", "bash", "curl", "x", "busybox"}
	poolPaths    = []string{"/etc/shadow", "/etc/ssh/sshd_config", "/var/run/secrets/kubernetes.io/serviceaccount/token", "/proc/1/mem", "/tmp/a", "etc/rel", "", "/et"}
	poolPrefixes = []string{"/etc/", "/etc/ssh/", "/var/run/secrets/", "/proc/", "/tm", "/", "/etc/shadow", "/var/"}
	poolPorts    = []int64{22, 53, 443, 4444, 0}
	poolIPs      = []string{"10.0.0.7", "192.168.1.1", "127.0.0.1", "fd00::1", "::ffff:10.1.1.1", "", "bogus"}
	poolCIDRs    = []string{"10.0.0.0/8", "127.0.0.1", "fd00::/8", "192.168.0.0/16"}
	poolVerbs    = []string{"create", "get", "list", "delete"}
	poolRes      = []string{"pods", "secrets", "nodes", "selfsubjectaccessreviews"}
	poolSubres   = []string{"exec", "attach", "proxy", "", "log"}
	poolNS       = []string{"shop", "kube-system", ""}
	poolObjKinds = []string{"Pod", "ClusterRole", "Service", ""}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func quoteList[T any](r *rand.Rand, s []T) string {
	n := 1 + r.IntN(3)
	var parts []string
	for i := 0; i < n; i++ {
		parts = append(parts, lit(pick(r, s)))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func lit(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

// randomAtom returns a CEL boolean expression built from the forms the
// constraint analysis understands, or from forms it must ignore.
func randomAtom(r *rand.Rand) string {
	kinds := AllKinds()
	switch r.IntN(26) {
	case 0:
		return "event.kind == " + lit(string(pick(r, kinds)))
	case 1:
		return fmt.Sprintf("event.kind in [%q, %q]", pick(r, kinds), pick(r, kinds))
	case 2:
		return "process.binary == " + lit(pick(r, poolBinaries))
	case 3:
		return "process.binary in " + quoteList(r, poolBinaries)
	case 4:
		return "process.name == " + lit(pick(r, poolNames))
	case 5:
		return "process.binary.endsWith(" + lit("/"+pick(r, poolNames)) + ")"
	case 6:
		return "file.path.startsWith(" + lit(pick(r, poolPrefixes)) + ")"
	case 7:
		return "file.path == " + lit(pick(r, poolPaths))
	case 8:
		return "net.peer.port == " + lit(pick(r, poolPorts))
	case 9:
		return "net.local.port in " + quoteList(r, poolPorts)
	case 10:
		return "net.peer.ip.inCIDR(" + lit(pick(r, poolCIDRs)) + ")"
	case 11:
		return "audit.verb == " + lit(pick(r, poolVerbs))
	case 12:
		return "audit.objectRef.resource in " + quoteList(r, poolRes)
	case 13:
		return "audit.objectRef.subresource == " + lit(pick(r, poolSubres))
	case 14:
		return `container.id != ""`
	case 15:
		return `"" != container.id`
	case 16:
		return "!(" + randomAtom(r) + ")"
	case 17:
		return "(" + randomAtom(r) + " || " + randomAtom(r) + ")"
	case 18:
		return `process.args.exists(a, a == "-c")`
	case 19:
		return "pod.namespace == " + lit(pick(r, poolNS))
	case 20:
		return `event.process.binary == ` + lit(pick(r, poolBinaries))
	case 21:
		// Lists may repeat an entry or name paths of one directory.
		return "file.path in " + quoteList(r, poolPaths)
	case 22:
		return "file.path.startsWith(" + lit(pick(r, poolPrefixes)) + ") || file.path.startsWith(" + lit(pick(r, poolPrefixes)) + ")"
	case 23:
		return "object.kind == " + lit(pick(r, poolObjKinds))
	case 24:
		return "object.kind in " + quoteList(r, poolObjKinds)
	default:
		return "process.uid == 0"
	}
}

func randomRule(t testing.TB, r *rand.Rand, i int) *Rule {
	n := 1 + r.IntN(4)
	atoms := make([]string, n)
	for j := range atoms {
		atoms[j] = randomAtom(r)
	}
	s := &v1alpha1.DetectionRuleSpec{Source: string(pick(r, Sources)), Severity: "low", Condition: strings.Join(atoms, " && ")}
	ns := ""
	if r.IntN(5) == 0 {
		ns = pick(r, poolNS[:2])
	}
	rule, err := Compile(fmt.Sprintf("r%d", i), ns, s)
	if err != nil {
		t.Fatalf("compile %q: %v", s.Condition, err)
	}
	return rule
}

func randomEvent(r *rand.Rand) Event {
	ev := Event{Kind: pick(r, AllKinds())}
	ev.Process.Binary = pick(r, poolBinaries)
	if r.IntN(2) == 0 {
		ev.Process.Args = []string{"sh", "-c", "id"}
	}
	ev.File.Path = pick(r, poolPaths)
	ev.Net.Peer.Port = pick(r, poolPorts)
	ev.Net.Local.Port = pick(r, poolPorts)
	ev.Net.Peer.IP = pick(r, poolIPs)
	ev.Audit.Verb = pick(r, poolVerbs)
	ev.Audit.ObjectRef.Resource = pick(r, poolRes)
	ev.Audit.ObjectRef.Subresource = pick(r, poolSubres)
	ev.Audit.ObjectRef.Namespace = pick(r, poolNS)
	ev.Pod.Namespace = pick(r, poolNS)
	if r.IntN(2) == 0 {
		ev.Container.ID = "c1"
	}
	switch r.IntN(3) {
	case 0:
		ev.Object = map[string]any{"kind": pick(r, poolObjKinds), "metadata": map[string]any{"namespace": pick(r, poolNS)}}
	case 1:
		ev.Object = map[string]any{"metadata": map[string]any{}}
	}
	Normalize(&ev)
	return ev
}

func names(ms []Match) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Rule.Name())
	}
	sort.Strings(out)
	return out
}

// TestIndexedMatcherEqualsNaive is the soundness property of the index and of
// constraint derivation: over random rules and events, the indexed matcher
// returns exactly what evaluating every rule returns, and every match
// satisfies its rule's constraints.
func TestIndexedMatcherEqualsNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 40; round++ {
		rules := make([]*Rule, 60)
		for i := range rules {
			rules[i] = randomRule(t, r, i)
		}
		indexed, naive := NewMatcher(rules), NewNaiveMatcher(rules)
		for e := 0; e < 500; e++ {
			ev := randomEvent(r)
			got, want := names(indexed.Match(&ev, nil)), names(naive.Match(&ev, nil))
			if !slices.Equal(got, want) {
				t.Fatalf("event %+v:\nindexed %v\nnaive   %v", ev, got, want)
			}
			for _, m := range naive.Match(&ev, nil) {
				if !m.Rule.Constraints().Admits(&ev) {
					t.Fatalf("rule %s (%s) matched an event its constraints %s reject: %+v",
						m.Rule.Name(), m.Rule.Spec().Condition, m.Rule.Constraints().Explain(), ev)
				}
			}
		}
		if indexed.Stats.Matches == 0 {
			t.Fatalf("round %d: no event matched any rule; the generators are too sparse to prove anything", round)
		}
	}
}

func TestConstraintsFromConditions(t *testing.T) {
	cases := []struct {
		source, cond string
		want         string
	}{
		{"process", `event.kind == "exec" && process.binary.endsWith("/sh") && container.id != ""`, "kind in [exec] && basename in [sh] && in a container"},
		{"process", `process.binary in ["/bin/sh", "/bin/bash"]`, "kind in [exec,exit,fork,setuid,capset,ptrace,unshare,setns,mount,module,bpf] && binary in [/bin/bash,/bin/sh]"},
		{"process", `event.kind == "exec" && (process.name == "nc" || process.name == "ncat")`, "kind in [exec] && basename in [nc,ncat]"},
		{"process", `event.kind == "exec" && (process.name == "nc" || process.uid == 0)`, "kind in [exec]"},
		{"process", `event.kind == "exec" && !(process.name == "nc")`, "kind in [exec]"},
		{"file", `file.path.startsWith("/etc/") || file.path == "/root/.ssh/authorized_keys"`, "kind in [open] && path prefix in [/etc/,/root/.ssh/authorized_keys]"},
		{"network", `event.kind == "connect" && net.peer.port in [4444, 1337] && net.peer.ip.inCIDR("10.0.0.0/8")`, "kind in [connect] && peer port in [1337 4444] && peer ip in [10.0.0.0/8]"},
		{"audit", `audit.verb == "create" && audit.objectRef.subresource == "exec"`, "kind in [audit] && audit verb in [create] && audit subresource in [exec]"},
		{"audit", `event.kind == "exec"`, "kind in []"},
		{"process", `process.binary == "/a" && process.binary == "/b"`, "kind in [exec,exit,fork,setuid,capset,ptrace,unshare,setns,mount,module,bpf] && binary in []"},
		{"process", `process.ancestors.exists(process, process.binary == "/bin/sh")`, "kind in [exec,exit,fork,setuid,capset,ptrace,unshare,setns,mount,module,bpf]"},
	}
	for _, c := range cases {
		r := mustCompile(t, "c", spec(c.source, c.cond))
		if got := r.Constraints().Explain(); got != c.want {
			t.Errorf("%s\n got  %s\n want %s", c.cond, got, c.want)
		}
	}
}

func TestLeadingDirs(t *testing.T) {
	for p, want := range map[string][2]string{
		"/etc/passwd": {"/etc/", ""}, "/var/run/secrets/x": {"/var/", "/var/run/"}, "/": {"", ""},
		"/etc/": {"/etc/", ""}, "etc/x": {"", ""}, "": {"", ""}, "/a/b/": {"/a/", "/a/b/"},
	} {
		d1, d2 := leadingDirs(p)
		if d1 != want[0] || d2 != want[1] {
			t.Errorf("%q: got %q %q, want %q %q", p, d1, d2, want[0], want[1])
		}
	}
}
