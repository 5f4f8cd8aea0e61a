//go:build e2enode

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/evidence"
	"github.com/riposte-dev/riposte/internal/controllermgr"
	"github.com/riposte-dev/riposte/responders/node"
	tnode "github.com/riposte-dev/riposte/test/node"
	"github.com/riposte-dev/riposte/test/stack"
)

// TestDelegatedStepsRunOnTheRealNode runs the node part of playbooks on
// real containers, through the agent as config/agent/daemonset.yaml runs it
// (its mounts reproduced on a read-only root, its token bound to the node):
//   - capture then kill of a process: the node bundle (processes, the
//     executable, the file the intruder dropped in the container, found
//     through the runtime's rootfs mount) is read back and its manifest
//     verified; the exec'd shell dies of SIGKILL;
//   - kill of a container through its cgroup.kill: the kubelet restarts it;
//   - refusals the agent makes from its own facts, whatever the controller
//     delegates: a host process under a playbook without allowHostProcesses,
//     and a pod in kube-system, protected on the agent (this controller is
//     configured to protect nothing, so only the agent stands in the way).
func TestDelegatedStepsRunOnTheRealNode(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rn := riposteOnNode(ctx, t, root, controllermgr.Response{ProtectedNamespaces: []string{"nothing-protected"}},
		[]string{filepath.Join(root, "test/e2e/testdata/response.yaml")}, "e2e-kill-process", "e2e-kill-container", "e2e-kill-protected")
	c := rn.Stack.Client
	pod := deploymentPod(ctx, t, rn.Node, "shop", "web")

	// Capture, then kill the process.
	execDone := make(chan error, 1)
	go func() {
		_, err := rn.Exec(ctx, "shop", pod.Name, "sh", "-c", "echo dropped > /tmp/dropped.sh; sleep 600", "riposte-e2e-kill-process")
		execDone <- err
	}()
	inc := waitIncident(ctx, t, c, "e2e-kill-process", pod.Name, func(in *v1alpha1.Incident) (bool, string) {
		return in.Status.Phase == v1alpha1.PhaseResponded || in.Status.Phase == v1alpha1.PhaseFailed, steps(in)
	})
	if inc.Status.Phase != v1alpha1.PhaseResponded {
		t.Fatalf("incident %s: %s: %s", inc.Name, inc.Status.Phase, steps(inc))
	}
	select {
	case err := <-execDone:
		if err == nil || !strings.Contains(err.Error(), "137") {
			t.Errorf("kubectl exec ended with %v, want the shell killed (exit 137)", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the exec'd shell still runs after its Incident's kill step Succeeded")
	}
	kill, _ := step(inc, v1alpha1.ActionKill)
	if !strings.Contains(kill.Message, "killed with SIGKILL") {
		t.Errorf("kill step: %s", kill.Message)
	}
	var nodeBundle *v1alpha1.Evidence
	for i, e := range inc.Status.Evidence {
		if strings.HasPrefix(e.Location, tnode.Name+":") {
			nodeBundle = &inc.Status.Evidence[i]
		}
	}
	if nodeBundle == nil {
		t.Fatalf("no node bundle in the Incident's evidence: %+v", inc.Status.Evidence)
	}
	// The bundle is in the agent's evidence volume, which is agent.Evidence on the host.
	rel, ok := strings.CutPrefix(nodeBundle.Location, tnode.Name+":/var/lib/riposte/evidence/")
	if !ok {
		t.Fatalf("node bundle at %s, want in the DaemonSet's evidence volume /var/lib/riposte/evidence", nodeBundle.Location)
	}
	path := filepath.Join(rn.Agent.Evidence, rel)
	m, err := evidence.Verify(path, nodeBundle.ManifestSHA256)
	if err != nil {
		t.Fatalf("verify the node bundle: %v", err)
	}
	names := map[string]bool{}
	for _, f := range m.Files {
		names[f.Name] = true
	}
	for _, want := range []string{"node/processes.json", "node/pstree.txt", "node/changed-files.json"} {
		if !names[want] {
			t.Errorf("node bundle lacks %s: %v", want, names)
		}
	}
	b, err := os.ReadFile(filepath.Join(path, "node/changed-files.json"))
	if err != nil {
		t.Fatal(err)
	}
	var changed []node.Changed
	if err := json.Unmarshal(b, &changed); err != nil {
		t.Fatal(err)
	}
	dropped := false
	for _, ch := range changed {
		dropped = dropped || (ch.Path == "/tmp/dropped.sh" && ch.Copied)
	}
	if !dropped {
		t.Errorf("changed files %+v, want /tmp/dropped.sh copied", changed)
	}
	t.Logf("node bundle %s: %d files, manifest verified", nodeBundle.Location, len(m.Files))

	// Kill the container.
	go func() { _, _ = rn.Exec(ctx, "shop", pod.Name, "sh", "-c", "sleep 600", "riposte-e2e-kill-container") }()
	inc = waitIncident(ctx, t, c, "e2e-kill-container", pod.Name, func(in *v1alpha1.Incident) (bool, string) {
		return in.Status.Phase == v1alpha1.PhaseResponded || in.Status.Phase == v1alpha1.PhaseFailed, steps(in)
	})
	if kill, _ := step(inc, v1alpha1.ActionKill); inc.Status.Phase != v1alpha1.PhaseResponded || !strings.Contains(kill.Message, "cgroup.kill") {
		t.Fatalf("incident %s: %s: %s", inc.Name, inc.Status.Phase, steps(inc))
	}
	waitFor(ctx, t, "the kubelet restarts the killed container", func() (bool, string) {
		var p corev1.Pod
		if err := c.Get(ctx, client.ObjectKeyFromObject(pod), &p); err != nil {
			return false, err.Error()
		}
		cs := p.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].RestartCount >= 1, fmt.Sprintf("%+v", cs)
	})

	// A host process: the controller delegates the kill (an Incident about
	// a host process is trusted only in riposte's own namespace), the agent
	// refuses.
	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	hostInc := &v1alpha1.Incident{
		ObjectMeta: metav1.ObjectMeta{Namespace: stack.Namespace, Name: "kill-a-host-process", Labels: map[string]string{
			v1alpha1.OriginLabel: string(v1alpha1.OriginManual), v1alpha1.NodeLabel: tnode.Name}, Annotations: map[string]string{v1alpha1.ApproveAnnotation: "true"}},
		Spec: v1alpha1.IncidentSpec{Rule: "manual", RuleKind: "ClusterDetectionRule", Severity: "high",
			Subject:   v1alpha1.Subject{Node: tnode.Name, PID: int64(sleeper.Process.Pid), Binary: "/usr/bin/sleep"},
			Playbooks: []v1alpha1.PlaybookRef{{Kind: "ClusterResponsePlaybook", Name: "e2e-kill-any-process"}}},
	}
	if err := c.Create(ctx, hostInc); err != nil {
		t.Fatal(err)
	}
	refused := func(in *v1alpha1.Incident) {
		t.Helper()
		waitFor(ctx, t, "the agent refuses the delegated kill of "+in.Name, func() (bool, string) {
			var got v1alpha1.Incident
			if err := c.Get(ctx, client.ObjectKeyFromObject(in), &got); err != nil {
				return false, err.Error()
			}
			kill, ok := step(&got, v1alpha1.ActionKill)
			if ok && kill.Phase == v1alpha1.StepSucceeded {
				t.Fatalf("incident %s: the kill step Succeeded: %s", got.Name, kill.Message)
			}
			if ok && kill.Phase == v1alpha1.StepFailed {
				if !strings.Contains(kill.Message, "refused by the node agent") {
					t.Fatalf("incident %s: kill failed, but not by the agent's refusal: %s", got.Name, kill.Message)
				}
				t.Logf("%s: %s", got.Name, kill.Message)
				return true, ""
			}
			return false, steps(&got)
		})
	}
	refused(hostInc)
	if err := syscall.Kill(sleeper.Process.Pid, 0); err != nil {
		t.Errorf("the host process is gone: %v", err)
	}

	// A pod in kube-system: the controller here protects nothing, the agent does.
	sys := deploymentPod(ctx, t, rn.Node, "kube-system", "system-web")
	sysDone := make(chan error, 1)
	go func() {
		_, err := rn.Exec(ctx, "kube-system", sys.Name, "sh", "-c", "sleep 120", "riposte-e2e-protected")
		sysDone <- err
	}()
	in := waitIncident(ctx, t, c, "e2e-kill-protected", sys.Name, func(in *v1alpha1.Incident) (bool, string) {
		_, ok := step(in, v1alpha1.ActionKill)
		return ok, steps(in)
	})
	refused(in)
	select {
	case err := <-sysDone:
		t.Errorf("the shell in kube-system ended (%v): the agent killed in a protected namespace", err)
	default:
	}
}

// waitIncident waits for an Incident of rule about pod for which done holds.
func waitIncident(ctx context.Context, t *testing.T, c client.Client, rule, pod string, done func(*v1alpha1.Incident) (bool, string)) *v1alpha1.Incident {
	t.Helper()
	var found *v1alpha1.Incident
	waitFor(ctx, t, fmt.Sprintf("the %s Incident of pod %s", rule, pod), func() (bool, string) {
		var incs v1alpha1.IncidentList
		if err := c.List(ctx, &incs, client.MatchingLabels{v1alpha1.RuleLabel: rule}); err != nil {
			return false, err.Error()
		}
		for i := range incs.Items {
			in := &incs.Items[i]
			if in.Spec.Subject.Pod != pod {
				continue
			}
			ok, why := done(in)
			found = in
			return ok, fmt.Sprintf("incident %s: %s", in.Name, why)
		}
		return false, fmt.Sprintf("no %s incident for pod %s among %d", rule, pod, len(incs.Items))
	})
	return found
}
