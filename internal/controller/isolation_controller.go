package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/trust"
	"github.com/riposte-dev/riposte/responders"
)

// isolatedPodIndex indexes Incidents by the uids of the pods their isolate
// steps keep isolated.
const isolatedPodIndex = ".status.steps.isolatedPod"

// IsolationReconciler keeps the isolation of every pod an authorized
// Incident isolates as its isolate step set it up: when the pod's isolate
// label or allow list, or the NetworkPolicy, is changed or removed by
// someone else (the admission policy riposte-isolation refuses that, so it
// takes someone able to remove the policy), it puts them back and says so in
// an Event. The agents hold the kernel layer from the Incident meanwhile.
type IsolationReconciler struct {
	client.Client
	Isolate  *responders.Isolate
	Recorder EventRecorder
	// Signer verifies that the Incident's Authorized condition is this
	// controller's own decision; nil trusts the condition as written.
	Signer *trust.Signer
}

// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;delete

// SetupWithManager registers the reconciler: Incident changes, and changes
// of the pods and riposte's NetworkPolicies they isolate.
func (r *IsolationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.Incident{}, isolatedPodIndex, func(o client.Object) []string {
		return isolatedPods(o.(*v1alpha1.Incident))
	}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Incident{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.incidentsIsolating)).
		Watches(&networkingv1.NetworkPolicy{}, handler.EnqueueRequestsFromMapFunc(r.incidentsOfPolicy)).
		Named("isolation").
		Complete(r)
}

// isolatedPods lists the pods inc's isolate steps keep isolated.
func isolatedPods(inc *v1alpha1.Incident) []string {
	var out []string
	for _, st := range inc.Status.Steps {
		if uid := st.Undo["podUID"]; st.Action == v1alpha1.ActionIsolate && st.Phase == v1alpha1.StepSucceeded && uid != "" && !slices.Contains(out, uid) {
			out = append(out, uid)
		}
	}
	return out
}

func (r *IsolationReconciler) incidentsIsolating(ctx context.Context, o client.Object) []reconcile.Request {
	return r.byPod(ctx, string(o.GetUID()))
}

// incidentsOfPolicy maps one of riposte's NetworkPolicies to the Incidents
// isolating the pod that owns it.
func (r *IsolationReconciler) incidentsOfPolicy(ctx context.Context, o client.Object) []reconcile.Request {
	if o.GetLabels()[v1alpha1.ManagedByLabel] != v1alpha1.ManagedByValue {
		return nil
	}
	var reqs []reconcile.Request
	for _, ref := range o.GetOwnerReferences() {
		if ref.Kind == "Pod" {
			reqs = append(reqs, r.byPod(ctx, string(ref.UID))...)
		}
	}
	return reqs
}

func (r *IsolationReconciler) byPod(ctx context.Context, uid string) []reconcile.Request {
	var list v1alpha1.IncidentList
	if err := r.List(ctx, &list, client.MatchingFields{isolatedPodIndex: uid}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list incidents isolating pod", "uid", uid)
		return nil
	}
	reqs := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		reqs[i].NamespacedName = client.ObjectKeyFromObject(&list.Items[i])
	}
	return reqs
}

