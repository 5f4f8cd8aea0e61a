package engine

import (
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

func spec(source, cond string) *v1alpha1.DetectionRuleSpec {
	return &v1alpha1.DetectionRuleSpec{Source: source, Severity: "high", Condition: cond}
}

func mustCompile(t testing.TB, name string, s *v1alpha1.DetectionRuleSpec) *Rule {
	t.Helper()
	r, err := Compile(name, "", s)
	if err != nil {
		t.Fatalf("compile %s: %v", name, err)
	}
	return r
}

func mustDecode(t testing.TB, js string) Event {
	t.Helper()
	ev, err := DecodeLine([]byte(js))
	if err != nil {
		t.Fatalf("decode %s: %v", js, err)
	}
	return ev
}

func TestCompileErrorsNameFieldLineAndColumn(t *testing.T) {
	cases := []struct {
		name      string
		spec      v1alpha1.DetectionRuleSpec
		field     string
		line, col int
		msg       string
	}{
		{"undeclared variable on line 2",
			v1alpha1.DetectionRuleSpec{Source: "process", Severity: "high", Condition: "event.kind == \"exec\" &&\n  proces.binary == \"/bin/sh\""},
			"condition", 2, 3, "undeclared reference to 'proces'"},
		{"unknown field",
			v1alpha1.DetectionRuleSpec{Source: "process", Severity: "high", Condition: `process.binar == "x"`},
			"condition", 1, 8, "undefined field 'binar'"},
		{"syntax error",
			v1alpha1.DetectionRuleSpec{Source: "process", Severity: "high", Condition: `process.binary == `},
			"condition", 1, 19, "Syntax error"},
		{"condition is not a bool",
			v1alpha1.DetectionRuleSpec{Source: "process", Severity: "high", Condition: `process.binary`},
			"condition", 1, 1, "want bool"},
		{"broken exception",
			v1alpha1.DetectionRuleSpec{Source: "process", Severity: "high", Condition: `true`,
				Exceptions: []v1alpha1.Exception{{Name: "ok", Condition: "true"}, {Name: "bad", Condition: "pod.nme == 'x'"}}},
			"exceptions[1].condition", 1, 4, "undefined field 'nme'"},
		{"output of the wrong type",
			v1alpha1.DetectionRuleSpec{Source: "process", Severity: "high", Condition: `true`, Output: `process.pid`},
			"output", 1, 1, "want string"},
		{"broken throttle key",
			v1alpha1.DetectionRuleSpec{Source: "process", Severity: "high", Condition: `true`,
				Throttle: &v1alpha1.Throttle{Window: metav1.Duration{Duration: time.Minute}, Key: []string{"pod.uid", "pod.uuid"}}},
			"throttle.key[1]", 1, 4, "undefined field 'uuid'"},
		{"cost over the limit",
			v1alpha1.DetectionRuleSpec{Source: "process", Severity: "high",
				Condition: `process.ancestors.exists(a, a.args.exists(x, process.args.exists(y, x.contains(y) && y.matches(x))))`},
			"condition", 0, 0, "exceeds the limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compile("r", "", &c.spec)
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("want a *CompileError, got %v", err)
			}
			if ce.Field != c.field || ce.Line != c.line || ce.Column != c.col || !strings.Contains(ce.Msg, c.msg) {
				t.Fatalf("got field %q %d:%d %q, want %q %d:%d containing %q", ce.Field, ce.Line, ce.Column, ce.Msg, c.field, c.line, c.col, c.msg)
			}
			if !strings.Contains(err.Error(), `rule "r"`) {
				t.Fatalf("error does not name the rule: %v", err)
			}
		})
	}
}

func TestCompileRejectsInvalidSpecFields(t *testing.T) {
	for _, s := range []v1alpha1.DetectionRuleSpec{
		{Source: "syscalls", Severity: "high", Condition: "true"},
		{Source: "process", Severity: "urgent", Condition: "true"},
		{Source: "process", Severity: "high", Condition: "true", Exceptions: []v1alpha1.Exception{{Condition: "true"}}},
		{Source: "process", Severity: "high", Condition: "true", Throttle: &v1alpha1.Throttle{}},
	} {
		if _, err := Compile("r", "", &s); !errors.Is(err, ErrInvalidRule) {
			t.Errorf("%+v: want ErrInvalidRule, got %v", s, err)
		}
	}
}

func TestEvalConditionExceptionsAndOutput(t *testing.T) {
	s := spec("process", `event.kind == "exec" && process.name == "sh" && pod.labels.?app.orValue("") == "web"`)
	s.Exceptions = []v1alpha1.Exception{{Name: "tini", Condition: `process.parent.binary == "/usr/bin/tini"`}}
	s.Output = `"sh in " + pod.namespace + "/" + pod.name + " args " + process.args.join(" ")`
	r := mustCompile(t, "sh", s)

	ev := mustDecode(t, `{"kind":"exec","process":{"binary":"/bin/sh","args":["sh","-c","id"]},"pod":{"name":"w","namespace":"n","labels":{"app":"web"}}}`)
	if v := r.Eval(&ev); !v.Matched {
		t.Fatalf("want a match, got %+v", v)
	}
	if got, want := r.Output(&ev), "sh in n/w args sh -c id"; got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
	ev.Process.Parent.Binary = "/usr/bin/tini"
	if v := r.Eval(&ev); v.Matched || v.Exception != "tini" {
		t.Fatalf("want the tini exception to drop the match, got %+v", v)
	}
	other := mustDecode(t, `{"kind":"exec","process":{"binary":"/bin/sh"},"pod":{"labels":{"app":"db"}}}`)
	if v := r.Eval(&other); v.Matched {
		t.Fatalf("want no match for app=db, got %+v", v)
	}
}

