package controller

import (
	"context"

	"github.com/fluxcd/pkg/runtime/patch"
	"github.com/fluxcd/pkg/runtime/predicates"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// DetectionRuleReconciler validates DetectionRules and keeps the valid ones
// in the live registry.
type DetectionRuleReconciler struct {
	client.Client
	Registry *Registry
	Recorder EventRecorder
	Rollout  Rollout
}

// +kubebuilder:rbac:groups=riposte.dev,resources=detectionrules,verbs=get;list;watch
// +kubebuilder:rbac:groups=riposte.dev,resources=detectionrules/status,verbs=get;update;patch

// SetupWithManager registers the reconciler: it reacts to spec changes, to
// reconcile requests, and to the playbooks its rules name.
func (r *DetectionRuleReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.DetectionRule{}, playbooksIndex,
		func(o client.Object) []string { return o.(*v1alpha1.DetectionRule).Spec.Playbooks }); err != nil {
		return err
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.DetectionRule{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicates.ReconcileRequestedPredicate{}))).
		Watches(&v1alpha1.ResponsePlaybook{}, handler.EnqueueRequestsFromMapFunc(r.rulesUsing)).
		Watches(&v1alpha1.Incident{}, handler.EnqueueRequestsFromMapFunc(incidentRule("DetectionRule")), builder.WithPredicates(incidentCounted)).
		Named("detectionrule")
	if r.Rollout != nil {
		// An agent loading or dropping rules changes every node rule's
		// nodes count.
		b = b.Watches(&coordinationv1.Lease{}, handler.EnqueueRequestsFromMapFunc(r.all), builder.WithPredicates(agentLeaseChanged))
	}
	return b.Complete(r)
}

// all lists every DetectionRule, for a rollout change.
func (r *DetectionRuleReconciler) all(ctx context.Context, _ client.Object) []reconcile.Request {
	var list v1alpha1.DetectionRuleList
	if err := r.List(ctx, &list); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list rules for a rollout change")
		return nil
	}
	reqs := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		reqs[i].NamespacedName = client.ObjectKeyFromObject(&list.Items[i])
	}
	return reqs
}

// rulesUsing lists the DetectionRules in the playbook's namespace that name it.
func (r *DetectionRuleReconciler) rulesUsing(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.DetectionRuleList
	if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{playbooksIndex: o.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list rules using playbook", "playbook", client.ObjectKeyFromObject(o))
		return nil
	}
	reqs := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		reqs[i].NamespacedName = client.ObjectKeyFromObject(&list.Items[i])
	}
	return reqs
}

// Reconcile compiles the rule, runs its tests, resolves its playbooks and
// reports the outcome in status.
func (r *DetectionRuleReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	obj := &v1alpha1.DetectionRule{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.Registry.Delete(RegistryKey("DetectionRule", req.Namespace, req.Name))
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !obj.DeletionTimestamp.IsZero() {
		r.Registry.Delete(RegistryKey("DetectionRule", req.Namespace, req.Name))
		return ctrl.Result{}, nil
	}
	patcher := patch.NewSerialPatcher(obj, r.Client)
	defer func() { retErr = finalize(ctx, patcher, obj, retErr) }()
	rr := ruleReconciler{Client: r.Client, Registry: r.Registry, Recorder: r.Recorder, Rollout: r.Rollout}
	return rr.reconcileRule(ctx, "DetectionRule", obj, &obj.Spec, &obj.Status)
}
