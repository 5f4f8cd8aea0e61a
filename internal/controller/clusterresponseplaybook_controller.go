package controller

import (
	"context"

	"github.com/fluxcd/pkg/runtime/patch"
	"github.com/fluxcd/pkg/runtime/predicates"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// ClusterResponsePlaybookReconciler validates ClusterResponsePlaybooks. Running them is
// the responders' job; this only says in status whether one is usable.
type ClusterResponsePlaybookReconciler struct {
	client.Client
	Recorder EventRecorder
}

// +kubebuilder:rbac:groups=riposte.dev,resources=clusterresponseplaybooks,verbs=get;list;watch
// +kubebuilder:rbac:groups=riposte.dev,resources=clusterresponseplaybooks/status,verbs=get;update;patch

// SetupWithManager registers the reconciler.
func (r *ClusterResponsePlaybookReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.ClusterResponsePlaybook{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicates.ReconcileRequestedPredicate{}))).
		Named("clusterresponseplaybook").
		Complete(r)
}

// Reconcile validates the playbook and reports it in status.
func (r *ClusterResponsePlaybookReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	obj := &v1alpha1.ClusterResponsePlaybook{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	patcher := patch.NewSerialPatcher(obj, r.Client)
	defer func() { retErr = finalize(ctx, patcher, obj, retErr) }()
	return reconcilePlaybook(ctx, r.Recorder, obj, &obj.Spec, &obj.Status)
}
