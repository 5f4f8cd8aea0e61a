package controllermgr_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/controllermgr"
	"github.com/riposte-dev/riposte/test/stack"
)

// This file holds the adversarial tests of docs/security.md, one per row
// of its threat model that the control plane alone can show; the rows that
// need a kernel or a kubelet are in responders and test/e2e.

// userClient is a client authenticated as a user with a client certificate.
func userClient(t *testing.T, name string, groups ...string) client.Client {
	t.Helper()
	cfg, err := shared.UserConfig(name, groups...)
	if err != nil {
		t.Fatal(err)
	}
	return newClient(t, cfg)
}

func newClient(t *testing.T, cfg *rest.Config) client.Client {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: controllermgr.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// agentClient is a client as riposte's agent on node, with a token bound to
// that Node object.
func agentClient(t *testing.T, ctx context.Context, node string) client.Client {
	t.Helper()
	if err := shared.EnsureServiceAccount(ctx, stack.Namespace, "riposte-agent"); err != nil {
		t.Fatal(err)
	}
	cfg, err := shared.NodeServiceAccountConfig(ctx, stack.Namespace, "riposte-agent", node)
	if err != nil {
		t.Fatal(err)
	}
	return newClient(t, cfg)
}

// grant gives user the verbs on resources of group in ns.
func grant(t *testing.T, ctx context.Context, ns, user, group string, resources, verbs []string) {
	t.Helper()
	name := fmt.Sprintf("%s-%s-%d", user, strings.Join(verbs, "-"), time.Now().UnixNano())
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{group}, Resources: resources, Verbs: verbs}}}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}}
	for _, o := range []client.Object{role, rb} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
}

// ensureNamespace creates ns with its default ServiceAccount (no
// kube-controller-manager runs here to make it).
func ensureNamespace(t *testing.T, ctx context.Context, ns string) {
	t.Helper()
	if err := shared.EnsureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}
}

// podWithIP creates a pod bound to node with ip as its address (no kubelet
// runs here: the status subresource says where it is, as a kubelet would).
func podWithIP(t *testing.T, ctx context.Context, ns, name, node, ip string) *corev1.Pod {
	t.Helper()
	return podAs(t, ctx, ns, name, "default", node, ip)
}

// podAs is podWithIP running as ServiceAccount sa.
func podAs(t *testing.T, ctx context.Context, ns, name, sa, node, ip string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
	if ip != "" {
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		if err := k8s.Status().Update(ctx, p); err != nil {
			t.Fatalf("set pod IP: %v", err)
		}
	}
	return p
}

// ssar sends one SelfSubjectAccessReview with cfg, with an X-Forwarded-For
// header when xff is set.
func ssar(t *testing.T, ctx context.Context, cfg *rest.Config, xff string) {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	if xff != "" {
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return headerRT{rt, xff} }
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "list", Resource: "secrets"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("SelfSubjectAccessReview: %v", err)
	}
}

type headerRT struct {
	rt  http.RoundTripper
	xff string
}

func (h headerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", h.xff)
	return h.rt.RoundTrip(r)
}

