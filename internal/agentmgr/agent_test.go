package agentmgr

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/go-logr/logr"
	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/test/cluster"
)

// TestAgentLoadsReadyRulesAndWritesIncidents runs the node agent against a
// real control plane: a ClusterDetectionRule the controller made Ready is
// loaded (and reported in the node's Lease), an exec on this host matches it
// and the match becomes an Incident; a rule that is not Ready is not loaded.
func TestAgentLoadsReadyRulesAndWritesIncidents(t *testing.T) {
	cl := cluster.StartT(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := cl.InstallCRDs(ctx, "../../config/crd/bases"); err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	c, err := client.New(cl.AdminConfig(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cl.Kubectl(ctx, "create", "namespace", "riposte-system").CombinedOutput(); err != nil {
		t.Fatalf("create namespace: %v %s", err, out)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "agent-e2e-tool")
	data, _ := os.ReadFile("/usr/bin/true")
	os.WriteFile(bin, data, 0o755)
	other := filepath.Join(dir, "not-ready-tool")
	os.WriteFile(other, data, 0o755)

	mk := func(name, binary string, ready bool) string {
		r := &v1alpha1.ClusterDetectionRule{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.DetectionRuleSpec{
			Source: "process", Severity: "high", Condition: `event.kind == "exec" && process.binary == "` + binary + `"`}}
		if err := c.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		status := metav1.ConditionFalse
		if ready {
			status = metav1.ConditionTrue
		}
		r.Status.ObservedGeneration = r.Generation
		apimeta.SetStatusCondition(&r.Status.Conditions, metav1.Condition{Type: v1alpha1.ReadyCondition, Status: status, Reason: "RollingOut", Message: "test"})
		if err := c.Status().Update(ctx, r); err != nil {
			t.Fatal(err)
		}
		return string(r.UID)
	}
	uid := mk("agent-e2e", bin, true)
	notReady := mk("agent-e2e-not-ready", other, false)

	var logs syncBuffer
	actx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(actx, cl.AdminConfig(), Options{Node: "e2e-node", Namespace: "riposte-system",
			Log: logr.FromSlogHandler(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), SkipNameValidation: true})
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("agent: %v; logs:\n%s", err, logs.String())
		}
	}()
	// Wait until the agent reports the Ready rule (and only it) loaded in
	// its Lease.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := cl.Kubectl(ctx, "-n", "riposte-system", "get", "lease", "riposte-agent-e2e-node", "-o", "jsonpath={.metadata.annotations}").CombinedOutput()
		if bytes.Contains(out, []byte(uid)) {
			if bytes.Contains(out, []byte(notReady)) {
				t.Fatalf("the Lease reports a rule that is not Ready as loaded: %s", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Lease with loaded rules: %s\nlogs:\n%s", out, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A new version of the live rule, not yet checked by the controller:
	// the last good version stays loaded. A rule made Ready after the
	// change is the marker that the agent has seen it.
	var live v1alpha1.ClusterDetectionRule
	if err := c.Get(ctx, client.ObjectKey{Name: "agent-e2e"}, &live); err != nil {
		t.Fatal(err)
	}
	live.Spec.Severity = "critical"
	if err := c.Update(ctx, &live); err != nil {
		t.Fatal(err)
	}
	marker := mk("agent-e2e-marker", filepath.Join(dir, "marker"), true)
	deadline = time.Now().Add(30 * time.Second)
	for {
		out, _ := cl.Kubectl(ctx, "-n", "riposte-system", "get", "lease", "riposte-agent-e2e-node", "-o", "jsonpath={.metadata.annotations}").CombinedOutput()
		if bytes.Contains(out, []byte(marker)) {
			if !bytes.Contains(out, []byte(uid+"=1")) {
				t.Fatalf("the last good version of a rule was dropped while its new version waits for the controller: %s", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the marker rule is not loaded: %s\nlogs:\n%s", out, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The not-Ready rule's binary runs first: the Incident of the Ready one,
	// waited for below, comes after anything the other would have made.
	for _, b := range []string{other, bin} {
		cmd := exec.Command(b)
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s ran %s as pid %d", time.Now().Format("15:04:05.000"), b, cmd.Process.Pid)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		var incs v1alpha1.IncidentList
		if err := c.List(ctx, &incs); err != nil {
			t.Fatal(err)
		}
		var rules []string
		for _, in := range incs.Items {
			rules = append(rules, in.Spec.Rule)
		}
		found := false
		for _, r := range rules {
			if r == "agent-e2e-not-ready" {
				t.Fatalf("a rule that is not Ready produced an Incident")
			}
			found = found || r == "agent-e2e"
		}
		if found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Incident for agent-e2e (have %v); logs:\n%s", rules, logs.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer for a log written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
