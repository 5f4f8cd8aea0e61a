package controllermgr_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// shippedRule loads a ClusterDetectionRule from the rule library.
func shippedRule(t *testing.T, file, name string) *v1alpha1.ClusterDetectionRule {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read rule library: %v", err)
	}
	for _, doc := range bytes.Split(b, []byte("\n---")) {
		var r v1alpha1.ClusterDetectionRule
		if err := yaml.Unmarshal(doc, &r); err == nil && r.Kind == "ClusterDetectionRule" && r.Name == name {
			return &r
		}
	}
	t.Fatalf("rule %s not found in %s", name, file)
	return nil
}

func installShippedSSARRule(t *testing.T, ctx context.Context) {
	t.Helper()
	rule := shippedRule(t, "../../rules/audit/reconnaissance.yaml", "serviceaccount-selfsubjectaccessreview")
	if err := k8s.Create(ctx, rule); err != nil && !isAlreadyExists(err) {
		t.Fatalf("create shipped rule: %v", err)
	}
	waitReady(t, ctx, rule)
}

func isAlreadyExists(err error) bool {
	return err != nil && bytes.Contains([]byte(err.Error()), []byte("already exists"))
}

// askCanI sends n SelfSubjectAccessReviews as a ServiceAccount, as
// `kubectl auth can-i` would from a compromised pod.
func askCanI(t *testing.T, ctx context.Context, ns, sa string, n int) {
	t.Helper()
	if err := shared.EnsureServiceAccount(ctx, ns, sa); err != nil {
		t.Fatal(err)
	}
	cfg, err := shared.ServiceAccountConfig(ctx, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		_, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "list", Resource: "secrets"}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SelfSubjectAccessReview as %s/%s: %v", ns, sa, err)
		}
	}
}

func incidentsFor(ctx context.Context, ns, user string) ([]v1alpha1.Incident, error) {
	var list v1alpha1.IncidentList
	if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var out []v1alpha1.Incident
	for _, inc := range list.Items {
		if inc.Spec.Subject.User == user {
			out = append(out, inc)
		}
	}
	return out, nil
}

// The whole audit path: a ServiceAccount token calls SelfSubjectAccessReview,
// kube-apiserver posts the audit event to the controller (mutual TLS), the
// shipped rule fires and an Incident names the account, verb and source.
func TestServiceAccountSelfSubjectAccessReviewBecomesIncident(t *testing.T) {
	ctx := context.Background()
	installShippedSSARRule(t, ctx)
	askCanI(t, ctx, "shop", "api", 1)
	user := "system:serviceaccount:shop:api"
	var inc v1alpha1.Incident
	eventually(t, 30*time.Second, "Incident for the SelfSubjectAccessReview", func() error {
		incs, err := incidentsFor(ctx, "shop", user)
		if err != nil {
			return err
		}
		if len(incs) != 1 || incs[0].Status.Count < 1 {
			return fmt.Errorf("%d incidents", len(incs))
		}
		inc = incs[0]
		return nil
	})
	s := inc.Spec.Subject
	if inc.Spec.Rule != "serviceaccount-selfsubjectaccessreview" || s.ServiceAccount != "api" || s.Namespace != "shop" ||
		s.Verb != "create" || s.Resource != "selfsubjectaccessreviews" || !slices.Contains(s.SourceIPs, "127.0.0.1") {
		t.Errorf("incident %s/%s: rule %q subject %+v", inc.Namespace, inc.Name, inc.Spec.Rule, s)
	}
	if inc.Spec.Severity != "medium" || inc.Status.FirstSeen == nil || inc.Status.LastSeen == nil || len(inc.Status.SampleEvents) == 0 {
		t.Errorf("incident status %+v", inc.Status)
	}
	t.Logf("incident %s/%s: %s; subject user=%s verb=%s resource=%s sourceIPs=%v count=%d",
		inc.Namespace, inc.Name, inc.Spec.Output, s.User, s.Verb, s.Resource, s.SourceIPs, inc.Status.Count)
	if out, err := shared.Kubectl(ctx, "get", "incidents", "-A").CombinedOutput(); err == nil {
		t.Logf("kubectl get incidents -A:\n%s", out)
	}
}

