package profile

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/test/cluster"
)

// randomProfile draws a profile with lists in any order and with
// duplicates, as a learner's merges or a person's edits could leave them.
func randomProfile(r *rand.Rand, i int) *v1alpha1.WorkloadProfile {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	wp := &v1alpha1.WorkloadProfile{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("deployment-web%d-nginx", i), Namespace: "shop"},
		Spec: v1alpha1.WorkloadProfileSpec{
			Workload:  v1alpha1.ProfileWorkloadRef{Kind: pick("Deployment", "StatefulSet", "DaemonSet"), Name: fmt.Sprintf("web%d", i)},
			Container: "nginx", Image: pick("", "registry.example/web:1.2", "registry.example/web@sha256:"+strings.Repeat("ab", 32)),
			Reviewed: r.IntN(2) == 0,
		},
	}
	if r.IntN(3) == 0 {
		wp.Labels = map[string]string{"app": "web", "team": pick("a", "b")}
	}
	if r.IntN(3) == 0 {
		wp.Annotations = map[string]string{"review/ticket": fmt.Sprint(r.IntN(1000))}
	}
	b := &wp.Spec.ProfileBehaviour
	for range r.IntN(12) {
		b.Executables = append(b.Executables, pick("/bin/sh", "/usr/sbin/nginx", "/docker-entrypoint.sh", "/usr/bin/env", "/a b/ü"))
	}
	for range r.IntN(8) {
		b.ProcessPairs = append(b.ProcessPairs, v1alpha1.ProcessPair{Parent: pick("/bin/sh", "/usr/bin/runc"), Child: pick("/usr/sbin/nginx", "/bin/sh")})
	}
	for range r.IntN(8) {
		b.WriteDirectories = append(b.WriteDirectories, pick("/tmp", "/var/cache/nginx/**", "/run", "/"))
	}
	for range r.IntN(10) {
		p := v1alpha1.ProfilePeer{Port: int32(pick2(r, 0, 53, 443, 5432)), Protocol: pick("", "tcp", "udp")}
		switch r.IntN(3) {
		case 0:
			p.Service = pick("shop/db", "kube-system/kube-dns")
		case 1:
			p.Workload = pick("Deployment/shop/api", "StatefulSet/shop/db")
		default:
			p.CIDR = pick("10.0.0.0/8", "203.0.113.9/32", "2001:db8::/32")
		}
		b.Outbound = append(b.Outbound, p)
	}
	for range r.IntN(4) {
		b.Listening = append(b.Listening, v1alpha1.ProfilePort{Port: int32(pick2(r, 80, 8080, 9090)), Protocol: pick("tcp", "udp", "")})
	}
	return wp
}

func pick2(r *rand.Rand, xs ...int) int { return xs[r.IntN(len(xs))] }

// TestExportApplyExportIsByteStable: a profile exported, applied to a real
// API server with kubectl and exported again gives the same bytes; and the
// export is canonical: sorted by an ordering written independently here,
// each entry once.
func TestExportApplyExportIsByteStable(t *testing.T) {
	cl := cluster.StartT(t, cluster.Options{})
	ctx := context.Background()
	if _, err := cl.InstallCRDs(ctx, "../../config/crd/bases"); err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cl.AdminConfig(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(16, 1))
	dir := t.TempDir()
	for i := range 25 {
		wp := randomProfile(r, i)
		first, err := Export(wp)
		if err != nil {
			t.Fatal(err)
		}
		checkCanonical(t, first)
		f := filepath.Join(dir, wp.Name+".yaml")
		if err := os.WriteFile(f, first, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := cl.Kubectl(ctx, "apply", "-f", f).CombinedOutput(); err != nil {
			t.Fatalf("kubectl apply %s: %v\n%s\n%s", wp.Name, err, out, first)
		}
		var got v1alpha1.WorkloadProfile
		if err := c.Get(ctx, client.ObjectKeyFromObject(wp), &got); err != nil {
			t.Fatal(err)
		}
		second, err := Export(&got)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Errorf("profile %d: export → apply → export differs:\n%s\n---\n%s", i, first, second)
		}
	}
}

// checkCanonical checks the exported lists line by line: within each list
// the lines are strictly increasing by an order written here apart from
// Canonical (services, then workloads, then networks; fields in spec order).
func checkCanonical(t *testing.T, y []byte) {
	t.Helper()
	var wp v1alpha1.WorkloadProfile
	if err := yamlUnmarshalStrict(y, &wp); err != nil {
		t.Fatalf("exported YAML does not read back: %v\n%s", err, y)
	}
	b := wp.Spec.ProfileBehaviour
	increasing := func(name string, keys []string) {
		for i := 1; i < len(keys); i++ {
			if keys[i-1] >= keys[i] {
				t.Errorf("%s not strictly increasing at %d: %q, %q\n%s", name, i, keys[i-1], keys[i], y)
			}
		}
	}
	increasing("executables", b.Executables)
	increasing("writeDirectories", b.WriteDirectories)
	var ks []string
	for _, p := range b.ProcessPairs {
		ks = append(ks, p.Parent+"\x00"+p.Child)
	}
	increasing("processPairs", ks)
	ks = nil
	for _, p := range b.Outbound {
		class := map[bool]string{true: "0"}[p.Service != ""] + map[bool]string{true: "1"}[p.Service == "" && p.Workload != ""]
		if class == "" {
			class = "2"
		}
		ks = append(ks, fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%05d\x00%s", class, p.Service, p.Workload, p.CIDR, p.Port, p.Protocol))
	}
	increasing("outbound", ks)
	ks = nil
	for _, p := range b.Listening {
		ks = append(ks, fmt.Sprintf("%05d\x00%s", p.Port, p.Protocol))
	}
	increasing("listening", ks)
	if slices.Contains(strings.Split(string(y), "\n"), "status: {}") || strings.Contains(string(y), "creationTimestamp") {
		t.Errorf("export carries server state:\n%s", y)
	}
}

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }
