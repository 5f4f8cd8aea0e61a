package controller

import (
	"context"
	"fmt"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/trust"
	"github.com/riposte-dev/riposte/responders"
)

// IncidentReconciler decides whether riposte runs an Incident's playbooks
// (package trust) and runs them through a responders.Runner. Unlike the
// other reconcilers it does not patch status in a defer: the Runner persists
// every step transition itself, before and after each action, because the
// Incident status is what a restarted controller resumes from. It is the
// only writer of the Incident's phase and Authorized condition.
type IncidentReconciler struct {
	client.Client
	Runner     *responders.Runner
	Authorizer *trust.Authorizer
	Recorder   EventRecorder
}

// +kubebuilder:rbac:groups=riposte.dev,resources=incidents,verbs=get;list;watch
// +kubebuilder:rbac:groups=riposte.dev,resources=incidents/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=riposte.dev,resources=responseplaybooks;clusterresponseplaybooks,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups="",resources=pods/log,verbs=get
// +kubebuilder:rbac:groups="",resources=events,verbs=list
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;patch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;create;update;delete
// +kubebuilder:rbac:groups=apps,resources=replicasets;deployments;statefulsets;daemonsets,verbs=get
// +kubebuilder:rbac:groups="",resources=replicationcontrollers,verbs=get
// +kubebuilder:rbac:groups=apps,resources=deployments/scale;statefulsets/scale;replicasets/scale,verbs=get;update
// +kubebuilder:rbac:groups="",resources=replicationcontrollers/scale,verbs=get;update
// +kubebuilder:rbac:groups=batch,resources=jobs;cronjobs,verbs=get

// SetupWithManager registers the reconciler. New Incidents, spec changes and
// annotation changes (approve, revert, the agent's results) trigger it;
// status writes (match counts, our own step records) do not.
func (r *IncidentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Incident{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Named("incident").
		Complete(r)
}

// policyRecheck is how soon an Incident refused for a missing admission
// policy is looked at again: the policy may be installed meanwhile.
const policyRecheck = time.Minute

// Reconcile authorizes the Incident for its current spec, then advances its
// playbooks. An error (an API call that failed, a status conflict that
// outlived retries) requeues with backoff; a step waiting for approval or for
// the node agent's report is resumed by the annotation change, and a step the
// agent never answers fails at the timeout.
func (r *IncidentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	inc := &v1alpha1.Incident{}
	if err := r.Get(ctx, req.NamespacedName, inc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	d, err := r.authorize(ctx, inc)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !d.Allowed {
		if d.Reason == v1alpha1.PolicyMissingReason {
			return ctrl.Result{RequeueAfter: policyRecheck}, nil
		}
		return ctrl.Result{}, nil
	}
	out, err := r.Runner.Run(ctx, inc)
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: out.RequeueAfter}, nil
}

// authorize decides for inc's current generation (again for a manual
// Incident waiting for approval or a missing policy, whose answer can change
// without a new generation) and records the decision in its status, signed:
// a recorded decision is reused only when its signature proves this
// controller made it about this object and generation, never because the
// status says so.
func (r *IncidentReconciler) authorize(ctx context.Context, inc *v1alpha1.Incident) (trust.Decision, error) {
	cur := apimeta.FindStatusCondition(inc.Status.Conditions, v1alpha1.AuthorizedCondition)
	decided := cur != nil && inc.Status.AuthorizedGeneration == inc.Generation && r.Authorizer.Signer != nil &&
		r.Authorizer.Signer.VerifyDecision(inc, cur.Status == metav1.ConditionTrue, cur.Reason)
	if decided && (cur.Status == metav1.ConditionTrue || (cur.Reason != v1alpha1.AwaitingApprovalReason && cur.Reason != v1alpha1.PolicyMissingReason)) {
		return trust.Decision{Allowed: cur.Status == metav1.ConditionTrue, Reason: cur.Reason, Message: cur.Message}, nil
	}
	d, err := r.Authorizer.Decide(ctx, inc)
	if err != nil {
		return d, err
	}
	status := metav1.ConditionFalse
	if d.Allowed {
		status = metav1.ConditionTrue
	}
	cond := metav1.Condition{Type: v1alpha1.AuthorizedCondition, Status: status, Reason: d.Reason, Message: d.Message, ObservedGeneration: inc.Generation}
	if decided && cur.Status == cond.Status && cur.Reason == cond.Reason && cur.Message == cond.Message {
		return d, nil
	}
	base := inc.DeepCopy()
	apimeta.SetStatusCondition(&inc.Status.Conditions, cond)
	inc.Status.AuthorizedGeneration = inc.Generation
	inc.Status.AuthorizationSignature = ""
	if r.Authorizer.Signer != nil {
		inc.Status.AuthorizationSignature = r.Authorizer.Signer.SignDecision(inc, d.Allowed, d.Reason)
	}
	switch {
	case !d.Allowed && len(inc.Status.Steps) == 0:
		inc.Status.Phase = v1alpha1.PhaseRefused
	case d.Allowed && (inc.Status.Phase == "" || inc.Status.Phase == v1alpha1.PhaseRefused):
		inc.Status.Phase = v1alpha1.PhaseOpen
	}
	if err := r.Status().Patch(ctx, inc, client.MergeFrom(base), client.FieldOwner(FieldOwner)); err != nil {
		return d, fmt.Errorf("record authorization of incident %s/%s: %w", inc.Namespace, inc.Name, err)
	}
	if !d.Allowed && r.Recorder != nil {
		r.Recorder.Eventf(inc, nil, corev1.EventTypeWarning, d.Reason, "Authorize", "%s", d.Message)
	}
	return d, nil
}
