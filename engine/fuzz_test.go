package engine_test

import (
	"testing"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enginetest"
)

// FuzzCompile: no condition text panics the compiler, the constraint analysis
// or evaluation; and whatever compiles is sound against the independent
// oracle (plain CEL): an event the oracle matches is matched by the indexed
// matcher and admitted by the rule's constraints.
func FuzzCompile(f *testing.F) {
	for _, c := range []string{
		`event.kind == "exec" && process.binary.endsWith("/sh") && container.id != ""`,
		`file.path.startsWith("/etc/") || file.path == "/root/x"`,
		`net.peer.port in [4444, 1337] && net.peer.ip.inCIDR("10.0.0.0/8")`,
		`audit.verb == "create" && has(audit.requestObject.roleRef)`,
		`process.ancestors.exists(a, a.name == "sh")`,
		`object.kind == "Pod" && pod.labels.?app.orValue("") == "x"`,
		`((((true))))`, `"a" in ["a"]`, `1 / 0 == 1`, `process.name.matches("[")`,
		`event.kind in ["exec", "open"] || process.name == "sh"`,
	} {
		f.Add(c, "process")
	}
	events := []engine.Event{
		{Kind: engine.KindExec, Process: engine.Process{Binary: "/bin/sh", Name: "sh", Args: []string{"sh"}}, Container: engine.Container{ID: "c"}},
		{Kind: engine.KindOpen, File: engine.File{Path: "/etc/passwd"}},
		{Kind: engine.KindConnect, Net: engine.Net{Peer: engine.Peer{IP: "10.0.0.1", Port: 4444}}},
		{Kind: engine.KindAudit, Audit: engine.Audit{Verb: "create", RequestObject: map[string]any{"roleRef": map[string]any{"name": "x"}}}},
		{Kind: engine.KindObject, Object: map[string]any{"kind": "Pod"}},
	}
	f.Fuzz(func(t *testing.T, cond, source string) {
		spec := &v1alpha1.DetectionRuleSpec{Source: source, Severity: "low", Condition: cond}
		r, err := engine.Compile("f", "", spec)
		if err != nil {
			return
		}
		o, err := enginetest.Compile("f", "", spec)
		if err != nil {
			t.Fatalf("%q compiles for the engine but not for the oracle: %v", cond, err)
		}
		m := engine.NewMatcher([]*engine.Rule{r})
		for i := range events {
			ev := &events[i]
			if !o.Matches(ev) {
				continue
			}
			if !r.Constraints().Admits(ev) {
				t.Fatalf("%q matches %+v (oracle) but its constraints %s reject it", cond, ev, r.Constraints().Explain())
			}
			if len(m.Match(ev, nil)) != 1 {
				t.Fatalf("%q matches %+v (oracle) but the indexed matcher does not return it", cond, ev)
			}
		}
	})
}
