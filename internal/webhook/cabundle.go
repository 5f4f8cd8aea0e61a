package webhook

import (
	"context"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// CABundleReconciler patches the caBundle whenever the webhook configuration
// is created or changed: GitOps tools may apply it after the controller
// started, or apply it again without the bundle.
type CABundleReconciler struct {
	Certs *CertManager
}

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=get;list;watch;patch

// SetupWithManager watches the one configuration the manager owns.
func (r *CABundleReconciler) SetupWithManager(mgr ctrl.Manager) error {
	name := r.Certs.WebhookConfig
	return ctrl.NewControllerManagedBy(mgr).
		For(&admissionregistrationv1.ValidatingWebhookConfiguration{}, builder.WithPredicates(
			predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == name }))).
		Named("webhook-cabundle").
		Complete(r)
}

// Reconcile writes the current CA into the configuration.
func (r *CABundleReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	ca := r.Certs.CA()
	if len(ca) == 0 {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.Certs.PatchCABundle(ctx, ca)
}
