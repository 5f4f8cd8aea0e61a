package responders_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/evidence"
	"github.com/riposte-dev/riposte/responders"
)

// ControllerRules are the rules docs/responders.md and the Incident
// reconciler's +kubebuilder:rbac markers list; the test below proves they are
// enough for every API-side action and its revert.
var ControllerRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"riposte.dev"}, Resources: []string{"incidents"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{"riposte.dev"}, Resources: []string{"incidents/status"}, Verbs: []string{"get", "update", "patch"}},
	{APIGroups: []string{"riposte.dev"}, Resources: []string{"responseplaybooks", "clusterresponseplaybooks"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "patch", "delete"}},
	{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
	{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"list"}},
	{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "patch"}},
	{APIGroups: []string{""}, Resources: []string{"replicationcontrollers"}, Verbs: []string{"get"}},
	{APIGroups: []string{""}, Resources: []string{"replicationcontrollers/scale"}, Verbs: []string{"get", "update"}},
	{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get", "create", "update", "delete"}},
	{APIGroups: []string{"apps"}, Resources: []string{"replicasets", "deployments", "statefulsets", "daemonsets"}, Verbs: []string{"get"}},
	{APIGroups: []string{"apps"}, Resources: []string{"deployments/scale", "statefulsets/scale", "replicasets/scale"}, Verbs: []string{"get", "update"}},
	{APIGroups: []string{"batch"}, Resources: []string{"jobs", "cronjobs"}, Verbs: []string{"get"}},
}

func TestDocumentedRBACIsEnoughForEveryActionAndRevert(t *testing.T) {
	ctx := ctxT(t)
	const saNS, sa = "riposte-system", "riposte-controller"
	if err := shared.EnsureServiceAccount(ctx, saNS, sa); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: uniq("riposte-controller")}, Rules: ControllerRules}
	bind := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: saNS, Name: sa}},
	}
	for _, o := range []client.Object{role, bind} {
		if err := kc.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := shared.ServiceAccountConfig(ctx, saNS, sa)
	if err != nil {
		t.Fatal(err)
	}
	asController, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}

	ns := namespace(t)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: uniq("node")}}
	if err := kc.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.Delete(ctxT(t), n) })
	d, pods := deployment(t, ns, 2)
	subject := subjectOf(&pods[0])
	// Enrichment names the workload; scale needs it once quarantine has
	// released the pod from its ReplicaSet.
	subject.WorkloadKind, subject.WorkloadName = "Deployment", d.Name
	h := newHook(t)
	inc := incident(t, ns, subject, playbook(t, steps(
		v1alpha1.Step{Action: v1alpha1.ActionCapture},
		v1alpha1.Step{Action: v1alpha1.ActionIsolate},
		v1alpha1.Step{Action: v1alpha1.ActionLabel, Values: map[string]string{"seen": "yes"}},
		v1alpha1.Step{Action: v1alpha1.ActionAnnotate, Values: map[string]string{"seen": "yes"}},
		v1alpha1.Step{Action: v1alpha1.ActionQuarantine},
		v1alpha1.Step{Action: v1alpha1.ActionNotify, Notify: &v1alpha1.NotifyParams{URL: h.URL}},
		v1alpha1.Step{Action: v1alpha1.ActionScale},
	)))
	r := &responders.Runner{Client: asController, OwnNamespace: saNS,
		Actions: responders.Defaults(responders.Deps{Client: asController, Logs: responders.ClientsetLogs{Clientset: cs}, Store: &evidence.Dir{Root: t.TempDir()}})}
	out, err := r.Run(ctx, get(t, inc))
	if err != nil {
		t.Fatalf("run as %s/%s: %v", saNS, sa, err)
	}
	// Cordon needs a node in the subject (which would also delegate capture).
	cordonSubject := subjectOf(barePod(t, ns))
	cordonSubject.Node = n.Name
	cordon := incident(t, ns, cordonSubject, playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionCordon})))
	if _, err := r.Run(ctx, get(t, cordon)); err != nil {
		t.Fatalf("cordon as %s/%s: %v", saNS, sa, err)
	}
	wantPhase(t, get(t, cordon), "cordon", v1alpha1.StepSucceeded, "unschedulable")
	annotate(t, cordon, v1alpha1.RevertAnnotation)
	if _, err := r.Run(ctx, get(t, cordon)); err != nil {
		t.Fatalf("uncordon as %s/%s: %v", saNS, sa, err)
	}
	wantPhase(t, get(t, cordon), "cordon", v1alpha1.StepReverted, "schedulable again")
	got := get(t, inc)
	for _, s := range got.Status.Steps {
		if s.Phase != v1alpha1.StepSucceeded {
			t.Errorf("step %s: %s %s", s.Name, s.Phase, s.Message)
		}
	}
	if !out.Done || t.Failed() {
		t.FailNow()
	}
	annotate(t, inc, v1alpha1.RevertAnnotation)
	if _, err := r.Run(ctx, get(t, inc)); err != nil {
		t.Fatalf("revert as %s/%s: %v", saNS, sa, err)
	}
	got = get(t, inc)
	for _, s := range got.Status.Steps {
		if s.Action != v1alpha1.ActionCapture && s.Action != v1alpha1.ActionNotify && s.Phase != v1alpha1.StepReverted {
			t.Errorf("step %s after revert: %s %s", s.Name, s.Phase, s.Message)
		}
	}
	// The same identity may not do what no action needs.
	if err := asController.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err == nil {
		t.Fatalf("the controller role can delete namespaces")
	}
}