// TestForwardedForDoesNotNameAVictim: a ServiceAccount sends its requests
// with X-Forwarded-For naming a victim pod's IP, which kube-apiserver puts
// first in sourceIPs. The Incident names the pod behind the connection's own
// address (the last sourceIPs entry) and never the victim; a token bound to
// a pod names that pod whatever the addresses say.
func TestForwardedForDoesNotNameAVictim(t *testing.T) {
	ctx := context.Background()
	installShippedSSARRule(t, ctx)
	ns := "trust-xff"
	ensureNamespace(t, ctx, ns)
	victim := podWithIP(t, ctx, ns, "victim", "node-a", "10.99.0.7")
	caller := podWithIP(t, ctx, ns, "caller", "node-a", "127.0.0.1") // where the requests really come from

	// Until the identity source has the caller's IP, a request names no pod:
	// each attempt is a fresh ServiceAccount, so each makes its own Incident.
	var named *v1alpha1.Incident
	for i := 0; named == nil; i++ {
		if i == 60 {
			t.Fatal("no Incident named the pod behind the connection after 60 attempts")
		}
		sa := fmt.Sprintf("spy-%d", i)
		if err := shared.EnsureServiceAccount(ctx, ns, sa); err != nil {
			t.Fatal(err)
		}
		cfg, err := shared.ServiceAccountConfig(ctx, ns, sa)
		if err != nil {
			t.Fatal(err)
		}
		ssar(t, ctx, cfg, victim.Status.PodIP)
		user := "system:serviceaccount:" + ns + ":" + sa
		eventually(t, 30*time.Second, "the Incident of "+user, func() error {
			incs, err := ssarIncidentsFor(ctx, ns, user)
			if err != nil || len(incs) != 1 {
				return fmt.Errorf("incidents %s (%v)", describeIncidents(incs), err)
			}
			s := incs[0].Spec.Subject
			if s.Pod == victim.Name || s.PodUID == string(victim.UID) {
				t.Fatalf("the Incident names the victim pod from X-Forwarded-For: %+v", s)
			}
			if len(s.SourceIPs) != 2 || s.SourceIPs[0] != victim.Status.PodIP {
				t.Fatalf("sourceIPs %v, want the forged address first and the connection's last", s.SourceIPs)
			}
			if s.Pod == caller.Name {
				named = &incs[0]
			}
			return nil
		})
	}
	t.Logf("X-Forwarded-For %s: Incident %s names %s/%s (sourceIPs %v)", victim.Status.PodIP, named.Name, named.Spec.Subject.Namespace, named.Spec.Subject.Pod, named.Spec.Subject.SourceIPs)

	// A token bound to a pod names that pod, from the API server's claims.
	if err := shared.EnsureServiceAccount(ctx, ns, "bound"); err != nil {
		t.Fatal(err)
	}
	holder := podAs(t, ctx, ns, "holder", "bound", "node-a", "")
	cs, err := kubernetes.NewForConfig(shared.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "bound", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: holder.Name, UID: holder.UID}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("bind a token to pod %s: %v", holder.Name, err)
	}
	ssar(t, ctx, &rest.Config{Host: shared.Host(), TLSClientConfig: rest.TLSClientConfig{CAData: shared.CAData()}, BearerToken: tr.Status.Token}, victim.Status.PodIP)
	user := "system:serviceaccount:" + ns + ":bound"
	eventually(t, 30*time.Second, "the bound token's Incident names its pod", func() error {
		incs, err := ssarIncidentsFor(ctx, ns, user)
		if err != nil || len(incs) != 1 {
			return fmt.Errorf("incidents %s (%v)", describeIncidents(incs), err)
		}
		if s := incs[0].Spec.Subject; s.Pod != holder.Name || s.PodUID != string(holder.UID) {
			return fmt.Errorf("subject %+v, want pod %s", s, holder.Name)
		}
		return nil
	})
}

// ssarIncidentsFor are the Incidents of the shipped SSAR rule about user
// (other rules a test of the package left live may fire too).
func ssarIncidentsFor(ctx context.Context, ns, user string) ([]v1alpha1.Incident, error) {
	all, err := incidentsFor(ctx, ns, user)
	var out []v1alpha1.Incident
	for _, in := range all {
		if in.Spec.Rule == "serviceaccount-selfsubjectaccessreview" {
			out = append(out, in)
		}
	}
	return out, err
}

// describeIncidents names each Incident with its rule, subject and count,
// for failure messages.
func describeIncidents(incs []v1alpha1.Incident) string {
	var what []string
	for _, in := range incs {
		what = append(what, fmt.Sprintf("%s (rule %s, subject %s/%s uid %q, sourceIPs %v, count %d)", in.Name, in.Spec.Rule,
			in.Spec.Subject.Namespace, in.Spec.Subject.Pod, in.Spec.Subject.PodUID, in.Spec.Subject.SourceIPs, in.Status.Count))
	}
	return fmt.Sprintf("%d %v", len(incs), what)
}

// incident is a manual or forged Incident about pod, running playbook.
func manualIncident(ns, name string, origin v1alpha1.Origin, pod *corev1.Pod, playbook string) *v1alpha1.Incident {
	return &v1alpha1.Incident{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{v1alpha1.OriginLabel: string(origin)}},
		Spec: v1alpha1.IncidentSpec{Rule: "made-up", RuleKind: "ClusterDetectionRule", Severity: "high",
			Subject:   v1alpha1.Subject{Namespace: pod.Namespace, Pod: pod.Name, PodUID: string(pod.UID), Node: pod.Spec.NodeName},
			Playbooks: []v1alpha1.PlaybookRef{{Kind: "ResponsePlaybook", Namespace: ns, Name: playbook}}},
	}
}

func labelPlaybook(t *testing.T, ctx context.Context, ns, name, key string) {
	t.Helper()
	pb := &v1alpha1.ResponsePlaybook{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ResponsePlaybookSpec{Steps: []v1alpha1.Step{{Action: v1alpha1.ActionLabel, Values: map[string]string{key: "true"}}}}}
	if err := k8s.Create(ctx, pb); err != nil {
		t.Fatal(err)
	}
}

func authorized(ctx context.Context, key client.ObjectKey) (*v1alpha1.Incident, *metav1.Condition, error) {
	var inc v1alpha1.Incident
	if err := k8s.Get(ctx, key, &inc); err != nil {
		return nil, nil, err
	}
	c := apimeta.FindStatusCondition(inc.Status.Conditions, v1alpha1.AuthorizedCondition)
	if c == nil || inc.Status.AuthorizedGeneration != inc.Generation {
		return &inc, nil, fmt.Errorf("not decided yet: %+v", inc.Status)
	}
	return &inc, c, nil
}

// TestOnlyRiposteOrdersResponses: a user allowed to create and patch
// Incidents cannot aim riposte. Claiming riposte's origin is refused at
// admission; a manual Incident runs nothing until someone allowed to
// approve approves it, and its creator cannot approve it; the agent's
// identity cannot create or report on another node's Incidents. With the
// admission policy removed, a forged Incident claiming the controller's
// origin is still refused by the controller (no valid signature), and
// agents' and manual Incidents are held until the policy is back.
func TestOnlyRiposteOrdersResponses(t *testing.T) {
	ctx := context.Background()
	ns := "trust-orders"
	ensureNamespace(t, ctx, ns)
	victim := podWithIP(t, ctx, ns, "victim", "node-a", "")
	labelPlaybook(t, ctx, ns, "mark", "riposte.dev/marked")
	grant(t, ctx, ns, "mallory", v1alpha1.GroupVersion.Group, []string{"incidents"}, []string{"get", "list", "create", "patch", "update"})
	grant(t, ctx, ns, "oncall", v1alpha1.GroupVersion.Group, []string{"incidents"}, []string{"get", "patch", "approve"})
	mallory, oncall := userClient(t, "mallory"), userClient(t, "oncall")

	// Claiming riposte's origin (or none) is refused.
	for _, origin := range []v1alpha1.Origin{v1alpha1.OriginController, v1alpha1.OriginAgent, ""} {
		inc := manualIncident(ns, "forged-"+string(origin)+"x", origin, victim, "mark")
		if origin == "" {
			delete(inc.Labels, v1alpha1.OriginLabel)
		}
		err := mallory.Create(ctx, inc)
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Fatalf("mallory created an Incident of origin %q: %v", origin, err)
		}
		t.Logf("origin %q refused: %v", origin, err)
	}

	// A manual Incident: recorded, refused until approved.
	inc := manualIncident(ns, "manual", v1alpha1.OriginManual, victim, "mark")
	if err := mallory.Create(ctx, inc); err != nil {
		t.Fatalf("a manual Incident: %v", err)
	}
	eventually(t, 30*time.Second, "the manual Incident awaits approval", func() error {
		got, c, err := authorized(ctx, client.ObjectKeyFromObject(inc))
		if err != nil {
			return err
		}
		if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.AwaitingApprovalReason || got.Status.Phase != v1alpha1.PhaseRefused || len(got.Status.Steps) != 0 {
			return fmt.Errorf("authorized %+v phase %q steps %d", c, got.Status.Phase, len(got.Status.Steps))
		}
		return nil
	})
	approve := func(c client.Client) error {
		var cur v1alpha1.Incident
		if err := c.Get(ctx, client.ObjectKeyFromObject(inc), &cur); err != nil {
			return err
		}
		patch := client.MergeFrom(cur.DeepCopy())
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations[v1alpha1.ApproveAnnotation] = "true"
		return c.Patch(ctx, &cur, patch)
	}
	if err := approve(mallory); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("mallory approved her own Incident: %v", err)
	}
	// Changing the subject after creation is refused too.
	var cur v1alpha1.Incident
	if err := mallory.Get(ctx, client.ObjectKeyFromObject(inc), &cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.Subject.Pod = "someone-else"
	if err := mallory.Update(ctx, &cur); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("mallory changed the subject of an Incident: %v", err)
	}
	var p corev1.Pod
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(victim), &p); err != nil || p.Labels["riposte.dev/marked"] != "" {
		t.Fatalf("the victim was acted on before approval: labels %v (%v)", p.Labels, err)
	}
	if err := approve(oncall); err != nil {
		t.Fatalf("oncall approval: %v", err)
	}
	eventually(t, 30*time.Second, "the approved Incident's playbook runs", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(victim), &p); err != nil {
			return err
		}
		if p.Labels["riposte.dev/marked"] != "true" {
			return fmt.Errorf("labels %v", p.Labels)
		}
		return nil
	})

	// The agent of node-a, with a token bound to that Node object.
	for _, n := range []string{"node-a", "node-b"} {
		if err := k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	agent := agentClient(t, ctx, "node-a")
	other := manualIncident(ns, "other-node", v1alpha1.OriginAgent, victim, "mark")
	other.Labels[v1alpha1.NodeLabel], other.Spec.Subject.Node = "node-b", "node-b"
	if err := agent.Create(ctx, other); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("the agent of node-a created an Incident for node-b: %v", err)
	}
	// node-b's Incident, made by the controller's identity stand-in (admin
	// is refused a riposte origin), is not the agent of node-a's to report on.
	if err := agent.Create(ctx, manualIncident(ns, "as-manual", v1alpha1.OriginManual, victim, "mark")); err == nil {
		t.Fatal("the agent created a manual Incident")
	}
	pending := manualIncident(ns, "pending", v1alpha1.OriginManual, victim, "mark")
	if err := mallory.Create(ctx, pending); err != nil {
		t.Fatal(err)
	}
	inc = pending
	if err := approve(agent); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("the agent approved an Incident: %v", err)
	}
	var results v1alpha1.Incident
	if err := agent.Get(ctx, client.ObjectKeyFromObject(inc), &results); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(results.DeepCopy())
	if results.Annotations == nil {
		results.Annotations = map[string]string{}
	}
	results.Annotations[v1alpha1.NodeResultsAnnotation] = `{"x#kill":{"message":"forged"}}`
	if err := agent.Patch(ctx, &results, patch); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("the agent of node-a reported results on an Incident not labelled with its node: %v", err)
	}

	// The agent of node-a may not rewrite a manual Incident labelled with
	// its node (it completes only its own agent Incidents), nor come with
	// results already in a new Incident.
	labelled := manualIncident(ns, "labelled-node-a", v1alpha1.OriginManual, victim, "mark")
	labelled.Labels[v1alpha1.NodeLabel] = "node-a"
	if err := mallory.Create(ctx, labelled); err != nil {
		t.Fatal(err)
	}
	var rewrite v1alpha1.Incident
	if err := agent.Get(ctx, client.ObjectKeyFromObject(labelled), &rewrite); err != nil {
		t.Fatal(err)
	}
	before := client.MergeFrom(rewrite.DeepCopy())
	rewrite.Spec.Playbooks = []v1alpha1.PlaybookRef{{Kind: "ClusterResponsePlaybook", Name: "capture-and-isolate"}}
	if err := agent.Patch(ctx, &rewrite, before); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("the agent of node-a rewrote the playbooks of a manual Incident labelled with its node: %v", err)
	}
	preset := manualIncident(ns, "preset-results", v1alpha1.OriginManual, victim, "mark")
	preset.Annotations = map[string]string{v1alpha1.NodeResultsAnnotation: `{"x#kill":{"message":"done"}}`}
	if err := mallory.Create(ctx, preset); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("mallory created an Incident with node results already in it: %v", err)
	}
	// Leases: the agent of node-a writes its own, not the controller's
	// leader Lease nor another agent's.
	for _, name := range []string{"riposte-controller-leader", "riposte-agent-node-b"} {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: stack.Namespace, Name: name}}
		if err := k8s.Create(ctx, l); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		var cur coordinationv1.Lease
		if err := agent.Get(ctx, client.ObjectKeyFromObject(l), &cur); err != nil {
			t.Fatal(err)
		}
		holder := "node-a-agent"
		cur.Spec.HolderIdentity = &holder
		if err := agent.Update(ctx, &cur); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Fatalf("the agent of node-a updated Lease %s: %v", name, err)
		}
	}
	ownLease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: stack.Namespace, Name: "riposte-agent-node-a"}}
	if err := agent.Create(ctx, ownLease); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("the agent of node-a writing its own Lease: %v", err)
	}

	// Without the admission policy (removed, or never installed).
	labelPlaybook(t, ctx, ns, "mark-forged", "riposte.dev/forged-status")
	forgedStatus := manualIncident(ns, "forged-status", v1alpha1.OriginManual, victim, "mark-forged")
	if err := mallory.Create(ctx, forgedStatus); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "forged-status awaits approval", func() error {
		_, c, err := authorized(ctx, client.ObjectKeyFromObject(forgedStatus))
		if err != nil {
			return err
		}
		if c.Reason != v1alpha1.AwaitingApprovalReason {
			return fmt.Errorf("authorized %+v", c)
		}
		return nil
	})
	b := &admissionregistrationBinding{name: "riposte-incidents"}
	b.remove(t, ctx)
	defer b.restore(t, ctx)
	// Whoever may write status (here the agent's identity) records an
	// Authorized=True decision: the controller does not take it for its
	// own, decides again at the next change, and runs nothing.
	var fs v1alpha1.Incident
	if err := agent.Get(ctx, client.ObjectKeyFromObject(forgedStatus), &fs); err != nil {
		t.Fatal(err)
	}
	fbase := client.MergeFrom(fs.DeepCopy())
	apimeta.SetStatusCondition(&fs.Status.Conditions, metav1.Condition{Type: v1alpha1.AuthorizedCondition, Status: metav1.ConditionTrue,
		Reason: v1alpha1.ApprovedReason, Message: "forged", ObservedGeneration: fs.Generation})
	fs.Status.AuthorizedGeneration = fs.Generation
	fs.Status.AuthorizationSignature = "v1:" + strings.Repeat("ab", 32)
	if err := agent.Status().Patch(ctx, &fs, fbase); err != nil {
		t.Fatalf("forge the Authorized condition with the policy gone: %v", err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(forgedStatus), &fs); err != nil {
		t.Fatal(err)
	}
	touch := client.MergeFrom(fs.DeepCopy())
	fs.Annotations = map[string]string{"example.com/touched": "yes"}
	if err := k8s.Patch(ctx, &fs, touch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the forged decision is replaced by the controller's own", func() error {
		got, c, err := authorized(ctx, client.ObjectKeyFromObject(forgedStatus))
		if err != nil {
			return err
		}
		if c.Status != metav1.ConditionFalse || len(got.Status.Steps) != 0 {
			return fmt.Errorf("authorized %+v, steps %d", c, len(got.Status.Steps))
		}
		t.Logf("forged-status: %s %s", c.Reason, c.Message)
		return nil
	})
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(victim), &p); err != nil || p.Labels["riposte.dev/forged-status"] != "" {
		t.Fatalf("a forged Authorized condition had the victim acted on: labels %v (%v)", p.Labels, err)
	}
	forged := manualIncident(ns, "forged-without-policy", v1alpha1.OriginController, victim, "mark")
	forged.Annotations = map[string]string{v1alpha1.SignatureAnnotation: "v1:" + strings.Repeat("ab", 32)}
	agentInc := manualIncident(ns, "agent-without-policy", v1alpha1.OriginAgent, victim, "mark")
	agentInc.Labels[v1alpha1.NodeLabel] = "node-a"
	for _, o := range []*v1alpha1.Incident{forged, agentInc} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for key, want := range map[types.NamespacedName]string{
		client.ObjectKeyFromObject(forged):   v1alpha1.UnverifiedReason,
		client.ObjectKeyFromObject(agentInc): v1alpha1.PolicyMissingReason,
	} {
		eventually(t, 30*time.Second, key.Name+" refused", func() error {
			got, c, err := authorized(ctx, key)
			if err != nil {
				return err
			}
			if c.Status != metav1.ConditionFalse || c.Reason != want || len(got.Status.Steps) != 0 {
				return fmt.Errorf("authorized %+v, steps %d; want False %s", c, len(got.Status.Steps), want)
			}
			t.Logf("%s: %s", key.Name, c.Message)
			return nil
		})
	}
}

