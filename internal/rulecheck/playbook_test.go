package rulecheck

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

func TestValidatePlaybook(t *testing.T) {
	notify := &v1alpha1.NotifyParams{URL: "https://hooks.example.com/x"}
	for _, tc := range []struct {
		name  string
		steps []v1alpha1.Step
		rl    *v1alpha1.RateLimit
		want  string // "" = valid
	}{
		{"valid", []v1alpha1.Step{{Action: v1alpha1.ActionCapture}, {Action: v1alpha1.ActionNotify, Notify: notify}}, nil, ""},
		{"empty", nil, nil, "at least one step"},
		{"duplicate names", []v1alpha1.Step{{Action: v1alpha1.ActionCapture}, {Action: v1alpha1.ActionCapture}}, nil, `name "capture" is already used`},
		{"kill without target", []v1alpha1.Step{{Action: v1alpha1.ActionKill}}, nil, "kill.target"},
		{"notify bad URL", []v1alpha1.Step{{Action: v1alpha1.ActionNotify, Notify: &v1alpha1.NotifyParams{URL: "ftp://x"}}}, nil, "not an http(s) URL"},
		{"label without values", []v1alpha1.Step{{Action: v1alpha1.ActionLabel}}, nil, "values"},
		{"inKernel on isolate", []v1alpha1.Step{{Action: v1alpha1.ActionIsolate, InKernel: true}}, nil, "inKernel applies to kill"},
		{"zero rate limit", []v1alpha1.Step{{Action: v1alpha1.ActionCapture}}, &v1alpha1.RateLimit{Actions: 0, Period: metav1.Duration{}}, "rateLimit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidatePlaybook(&v1alpha1.ResponsePlaybookSpec{Steps: tc.steps, RateLimit: tc.rl})
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
