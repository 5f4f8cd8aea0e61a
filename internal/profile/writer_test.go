package profile

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/test/cluster"
)

// agentEnv is a control plane with the CRDs, the agent's RBAC and the
// admission policies, and a client authenticated as the agent of node-a.
func agentEnv(t *testing.T) (cl *cluster.Cluster, admin, agentClient client.Client) {
	t.Helper()
	cl = cluster.StartT(t, cluster.Options{})
	ctx := context.Background()
	if _, err := cl.InstallCRDs(ctx, "../../config/crd/bases"); err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(cl.AdminConfig(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "riposte-system"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}},
	} {
		if err := admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"apply", "-f", "../../config/rbac/agent.yaml"}, {"apply", "-k", "../../config/admission"}} {
		if out, err := cl.Kubectl(ctx, args...).CombinedOutput(); err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
	}
	if err := cl.EnsureServiceAccount(ctx, "riposte-system", "riposte-agent"); err != nil {
		t.Fatal(err)
	}
	cfg, err := cl.NodeServiceAccountConfig(ctx, "riposte-system", "riposte-agent", "node-a")
	if err != nil {
		t.Fatal(err)
	}
	agentClient, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cl, admin, agentClient
}

func cond(wp *v1alpha1.WorkloadProfile, typ string) string {
	c := apimeta.FindStatusCondition(wp.Status.Conditions, typ)
	if c == nil {
		return "absent"
	}
	return string(c.Status) + "/" + c.Reason
}

// TestLearnReviewReadyStale walks a profile's life against a real API
// server, writing as the agent (its RBAC and admission policy): learnt from
// three pods, exported, applied back reviewed, Ready; learning stops for
// it; a new image marks it Stale; and the agent cannot widen a reviewed
// profile or mark one reviewed.
func TestLearnReviewReadyStale(t *testing.T) {
	cl, admin, agentClient := agentEnv(t)
	ctx := context.Background()
	var index Index
	l := NewLearner(Options{Reviewed: index.Reviewed})
	s := &Syncer{Learner: l, Writer: &Writer{Client: agentClient}, OnError: func(err error) { t.Error(err) }}

	exec := func(pod, image, parent, bin string) {
		ev := podEvent(pod, "exec")
		ev.Container.Image = image
		ev.Process = engine.Process{Binary: bin, Parent: engine.Ancestor{Binary: parent}}
		l.Observe(&ev)
	}
	const v12, v13 = "registry.example/web:1.2", "registry.example/web:1.3"
	for _, pod := range []string{"web-1", "web-2", "web-3"} {
		exec(pod, v12, "/docker-entrypoint.sh", "/usr/sbin/nginx")
	}
	s.Flush(ctx)
	exec("web-2", v12, "/usr/sbin/nginx", "/usr/bin/logrotate")
	s.Flush(ctx)

	key := client.ObjectKey{Namespace: "shop", Name: "deployment-web-nginx"}
	var wp v1alpha1.WorkloadProfile
	if err := admin.Get(ctx, key, &wp); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(wp.Spec.Executables, ","); got != "/usr/bin/logrotate,/usr/sbin/nginx" || wp.Spec.Image != v12 || wp.Spec.Reviewed {
		t.Fatalf("learnt spec %+v", wp.Spec)
	}
	if cond(&wp, v1alpha1.LearningCondition) != "True/NotReviewed" || cond(&wp, v1alpha1.ReadyCondition) != "False/NotReviewed" {
		t.Errorf("learning conditions: Learning %s, Ready %s", cond(&wp, v1alpha1.LearningCondition), cond(&wp, v1alpha1.ReadyCondition))
	}

	// The agent may not mark it reviewed.
	wp.Spec.Reviewed = true
	if err := agentClient.Update(ctx, &wp); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("the agent marked a profile reviewed: %v", err)
	}

	// A person reviews: export with reviewed set, apply.
	wp.Spec.Reviewed = true // what `riposte profile export --reviewed` does
	y, err := Export(&wp)
	if err != nil {
		t.Fatal(err)
	}
	f := t.TempDir() + "/profile.yaml"
	if err := writeFile(f, y); err != nil {
		t.Fatal(err)
	}
	if out, err := cl.Kubectl(ctx, "apply", "-f", f).CombinedOutput(); err != nil {
		t.Fatalf("apply the reviewed profile: %v\n%s", err, out)
	}
	if err := admin.Get(ctx, key, &wp); err != nil {
		t.Fatal(err)
	}
	if err := index.Set(&wp); err != nil {
		t.Fatal(err)
	}
	// Benign load after review: Ready; learning stopped (a new program is
	// not added to the spec).
	exec("web-1", v12, "/docker-entrypoint.sh", "/usr/sbin/nginx")
	exec("web-3", v12, "/usr/sbin/nginx", "/bin/sh")
	s.Flush(ctx)
	if err := admin.Get(ctx, key, &wp); err != nil {
		t.Fatal(err)
	}
	if cond(&wp, v1alpha1.ReadyCondition) != "True/Reviewed" || cond(&wp, v1alpha1.LearningCondition) != "False/Reviewed" {
		t.Errorf("reviewed: Ready %s, Learning %s", cond(&wp, v1alpha1.ReadyCondition), cond(&wp, v1alpha1.LearningCondition))
	}
	if strings.Contains(strings.Join(wp.Spec.Executables, ","), "/bin/sh") {
		t.Errorf("learning went on for a reviewed profile: %v", wp.Spec.Executables)
	}

	// The agent may not widen a reviewed profile.
	widened := wp.DeepCopy()
	widened.Spec.Executables = append(widened.Spec.Executables, "/bin/sh")
	if err := agentClient.Update(ctx, widened); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("the agent widened a reviewed profile: %v", err)
	}

	// A new image: Stale, not Ready, and it stays Stale while old pods report.
	exec("web-4", v13, "/docker-entrypoint.sh", "/usr/sbin/nginx")
	s.Flush(ctx)
	exec("web-1", v12, "/docker-entrypoint.sh", "/usr/sbin/nginx")
	s.Flush(ctx)
	if err := admin.Get(ctx, key, &wp); err != nil {
		t.Fatal(err)
	}
	if cond(&wp, v1alpha1.StaleCondition) != "True/ImageChanged" || cond(&wp, v1alpha1.ReadyCondition) != "False/ImageChanged" || wp.Status.RunningImage == "" {
		t.Errorf("after a new image: Stale %s, Ready %s, running %q", cond(&wp, v1alpha1.StaleCondition), cond(&wp, v1alpha1.ReadyCondition), wp.Status.RunningImage)
	}
	if m := apimeta.FindStatusCondition(wp.Status.Conditions, v1alpha1.StaleCondition); m == nil || !strings.Contains(m.Message, v13) {
		t.Errorf("Stale message %+v does not name %s", m, v13)
	}
	if s.Failures() != 0 {
		t.Errorf("%d reports failed", s.Failures())
	}
}