// TestIncidentsStayWithinWhatTheirAuthorAnswersFor: an agent's Incident acts
// only on a pod of the agent's own node, named by its uid, and only on that
// pod's own workload; an Incident about a host process is trusted only in
// riposte's namespace; an approver in one namespace cannot aim an Incident
// at another namespace. Each refusal is checked after an accepted Incident
// of the same author was carried out.
func TestIncidentsStayWithinWhatTheirAuthorAnswersFor(t *testing.T) {
	ctx := context.Background()
	ns, elsewhere := "trust-scope", "trust-scope-other"
	ensureNamespace(t, ctx, ns)
	ensureNamespace(t, ctx, elsewhere)
	for _, n := range []string{"node-a", "node-b"} {
		if err := k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	own := podWithIP(t, ctx, ns, "own", "node-a", "")
	victim := podWithIP(t, ctx, ns, "victim", "node-b", "")
	far := podWithIP(t, ctx, elsewhere, "far", "node-a", "")
	const mark = "riposte.dev/scope-marked"
	pb := &v1alpha1.ClusterResponsePlaybook{ObjectMeta: metav1.ObjectMeta{Name: "trust-scope-mark"},
		Spec: v1alpha1.ResponsePlaybookSpec{Steps: []v1alpha1.Step{{Action: v1alpha1.ActionLabel, Values: map[string]string{mark: "true"}}}}}
	rule := &v1alpha1.ClusterDetectionRule{ObjectMeta: metav1.ObjectMeta{Name: "trust-scope-rule"},
		Spec: v1alpha1.DetectionRuleSpec{Source: "process", Severity: "high", Condition: `event.kind == "exec" && process.name == "trust-scope"`,
			Playbooks: []string{pb.Name}}}
	for _, o := range []client.Object{pb, rule} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), o) })
	}
	eventually(t, 30*time.Second, "the rule is Ready", func() error {
		var r v1alpha1.ClusterDetectionRule
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(rule), &r); err != nil {
			return err
		}
		if r.Status.ObservedGeneration != r.Generation || !apimeta.IsStatusConditionTrue(r.Status.Conditions, v1alpha1.ReadyCondition) {
			return fmt.Errorf("status %+v", r.Status)
		}
		return nil
	})
	agent := agentClient(t, ctx, "node-a")
	agentIncident := func(namespace, name string, s v1alpha1.Subject) *v1alpha1.Incident {
		s.Node = "node-a"
		return &v1alpha1.Incident{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{
				v1alpha1.OriginLabel: string(v1alpha1.OriginAgent), v1alpha1.NodeLabel: "node-a"}},
			Spec: v1alpha1.IncidentSpec{Rule: rule.Name, RuleKind: "ClusterDetectionRule", Severity: "high", Subject: s,
				Playbooks: []v1alpha1.PlaybookRef{{Kind: "ClusterResponsePlaybook", Name: pb.Name}}},
		}
	}
	marked := func(p *corev1.Pod) bool {
		var cur corev1.Pod
		return k8s.Get(ctx, client.ObjectKeyFromObject(p), &cur) == nil && cur.Labels[mark] == "true"
	}
	refused := func(inc *v1alpha1.Incident, want string) {
		t.Helper()
		eventually(t, 30*time.Second, inc.Name+" refused", func() error {
			got, c, err := authorized(ctx, client.ObjectKeyFromObject(inc))
			if err != nil {
				return err
			}
			if c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, want) || len(got.Status.Steps) != 0 {
				return fmt.Errorf("authorized %+v, steps %d; want False saying %q", c, len(got.Status.Steps), want)
			}
			t.Logf("%s refused: %s", inc.Name, c.Message)
			return nil
		})
	}

	// Accepted: the agent's own pod, by uid.
	ok := agentIncident(ns, "own-pod", v1alpha1.Subject{Namespace: ns, Pod: own.Name, PodUID: string(own.UID)})
	if err := agent.Create(ctx, ok); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the agent's Incident about its own pod runs", func() error {
		if !marked(own) {
			return fmt.Errorf("pod %s not marked", own.Name)
		}
		return nil
	})

	// A pod of another node named without its uid (it would pass for a
	// host process), a workload the pod does not belong to, a host process
	// outside riposte's namespace: all admitted (the node matches) and all
	// refused by the controller.
	for _, c := range []struct {
		inc  *v1alpha1.Incident
		want string
	}{
		{agentIncident(ns, "no-uid", v1alpha1.Subject{Namespace: ns, Pod: victim.Name}), "names the pod and its uid"},
		{agentIncident(ns, "other-workload", v1alpha1.Subject{Namespace: ns, Pod: own.Name, PodUID: string(own.UID), WorkloadKind: "Deployment", WorkloadName: "payments"}),
			"belongs to Pod own; the Incident names workload Deployment payments"},
		{agentIncident(ns, "host-elsewhere", v1alpha1.Subject{PID: 1}), "trusted only in riposte's namespace"},
	} {
		if err := agent.Create(ctx, c.inc); err != nil {
			t.Fatalf("%s: %v", c.inc.Name, err)
		}
		refused(c.inc, c.want)
	}
	if marked(victim) {
		t.Fatalf("the agent of node-a had pod %s of node-b acted on", victim.Name)
	}

	// An approver of ns aims a manual Incident at another namespace.
	grant(t, ctx, ns, "scoped-oncall", v1alpha1.GroupVersion.Group, []string{"incidents"}, []string{"get", "create", "patch", "approve"})
	oncall := userClient(t, "scoped-oncall")
	cross := manualIncident(ns, "cross-namespace", v1alpha1.OriginManual, far, "unused")
	cross.Spec.Playbooks = []v1alpha1.PlaybookRef{{Kind: "ClusterResponsePlaybook", Name: pb.Name}}
	cross.Annotations = map[string]string{v1alpha1.ApproveAnnotation: "true"}
	if err := oncall.Create(ctx, cross); err != nil {
		t.Fatalf("an approved manual Incident: %v", err)
	}
	refused(cross, "acts only in its own namespace")
	if marked(far) {
		t.Fatalf("an approval in %s had pod %s/%s acted on", ns, elsewhere, far.Name)
	}
}