// Reconcile re-asserts every isolation the Incident holds.
func (r *IsolationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var inc v1alpha1.Incident
	if err := r.Get(ctx, req.NamespacedName, &inc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	authorized := responders.Authorized(&inc)
	if authorized && r.Signer != nil {
		c := apimeta.FindStatusCondition(inc.Status.Conditions, v1alpha1.AuthorizedCondition)
		authorized = r.Signer.VerifyDecision(&inc, true, c.Reason) // else not this controller's decision
	}
	holds := authorized && inc.Status.Phase != v1alpha1.PhaseReverted && len(isolatedPods(&inc)) > 0
	if done, err := r.guardDeletion(ctx, &inc, holds); done || err != nil {
		return ctrl.Result{}, err
	}
	// A revert in progress removes the isolation on purpose.
	if !holds || inc.Annotations[v1alpha1.RevertAnnotation] == "true" {
		return ctrl.Result{}, nil
	}
	for _, st := range inc.Status.Steps {
		if st.Action != v1alpha1.ActionIsolate || st.Phase != v1alpha1.StepSucceeded || st.Undo["podUID"] == "" {
			continue
		}
		step := responders.Request{Incident: &inc, Playbook: st.Playbook, StepName: st.Name, Undo: st.Undo}
		for _, ref := range inc.Spec.Playbooks {
			if responders.PlaybookKey(ref) != st.Playbook {
				continue
			}
			if spec, err := responders.PlaybookSpec(ctx, r.Client, ref); err == nil {
				for _, ns := range responders.NamedSteps(spec.Steps) {
					if ns.Name == st.Name {
						step.Step = ns.Step
					}
				}
			}
		}
		before := r.lastWriter(ctx, &inc)
		restored, err := r.Isolate.Reassert(ctx, &step)
		if err != nil {
			return ctrl.Result{}, err
		}
		if len(restored) > 0 && r.Recorder != nil {
			r.Recorder.Eventf(&inc, nil, corev1.EventTypeWarning, "IsolationReasserted", "Isolate",
				"isolation of pod %s/%s was changed by someone other than riposte%s; restored: %s",
				inc.Spec.Subject.Namespace, inc.Spec.Subject.Pod, before, strings.Join(restored, "; "))
		}
	}
	return ctrl.Result{}, nil
}

// guardDeletion keeps v1alpha1.IsolationFinalizer on an Incident while it
// holds an isolation, and lets a deleted one go only once nothing is held
// any more (reverted, or the pods gone). The finalizer went on only while
// the Incident was authorized; being deleted bumps its generation past the
// authorized one, so a deleted Incident with the finalizer holds without
// asking again. done is true when the Incident is being deleted: nothing
// else is to be done for it here.
func (r *IsolationReconciler) guardDeletion(ctx context.Context, inc *v1alpha1.Incident, holds bool) (done bool, err error) {
	has := controllerutil.ContainsFinalizer(inc, v1alpha1.IsolationFinalizer)
	if inc.DeletionTimestamp.IsZero() {
		switch {
		case holds && !has:
			return false, r.setFinalizer(ctx, inc, true)
		case !holds && has:
			return false, r.setFinalizer(ctx, inc, false)
		}
		return false, nil
	}
	if !has {
		return true, nil
	}
	if inc.Status.Phase != v1alpha1.PhaseReverted && len(isolatedPods(inc)) > 0 {
		present, err := r.isolatedPodExists(ctx, inc)
		if err != nil {
			return true, err
		}
		if present {
			if r.Recorder != nil {
				r.Recorder.Eventf(inc, nil, corev1.EventTypeWarning, "IsolationHeld", "Delete",
					"the Incident is being deleted while it isolates pod %s/%s: the isolation holds until the Incident is reverted (%s=true) or the pod is gone",
					inc.Spec.Subject.Namespace, inc.Spec.Subject.Pod, v1alpha1.RevertAnnotation)
			}
			return true, nil
		}
	}
	return true, r.setFinalizer(ctx, inc, false)
}

func (r *IsolationReconciler) setFinalizer(ctx context.Context, inc *v1alpha1.Incident, on bool) error {
	base := inc.DeepCopy()
	if on {
		controllerutil.AddFinalizer(inc, v1alpha1.IsolationFinalizer)
	} else {
		controllerutil.RemoveFinalizer(inc, v1alpha1.IsolationFinalizer)
	}
	if err := r.Patch(ctx, inc, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}), client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("finalizer %s on incident %s/%s: %w", v1alpha1.IsolationFinalizer, inc.Namespace, inc.Name, err)
	}
	return nil
}

// isolatedPodExists reports whether a pod the Incident isolates still
// exists (the subject's pod, with an isolated uid).
func (r *IsolationReconciler) isolatedPodExists(ctx context.Context, inc *v1alpha1.Incident) (bool, error) {
	s := inc.Spec.Subject
	var p corev1.Pod
	if err := r.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Pod}, &p); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return slices.Contains(isolatedPods(inc), string(p.UID)), nil
}

// lastWriter describes who last wrote the subject pod, from its managed
// fields: the field manager is what the client called itself, so it is a
// lead, not proof; the API server's audit log names the authenticated user.
func (r *IsolationReconciler) lastWriter(ctx context.Context, inc *v1alpha1.Incident) string {
	var p corev1.Pod
	s := inc.Spec.Subject
	if err := r.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Pod}, &p); err != nil {
		return ""
	}
	var last *metav1.ManagedFieldsEntry
	for i := range p.ManagedFields {
		m := &p.ManagedFields[i]
		if m.Subresource == "" && m.Time != nil && (last == nil || m.Time.After(last.Time.Time)) {
			last = m
		}
	}
	if last == nil {
		return ""
	}
	return fmt.Sprintf(" (last %s of the pod by field manager %q at %s, as the client named itself; the audit log names the user)",
		strings.ToLower(string(last.Operation)), last.Manager, last.Time.UTC().Format("15:04:05"))
}
