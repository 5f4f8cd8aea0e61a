package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/riposte-dev/riposte/test/cluster"
)

// One control plane (with controller manager) and one audit webhook for the
// whole package; each test works in its own namespace.
var (
	shared *cluster.Cluster
	sink   *cluster.AuditSink
)

func TestMain(m *testing.M) {
	sink = cluster.NewAuditSink()
	code := cluster.Main(m, cluster.Options{
		ControllerManager: true,
		AuditWebhook:      sink.Webhook(),
	}, func(c *cluster.Cluster) { shared = c })
	sink.Close()
	if code == 0 && shared != nil {
		code = checkLeftovers(shared, true)
	}
	os.Exit(code)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestServiceAccountSelfSubjectAccessReviewIsAudited(t *testing.T) {
	ctx := testContext(t)
	t.Logf("shared cluster started in %s (%s)", shared.StartDuration().Round(time.Millisecond), shared.StartPhases())

	names, err := shared.InstallCRDs(ctx, "../../config/crd/bases")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"detectionrules.riposte.dev", "clusterdetectionrules.riposte.dev", "incidents.riposte.dev"} {
		if !slices.Contains(names, want) {
			t.Errorf("installed CRDs %v, want %s among them", names, want)
		}
	}
	admin := kubernetes.NewForConfigOrDie(shared.AdminConfig())
	resources, err := admin.Discovery().ServerResourcesForGroupVersion("riposte.dev/v1alpha1")
	if err != nil {
		t.Fatalf("discover riposte.dev/v1alpha1 after install: %v", err)
	}
	if len(resources.APIResources) == 0 {
		t.Errorf("riposte.dev/v1alpha1 serves no resources after installing %v", names)
	}

	const ns, name = "recon", "scanner"
	if err := shared.EnsureServiceAccount(ctx, ns, name); err != nil {
		t.Fatal(err)
	}
	saConfig, err := shared.ServiceAccountConfig(ctx, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	sa := kubernetes.NewForConfigOrDie(saConfig)
	review, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: ns, Verb: "list", Resource: "secrets",
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectAccessReview as %s/%s: %v", ns, name, err)
	}
	if review.Status.Allowed {
		t.Errorf("a fresh ServiceAccount may list secrets: RBAC is not enforced (%+v)", review.Status)
	}

	user := "system:serviceaccount:" + ns + ":" + name
	ev, err := sink.Wait(ctx, func(ev cluster.AuditEvent) bool {
		return ev.User.Username == user && ev.ObjectRef != nil && ev.ObjectRef.Resource == "selfsubjectaccessreviews"
	})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Verb != "create" {
		t.Errorf("verb = %q, want create", ev.Verb)
	}
	if ev.ObjectRef.APIGroup != "authorization.k8s.io" {
		t.Errorf("objectRef.apiGroup = %q, want authorization.k8s.io", ev.ObjectRef.APIGroup)
	}
	if !slices.Contains(ev.SourceIPs, "127.0.0.1") {
		t.Errorf("sourceIPs = %v, want 127.0.0.1 among them", ev.SourceIPs)
	}
	if ev.Stage != "ResponseComplete" || ev.Level != "RequestResponse" {
		t.Errorf("stage, level = %s, %s; want ResponseComplete, RequestResponse (DefaultAuditPolicy)", ev.Stage, ev.Level)
	}
	if !slices.Contains(ev.User.Groups, "system:serviceaccounts:"+ns) {
		t.Errorf("user.groups = %v, want system:serviceaccounts:%s", ev.User.Groups, ns)
	}
	// RequestResponse level: the question asked is the evidence of reconnaissance.
	var asked authorizationv1.SelfSubjectAccessReview
	if err := json.Unmarshal(ev.RequestObject, &asked); err != nil || asked.Spec.ResourceAttributes == nil ||
		asked.Spec.ResourceAttributes.Resource != "secrets" {
		t.Errorf("requestObject = %s (%v), want the review asking about secrets", ev.RequestObject, err)
	}
}

func TestDeploymentScalesThroughReplicaSet(t *testing.T) {
	ctx := testContext(t)
	cs := kubernetes.NewForConfigOrDie(shared.AdminConfig())
	const ns = "scaling"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	selector := map[string]string{"app": "web"}
	replicas := int32(2)
	_, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: selector},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// No scheduler or kubelet: Pods stay Pending, but the ReplicaSet controller
	// still creates them, which is what scaling needs.
	waitPods(ctx, t, cs, ns, selector, 2)

	scale, err := cs.AppsV1().Deployments(ns).GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 3
	if _, err := cs.AppsV1().Deployments(ns).UpdateScale(ctx, "web", &autoscalingv1.Scale{
		ObjectMeta: scale.ObjectMeta, Spec: autoscalingv1.ScaleSpec{Replicas: 3},
	}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := waitPods(ctx, t, cs, ns, selector, 3)
	owner := metav1.GetControllerOf(&pods[0])
	if owner == nil || owner.Kind != "ReplicaSet" || !strings.HasPrefix(owner.Name, "web-") {
		t.Errorf("pod %s controller = %+v, want ReplicaSet web-<hash>", pods[0].Name, owner)
	}
}