// admissionregistrationBinding removes a ValidatingAdmissionPolicyBinding
// for a test and puts it back, waiting each time until the API server acts
// on the change (it loads policies asynchronously).
type admissionregistrationBinding struct {
	name  string
	saved *admissionregistrationv1.ValidatingAdmissionPolicyBinding
}

// probe is an Incident only the controller may create while the
// riposte-incidents binding is in force.
func probeIncident(name string) *v1alpha1.Incident {
	return &v1alpha1.Incident{
		ObjectMeta: metav1.ObjectMeta{Namespace: stack.Namespace, Name: name, Labels: map[string]string{v1alpha1.OriginLabel: string(v1alpha1.OriginController)}},
		Spec:       v1alpha1.IncidentSpec{Rule: "probe", RuleKind: "ClusterDetectionRule", Severity: "info"},
	}
}

func (b *admissionregistrationBinding) remove(t *testing.T, ctx context.Context) {
	t.Helper()
	var cur admissionregistrationv1.ValidatingAdmissionPolicyBinding
	if err := k8s.Get(ctx, client.ObjectKey{Name: b.name}, &cur); err != nil {
		t.Fatal(err)
	}
	b.saved = &admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: cur.Name}, Spec: cur.Spec}
	if err := k8s.Delete(ctx, &cur); err != nil {
		t.Fatal(err)
	}
	if b.name != "riposte-incidents" {
		return
	}
	eventually(t, 30*time.Second, "the API server stops enforcing "+b.name, func() error {
		p := probeIncident(fmt.Sprintf("probe-%d", time.Now().UnixNano()))
		if err := k8s.Create(ctx, p); err != nil {
			return err
		}
		return k8s.Delete(ctx, p)
	})
}

