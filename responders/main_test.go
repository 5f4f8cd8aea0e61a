package responders_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/trust"
	"github.com/riposte-dev/riposte/responders"
	"github.com/riposte-dev/riposte/test/cluster"
)

// One control plane with kube-controller-manager for the package: the
// ReplicaSet controller must create replacement pods and honour scaling.
var (
	shared *cluster.Cluster
	kc     client.Client
	cs     kubernetes.Interface
	scheme = runtime.NewScheme()
	seq    atomic.Int64
)

func TestMain(m *testing.M) {
	// The test binary doubles as a "container" process for the kernel tests.
	if os.Getenv("RIPOSTE_HELPER") == "serve" {
		serve()
		return
	}
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	os.Exit(cluster.Main(m, cluster.Options{ControllerManager: true}, func(c *cluster.Cluster) {
		shared = c
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.InstallCRDs(ctx, filepath.Join("..", "config", "crd", "bases")); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: install CRDs: %v\n", err)
			os.Exit(1)
		}
		var err error
		if kc, err = client.New(c.AdminConfig(), client.Options{Scheme: scheme}); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: client: %v\n", err)
			os.Exit(1)
		}
		cs = kubernetes.NewForConfigOrDie(c.AdminConfig())
	}))
}

func serve() {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := c.Write([]byte(line)); err != nil {
					return
				}
			}
		}()
	}
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func uniq(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid()%10000, seq.Add(1))
}

// namespace creates a fresh namespace with its default ServiceAccount.
func namespace(t *testing.T) string {
	t.Helper()
	ns := uniq("rt")
	if err := shared.EnsureServiceAccount(ctxT(t), ns, "default"); err != nil {
		t.Fatal(err)
	}
	return ns
}

func podSpec() corev1.PodSpec {
	return corev1.PodSpec{
		NodeName: "riposte-test-node",
		Containers: []corev1.Container{{
			Name: "app", Image: "localhost/busybox:1", ImagePullPolicy: corev1.PullNever,
			Command: []string{"sleep", "3600"},
			Env:     []corev1.EnvVar{{Name: "API_TOKEN", Value: "hunter2"}},
		}},
	}
}

// barePod creates a pod with no owner.
func barePod(t *testing.T, ns string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: uniq("pod"), Labels: map[string]string{"app": "web"}}, Spec: podSpec()}
	if err := kc.Create(ctxT(t), p); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	return p
}

// deployment creates a Deployment and waits for the controllers to create its pods.
func deployment(t *testing.T, ns string, replicas int32) (*appsv1.Deployment, []corev1.Pod) {
	t.Helper()
	name := uniq("web")
	labels := map[string]string{"app": name}
	spec := podSpec()
	spec.NodeName = "" // unscheduled: no kubelet runs them, the controllers still manage them
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
	if err := kc.Create(ctxT(t), d); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	return d, waitPods(t, ns, labels, int(replicas))
}

// waitPods waits until exactly n live pods carry labels.
func waitPods(t *testing.T, ns string, labels map[string]string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	err := wait.PollUntilContextTimeout(ctxT(t), 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		var list corev1.PodList
		if err := kc.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
			return false, err
		}
		pods = pods[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				pods = append(pods, p)
			}
		}
		return len(pods) == n, nil
	})
	if err != nil {
		t.Fatalf("wait for %d pods %v in %s: have %d: %v", n, labels, ns, len(pods), err)
	}
	return pods
}

func subjectOf(p *corev1.Pod) v1alpha1.Subject {
	return v1alpha1.Subject{Namespace: p.Namespace, Pod: p.Name, PodUID: string(p.UID), Container: "app", Node: p.Spec.NodeName}
}

// playbook creates a ClusterResponsePlaybook and returns its reference.
func playbook(t *testing.T, spec v1alpha1.ResponsePlaybookSpec) v1alpha1.PlaybookRef {
	t.Helper()
	p := &v1alpha1.ClusterResponsePlaybook{ObjectMeta: metav1.ObjectMeta{Name: uniq("pb")}, Spec: spec}
	if err := kc.Create(ctxT(t), p); err != nil {
		t.Fatalf("create playbook: %v", err)
	}
	t.Cleanup(func() { _ = kc.Delete(context.Background(), p) })
	return v1alpha1.PlaybookRef{Kind: "ClusterResponsePlaybook", Name: p.Name}
}

