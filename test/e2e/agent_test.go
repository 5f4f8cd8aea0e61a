//go:build e2enode

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2/textlogger"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/internal/controllermgr"
	"github.com/riposte-dev/riposte/internal/rollout"
	"github.com/riposte-dev/riposte/test/node"
	"github.com/riposte-dev/riposte/test/stack"
)

// TestShellAndShadowReadInADeploymentPodBecomeIncidents runs riposte as a
// cluster runs it: the controller (as its ServiceAccount) and the `riposte
// agent` binary (as riposte-agent, with config/rbac/agent.yaml) on a real
// node, with the shipped rule library applied by kubectl. A `kubectl exec`
// into a Deployment's pod that runs a shell and reads /etc/shadow becomes
// Incidents of shell-in-container and shadow-file-read whose subject names
// the real pod, its container id, image and image digest, and the
// Deployment.
func TestShellAndShadowReadInADeploymentPodBecomeIncidents(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	rn := riposteOnNode(ctx, t, root, controllermgr.Response{}, nil, "shell-in-container", "shadow-file-read")
	n, rules := rn.Node, rn.Rules
	c := n.Stack.Client
	pod := deploymentPod(ctx, t, n, "shop", "web")
	_, containerID := host.SplitContainerID(pod.Status.ContainerStatuses[0].ContainerID)

	begin := time.Now()
	out, err := n.Exec(ctx, "shop", pod.Name, "sh", "-c", "cat /etc/shadow; id")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl exec took %s: %q", time.Since(begin).Round(time.Millisecond), out)

	found := map[string]*v1alpha1.Incident{}
	waitFor(ctx, t, "Incidents of shell-in-container and shadow-file-read for the pod", func() (bool, string) {
		var incs v1alpha1.IncidentList
		if err := c.List(ctx, &incs); err != nil {
			return false, err.Error()
		}
		var have []string
		for i := range incs.Items {
			in := &incs.Items[i]
			have = append(have, in.Spec.Rule+" "+in.Spec.Subject.Pod)
			if _, ok := rules[in.Spec.Rule]; ok && in.Spec.Subject.Pod == pod.Name {
				found[in.Spec.Rule] = in
			}
		}
		return len(found) == len(rules), fmt.Sprintf("have %v", have)
	})
	for rule, in := range found {
		s := in.Spec.Subject
		t.Logf("%s: %s (subject %+v)", rule, in.Spec.Output, s)
		want := v1alpha1.Subject{
			Namespace: "shop", Pod: pod.Name, PodUID: string(pod.UID),
			Container: "app", ContainerID: containerID, Image: node.BusyboxImage,
			ImageDigest:  pod.Status.ContainerStatuses[0].ImageID,
			WorkloadKind: "Deployment", WorkloadName: "web", Node: node.Name,
		}
		got := v1alpha1.Subject{
			Namespace: s.Namespace, Pod: s.Pod, PodUID: s.PodUID,
			Container: s.Container, ContainerID: s.ContainerID, Image: s.Image,
			ImageDigest:  s.ImageDigest,
			WorkloadKind: s.WorkloadKind, WorkloadName: s.WorkloadName, Node: s.Node,
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: subject\n got %+v\nwant %+v", rule, got, want)
		}
		if s.Binary != "/bin/busybox" {
			t.Errorf("%s: subject binary %q, want /bin/busybox (sh and cat are busybox applets)", rule, s.Binary)
		}
	}
}

// riposteNode is a real node with riposte's controller and agent on it.
type riposteNode struct {
	*node.Node
	// Rules are the UIDs of the rules waited for, by name.
	Rules map[string]string
	Agent *agentProcess
}

// riposteOnNode starts a node with kube-controller-manager and riposte's
// controller (its log on stderr with RIPOSTE_TEST_LOG set), applies the
// shipped library with kubectl as Flux or Argo CD would, waits until the
// controller makes the named rules Ready, and starts the `riposte agent`
// binary and waits until it reports them loaded in its Lease. extra are
// further rule and playbook files (testdata) applied with the library;
// resp configures the controller's responses.
func riposteOnNode(ctx context.Context, t *testing.T, root string, resp controllermgr.Response, extra []string, ruleNames ...string) *riposteNode {
	t.Helper()
	log := logr.Discard()
	if os.Getenv("RIPOSTE_TEST_LOG") != "" {
		log = textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(1)))
	}
	n := node.StartT(t, node.Options{ControllerManager: true, Controller: &stack.Options{Root: root, Log: log, Response: resp}})
	c := n.Stack.Client

	for _, f := range append([]string{filepath.Join(root, "rules")}, extra...) {
		if out, err := n.Cluster.Kubectl(ctx, "apply", "-R", "-f", f).CombinedOutput(); err != nil {
			t.Fatalf("kubectl apply %s: %v\n%s", f, err, out)
		}
	}
	rules := map[string]string{}
	for _, name := range ruleNames {
		rules[name] = ""
	}
	waitFor(ctx, t, "the controller makes the rules Ready", func() (bool, string) {
		var pending []string
		for name := range rules {
			var r v1alpha1.ClusterDetectionRule
			if err := c.Get(ctx, client.ObjectKey{Name: name}, &r); err != nil {
				return false, err.Error()
			}
			if r.Status.ObservedGeneration != r.Generation || !apimeta.IsStatusConditionTrue(r.Status.Conditions, v1alpha1.ReadyCondition) {
				pending = append(pending, fmt.Sprintf("%s: %v", name, r.Status.Conditions))
				continue
			}
			rules[name] = string(r.UID)
		}
		return len(pending) == 0, strings.Join(pending, "; ")
	})

	agent := startAgent(ctx, t, n, root)
	waitFor(ctx, t, "the agent reports the rules loaded in its Lease", func() (bool, string) {
		out, err := n.Cluster.Kubectl(ctx, "-n", stack.Namespace, "get", "lease", rollout.LeaseName(node.Name), "-o", "jsonpath={.metadata.annotations}").CombinedOutput()
		if err != nil {
			return false, string(out) + agent.tail()
		}
		for _, uid := range rules {
			if !bytes.Contains(out, []byte(uid)) {
				return false, string(out)
			}
		}
		return true, ""
	})
	return &riposteNode{Node: n, Rules: rules, Agent: agent}
}

