package agentmgr

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/internal/trust"
	"github.com/riposte-dev/riposte/responders"
	rnode "github.com/riposte-dev/riposte/responders/node"
)

// incidentReconciler does the node part of the steps the controller
// delegated to this node, picked up from the watch of this node's Incidents,
// and wakes the isolation convergence on every change.
type incidentReconciler struct{ *agentState }

func (r *incidentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("agent-incidents").
		For(&v1alpha1.Incident{}).
		Complete(r)
}

func (r *incidentReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	defer r.wake()
	if r.kernel == nil {
		return reconcile.Result{}, nil
	}
	var inc v1alpha1.Incident
	if err := r.client.Get(ctx, req.NamespacedName, &inc); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !hasDelegated(&inc) {
		return reconcile.Result{}, nil
	}
	// The cache may not show this agent's last report yet: read around it,
	// so no step is done twice.
	if err := r.reader.Get(ctx, req.NamespacedName, &inc); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	done := responders.NodeResults(&inc)
	// Only the controller writes an Incident's Authorized condition, as
	// long as the admission policy is in force: check it before acting.
	policyMissing, err := trust.PolicyMissing(ctx, r.reader, trust.IncidentPolicy)
	if err != nil {
		return reconcile.Result{}, err
	}
	var errs []error
	for _, st := range inc.Status.Steps {
		key := responders.StepKey(st.Playbook, st.Name)
		if _, ok := done[key]; ok || st.Phase != v1alpha1.StepRunning || st.Undo[responders.UndoNode] != "delegated" {
			continue
		}
		if st.Action != v1alpha1.ActionKill && st.Action != v1alpha1.ActionCapture {
			continue
		}
		step, err := r.request(ctx, &inc, st)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		facts := r.facts(&inc.Spec.Subject)
		facts.PolicyMissing = policyMissing
		res := responders.RunDelegated(ctx, r.actions, step, facts)
		r.log.Info("delegated step", "incident", req.NamespacedName.String(), "step", key, "result", res.Message, "error", res.Error)
		if err := rnode.Report(ctx, r.reader, r.client, &inc, key, res); err != nil {
			errs = append(errs, err)
		}
	}
	return reconcile.Result{}, errors.Join(errs...)
}

// hasDelegated reports whether inc has a step waiting for this node's agent
// that it has not reported on.
func hasDelegated(inc *v1alpha1.Incident) bool {
	done := responders.NodeResults(inc)
	for _, st := range inc.Status.Steps {
		if _, ok := done[responders.StepKey(st.Playbook, st.Name)]; !ok && st.Phase == v1alpha1.StepRunning && st.Undo[responders.UndoNode] == "delegated" {
			return true
		}
	}
	return false
}

// request rebuilds the Request the controller ran for a delegated step,
// from the playbook as this agent's cache holds it.
func (r *incidentReconciler) request(ctx context.Context, inc *v1alpha1.Incident, st v1alpha1.StepStatus) (*responders.Request, error) {
	req := &responders.Request{Incident: inc, Playbook: st.Playbook, StepName: st.Name, Undo: st.Undo}
	for _, ref := range inc.Spec.Playbooks {
		if responders.PlaybookKey(ref) != st.Playbook {
			continue
		}
		spec, err := responders.PlaybookSpec(ctx, r.client, ref)
		if apierrors.IsNotFound(err) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read playbook %s: %w", st.Playbook, err)
		}
		req.Spec = spec
		for _, s := range responders.NamedSteps(spec.Steps) {
			if s.Name == st.Name && s.Step.Action == st.Action {
				req.Step = s.Step
			}
		}
	}
	if req.Spec == nil || req.Step.Action == "" {
		req.Spec = nil // CheckDelegated refuses it, naming the playbook
	}
	return req, nil
}

// facts is what this agent itself knows about an Incident's subject: its own
// view of the pods on this node (the identity source), not the Incident.
func (a *agentState) facts(s *v1alpha1.Subject) responders.NodeFacts {
	f := responders.NodeFacts{Node: a.opts.Node}
	if s.PodUID == "" {
		return f
	}
	p := a.store.Pod(s.PodUID)
	if p == nil || !p.DeletedAt.IsZero() || p.Node != a.opts.Node {
		return f
	}
	f.PodFound, f.PodNamespace = true, p.Namespace
	f.Protected = slices.Contains(a.protected, p.Namespace)
	if s.ContainerID != "" {
		_, id := host.SplitContainerID(s.ContainerID)
		if c, ok := a.store.Container(id); ok && c.Gone.IsZero() && c.Pod.UID == s.PodUID {
			f.ContainerInPod = true
		}
	}
	return f
}

// wake asks the isolation convergence to run.
func (a *agentState) wake() {
	if a.kick == nil {
		return
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// convergeLoop keeps the kernel isolations of this node equal to what its
// Incidents and riposte's pod labels ask for, whenever either changes.
func (a *agentState) convergeLoop(ctx context.Context) error {
	a.wake() // pins an earlier agent left may have nothing asking for them any more
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.kick:
		}
		if err := a.converge(ctx); err != nil && ctx.Err() == nil {
			a.log.Error(err, "kernel isolation")
			// Try again soon: a pod's cgroup may not exist yet.
			go func() {
				select {
				case <-ctx.Done():
				case <-time.After(2 * time.Second):
					a.wake()
				}
			}()
		}
	}
}

// converge computes the wanted isolations from the cached Incidents of this
// node and from the pods carrying riposte's isolate label, and applies them.
// Either keeps a pod isolated: removing the label (someone forcing past the
// admission policy) does not lift an Incident's isolation, and deleting the
// Incident does not lift what the label still asks for; only a revert,
// which clears both, does.
func (a *agentState) converge(ctx context.Context) error {
	var list v1alpha1.IncidentList
	if err := a.client.List(ctx, &list, client.MatchingLabels{v1alpha1.NodeLabel: a.opts.Node}); err != nil {
		return fmt.Errorf("list incidents: %w", err)
	}
	want, reverted, errs := rnode.Wanted(list.Items, a.opts.Node)
	for uid, allow := range a.isolated.snapshot() {
		if _, ok := want[uid]; ok {
			continue
		}
		peers, err := responders.ParsePeers(allow)
		if err != nil {
			errs = append(errs, fmt.Errorf("pod %s: %s: %w", uid, v1alpha1.IsolateAllowAnnotation, err))
			continue
		}
		want[uid] = rnode.Want{Peers: peers}
	}
	res, err := a.iso.Converge(ctx, want, reverted)
	if len(res.Attached)+len(res.Released) > 0 {
		a.log.Info("kernel isolation", "attached", res.Attached, "released", res.Released, "absent", res.Absent)
	}
	return errors.Join(append(errs, err)...)
}
