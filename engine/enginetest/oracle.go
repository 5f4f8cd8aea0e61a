// Package enginetest is an independent oracle for property tests of the
// engine's indexed matcher and of the in-kernel prefilter built from derived
// constraints.
//
// The oracle decides whether a rule matches an event the plain way: the
// rule's source admits the event's kind (by the table of docs/events.md,
// written out here), a namespaced rule sees only its namespace, the condition
// evaluates to true and no exception does. It compiles the condition and
// exceptions itself against engine.Env() and never looks at
// engine.Constraints, kind sets, Rule.Applies or the index, so a derivation
// that is too tight cannot hide behind itself. It also generates random rules
// and events and shrinks a failing pair to a minimal reproduction.
package enginetest

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// sourceKinds is the documented table of which kinds each rule source sees
// (docs/events.md, "Kinds, by the rule source that sees them").
var sourceKinds = map[string][]engine.Kind{
	"process": {"exec", "exit", "fork", "setuid", "capset", "ptrace", "unshare", "setns", "mount", "module", "bpf"},
	"file":    {"open"},
	"network": {"connect", "accept", "listen"},
	"audit":   {"audit"},
	"object":  {"object"},
}

// Rule is a rule as the oracle evaluates it.
type Rule struct {
	Name      string
	Namespace string
	Spec      v1alpha1.DetectionRuleSpec

	kinds      []engine.Kind
	cond       cel.Program
	exceptions []cel.Program
}

// Compile compiles a rule's condition and exceptions for the oracle.
func Compile(name, namespace string, spec *v1alpha1.DetectionRuleSpec) (*Rule, error) {
	env, err := engine.Env()
	if err != nil {
		return nil, err
	}
	r := &Rule{Name: name, Namespace: namespace, Spec: *spec.DeepCopy(), kinds: sourceKinds[spec.Source]}
	if r.kinds == nil {
		return nil, fmt.Errorf("oracle: rule %s: unknown source %q", name, spec.Source)
	}
	prg := func(expr string) (cel.Program, error) {
		ast, iss := env.Compile(expr)
		if iss.Err() != nil {
			return nil, fmt.Errorf("oracle: rule %s: %w", name, iss.Err())
		}
		return env.Program(ast)
	}
	if r.cond, err = prg(spec.Condition); err != nil {
		return nil, err
	}
	for _, ex := range spec.Exceptions {
		p, err := prg(ex.Condition)
		if err != nil {
			return nil, err
		}
		r.exceptions = append(r.exceptions, p)
	}
	return r, nil
}

// Matches reports whether the rule matches the event. An evaluation error of
// the condition is no match; an exception that fails to evaluate cannot
// vouch for the event, so the match stands (docs/events.md).
func (r *Rule) Matches(ev *engine.Event) bool {
	if !slices.Contains(r.kinds, ev.Kind) {
		return false
	}
	if r.Namespace != "" && namespaceOf(ev) != r.Namespace {
		return false
	}
	act := activation(ev)
	v, _, err := r.cond.Eval(act)
	if err != nil || v != types.True {
		return false
	}
	for _, ex := range r.exceptions {
		if v, _, err := ex.Eval(act); err == nil && v == types.True {
			return false
		}
	}
	return true
}

// activation binds each CEL variable to the event's object of that name.
func activation(ev *engine.Event) map[string]any {
	obj := ev.Object
	if obj == nil {
		obj = map[string]any{}
	}
	return map[string]any{
		"event": ev, "process": &ev.Process, "container": &ev.Container, "pod": &ev.Pod,
		"workload": &ev.Workload, "node": ev.Node, "file": &ev.File, "net": &ev.Net,
		"syscall": &ev.Syscall, "audit": &ev.Audit, "object": obj,
	}
}

// namespaceOf is the namespace a namespaced rule compares with: the audit
// object's, the object's metadata.namespace, else the pod's.
func namespaceOf(ev *engine.Event) string {
	switch ev.Kind {
	case "audit":
		return ev.Audit.ObjectRef.Namespace
	case "object":
		md, _ := ev.Object["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		return ns
	}
	return ev.Pod.Namespace
}

// Seed returns the seed of a property test: RIPOSTE_ORACLE_SEED when set,
// else a new one each run. It logs how to repeat the run.
func Seed(t testing.TB) uint64 {
	t.Helper()
	if s := os.Getenv("RIPOSTE_ORACLE_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("RIPOSTE_ORACLE_SEED=%q: %v", s, err)
		}
		t.Logf("seed %d (from RIPOSTE_ORACLE_SEED)", n)
		return n
	}
	n := uint64(time.Now().UnixNano())
	t.Logf("seed %d (repeat with RIPOSTE_ORACLE_SEED=%d)", n, n)
	return n
}