func steps(s ...v1alpha1.Step) v1alpha1.ResponsePlaybookSpec {
	return v1alpha1.ResponsePlaybookSpec{Steps: s}
}

// incident creates an Incident in ns about subject, as the controller would on a match.
func incident(t *testing.T, ns string, subject v1alpha1.Subject, refs ...v1alpha1.PlaybookRef) *v1alpha1.Incident {
	t.Helper()
	inc := &v1alpha1.Incident{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: uniq("inc"), Labels: map[string]string{
			v1alpha1.OriginLabel: string(v1alpha1.OriginController), v1alpha1.NodeLabel: subject.Node}},
		Spec: v1alpha1.IncidentSpec{
			Rule: "shell-in-container", RuleKind: "ClusterDetectionRule", Severity: "high",
			Tags: []string{"mitre:T1059.004"}, Output: "shell /bin/sh in " + subject.Namespace + "/" + subject.Pod,
			Subject: subject, Playbooks: refs,
		},
	}
	inc.Annotations = map[string]string{v1alpha1.SignatureAnnotation: signer.Sign(inc)}
	if err := kc.Create(ctxT(t), inc); err != nil {
		t.Fatalf("create incident: %v", err)
	}
	authorize(t, inc)
	return inc
}

// signer signs the Incidents tests create, as the controller signs its own.
var signer, _ = trust.NewSigner([]byte("riposte responders test signing key"))

// authorize records the controller's decision to run inc's playbooks, as
// the Incident reconciler does for an Incident it verified.
func authorize(t *testing.T, inc *v1alpha1.Incident) {
	t.Helper()
	base := inc.DeepCopy()
	apimeta.SetStatusCondition(&inc.Status.Conditions, metav1.Condition{Type: v1alpha1.AuthorizedCondition,
		Status: metav1.ConditionTrue, Reason: v1alpha1.SignedReason, Message: "test"})
	inc.Status.AuthorizedGeneration = inc.Generation
	if err := kc.Status().Patch(ctxT(t), inc, client.MergeFrom(base)); err != nil {
		t.Fatalf("authorize incident: %v", err)
	}
}

func runner(actions responders.Actions) *responders.Runner {
	return &responders.Runner{Client: kc, Actions: actions, OwnNamespace: "riposte-system"}
}

// run fetches the Incident fresh (as a reconcile would) and runs it.
func run(t *testing.T, r *responders.Runner, inc *v1alpha1.Incident) (*v1alpha1.Incident, responders.Outcome) {
	t.Helper()
	fresh := get(t, inc)
	out, err := r.Run(ctxT(t), fresh)
	if err != nil {
		t.Fatalf("run incident %s: %v", inc.Name, err)
	}
	return get(t, inc), out
}

func get(t *testing.T, inc *v1alpha1.Incident) *v1alpha1.Incident {
	t.Helper()
	var fresh v1alpha1.Incident
	if err := kc.Get(ctxT(t), client.ObjectKeyFromObject(inc), &fresh); err != nil {
		t.Fatalf("get incident: %v", err)
	}
	return &fresh
}

func annotate(t *testing.T, inc *v1alpha1.Incident, key string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, key)
	if err := kc.Patch(ctxT(t), get(t, inc), client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatalf("annotate incident: %v", err)
	}
}

// step returns the status of the named step, failing when it is missing.
func step(t *testing.T, inc *v1alpha1.Incident, name string) v1alpha1.StepStatus {
	t.Helper()
	for _, s := range inc.Status.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("incident %s has no step %q: %+v", inc.Name, name, inc.Status.Steps)
	return v1alpha1.StepStatus{}
}

func wantPhase(t *testing.T, inc *v1alpha1.Incident, name string, phase v1alpha1.StepPhase, msgContains string) v1alpha1.StepStatus {
	t.Helper()
	s := step(t, inc, name)
	if s.Phase != phase || !strings.Contains(s.Message, msgContains) {
		t.Fatalf("step %q: phase %s message %q, want phase %s with message containing %q", name, s.Phase, s.Message, phase, msgContains)
	}
	return s
}

func getPod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var p corev1.Pod
	if err := kc.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
		t.Fatalf("get pod: %v", err)
	}
	return &p
}
