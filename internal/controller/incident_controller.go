package controller

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/responders"
)

// IncidentReconciler runs the playbooks of Incidents through a responders.Runner.
// Unlike the other reconcilers it does not patch status in a defer: the Runner
// persists every step transition itself, before and after each action, because
// the Incident status is what a restarted controller resumes from.
type IncidentReconciler struct {
	client.Client
	Runner *responders.Runner
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

// SetupWithManager registers the reconciler. New Incidents and annotation
// changes (approve, revert) trigger it; status writes (match counts, our own
// step records) do not.
func (r *IncidentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Incident{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, phaseReset))).
		Named("incident").
		Complete(r)
}

// phaseReset lets through the one status write that is not ours but matters:
// the incident writer's first patch sets phase Open, and when it lands after
// the Runner already wrote Responding/Responded the phase must be recomputed.
var phaseReset = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, ok1 := e.ObjectOld.(*v1alpha1.Incident)
		inc, ok2 := e.ObjectNew.(*v1alpha1.Incident)
		return ok1 && ok2 && old.Status.Phase != inc.Status.Phase && len(inc.Status.Steps) > 0 &&
			inc.Status.Phase != v1alpha1.PhaseResponding && inc.Status.Phase != v1alpha1.PhaseResponded &&
			inc.Status.Phase != v1alpha1.PhaseFailed && inc.Status.Phase != v1alpha1.PhaseReverted
	},
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// Reconcile advances the Incident's playbooks. An error (an API call that
// failed, a status conflict that outlived retries) requeues with backoff; a
// step waiting for approval or for the node agent's report is resumed by the
// annotation change, and a step the agent never answers fails at the timeout.
func (r *IncidentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	inc := &v1alpha1.Incident{}
	if err := r.Get(ctx, req.NamespacedName, inc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	out, err := r.Runner.Run(ctx, inc)
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: out.RequeueAfter}, nil
}
