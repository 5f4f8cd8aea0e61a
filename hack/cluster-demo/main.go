// Command cluster-demo is part 3 of `make run`: riposte's controller on a real
// control plane (etcd, kube-apiserver and kube-controller-manager built from
// pinned modules), the shipped rule library applied with kubectl as a GitOps
// tool would, a broken rule refused at admission, a short intrusion through
// the API server, and the Incidents and the response that follow.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/fluxcd/pkg/runtime/conditions"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/controllermgr"
	"github.com/riposte-dev/riposte/test/stack"
)

const ns = "shop"

// teamRule is what a team keeps in its own folder: a namespaced rule and the
// playbook it runs. The broken variant misspells a field on line 3.
const teamRule = `apiVersion: riposte.dev/v1alpha1
kind: DetectionRule
metadata:
  name: debug-pod-in-shop
  namespace: shop
spec:
  source: object
  severity: high
  condition: |
    event.kind == "object" && event.op == "create" && object.kind == "Pod" &&
    pod.ownerless && pod.namespace == "shop"
  output: '"debug pod " + pod.name + " created in shop as " + pod.serviceAccount'
  playbooks: [contain-debug-pod]
  tests:
  - name: a bare pod in shop fires
    expect: match
    event: {kind: object, op: create, object: {kind: Pod, metadata: {name: x, namespace: shop}}, pod: {name: x, namespace: shop, ownerless: true}}
---
apiVersion: riposte.dev/v1alpha1
kind: ResponsePlaybook
metadata:
  name: contain-debug-pod
  namespace: shop
spec:
  steps:
  - action: label
    values: {riposte.dev/suspect: "true"}
  - action: capture
  - action: notify
    notify: {url: "%s", format: falcosidekick}
`