func TestEvalErrorIsNoMatchAndCounted(t *testing.T) {
	r := mustCompile(t, "lbl", spec("process", `pod.labels["app"] == "web"`))
	ev := mustDecode(t, `{"kind":"exec","process":{"binary":"/bin/sh"}}`)
	if v := r.Eval(&ev); v.Matched || v.Err == nil {
		t.Fatalf("a missing map key must be an evaluation error, got %+v", v)
	}
	m := NewMatcher([]*Rule{r})
	var seen error
	m.OnError = func(_ *Rule, _ *Event, err error) { seen = err }
	if got := m.Match(&ev, nil); len(got) != 0 {
		t.Fatalf("want no match, got %d", len(got))
	}
	if m.Stats.EvalErrors != 1 || seen == nil {
		t.Fatalf("want one counted evaluation error, got %+v", m.Stats)
	}
}

func TestAuditRequestObjectIsDynamic(t *testing.T) {
	r := mustCompile(t, "crb", spec("audit", `has(audit.requestObject.roleRef) && audit.requestObject.roleRef.name == "cluster-admin"`))
	with := mustDecode(t, `{"kind":"audit","audit":{"verb":"create","requestObject":{"roleRef":{"name":"cluster-admin"}}}}`)
	without := mustDecode(t, `{"kind":"audit","audit":{"verb":"create"}}`)
	if v := r.Eval(&with); !v.Matched {
		t.Fatalf("want a match, got %+v", v)
	}
	if v := r.Eval(&without); v.Matched || v.Err != nil {
		t.Fatalf("want a clean no-match without a request body, got %+v", v)
	}
}

func TestInCIDR(t *testing.T) {
	r := mustCompile(t, "cidr", spec("network", `net.peer.ip.inCIDR("10.0.0.0/8") || net.peer.ip.inCIDR("fd00::/8")`))
	for ip, want := range map[string]bool{"10.1.2.3": true, "11.0.0.1": false, "fd00::1": true, "::ffff:10.0.0.1": true, "": false, "junk": false} {
		ev := Event{Kind: KindConnect, Net: Net{Peer: Peer{IP: ip}}}
		if got := r.Eval(&ev).Matched; got != want {
			t.Errorf("%q: got %v, want %v", ip, got, want)
		}
	}
}

func TestNamespacedRuleSeesOnlyItsNamespace(t *testing.T) {
	r, err := Compile("sh", "shop", spec("process", `process.name == "sh"`))
	if err != nil {
		t.Fatal(err)
	}
	in := Event{Kind: KindExec, Process: Process{Binary: "/bin/sh"}, Pod: Pod{Namespace: "shop"}}
	out := Event{Kind: KindExec, Process: Process{Binary: "/bin/sh"}, Pod: Pod{Namespace: "bank"}}
	Normalize(&in)
	Normalize(&out)
	m := NewMatcher([]*Rule{r})
	if got := m.Match(&in, nil); len(got) != 1 || got[0].Rule.Name() != "shop/sh" {
		t.Fatalf("want shop/sh to match its namespace, got %+v", got)
	}
	if got := m.Match(&out, nil); len(got) != 0 {
		t.Fatalf("a DetectionRule matched an event of another namespace")
	}
}

func TestThrottleFoldsRepeatsAndReportsSuppressed(t *testing.T) {
	s := spec("process", `true`)
	s.Throttle = &v1alpha1.Throttle{Window: metav1.Duration{Duration: time.Minute}, Key: []string{"pod.uid"}}
	r := mustCompile(t, "t", s)
	th := NewThrottle()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := Event{Kind: KindExec, Pod: Pod{UID: "a"}}
	key := r.ThrottleKey(&ev)
	if key != "a" {
		t.Fatalf("key %q, want a", key)
	}
	if ok, _ := th.Allow(r, key, t0); !ok {
		t.Fatal("first match must pass")
	}
	for i := 1; i <= 5; i++ {
		if ok, _ := th.Allow(r, key, t0.Add(time.Duration(i)*time.Second)); ok {
			t.Fatalf("repeat %d inside the window passed", i)
		}
	}
	if ok, _ := th.Allow(r, "b", t0.Add(time.Second)); !ok {
		t.Fatal("another key must pass")
	}
	ok, prev := th.Allow(r, key, t0.Add(61*time.Second))
	if !ok || prev != 5 {
		t.Fatalf("after the window: allow=%v suppressed=%d, want true 5", ok, prev)
	}
	if th.Suppressed != 5 {
		t.Fatalf("Suppressed = %d, want 5", th.Suppressed)
	}
}