// deploymentPod creates a one-replica Deployment namespace/name on the node
// and returns its pod once Running. The pod's owner chain is Pod →
// ReplicaSet → Deployment (kube-controller-manager makes them). The
// entrypoint is /pause, not busybox, so the only shell in the pod is one
// kubectl exec starts (the shipped rule counts every busybox shell applet).
func deploymentPod(ctx context.Context, t *testing.T, n *node.Node, namespace, name string) *corev1.Pod {
	t.Helper()
	c := n.Stack.Client
	if err := n.EnsureNamespace(ctx, namespace); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": name}
	one := int32(1)
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Command: []string{"/pause"}}}},
	}
	node.PrepareSpec(&tmpl.Spec)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl},
	}
	if err := c.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	var podName string
	waitFor(ctx, t, "the Deployment's pod is created", func() (bool, string) {
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels(labels)); err != nil {
			return false, err.Error()
		}
		if len(pods.Items) == 0 {
			return false, "no pod"
		}
		podName = pods.Items[0].Name
		return true, ""
	})
	begin := time.Now()
	pod, err := n.WaitRunning(ctx, namespace, podName)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pod %s Running %s after it was created", pod.Name, time.Since(begin).Round(time.Millisecond))
	return pod
}

// agentProcess is `riposte agent` running as a child process.
type agentProcess struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	// Evidence is the host folder behind the agent's evidence volume.
	Evidence string
}

// startAgent builds cmd/riposte and runs `riposte agent` for the node as
// config/agent/daemonset.yaml runs it: with the manifest's arguments, in a
// private mount namespace reproducing its volume mounts on a read-only root
// (daemonSetView), and with a token of the riposte-agent ServiceAccount
// bound to the Node, as the kubelet binds a DaemonSet pod's token: exactly
// the permissions of config/rbac/agent.yaml, and the node identity the
// admission policy riposte-incidents checks. It is stopped at cleanup.
func startAgent(ctx context.Context, t *testing.T, n *node.Node, root string) *agentProcess {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "riposte")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/riposte")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/riposte: %v\n%s", err, out)
	}
	cfg, err := n.Cluster.NodeServiceAccountConfig(ctx, stack.Namespace, "riposte-agent", node.Name)
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["riposte-agent"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "riposte-agent"}
	kc.CurrentContext = "test"
	kubeconfig := filepath.Join(dir, "agent.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	// The manifest's node folders (evidence, the Incident spool) below dir.
	a := &agentProcess{log: filepath.Join(dir, "agent.log"), done: make(chan struct{}), Evidence: filepath.Join(dir, "evidence")}
	ds, err := loadDaemonSet(root, dir)
	if err != nil {
		t.Fatal(err)
	}
	// The manifest's arguments, then what a pod would have to itself: its
	// ports (here they would clash with other processes of the host).
	args := append([]string{bin}, ds.args(map[string]string{"NODE_NAME": node.Name, "RUNTIME_NAMESPACE": stack.Namespace})...)
	args = append(args, "--metrics-addr=127.0.0.1:0", "--health-addr=127.0.0.1:0")
	// This sandbox's pid 1 is not the node's init (and cannot be read): the
	// test process stands in for it, in the host's mount namespace where
	// containerd mounts containers' root file systems.
	args = append(args, fmt.Sprintf("--host-pid=%d", os.Getpid()))
	script, err := ds.script(args)
	if err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(a.log)
	if err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script)
	a.cmd.Env = []string{"KUBECONFIG=" + kubeconfig, "HOME=" + dir, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start riposte agent: %v", err)
	}
	go func() {
		_ = a.cmd.Wait()
		logFile.Close()
		close(a.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
			<-a.done
			t.Errorf("riposte agent did not stop within 15 s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("riposte agent log:%s", a.tail())
		}
	})
	return a
}

// tail is the end of the agent's log (and whether it exited), for failures.
func (a *agentProcess) tail() string {
	data, _ := os.ReadFile(a.log)
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	// Errors and warnings first (the end of the log is the shutdown).
	var lines []string
	for _, l := range all {
		if strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, `"level":"WARN"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	if len(all) > 15 {
		all = all[len(all)-15:]
	}
	lines = append(lines, "…", strings.Join(all, "\n"))
	state := "running"
	select {
	case <-a.done:
		state = "exited: " + a.cmd.ProcessState.String()
	default:
	}
	return fmt.Sprintf("\n--- riposte agent (%s), last lines ---\n%s", state, strings.Join(lines, "\n"))
}

// waitFor polls cond until it holds. After two minutes (far above the few
// seconds each step takes on a busy 2-core machine) or at ctx's end the test
// fails with what was being waited for and cond's last explanation.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		ok, why := cond()
		if ok {
			t.Logf("%s: after %s", what, time.Since(begin).Round(time.Millisecond))
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v; last: %s", what, ctx.Err(), why)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
