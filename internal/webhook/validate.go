package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/rulecheck"
)

// Path is where the validating webhook is served.
const Path = "/validate-riposte-dev-v1alpha1"

// Validator admits rules that compile and pass their embedded tests, and
// playbooks whose steps are usable.
type Validator struct {
	// Playbooks resolves playbook references; nil skips the check.
	Playbooks rulecheck.PlaybookLookup
	// TestBudget bounds a rule's embedded tests (rulecheck.TestBudget when
	// zero): admission must answer within the API server's timeout.
	TestBudget time.Duration
}

// Handler returns the validator as an http.Handler speaking AdmissionReview.
func (v *Validator) Handler() http.Handler {
	return &admission.Webhook{Handler: v}
}

// Handle validates one admission request.
func (v *Validator) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation == admissionv1.Delete {
		return admission.Allowed("")
	}
	var (
		spec      *v1alpha1.DetectionRuleSpec
		name, ns  string
		kind      = req.Kind.Kind
		namespace = req.Namespace
	)
	switch kind {
	case "DetectionRule":
		var obj v1alpha1.DetectionRule
		if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode DetectionRule: %w", err))
		}
		spec, name, ns = &obj.Spec, obj.Name, namespace
	case "ClusterDetectionRule":
		var obj v1alpha1.ClusterDetectionRule
		if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode ClusterDetectionRule: %w", err))
		}
		spec, name = &obj.Spec, obj.Name
	case "ResponsePlaybook", "ClusterResponsePlaybook":
		var obj v1alpha1.ResponsePlaybook // both kinds share the spec
		if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode %s: %w", kind, err))
		}
		if err := rulecheck.ValidatePlaybook(&obj.Spec); err != nil {
			return admission.Denied(fmt.Sprintf("%s: %s %q: %v", v1alpha1.InvalidSpecReason, kind, obj.Name, err))
		}
		return admission.Allowed("")
	default:
		return admission.Allowed("not a riposte kind")
	}
	if name == "" {
		name = req.Name
	}
	if spec.Suspend {
		// A suspended rule never goes live; let authors park broken drafts.
		return admission.Allowed("suspended rules are not checked")
	}
	// Compile and tests refuse; a missing playbook only warns, because Flux
	// and Argo CD apply a folder in one batch and the playbook may come in
	// the same sync. The reconciler keeps such a rule not Ready meanwhile.
	rule, f := rulecheck.Compile(name, ns, spec)
	if f == nil {
		f = rulecheck.Tests(ctx, rule, v.TestBudget)
	}
	if f != nil {
		return admission.Denied(fmt.Sprintf("%s: %s", f.Reason, f.Message))
	}
	if v.Playbooks != nil {
		if f := rulecheck.Playbooks(ctx, v.Playbooks, ns, spec.Playbooks); f != nil {
			return admission.Allowed("").WithWarnings(f.Message)
		}
	}
	return admission.Allowed("")
}
