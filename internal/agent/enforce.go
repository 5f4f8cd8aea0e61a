package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/ruleset"
)

// Enforcement modes.
const (
	// ModeKill: SIGKILL from the exec hook (bpf_send_signal); the binary
	// never runs its own code. Always available with the sensors.
	ModeKill = "kill"
	// ModeLSM: the kernel also loads BPF LSM programs, so deny decisions
	// (bprm_check_security, file_open returning -EPERM) are possible.
	ModeLSM = "lsm"
)

// Enforcement is what the kernel lets the agent enforce.
type Enforcement struct {
	Mode string
	// Reason says why LSM is unavailable (empty in ModeLSM).
	Reason string
}

// ProbeLSM loads and attaches a BPF LSM program that allows everything, the
// only reliable test of whether this kernel lets the agent deny: "bpf" in
// /sys/kernel/security/lsm is not enough (this machine lists it and still
// refuses the load with EPERM).
func ProbeLSM() Enforcement {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "riposte_probe",
		Type:         ebpf.LSM,
		AttachType:   ebpf.AttachLSMMac,
		AttachTo:     "bprm_check_security",
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return Enforcement{Mode: ModeKill, Reason: "BPF LSM program load refused: " + loadError(err)}
	}
	defer prog.Close()
	l, err := link.AttachLSM(link.LSMOptions{Program: prog})
	if err != nil {
		return Enforcement{Mode: ModeKill, Reason: fmt.Sprintf("BPF LSM attach refused: %v", err)}
	}
	l.Close()
	return Enforcement{Mode: ModeLSM}
}

// loadError names why the kernel refused a program. cilium/ebpf appends a
// MEMLOCK hint to every EPERM, which misleads here: BPF memory is
// memcg-accounted on the kernels riposte supports, and an EPERM for an LSM
// program means the kernel or its lockdown does not allow BPF LSM.
func loadError(err error) string {
	if errors.Is(err, unix.EPERM) {
		return "operation not permitted (EPERM): the kernel does not allow BPF LSM programs here (lockdown, a container's seccomp or a missing lsm=bpf boot parameter)"
	}
	return err.Error()
}

// enforcementGauge says which enforcement the agent has: 1 for the mode in use.
var enforcementGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "riposte_agent_enforcement",
	Help: "In-kernel enforcement available to the agent: 1 for the mode in use (lsm or kill).",
}, []string{"mode"})

// Announce logs the enforcement in one line and sets the metric.
func (e Enforcement) Announce(log *slog.Logger, reg prometheus.Registerer) {
	if reg != nil {
		if err := reg.Register(enforcementGauge); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				log.Warn("register enforcement metric", "err", err)
			}
		}
	}
	for _, m := range []string{ModeKill, ModeLSM} {
		v := 0.0
		if m == e.Mode {
			v = 1
		}
		enforcementGauge.WithLabelValues(m).Set(v)
	}
	if e.Mode == ModeLSM {
		log.Info("enforcement: BPF LSM available (deny); kill at exec with bpf_send_signal", "mode", e.Mode)
		return
	}
	log.Info("enforcement: falling back to kill at exec with bpf_send_signal(SIGKILL); "+e.Reason, "mode", e.Mode)
}

// KillSet is what the kernel kills at exec: exact binaries and base names,
// each mapped to the rule it enforces.
type KillSet struct {
	Binaries map[string]string
	Names    map[string]string
}

// ErrNotExact is returned by ExactExec for a rule the kernel cannot check
// exactly; the error says why.
var ErrNotExact = errors.New("not checkable exactly in the kernel")

// ExactExec returns the binaries and base names of a rule whose whole
// condition is `event.kind == "exec"` and one set of binaries or base names
// (==, in, endsWith("/name"), or a disjunction of those), with no exception
// and no namespace scope: then the kernel's exec check is the rule itself.
func ExactExec(r *engine.Rule) (bins, names []string, err error) {
	spec := r.Spec()
	fail := func(why string) ([]string, []string, error) {
		return nil, nil, fmt.Errorf("rule %q: %w: %s", r.Name(), ErrNotExact, why)
	}
	if len(spec.Exceptions) > 0 {
		return fail("it has exceptions")
	}
	if r.Namespace() != "" {
		return fail("it is scoped to a namespace")
	}
	env, err := engine.Env()
	if err != nil {
		return nil, nil, err
	}
	a, iss := env.Parse(spec.Condition)
	if iss.Err() != nil {
		return nil, nil, fmt.Errorf("parse rule %q: %w", r.Name(), iss.Err())
	}
	var conj []ast.Expr
	flattenAnd(a.NativeRep().Expr(), &conj)
	kindOK, setSeen := false, false
	for _, c := range conj {
		if isExecKind(c) {
			kindOK = true
			continue
		}
		b, n, ok := binarySet(c)
		if !ok || setSeen {
			return fail("its condition has more than kind == \"exec\" and one binary or base-name set")
		}
		setSeen = true
		bins, names = b, n
	}
	if !kindOK || !setSeen {
		return fail("its condition lacks event.kind == \"exec\" or a binary/base-name set")
	}
	return bins, names, nil
}