func waitPods(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, selector map[string]string, want int) []corev1.Pod {
	t.Helper()
	for {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.Set(selector).String()})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) == want {
			return list.Items
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pods in %s: have %d, want %d: %v", ns, len(list.Items), want, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestBinariesReportPinnedVersion(t *testing.T) {
	ctx := testContext(t)
	info, err := kubernetes.NewForConfigOrDie(shared.AdminConfig()).Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if info.GitVersion != "v1.37.2" {
		t.Errorf("kube-apiserver gitVersion = %q, want v1.37.2 (make testenv stamps it)", info.GitVersion)
	}
	out, err := shared.Kubectl(ctx, "version", "-o", "json").Output()
	if err != nil {
		t.Fatalf("kubectl version: %v", err)
	}
	var v struct {
		Client struct{ GitVersion string } `json:"clientVersion"`
		Server struct{ GitVersion string } `json:"serverVersion"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("decode kubectl version %s: %v", out, err)
	}
	if v.Client.GitVersion != "v1.37.2" || v.Server.GitVersion != "v1.37.2" {
		t.Errorf("kubectl version client, server = %q, %q; want v1.37.2 twice", v.Client.GitVersion, v.Server.GitVersion)
	}
}

func TestMissingBinaryNamesItAndMakeTarget(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T)
		want  []string
	}{
		{
			name:  "env names an empty folder",
			setup: func(t *testing.T) { t.Setenv(cluster.EnvBinDir, t.TempDir()) },
			want:  []string{cluster.EnvBinDir, "etcd not found", "make testenv"},
		},
		{
			name: "env unset, module never built",
			setup: func(t *testing.T) {
				t.Setenv(cluster.EnvBinDir, "")
				root := t.TempDir()
				if err := os.WriteFile(root+"/go.mod", []byte("module x\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				t.Chdir(root)
			},
			want: []string{"etcd, kube-apiserver, kube-controller-manager, kubectl not built", "make testenv"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup(t)
			_, err := cluster.Start(t.Context(), cluster.Options{})
			if !errors.Is(err, cluster.ErrBinaryMissing) {
				t.Fatalf("Start: err = %v, want ErrBinaryMissing", err)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// TestStartTStopsEverything starts a second, private control plane and checks
// that StartT's cleanup leaves no process, port or file behind.
func TestStartTStopsEverything(t *testing.T) {
	var c *cluster.Cluster
	// Registered first, so it runs after StartT's own cleanup (LIFO).
	t.Cleanup(func() {
		if c != nil && checkLeftovers(c, false) != 0 {
			t.Error("StartT's cleanup left something behind (see above)")
		}
	})
	c = cluster.StartT(t, cluster.Options{})
	cs := kubernetes.NewForConfigOrDie(c.AdminConfig())
	if _, err := cs.CoreV1().Namespaces().Get(testContext(t), "kube-system", metav1.GetOptions{}); err != nil {
		t.Fatalf("private cluster does not answer: %v", err)
	}
	if c.Host() == shared.Host() {
		t.Errorf("private cluster shares the shared one's address %s", c.Host())
	}
}

// TestNodeAuthorizerScopesKubeletToItsPods proves --authorization-mode=Node:
// a node identity may read a secret only once a pod bound to that node uses it.
func TestNodeAuthorizerScopesKubeletToItsPods(t *testing.T) {
	ctx := testContext(t)
	const ns, node = "nodeauth", "worker-1"
	admin := kubernetes.NewForConfigOrDie(shared.AdminConfig())
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "db"}, StringData: map[string]string{"password": "x"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := shared.UserConfig("system:node:"+node, "system:nodes")
	if err != nil {
		t.Fatal(err)
	}
	kubelet := kubernetes.NewForConfigOrDie(cfg)
	if _, err := kubelet.CoreV1().Secrets(ns).Get(ctx, "db", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("node %s reads a secret no pod of it uses: err = %v, want Forbidden", node, err)
	}

	_, err = admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "nginx"}},
			Volumes: []corev1.Volume{{Name: "db", VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: "db"},
			}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The Node authorizer's graph follows pods through an informer: poll.
	for {
		_, err := kubelet.CoreV1().Secrets(ns).Get(ctx, "db", metav1.GetOptions{})
		if err == nil {
			return
		}
		if !apierrors.IsForbidden(err) {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node %s still cannot read the secret of its pod: %v", node, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
