package engine

import (
	"context"
	"testing"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// FuzzCompile: no condition text panics the compiler, the constraint analysis
// or evaluation; and whatever compiles is sound: a match implies its
// constraints admit the event.
func FuzzCompile(f *testing.F) {
	for _, c := range []string{
		`event.kind == "exec" && process.binary.endsWith("/sh") && container.id != ""`,
		`file.path.startsWith("/etc/") || file.path == "/root/x"`,
		`net.peer.port in [4444, 1337] && net.peer.ip.inCIDR("10.0.0.0/8")`,
		`audit.verb == "create" && has(audit.requestObject.roleRef)`,
		`process.ancestors.exists(a, a.name == "sh")`,
		`object.kind == "Pod" && pod.labels.?app.orValue("") == "x"`,
		`((((true))))`, `"a" in ["a"]`, `1 / 0 == 1`, `process.name.matches("[")`,
	} {
		f.Add(c, "process")
	}
	events := []Event{
		{Kind: KindExec, Process: Process{Binary: "/bin/sh", Name: "sh", Args: []string{"sh"}}, Container: Container{ID: "c"}},
		{Kind: KindOpen, File: File{Path: "/etc/passwd"}},
		{Kind: KindConnect, Net: Net{Peer: Peer{IP: "10.0.0.1", Port: 4444}}},
		{Kind: KindAudit, Audit: Audit{Verb: "create", RequestObject: map[string]any{"roleRef": map[string]any{"name": "x"}}}},
		{Kind: KindObject, Object: map[string]any{"kind": "Pod"}},
	}
	f.Fuzz(func(t *testing.T, cond, source string) {
		r, err := Compile("f", "", &v1alpha1.DetectionRuleSpec{Source: source, Severity: "low", Condition: cond})
		if err != nil {
			return
		}
		for i := range events {
			ev := &events[i]
			if v := r.Check(context.Background(), ev); v.Matched && !r.Constraints().Admits(ev) {
				t.Fatalf("%q matched %+v but its constraints %s reject it", cond, ev, r.Constraints().Explain())
			}
		}
	})
}
