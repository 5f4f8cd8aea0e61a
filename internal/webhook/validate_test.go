package webhook

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

type noPlaybooks struct{}

func (noPlaybooks) PlaybookExists(context.Context, string, string) (bool, error) { return false, nil }

func request(t *testing.T, obj runtime.Object, kind string) admission.Request {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, Kind: metav1.GroupVersionKind{Group: "riposte.dev", Version: "v1alpha1", Kind: kind},
		Namespace: "team", Object: runtime.RawExtension{Raw: raw},
	}}
}

func TestValidatorDeniesBadRulesAndWarnsOnMissingPlaybooks(t *testing.T) {
	v := &Validator{Playbooks: noPlaybooks{}}
	bad := &v1alpha1.DetectionRule{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "team"},
		Spec: v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: "audit.verb ==\n  audit.nope"}}
	resp := v.Handle(context.Background(), request(t, bad, "DetectionRule"))
	if resp.Allowed || !strings.Contains(resp.Result.Message, "condition 2:") {
		t.Errorf("bad CEL: allowed=%v message %q", resp.Allowed, resp.Result.Message)
	}
	good := bad.DeepCopy()
	good.Spec.Condition = `audit.verb == "create"`
	good.Spec.Playbooks = []string{"later"}
	resp = v.Handle(context.Background(), request(t, good, "DetectionRule"))
	if !resp.Allowed || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], `"later" not found`) {
		t.Errorf("missing playbook: allowed=%v warnings %v", resp.Allowed, resp.Warnings)
	}
	suspended := bad.DeepCopy()
	suspended.Spec.Suspend = true
	if resp = v.Handle(context.Background(), request(t, suspended, "DetectionRule")); !resp.Allowed {
		t.Error("a suspended draft was refused")
	}
}

func TestValidatorDeniesUnusablePlaybooks(t *testing.T) {
	v := &Validator{}
	pb := &v1alpha1.ClusterResponsePlaybook{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: v1alpha1.ResponsePlaybookSpec{Steps: []v1alpha1.Step{{Action: v1alpha1.ActionKill}}}}
	resp := v.Handle(context.Background(), request(t, pb, "ClusterResponsePlaybook"))
	if resp.Allowed || !strings.Contains(resp.Result.Message, "kill.target") {
		t.Errorf("kill without target: allowed=%v message %q", resp.Allowed, resp.Result.Message)
	}
	pb.Spec.Steps[0].Kill = &v1alpha1.KillParams{Target: "pod"}
	if resp = v.Handle(context.Background(), request(t, pb, "ClusterResponsePlaybook")); !resp.Allowed {
		t.Errorf("valid playbook refused: %q", resp.Result.Message)
	}
}