func (b *admissionregistrationBinding) restore(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := k8s.Create(ctx, b.saved.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	if b.name != "riposte-incidents" {
		return
	}
	eventually(t, 30*time.Second, "the API server enforces "+b.name+" again", func() error {
		p := probeIncident(fmt.Sprintf("probe-%d", time.Now().UnixNano()))
		if err := k8s.Create(ctx, p); err == nil {
			_ = k8s.Delete(ctx, p)
			return fmt.Errorf("an admin created an Incident of origin controller")
		}
		return nil
	})
}

// TestIsolationCannotBeLiftedBySomeoneElse: once riposte isolates a pod,
// removing its isolate label or deleting its NetworkPolicy is refused at
// admission, even for a cluster admin; with the admission policy removed,
// the controller puts both back within seconds and says so in an Event on
// the Incident. (The kernel layer, which the agents keep from the Incident
// meanwhile, is test/e2e's.)
func TestIsolationCannotBeLiftedBySomeoneElse(t *testing.T) {
	ctx := context.Background()
	ns := "trust-isolation"
	ensureNamespace(t, ctx, ns)
	suspect := podWithIP(t, ctx, ns, "suspect", "node-a", "")
	pb := &v1alpha1.ResponsePlaybook{ObjectMeta: metav1.ObjectMeta{Name: "cut", Namespace: ns},
		Spec: v1alpha1.ResponsePlaybookSpec{Steps: []v1alpha1.Step{{Action: v1alpha1.ActionIsolate, Isolate: &v1alpha1.IsolateParams{AllowEgress: []v1alpha1.AllowedPeer{{CIDR: "10.0.0.5/32", Port: 443}}}}}}}
	if err := k8s.Create(ctx, pb); err != nil {
		t.Fatal(err)
	}
	inc := manualIncident(ns, "isolate-suspect", v1alpha1.OriginManual, suspect, "cut")
	inc.Annotations = map[string]string{v1alpha1.ApproveAnnotation: "true"} // an admin may approve
	if err := k8s.Create(ctx, inc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the pod is isolated", func() error {
		got, _, err := authorized(ctx, client.ObjectKeyFromObject(inc))
		if err != nil {
			return err
		}
		if len(got.Status.Steps) != 1 || got.Status.Steps[0].Phase != v1alpha1.StepSucceeded {
			return fmt.Errorf("steps %+v", got.Status.Steps)
		}
		return nil
	})
	np := &networkingv1.NetworkPolicy{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "riposte-isolate-" + suspect.Name}, np); err != nil {
		t.Fatal(err)
	}
	unlabel := func(p *corev1.Pod) error {
		var cur corev1.Pod
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), &cur); err != nil {
			return err
		}
		patch := client.MergeFrom(cur.DeepCopy())
		delete(cur.Labels, v1alpha1.IsolateLabel)
		delete(cur.Annotations, v1alpha1.IsolateAllowAnnotation)
		return k8s.Patch(ctx, &cur, patch)
	}
	if err := unlabel(suspect); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("an admin removed the isolate label: %v", err)
	}
	// The status subresource may change labels too.
	var st corev1.Pod
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(suspect), &st); err != nil {
		t.Fatal(err)
	}
	delete(st.Labels, v1alpha1.IsolateLabel)
	if err := k8s.Status().Update(ctx, &st); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("an admin removed the isolate label through pods/status: %v", err)
	}
	if err := k8s.Delete(ctx, np.DeepCopy()); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("an admin deleted riposte's NetworkPolicy: %v", err)
	}

	// Forced: the policy binding removed first.
	probe := podWithIP(t, ctx, ns, "probe", "node-a", "")
	probe.Labels = map[string]string{v1alpha1.IsolateLabel: "probe"}
	if err := k8s.Update(ctx, probe); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("labelling the probe pod: %v, want a refusal while the policy is in force", err)
	}
	b := &admissionregistrationBinding{name: "riposte-isolation"}
	b.remove(t, ctx)
	eventually(t, 30*time.Second, "the API server stops enforcing riposte-isolation", func() error {
		var cur corev1.Pod
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(probe), &cur); err != nil {
			return err
		}
		cur.Labels = map[string]string{v1alpha1.IsolateLabel: "probe"}
		return k8s.Update(ctx, &cur)
	})
	begin := time.Now()
	if err := unlabel(suspect); err != nil {
		t.Fatalf("remove the label with the policy gone: %v", err)
	}
	if err := k8s.Delete(ctx, np.DeepCopy()); err != nil {
		t.Fatalf("delete the NetworkPolicy with the policy gone: %v", err)
	}
	eventually(t, 30*time.Second, "the controller puts the isolation back", func() error {
		var p corev1.Pod
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(suspect), &p); err != nil {
			return err
		}
		if p.Labels[v1alpha1.IsolateLabel] != string(suspect.UID) || p.Annotations[v1alpha1.IsolateAllowAnnotation] != "10.0.0.5/32:443" {
			return fmt.Errorf("labels %v annotations %v", p.Labels, p.Annotations)
		}
		return k8s.Get(ctx, client.ObjectKeyFromObject(np), &networkingv1.NetworkPolicy{})
	})
	t.Logf("label, allow list and NetworkPolicy restored %s after they were removed", time.Since(begin).Round(time.Millisecond))
	eventually(t, 30*time.Second, "an Event on the Incident says so", func() error {
		var evs corev1.EventList
		if err := k8s.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "IsolationReasserted" && e.InvolvedObject.Name == inc.Name {
				t.Logf("event: %s", e.Message)
				return nil
			}
		}
		return fmt.Errorf("no IsolationReasserted event among %d", len(evs.Items))
	})
	b.restore(t, ctx)

	// Deleting the Incident does not free the pod (the agents hold the
	// kernel layer from it): it stays, being deleted, until it is reverted.
	if err := k8s.Delete(ctx, inc.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the deleted Incident holds the isolation and says so", func() error {
		var cur v1alpha1.Incident
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(inc), &cur); err != nil {
			return err
		}
		if cur.DeletionTimestamp.IsZero() {
			return fmt.Errorf("not being deleted yet")
		}
		var evs corev1.EventList
		if err := k8s.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "IsolationHeld" && e.InvolvedObject.Name == inc.Name {
				t.Logf("event: %s", e.Message)
				return nil
			}
		}
		return fmt.Errorf("no IsolationHeld event")
	})
	var p corev1.Pod
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(suspect), &p); err != nil || p.Labels[v1alpha1.IsolateLabel] != string(suspect.UID) {
		t.Fatalf("deleting the Incident lifted the isolation: labels %v (%v)", p.Labels, err)
	}
	var cur v1alpha1.Incident
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(inc), &cur); err != nil {
		t.Fatal(err)
	}
	rb := client.MergeFrom(cur.DeepCopy())
	cur.Annotations[v1alpha1.RevertAnnotation] = "true"
	if err := k8s.Patch(ctx, &cur, rb); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the reverted Incident is gone and the pod free", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(inc), &cur); !apierrors.IsNotFound(err) {
			return fmt.Errorf("incident still there (%v), phase %s", err, cur.Status.Phase)
		}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(suspect), &p); err != nil {
			return err
		}
		if _, ok := p.Labels[v1alpha1.IsolateLabel]; ok {
			return fmt.Errorf("labels %v", p.Labels)
		}
		return nil
	})
}