func flattenAnd(e ast.Expr, out *[]ast.Expr) {
	if e.Kind() == ast.CallKind && e.AsCall().FunctionName() == operators.LogicalAnd {
		for _, a := range e.AsCall().Args() {
			flattenAnd(a, out)
		}
		return
	}
	*out = append(*out, e)
}

func isExecKind(e ast.Expr) bool {
	if e.Kind() != ast.CallKind {
		return false
	}
	c := e.AsCall()
	args := c.Args()
	switch c.FunctionName() {
	case operators.Equals:
		return len(args) == 2 && ((path(args[0]) == "event.kind" && str(args[1]) == "exec") ||
			(path(args[1]) == "event.kind" && str(args[0]) == "exec"))
	case operators.In:
		if len(args) != 2 || path(args[0]) != "event.kind" || args[1].Kind() != ast.ListKind {
			return false
		}
		els := args[1].AsList().Elements()
		return len(els) == 1 && str(els[0]) == "exec"
	}
	return false
}

// binarySet recognises one set of binaries or base names.
func binarySet(e ast.Expr) (bins, names []string, ok bool) {
	if e.Kind() != ast.CallKind {
		return nil, nil, false
	}
	c := e.AsCall()
	args := c.Args()
	switch c.FunctionName() {
	case operators.LogicalOr:
		for _, a := range args {
			b, n, ok := binarySet(a)
			if !ok {
				return nil, nil, false
			}
			bins, names = append(bins, b...), append(names, n...)
		}
		return bins, names, true
	case operators.Equals:
		if len(args) != 2 {
			return nil, nil, false
		}
		f, lit := args[0], args[1]
		if path(f) == "" {
			f, lit = lit, f
		}
		return set(path(f), []ast.Expr{lit})
	case operators.In:
		if len(args) != 2 || args[1].Kind() != ast.ListKind {
			return nil, nil, false
		}
		return set(path(args[0]), args[1].AsList().Elements())
	case "endsWith":
		if !c.IsMemberFunction() || len(args) != 1 || path(c.Target()) != "process.binary" {
			return nil, nil, false
		}
		s := str(args[0])
		// The kernel reports absolute paths, so endsWith("/sh") is "base name is sh".
		if len(s) < 2 || s[0] != '/' || slices.Contains([]byte(s[1:]), '/') {
			return nil, nil, false
		}
		return nil, []string{s[1:]}, true
	}
	return nil, nil, false
}

func set(field string, lits []ast.Expr) (bins, names []string, ok bool) {
	var vals []string
	for _, l := range lits {
		if l.Kind() != ast.LiteralKind {
			return nil, nil, false
		}
		s, isStr := l.AsLiteral().(types.String)
		if !isStr || s == "" {
			return nil, nil, false
		}
		vals = append(vals, string(s))
	}
	switch field {
	case "process.binary":
		return vals, nil, true
	case "process.name":
		return nil, vals, true
	}
	return nil, nil, false
}

// path renders a select chain (event.process.binary folds to process.binary).
func path(e ast.Expr) string {
	var parts []string
	for e.Kind() == ast.SelectKind {
		s := e.AsSelect()
		if s.IsTestOnly() {
			return ""
		}
		parts = append([]string{s.FieldName()}, parts...)
		e = s.Operand()
	}
	if e.Kind() != ast.IdentKind || len(parts) == 0 {
		return ""
	}
	parts = append([]string{e.AsIdent()}, parts...)
	if parts[0] == "event" && len(parts) > 2 {
		parts = parts[1:]
	}
	out := parts[0]
	for _, p := range parts[1:] {
		out += "." + p
	}
	return out
}

func str(e ast.Expr) string {
	if e.Kind() != ast.LiteralKind {
		return ""
	}
	s, _ := e.AsLiteral().(types.String)
	return string(s)
}

// InKernelRules returns the compiled rules of a set that a playbook asks to
// kill in the kernel (a step with action kill and inKernel: true).
func InKernelRules(s *ruleset.Set) []*engine.Rule {
	inKernel := map[string]bool{}
	for _, p := range s.Playbooks {
		for _, st := range p.Spec.Steps {
			if st.InKernel && st.Action == v1alpha1.ActionKill {
				inKernel[p.Namespace+"/"+p.Name] = true
			}
		}
	}
	var out []*engine.Rule
	for _, r := range s.Rules {
		if r.Compiled == nil || r.Spec.Suspend {
			continue
		}
		for _, pb := range r.Spec.Playbooks {
			if inKernel[r.Namespace+"/"+pb] {
				out = append(out, r.Compiled)
				break
			}
		}
	}
	return out
}

// NewKillSet gathers the exact exec sets of rules. Rules the kernel cannot
// check exactly are returned in skipped with the reason; they are enforced
// (if at all) by the responders after the match, in user space.
func NewKillSet(rules []*engine.Rule) (KillSet, []error) {
	ks := KillSet{Binaries: map[string]string{}, Names: map[string]string{}}
	var skipped []error
	for _, r := range rules {
		bins, names, err := ExactExec(r)
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		for _, b := range bins {
			ks.Binaries[b] = r.Name()
		}
		for _, n := range names {
			ks.Names[n] = r.Name()
		}
	}
	return ks, skipped
}
