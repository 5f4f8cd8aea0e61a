package responders

import (
	"context"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

func (r *Runner) admitted(inc *v1alpha1.Incident, key string) bool {
	for _, s := range inc.Status.Steps {
		if s.Playbook == key {
			return true
		}
	}
	return false
}

// protected reports whether ns may only be acted in with allowProtectedNamespaces.
func (r *Runner) protected(ns string) bool {
	list := r.ProtectedNamespaces
	if list == nil {
		list = DefaultProtectedNamespaces
	}
	return slices.Contains(list, ns) || (r.OwnNamespace != "" && ns == r.OwnNamespace)
}

// admit applies the playbook-wide guardrails and returns why the playbook may
// not act on inc, or "" when it may.
func (r *Runner) admit(ctx context.Context, inc *v1alpha1.Incident, ref v1alpha1.PlaybookRef, spec *v1alpha1.ResponsePlaybookSpec) string {
	ns := inc.Spec.Subject.Namespace
	if ref.Kind == "ResponsePlaybook" && ns != ref.Namespace {
		if ns == "" {
			return fmt.Sprintf("refused: ResponsePlaybook %s/%s may only act in namespace %q and the subject has no namespace", ref.Namespace, ref.Name, ref.Namespace)
		}
		return fmt.Sprintf("refused: ResponsePlaybook %s/%s may only act in namespace %q, the subject is in %q", ref.Namespace, ref.Name, ref.Namespace, ns)
	}
	if ns != "" && r.protected(ns) && !spec.AllowProtectedNamespaces {
		return fmt.Sprintf("refused: namespace %q is protected; set allowProtectedNamespaces: true on the playbook to act there", ns)
	}
	if rl := spec.RateLimit; rl != nil && !(r.DryRun || spec.DryRun) {
		if n, ok := r.reserve(ctx, inc, PlaybookKey(ref), rl); !ok {
			return fmt.Sprintf("rate limit: playbook already acted on %d incidents in the last %s (limit %d)", n, rl.Period.Duration, rl.Actions)
		}
	}
	return ""
}

// reserve counts the incidents the playbook acted on within the period: those
// recorded in Incident statuses (restart-safe) plus this process's recent
// reservations (which the cache may not show yet), and takes a slot if one is free.
func (r *Runner) reserve(ctx context.Context, inc *v1alpha1.Incident, key string, rl *v1alpha1.RateLimit) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	since := r.now().Add(-rl.Period.Duration)
	acted := map[string]bool{}
	var list v1alpha1.IncidentList
	if err := r.Client.List(ctx, &list); err == nil {
		for _, other := range list.Items {
			if other.UID == inc.UID {
				continue
			}
			for _, s := range other.Status.Steps {
				if s.Playbook == key && s.StartedAt != nil && !s.StartedAt.Time.Before(since) &&
					s.Phase != v1alpha1.StepSkipped && s.Phase != v1alpha1.StepDryRun {
					acted[string(other.UID)] = true
				}
			}
		}
	}
	if r.reservations == nil {
		r.reservations = map[string][]reservation{}
	}
	kept := r.reservations[key][:0]
	for _, res := range r.reservations[key] {
		if !res.at.Before(since) {
			kept = append(kept, res)
			acted[res.incident] = true
		}
	}
	r.reservations[key] = kept
	delete(acted, string(inc.UID))
	if len(acted) >= int(rl.Actions) {
		return len(acted), false
	}
	r.reservations[key] = append(r.reservations[key], reservation{incident: string(inc.UID), at: r.now()})
	return len(acted), true
}

// stepGuard refuses steps a playbook's scope does not cover.
func (r *Runner) stepGuard(req *Request) error {
	if req.Step.Action == v1alpha1.ActionCordon && strings.Contains(req.Playbook, "/") {
		return refused("cordon changes a Node, which a namespaced ResponsePlaybook may not")
	}
	return nil
}

// revert undoes the Incident's revertible steps, newest first, and marks them
// Reverted; steps that had not run are Skipped. Already reverted steps are left
// alone, so calling it again is harmless.
func (r *Runner) revert(ctx context.Context, inc *v1alpha1.Incident) (Outcome, error) {
	specs := map[string]*v1alpha1.ResponsePlaybookSpec{}
	for _, ref := range inc.Spec.Playbooks {
		if spec, err := r.playbook(ctx, ref); err == nil {
			specs[PlaybookKey(ref)] = spec
		}
	}
	var failed []string
	for i := len(inc.Status.Steps) - 1; i >= 0; i-- {
		st := &inc.Status.Steps[i]
		switch st.Phase {
		case v1alpha1.StepPending, v1alpha1.StepAwaitingApproval:
			now := metav1.NewTime(r.now())
			st.Phase, st.Message, st.FinishedAt = v1alpha1.StepSkipped, "not run: incident reverted", &now
			if err := r.persist(ctx, inc); err != nil {
				return Outcome{}, err
			}
			continue
		case v1alpha1.StepSucceeded, v1alpha1.StepRunning:
		default:
			continue
		}
		rev, ok := r.Actions[st.Action].(Reverter)
		if !ok {
			if st.Phase == v1alpha1.StepRunning {
				// A step still waiting (for the node agent) must not complete
				// after the revert: the agent acts only on Running steps.
				now := metav1.NewTime(r.now())
				st.Phase, st.Message, st.FinishedAt = v1alpha1.StepSkipped, "not finished: incident reverted", &now
				if err := r.persist(ctx, inc); err != nil {
					return Outcome{}, err
				}
			}
			continue
		}
		req := &Request{Incident: inc, Playbook: st.Playbook, Spec: specs[st.Playbook], StepName: st.Name, Undo: st.Undo}
		if spec := specs[st.Playbook]; spec != nil {
			names := stepNames(spec.Steps)
			for j, n := range names {
				if n == st.Name {
					req.Step = spec.Steps[j]
				}
			}
		}
		req.Step.Action = st.Action
		msg, err := rev.Revert(ctx, req)
		if err != nil {
			failed = append(failed, st.Name)
			st.Message = fmt.Sprintf("revert failed: %v", err)
		} else {
			now := metav1.NewTime(r.now())
			st.Phase, st.Message, st.FinishedAt = v1alpha1.StepReverted, msg, &now
		}
		if err := r.persist(ctx, inc); err != nil {
			return Outcome{}, err
		}
	}
	if len(failed) > 0 {
		return Outcome{}, fmt.Errorf("revert incident %s/%s: steps %s failed", inc.Namespace, inc.Name, strings.Join(failed, ", "))
	}
	if inc.Status.Phase != v1alpha1.PhaseReverted {
		inc.Status.Phase = v1alpha1.PhaseReverted
		if err := r.persist(ctx, inc); err != nil {
			return Outcome{}, err
		}
	}
	return Outcome{Done: true}, nil
}
