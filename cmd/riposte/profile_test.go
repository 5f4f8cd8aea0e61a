package main

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/test/cluster"
)

// TestProfileExport runs `riposte profile export` against a real API
// server: canonical lists, no status or server metadata, --reviewed set,
// and exit code 2 for misuse and a profile that does not exist.
func TestProfileExport(t *testing.T) {
	if _, _, code := run(t, "profile"); code != exitBadUsage {
		t.Errorf("riposte profile: exit %d, want 2", code)
	}
	if _, _, code := run(t, "profile", "export"); code != exitBadUsage {
		t.Errorf("riposte profile export without a name: exit %d, want 2", code)
	}
	cl := cluster.StartT(t, cluster.Options{})
	ctx := context.Background()
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
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}); err != nil {
		t.Fatal(err)
	}
	wp := &v1alpha1.WorkloadProfile{
		ObjectMeta: metav1.ObjectMeta{Name: "deployment-web-nginx", Namespace: "shop"},
		Spec: v1alpha1.WorkloadProfileSpec{
			Workload: v1alpha1.ProfileWorkloadRef{Kind: "Deployment", Name: "web"}, Container: "nginx", Image: "registry.example/web:1.2",
			ProfileBehaviour: v1alpha1.ProfileBehaviour{
				Executables: []string{"/usr/sbin/nginx", "/docker-entrypoint.sh", "/usr/sbin/nginx"},
				Outbound:    []v1alpha1.ProfilePeer{{CIDR: "203.0.113.9/32", Port: 443, Protocol: "tcp"}, {Service: "shop/db", Port: 5432, Protocol: "tcp"}},
				Listening:   []v1alpha1.ProfilePort{{Port: 8080, Protocol: "tcp"}},
			},
		},
	}
	if err := c.Create(ctx, wp); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", cl.KubeconfigPath())
	out, stderr, code := run(t, "profile", "export", "deployment-web-nginx", "-n", "shop", "--reviewed")
	want := `apiVersion: riposte.dev/v1alpha1
kind: WorkloadProfile
metadata:
  name: deployment-web-nginx
  namespace: shop
spec:
  container: nginx
  executables:
  - /docker-entrypoint.sh
  - /usr/sbin/nginx
  image: registry.example/web:1.2
  listening:
  - port: 8080
    protocol: tcp
  outbound:
  - port: 5432
    protocol: tcp
    service: shop/db
  - cidr: 203.0.113.9/32
    port: 443
    protocol: tcp
  reviewed: true
  workload:
    kind: Deployment
    name: web
`
	if code != exitOK || out != want {
		t.Errorf("exit %d, stderr %s\n%s\nwant\n%s", code, stderr, out, want)
	}
	if _, stderr, code := run(t, "profile", "export", "nope", "-n", "shop"); code != exitBadUsage {
		t.Errorf("a missing profile: exit %d (%s), want 2", code, stderr)
	}
}
