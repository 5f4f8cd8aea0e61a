package controllermgr_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/evidence"
)

// The controller process runs the playbook a rule names for the Incident its
// match made: a namespaced rule and playbook, as the controller's
// ServiceAccount with config/rbac, each step recorded in the Incident.
func TestMatchRunsPlaybookSteps(t *testing.T) {
	ctx := context.Background()
	const ns = "e2e-response"
	if err := shared.EnsureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}

	pb := &v1alpha1.ResponsePlaybook{
		ObjectMeta: metav1.ObjectMeta{Name: "contain", Namespace: ns},
		Spec: v1alpha1.ResponsePlaybookSpec{Steps: []v1alpha1.Step{
			{Action: v1alpha1.ActionLabel, Values: map[string]string{"riposte.dev/suspect": "true"}},
			{Action: v1alpha1.ActionCapture},
			{Action: v1alpha1.ActionNotify, Notify: &v1alpha1.NotifyParams{URL: hook.URL + "/allowed/shop"}},
		}},
	}
	rule := &v1alpha1.DetectionRule{
		ObjectMeta: metav1.ObjectMeta{Name: "suspect-pod", Namespace: ns},
		Spec: v1alpha1.DetectionRuleSpec{
			Source:    "object",
			Severity:  "high",
			Condition: `event.kind == "object" && event.op == "create" && object.kind == "Pod" && pod.labels["app"] == "suspect"`,
			Output:    `"suspect pod " + pod.name`,
			Playbooks: []string{"contain"},
		},
	}
	for _, o := range []client.Object{pb, rule} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	waitReady(t, ctx, rule)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "miner", Namespace: ns, Labels: map[string]string{"app": "suspect"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox", Env: []corev1.EnvVar{{Name: "TOKEN", Value: "s3cr3t"}}}}},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}

	var inc v1alpha1.Incident
	eventually(t, 60*time.Second, "Incident responded", func() error {
		var list v1alpha1.IncidentList
		// Other tests' cluster rules (ownerless pods) may fire on this pod too.
		byRule := client.MatchingLabels{v1alpha1.RuleLabel: "suspect-pod", v1alpha1.RuleNamespaceLabel: ns}
		if err := k8s.List(ctx, &list, client.InNamespace(ns), byRule); err != nil {
			return err
		}
		if len(list.Items) != 1 {
			return fmt.Errorf("%d incidents", len(list.Items))
		}
		inc = list.Items[0]
		if len(inc.Status.Steps) != 3 {
			return fmt.Errorf("phase %q steps %+v", inc.Status.Phase, inc.Status.Steps)
		}
		for _, st := range inc.Status.Steps {
			if st.Phase != v1alpha1.StepSucceeded {
				return fmt.Errorf("step %s: %s %s", st.Name, st.Phase, st.Message)
			}
		}
		return nil
	})
	if inc.Spec.Rule != ns+"/suspect-pod" || inc.Spec.Subject.Pod != "miner" {
		t.Errorf("incident rule %q subject %+v", inc.Spec.Rule, inc.Spec.Subject)
	}
	for i, want := range []v1alpha1.Action{v1alpha1.ActionLabel, v1alpha1.ActionCapture, v1alpha1.ActionNotify} {
		st := inc.Status.Steps[i]
		if st.Action != want || st.Playbook != ns+"/contain" || st.StartedAt == nil || st.FinishedAt == nil {
			t.Errorf("step %d: %+v, want action %s of %s/contain with start and finish", i, st, want, ns)
		}
	}

	// The rule's status counts its matches from its Incidents, and follows
	// them when one goes away.
	ruleMatches := func(want int64) func() error {
		return func() error {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(rule), rule); err != nil {
				return err
			}
			if rule.Status.Matches != want {
				return fmt.Errorf("status.matches %d", rule.Status.Matches)
			}
			return nil
		}
	}
	eventually(t, 30*time.Second, "rule status.matches 1", ruleMatches(1))
	defer func() {
		if err := k8s.Delete(ctx, &inc); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "rule status.matches 0 after the Incident is deleted", ruleMatches(0))
	}()

	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
		t.Fatal(err)
	}
	if pod.Labels["riposte.dev/suspect"] != "true" {
		t.Errorf("pod labels %v, want riposte.dev/suspect=true", pod.Labels)
	}

	select {
	case n := <-notified:
		b := n.body
		if n.path != "/allowed/shop" {
			t.Errorf("notified %s, want /allowed/shop", n.path)
		}
		var payload map[string]any
		if err := json.Unmarshal(b, &payload); err != nil {
			t.Fatalf("notify payload is not JSON: %v\n%s", err, b)
		}
		if !strings.Contains(string(b), "suspect-pod") || !strings.Contains(string(b), "miner") {
			t.Errorf("notify payload names neither the rule nor the pod: %s", b)
		}
	default:
		t.Error("the notify endpoint received nothing")
	}

	// The evidence bundle is where the Incident says, and its manifest hashes
	// to the recorded value; the env value is redacted.
	if len(inc.Status.Evidence) != 1 {
		t.Fatalf("evidence %+v, want one bundle", inc.Status.Evidence)
	}
	ev := inc.Status.Evidence[0]
	path := strings.TrimPrefix(ev.Location, "e2e-node:")
	if path == ev.Location || !strings.HasPrefix(path, evidenceDir) {
		t.Fatalf("evidence location %q, want e2e-node:%s/...", ev.Location, evidenceDir)
	}
	manifest, err := os.ReadFile(filepath.Join(path, evidence.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(manifest)
	if hex.EncodeToString(sum[:]) != ev.ManifestSHA256 {
		t.Errorf("manifest sha256 %x, incident says %s", sum, ev.ManifestSHA256)
	}
	err = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "s3cr3t") {
			t.Errorf("%s holds the unredacted env value", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
