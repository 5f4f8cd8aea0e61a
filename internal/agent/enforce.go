package agent

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/bpf"
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

// ProbeLSM reports which enforcement this kernel allows (bpf.ProbeLSM).
func ProbeLSM() Enforcement {
	if reason := bpf.ProbeLSM(); reason != "" {
		return Enforcement{Mode: ModeKill, Reason: reason}
	}
	return Enforcement{Mode: ModeLSM}
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

// KillRule is a rule a playbook asks to kill in the kernel (a kill step
// with inKernel: true), with where its playbooks let the kernel act.
type KillRule struct {
	Rule *engine.Rule
	// Host: a ClusterResponsePlaybook with allowHostProcesses names it.
	Host bool
	// Protected: a playbook with allowProtectedNamespaces names it.
	Protected bool
}

// InKernelRules returns the compiled rules of a set that a playbook asks to
// kill in the kernel, with the scope their playbooks allow. A
// ResponsePlaybook never allows host processes: it acts in its namespace.
func InKernelRules(s *ruleset.Set) []KillRule {
	type scope struct{ host, protected bool }
	inKernel := map[string]scope{}
	for _, p := range s.Playbooks {
		for _, st := range p.Spec.Steps {
			if st.InKernel && st.Action == v1alpha1.ActionKill {
				sc := inKernel[p.Namespace+"/"+p.Name]
				sc.host = sc.host || (p.Namespace == "" && p.Spec.AllowHostProcesses)
				sc.protected = sc.protected || p.Spec.AllowProtectedNamespaces
				inKernel[p.Namespace+"/"+p.Name] = sc
			}
		}
	}
	var out []KillRule
	for _, r := range s.Rules {
		if r.Compiled == nil || r.Spec.Suspend {
			continue
		}
		kr, found := KillRule{Rule: r.Compiled}, false
		for _, pb := range r.Spec.Playbooks {
			if sc, ok := inKernel[r.Namespace+"/"+pb]; ok {
				found = true
				kr.Host = kr.Host || sc.host
				kr.Protected = kr.Protected || sc.protected
			}
		}
		if found {
			out = append(out, kr)
		}
	}
	return out
}

// KillSet is what the kernel kills at exec: exact binaries and base names,
// each with the rule it enforces and where.
type KillSet struct {
	Binaries map[string]KillEntry
	Names    map[string]KillEntry
}

// KillEntry is one binary's or base name's rule and scope.
type KillEntry struct {
	Rule            string
	Host, Protected bool
}

// NewKillSet gathers the exact exec sets of rules. Rules the kernel cannot
// check exactly are returned in skipped with the reason; they are enforced
// (if at all) by the responders after the match, in user space. A
// container-only rule never kills on the host, whatever its playbook says.
func NewKillSet(rules []KillRule) (KillSet, []error) {
	ks := KillSet{Binaries: map[string]KillEntry{}, Names: map[string]KillEntry{}}
	var skipped []error
	for _, kr := range rules {
		bins, names, containerOnly, err := kr.Rule.ExactExec()
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		e := KillEntry{Rule: kr.Rule.Name(), Host: kr.Host && !containerOnly, Protected: kr.Protected}
		for _, b := range bins {
			ks.Binaries[b] = e
		}
		for _, n := range names {
			ks.Names[n] = e
		}
	}
	return ks, skipped
}