const brokenRule = `apiVersion: riposte.dev/v1alpha1
kind: ClusterDetectionRule
metadata:
  name: broken-rule
spec:
  source: audit
  severity: low
  condition: |
    audit.verb == "create" &&
      audit.objectRef.resorce == "pods"
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "cluster demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	began := time.Now()
	// A webhook receiver standing in for the SOC's alert routing; the
	// cluster admin allows namespaced playbooks to notify it.
	notified := make(chan []byte, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		notified <- b
	}))
	defer hook.Close()
	s, err := stack.Start(ctx, stack.Options{ControllerManager: true, Response: controllermgr.Response{NotifyAllow: []string{hook.URL + "/"}}})
	if err != nil {
		return err
	}
	defer func() {
		if err := s.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "cluster demo: stop:", err)
		}
	}()
	fmt.Printf("control plane and riposte controller up in %s (kube-apiserver %s; controller as ServiceAccount %s/%s with config/rbac; audit policy config/audit/policy.yaml)\n",
		time.Since(began).Round(100*time.Millisecond), s.Cluster.Host(), stack.Namespace, stack.ServiceAccount)
	whcfg, err := s.RegisterWebhook(ctx)
	if err != nil {
		return err
	}
	defer s.Client.Delete(context.Background(), whcfg)
	dir, err := os.MkdirTemp("", "riposte-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	kubectl := func(stdin string, args ...string) error {
		fmt.Printf("\n$ kubectl %s\n", strings.Join(args, " "))
		cmd := s.Cluster.Kubectl(ctx, args...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		out, err := cmd.CombinedOutput()
		fmt.Print(indent(string(out)))
		return err
	}

	// 1. The library, as Flux or Argo CD would sync it.
	if err := kubectl("", "apply", "-R", "-f", filepath.Join(s.Root, "rules")); err != nil {
		return err
	}
	if err := waitReady(ctx, s.Client); err != nil {
		return err
	}
	if err := kubectl("", "get", "clusterdetectionrules"); err != nil {
		return err
	}

	// 2. A pull request with a typo never reaches the cluster.
	fmt.Println("\n-- a rule with a typo is refused at admission (what a Flux dry run or an Argo sync shows in the PR):")
	if err := kubectl(brokenRule, "apply", "-f", "-"); err == nil {
		return fmt.Errorf("the broken rule was admitted")
	}

	// 3. A team's own rule and playbook, notifying the SOC's webhook.
	if err := s.Cluster.EnsureServiceAccount(ctx, ns, "api"); err != nil {
		return err
	}
	if err := kubectl(fmt.Sprintf(teamRule, hook.URL+"/soc"), "apply", "-f", "-"); err != nil {
		return err
	}
	if err := waitReady(ctx, s.Client); err != nil {
		return err
	}

	// 4. The intrusion. The shop's api ServiceAccount was given more than it
	// needs (a Role to read Secrets and create Pods); its token is stolen.
	fmt.Println("\n-- the intrusion: a stolen token of ServiceAccount shop/api")
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "create"}},
		},
	}
	bind := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "api"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "api", Namespace: ns}},
	}
	for _, o := range []client.Object{role, bind} {
		if err := s.Client.Create(ctx, o); err != nil {
			return err
		}
	}
	saCfg, err := s.Cluster.ServiceAccountConfig(ctx, ns, "api")
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(saCfg)
	if err != nil {
		return err
	}
	fmt.Println("   what can I do?            (SelfSubjectAccessReview: create pods in shop)")
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "pods"}}}
	if _, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{}); err != nil {
		return err
	}
	fmt.Println("   list the Secrets of shop")
	if _, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); err != nil {
		return err
	}
	fmt.Println("   start a bare pod with the node's / mounted")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "debug", Namespace: ns},
		Spec: corev1.PodSpec{
			ServiceAccountName: "api",
			Containers: []corev1.Container{{Name: "sh", Image: "busybox", Command: []string{"sleep", "1d"},
				Env:          []corev1.EnvVar{{Name: "AWS_SECRET_ACCESS_KEY", Value: "wJalrXUtnFEMI/K7MDENG"}},
				VolumeMounts: []corev1.VolumeMount{{Name: "host", MountPath: "/host"}}}},
			Volumes: []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	fmt.Println("   and an admin, tricked or compromised, binds someone to cluster-admin")
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-api-admin"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "api", Namespace: ns}},
	}
	if err := s.Client.Create(ctx, crb); err != nil {
		return err
	}

	// 5. What the analyst sees.
	want := []string{"serviceaccount-selfsubjectaccessreview", "serviceaccount-lists-secrets", "ownerless-pod-created",
		"sensitive-hostpath-pod", "cluster-admin-binding-created", "shop/debug-pod-in-shop"}
	var responded *v1alpha1.Incident
	if err := poll(ctx, 60*time.Second, func() error {
		var list v1alpha1.IncidentList
		if err := s.Client.List(ctx, &list); err != nil {
			return err
		}
		seen := map[string]bool{}
		for i, inc := range list.Items {
			seen[inc.Spec.Rule] = true
			if inc.Spec.Rule == "shop/debug-pod-in-shop" && (inc.Status.Phase == "Responded" || inc.Status.Phase == "Failed") {
				responded = &list.Items[i]
			}
		}
		var missing []string
		for _, r := range want {
			if !seen[r] {
				missing = append(missing, r)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("no Incident yet for %s", strings.Join(missing, ", "))
		}
		if responded == nil {
			return fmt.Errorf("the playbook of shop/debug-pod-in-shop has not finished")
		}
		return nil
	}); err != nil {
		return err
	}
	fmt.Println("\n-- what the analyst sees")
	if err := kubectl("", "get", "incidents", "-A"); err != nil {
		return err
	}
	if err := kubectl("", "get", "incident", "-n", responded.Namespace, responded.Name, "-o",
		`jsonpath={range .status.steps[*]}{.playbook}  {.name}  {.phase}  {.message}{"\n"}{end}`); err != nil {
		return err
	}
	if err := kubectl("", "get", "pod", "-n", ns, "debug", "--show-labels"); err != nil {
		return err
	}
	for _, ev := range responded.Status.Evidence {
		fmt.Printf("\nevidence bundle: %s\n  manifest sha256 %s, %d files:\n", ev.Location, ev.ManifestSHA256, ev.Files)
		path := ev.Location[strings.Index(ev.Location, ":")+1:]
		var files []string
		_ = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(path, p)
				files = append(files, rel)
			}
			return nil
		})
		sort.Strings(files)
		fmt.Print(indent(strings.Join(files, "\n") + "\n"))
		if b, err := os.ReadFile(filepath.Join(path, "pod.yaml")); err == nil && strings.Contains(string(b), "wJalrXUtnFEMI") {
			return fmt.Errorf("the captured pod manifest holds the env value unredacted")
		}
	}
	select {
	case b := <-notified:
		var p map[string]any
		_ = json.Unmarshal(b, &p)
		fmt.Printf("\nthe SOC's webhook received (Falcosidekick format): priority=%v rule=%v output=%q\n", p["priority"], p["rule"], p["output"])
	default:
		return fmt.Errorf("the SOC's webhook received nothing from the notify step")
	}
	fmt.Printf("\nRESULT: %d rules live, the broken rule refused, %d Incidents from a real API server's audit stream and objects, the team's playbook %s in %s\n",
		countRules(ctx, s.Client), countIncidents(ctx, s.Client), strings.ToLower(string(responded.Status.Phase)), time.Since(began).Round(time.Second))
	return nil
}

// waitReady waits until every rule and playbook is Ready.
func waitReady(ctx context.Context, c client.Client) error {
	return poll(ctx, 60*time.Second, func() error {
		var objs []conditions.Getter
		var cdr v1alpha1.ClusterDetectionRuleList
		var dr v1alpha1.DetectionRuleList
		var crp v1alpha1.ClusterResponsePlaybookList
		var rp v1alpha1.ResponsePlaybookList
		for _, l := range []client.ObjectList{&cdr, &dr, &crp, &rp} {
			if err := c.List(ctx, l); err != nil {
				return err
			}
		}
		for i := range cdr.Items {
			objs = append(objs, &cdr.Items[i])
		}
		for i := range dr.Items {
			objs = append(objs, &dr.Items[i])
		}
		for i := range crp.Items {
			objs = append(objs, &crp.Items[i])
		}
		for i := range rp.Items {
			objs = append(objs, &rp.Items[i])
		}
		for _, o := range objs {
			if !conditions.IsReady(o) {
				return fmt.Errorf("%s %s is not Ready: %s", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), conditions.GetMessage(o, "Ready"))
			}
		}
		return nil
	})
}

func countRules(ctx context.Context, c client.Client) int {
	var cdr v1alpha1.ClusterDetectionRuleList
	var dr v1alpha1.DetectionRuleList
	_ = c.List(ctx, &cdr)
	_ = c.List(ctx, &dr)
	return len(cdr.Items) + len(dr.Items)
}

func countIncidents(ctx context.Context, c client.Client) int {
	var l v1alpha1.IncidentList
	_ = c.List(ctx, &l)
	return len(l.Items)
}

func poll(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ") + "\n"
}