// 100 identical matches inside the rule's throttle window are one Incident
// with count 100, through the real API server and audit webhook.
func TestHundredIdenticalMatchesAreOneIncident(t *testing.T) {
	ctx := context.Background()
	installShippedSSARRule(t, ctx)
	askCanI(t, ctx, "dedup", "curious", 100)
	user := "system:serviceaccount:dedup:curious"
	var incs []v1alpha1.Incident
	eventually(t, 60*time.Second, "one Incident with count 100", func() error {
		var err error
		if incs, err = incidentsFor(ctx, "dedup", user); err != nil {
			return err
		}
		if len(incs) != 1 || incs[0].Status.Count != 100 {
			counts := []int64{}
			for _, i := range incs {
				counts = append(counts, i.Status.Count)
			}
			return fmt.Errorf("incidents' counts %v", counts)
		}
		return nil
	})
	if n := len(incs[0].Status.SampleEvents); n == 0 || n > 5 {
		t.Errorf("sample events = %d, want 1..5 (bounded)", n)
	}
	// Nothing more arrives later (a late batch would push it over 100): a
	// marker request made after the hundred becomes its own Incident, and
	// by then the count is still 100.
	askCanI(t, ctx, "dedup", "marker", 1)
	eventually(t, 60*time.Second, "the marker's Incident", func() error {
		marker, err := incidentsFor(ctx, "dedup", "system:serviceaccount:dedup:marker")
		if err != nil || len(marker) != 1 {
			return fmt.Errorf("%d marker incidents (%v)", len(marker), err)
		}
		return nil
	})
	if incs, _ = incidentsFor(ctx, "dedup", user); len(incs) != 1 || incs[0].Status.Count != 100 {
		t.Errorf("after the marker: %d incidents, count %d", len(incs), incs[0].Status.Count)
	}
}

// The caller's source IP is resolved to the pod that held it at the time of
// the request, and the Incident names that pod. (No kubelet here: the test
// gives the pod its IP through the status subresource, 127.0.0.1, where the
// requests come from.)
func TestAuditSourceIPResolvesToPod(t *testing.T) {
	ctx := context.Background()
	installShippedSSARRule(t, ctx)
	ns, sa := "recon", "spy"
	if err := shared.EnsureServiceAccount(ctx, ns, sa); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "spy-7d9f", Namespace: ns},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, NodeName: "node-a", Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), pod) })
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}}}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatalf("set pod IP: %v", err)
	}
	// The controller's identity source learns the IP from its own watch,
	// some time after the update: a request made before that resolves to no
	// pod. Each attempt asks as another ServiceAccount (its own Incident)
	// until one names the pod.
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 0; ; attempt++ {
		asker := fmt.Sprintf("%s-%d", sa, attempt)
		askCanI(t, ctx, ns, asker, 1)
		user := "system:serviceaccount:" + ns + ":" + asker
		var inc v1alpha1.Incident
		eventually(t, 30*time.Second, "Incident for "+user, func() error {
			incs, err := incidentsFor(ctx, ns, user)
			if err != nil || len(incs) != 1 {
				return fmt.Errorf("%d incidents (%v)", len(incs), err)
			}
			inc = incs[0]
			return nil
		})
		if inc.Spec.Subject.Pod == pod.Name {
			t.Logf("attempt %d: incident %s/%s: %s", attempt, inc.Namespace, inc.Name, inc.Spec.Output)
			return
		}
		if inc.Spec.Subject.Pod != "" || time.Now().After(deadline) {
			t.Fatalf("attempt %d: the Incident names pod %q, want %q: %+v", attempt, inc.Spec.Subject.Pod, pod.Name, inc.Spec.Subject)
		}
	}
}
