package controller

import (
	"context"
	"fmt"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/rulecheck"
)

// reconcilePlaybook is the body shared by the two playbook reconcilers.
func reconcilePlaybook(ctx context.Context, rec EventRecorder, obj statusObject, spec *v1alpha1.ResponsePlaybookSpec, status *v1alpha1.ResponsePlaybookStatus) (ctrl.Result, error) {
	if v, ok := meta.ReconcileAnnotationValue(obj.GetAnnotations()); ok {
		status.SetLastHandledReconcileRequest(v)
	}
	status.ObservedGeneration = obj.GetGeneration()
	conditions.Delete(obj, v1alpha1.ReconcilingCondition)
	if err := rulecheck.ValidatePlaybook(spec); err != nil {
		conditions.MarkStalled(obj, v1alpha1.InvalidSpecReason, "%v", err)
		conditions.MarkFalse(obj, v1alpha1.ReadyCondition, v1alpha1.InvalidSpecReason, "%v", err)
		if rec != nil {
			rec.Eventf(obj, nil, corev1.EventTypeWarning, v1alpha1.InvalidSpecReason, "Reconcile", "%v", err)
		}
		return ctrl.Result{}, nil
	}
	conditions.Delete(obj, v1alpha1.StalledCondition)
	msg := fmt.Sprintf("%d steps valid", len(spec.Steps))
	if spec.DryRun {
		msg += " (dry run)"
	}
	conditions.MarkTrue(obj, v1alpha1.ReadyCondition, v1alpha1.LoadedReason, "%s", msg)
	return ctrl.Result{}, nil
}
