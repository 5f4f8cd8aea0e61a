package argocd

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

type healthTests struct {
	Tests []struct {
		HealthStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"healthStatus"`
		InputPath string `json:"inputPath"`
	} `json:"tests"`
}

// TestHealthChecks runs every health/<group>/<Kind>/health.lua on the cases
// of its health_test.yaml: the object is the global obj and the script
// returns {status, message}, as in Argo CD's resource customizations.
func TestHealthChecks(t *testing.T) {
	dirs, err := filepath.Glob("health/riposte.dev/*")
	if err != nil || len(dirs) != 6 {
		t.Fatalf("want a health check per riposte kind (6), found %v (%v)", dirs, err)
	}
	for _, dir := range dirs {
		script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var cases healthTests
		if err := yaml.Unmarshal(b, &cases); err != nil {
			t.Fatalf("%s/health_test.yaml: %v", dir, err)
		}
		for _, tc := range cases.Tests {
			t.Run(filepath.Base(dir)+"/"+tc.InputPath, func(t *testing.T) {
				in, err := os.ReadFile(filepath.Join(dir, tc.InputPath))
				if err != nil {
					t.Fatal(err)
				}
				var obj map[string]any
				if err := yaml.Unmarshal(in, &obj); err != nil {
					t.Fatal(err)
				}
				h, err := Run(string(script), obj)
				if err != nil {
					t.Fatal(err)
				}
				if h.Status != tc.HealthStatus.Status || h.Message != tc.HealthStatus.Message {
					t.Errorf("got %s %q, want %s %q", h.Status, h.Message, tc.HealthStatus.Status, tc.HealthStatus.Message)
				}
			})
		}
	}
}
