package rulecheck

import (
	"fmt"
	"net/url"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// ValidatePlaybook checks what the CRD schema cannot: unique step names,
// the parameters each action needs, a usable notify URL, a sane rate limit.
func ValidatePlaybook(spec *v1alpha1.ResponsePlaybookSpec) error {
	if len(spec.Steps) == 0 {
		return fmt.Errorf("steps: a playbook needs at least one step")
	}
	seen := map[string]int{}
	for i, s := range spec.Steps {
		name := s.Name
		if name == "" {
			name = string(s.Action)
		}
		if j, dup := seen[name]; dup {
			return fmt.Errorf("steps[%d]: name %q is already used by steps[%d]; name the steps apart", i, name, j)
		}
		seen[name] = i
		switch s.Action {
		case v1alpha1.ActionKill:
			if s.Kill == nil || s.Kill.Target == "" {
				return fmt.Errorf("steps[%d] (kill): kill.target (process, container or pod) is required", i)
			}
		case v1alpha1.ActionNotify:
			if s.Notify == nil || s.Notify.URL == "" {
				return fmt.Errorf("steps[%d] (notify): notify.url is required", i)
			}
			u, err := url.Parse(s.Notify.URL)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return fmt.Errorf("steps[%d] (notify): notify.url %q is not an http(s) URL", i, s.Notify.URL)
			}
		case v1alpha1.ActionLabel, v1alpha1.ActionAnnotate:
			if len(s.Values) == 0 {
				return fmt.Errorf("steps[%d] (%s): values must name at least one key", i, s.Action)
			}
		case v1alpha1.ActionCapture, v1alpha1.ActionIsolate, v1alpha1.ActionQuarantine, v1alpha1.ActionScale, v1alpha1.ActionCordon:
		default:
			return fmt.Errorf("steps[%d]: unknown action %q", i, s.Action)
		}
		if s.InKernel && s.Action != v1alpha1.ActionKill {
			return fmt.Errorf("steps[%d] (%s): inKernel applies to kill steps only", i, s.Action)
		}
	}
	if rl := spec.RateLimit; rl != nil && (rl.Actions <= 0 || rl.Period.Duration <= 0) {
		return fmt.Errorf("rateLimit: actions and period must be positive")
	}
	return nil
}
