package trust

import (
	"context"
	"fmt"
	"slices"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enrich"
	"github.com/riposte-dev/riposte/host"
)

// IncidentPolicy is the name of the ValidatingAdmissionPolicy (and its
// binding) shipped in config/admission that guards Incidents.
const IncidentPolicy = "riposte-incidents"

// Decision is whether the controller runs an Incident's playbooks, and why.
type Decision struct {
	Allowed bool
	// Reason is one of the Authorized condition reasons of api/v1alpha1.
	Reason  string
	Message string
}

// Authorizer decides for the controller. Reader should be cached: it reads
// rules, pods and the admission policy on every decision.
type Authorizer struct {
	Signer *Signer
	Reader client.Reader
	// Owners reads the metadata of pods' owners (ReplicaSets, Jobs, …) to
	// check the workload an Incident names; an uncached reader (a
	// manager's API reader), default Reader.
	Owners client.Reader
	// Namespace is riposte's own: the only namespace where Incidents about
	// a host process (no pod) may come from an agent or be approved by hand.
	Namespace string
	// Policy names the admission policy and binding that must be in force
	// for agents' and manual Incidents (default IncidentPolicy).
	Policy string
}

func deny(reason, format string, args ...any) Decision {
	return Decision{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Decide looks at one Incident as it is now.
func (a *Authorizer) Decide(ctx context.Context, inc *v1alpha1.Incident) (Decision, error) {
	origin := v1alpha1.Origin(inc.Labels[v1alpha1.OriginLabel])
	switch origin {
	case v1alpha1.OriginController:
		if a.Signer != nil && a.Signer.Verify(inc) {
			return Decision{Allowed: true, Reason: v1alpha1.SignedReason, Message: "created by the riposte controller (signature verified)"}, nil
		}
		return deny(v1alpha1.UnverifiedReason, "labelled %s=%s but not signed by this controller: someone else wrote or changed it", v1alpha1.OriginLabel, origin), nil
	case v1alpha1.OriginAgent:
		if why, err := a.policyMissing(ctx); err != nil || why != "" {
			return deny(v1alpha1.PolicyMissingReason, "an agent's Incident is trusted only while the admission policy %s binds it to its node: %s", a.policy(), why), err
		}
		return a.agent(ctx, inc)
	default:
		if why, err := a.policyMissing(ctx); err != nil || why != "" {
			return deny(v1alpha1.PolicyMissingReason, "a manual Incident's approval is trusted only while the admission policy %s checks who approves: %s", a.policy(), why), err
		}
		if d := a.scope(inc); !d.Allowed {
			return d, nil
		}
		if inc.Annotations[v1alpha1.ApproveAnnotation] != "true" {
			return deny(v1alpha1.AwaitingApprovalReason, "created by someone other than riposte (origin %q): its playbooks run once someone allowed to approve incidents annotates it %s=true", origin, v1alpha1.ApproveAnnotation), nil
		}
		return Decision{Allowed: true, Reason: v1alpha1.ApprovedReason, Message: "manual Incident approved"}, nil
	}
}

// hostProcess reports whether the subject is a process outside any pod: it
// names no namespace, pod, container or workload at all.
func hostProcess(s *v1alpha1.Subject) bool {
	return s.Namespace == "" && s.Pod == "" && s.PodUID == "" && s.Container == "" && s.ContainerID == "" &&
		s.WorkloadKind == "" && s.WorkloadName == ""
}

// scope keeps an agent's or a manual Incident within what its namespace
// answers for: a subject in the Incident's own namespace, and a host
// process only from riposte's namespace (whoever may approve there answers
// for the nodes). The admission policy checks approvals per namespace, so
// an approval in one namespace must not reach into another.
func (a *Authorizer) scope(inc *v1alpha1.Incident) Decision {
	s := &inc.Spec.Subject
	if hostProcess(s) {
		if a.Namespace == "" || inc.Namespace != a.Namespace {
			return deny(v1alpha1.UnverifiedReason, "an Incident about a host process (no pod) is trusted only in riposte's namespace %q, not in %q", a.Namespace, inc.Namespace)
		}
		return Decision{Allowed: true}
	}
	if s.Namespace != inc.Namespace {
		return deny(v1alpha1.UnverifiedReason, "the Incident is in namespace %q but its subject in %q: an Incident acts only in its own namespace", inc.Namespace, s.Namespace)
	}
	return Decision{Allowed: true}
}

func (a *Authorizer) policy() string {
	if a.Policy != "" {
		return a.Policy
	}
	return IncidentPolicy
}

// policyMissing says why the admission policy is not in force, "" if it is.
func (a *Authorizer) policyMissing(ctx context.Context) (string, error) {
	return PolicyMissing(ctx, a.Reader, a.policy())
}

// PolicyMissing says why the admission policy name (and its binding of the
// same name) is not in force, "" if it is: it must exist, fail closed and
// deny, for every object it matches (a binding narrowed by matchResources
// would leave some Incidents unguarded).
func PolicyMissing(ctx context.Context, r client.Reader, name string) (string, error) {
	var p admissionregistrationv1.ValidatingAdmissionPolicy
	if err := r.Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
		if apierrors.IsNotFound(err) {
			return "the policy does not exist", nil
		}
		return "", fmt.Errorf("read admission policy %s: %w", name, err)
	}
	if fp := p.Spec.FailurePolicy; fp != nil && *fp != admissionregistrationv1.Fail {
		return fmt.Sprintf("its failurePolicy is %s, not Fail", *fp), nil
	}
	if len(p.Spec.Validations) == 0 {
		return "it has no validations", nil
	}
	var b admissionregistrationv1.ValidatingAdmissionPolicyBinding
	if err := r.Get(ctx, client.ObjectKey{Name: name}, &b); err != nil {
		if apierrors.IsNotFound(err) {
			return "the policy binding does not exist", nil
		}
		return "", fmt.Errorf("read admission policy binding %s: %w", name, err)
	}
	if b.Spec.PolicyName != name || !slices.Contains(b.Spec.ValidationActions, admissionregistrationv1.Deny) {
		return fmt.Sprintf("the binding does not deny with policy %s", name), nil
	}
	if m := b.Spec.MatchResources; m != nil && (len(m.ResourceRules) > 0 || len(m.ExcludeResourceRules) > 0 ||
		!emptySelector(m.NamespaceSelector) || !emptySelector(m.ObjectSelector)) {
		return "the binding is narrowed by matchResources", nil
	}
	return "", nil
}

func emptySelector(s *metav1.LabelSelector) bool {
	return s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0)
}

// agent checks an agent's Incident against the API server: its node owns
// the subject's pod and container, and its rule is a node rule naming
// exactly the playbooks the Incident lists.
func (a *Authorizer) agent(ctx context.Context, inc *v1alpha1.Incident) (Decision, error) {
	s := inc.Spec.Subject
	node := inc.Labels[v1alpha1.NodeLabel]
	if node == "" || s.Node != node {
		return deny(v1alpha1.UnverifiedReason, "an agent's Incident must name its node in label %s and in the subject (label %q, subject %q)", v1alpha1.NodeLabel, node, s.Node), nil
	}
	if d := a.scope(inc); !d.Allowed {
		return d, nil
	}
	spec, ruleNS, d, err := a.rule(ctx, inc)
	if err != nil || !d.Allowed {
		return d, err
	}
	if ruleNS != "" && (inc.Namespace != ruleNS || s.Namespace != ruleNS) {
		return deny(v1alpha1.UnverifiedReason, "DetectionRule %s sees namespace %q only; the Incident is about %q", inc.Spec.Rule, ruleNS, s.Namespace), nil
	}
	if want := PlaybookRefs(ruleNS, spec.Playbooks); !slices.Equal(want, inc.Spec.Playbooks) {
		return deny(v1alpha1.UnverifiedReason, "the Incident lists playbooks %v, rule %s names %v", refNames(inc.Spec.Playbooks), inc.Spec.Rule, refNames(want)), nil
	}
	if hostProcess(&s) {
		return Decision{Allowed: true, Reason: v1alpha1.AgentVerifiedReason, Message: fmt.Sprintf("reported by the agent of node %s about a host process", node)}, nil
	}
	// Anything else is about a pod, which must be this node's, named by uid:
	// a name alone could be any pod of the namespace.
	if s.PodUID == "" || s.Pod == "" {
		return deny(v1alpha1.UnverifiedReason, "the subject names pod %q (uid %q) in %q: an agent's Incident names the pod and its uid", s.Pod, s.PodUID, s.Namespace), nil
	}
	var pod corev1.Pod
	if err := a.Reader.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Pod}, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			return deny(v1alpha1.UnverifiedReason, "pod %s/%s does not exist", s.Namespace, s.Pod), nil
		}
		return Decision{}, fmt.Errorf("read pod %s/%s: %w", s.Namespace, s.Pod, err)
	}
	if string(pod.UID) != s.PodUID || pod.Spec.NodeName != node {
		return deny(v1alpha1.UnverifiedReason, "pod %s/%s is uid %s on node %q; the Incident says uid %s on node %q", s.Namespace, s.Pod, pod.UID, pod.Spec.NodeName, s.PodUID, node), nil
	}
	if s.ContainerID != "" && !hasContainer(&pod, s.ContainerID) {
		return deny(v1alpha1.UnverifiedReason, "container %s is not a container of pod %s/%s", s.ContainerID, s.Namespace, s.Pod), nil
	}
	if s.WorkloadKind != "" || s.WorkloadName != "" {
		ep, _ := enrich.PodFromKube(&pod)
		w, err := enrich.TopOwner(ctx, ownerReader{a.owners()}, &ep.Pod)
		if err != nil {
			return Decision{}, err
		}
		if w.Kind != s.WorkloadKind || w.Name != s.WorkloadName {
			return deny(v1alpha1.UnverifiedReason, "pod %s/%s belongs to %s %s; the Incident names workload %s %s", s.Namespace, s.Pod, w.Kind, w.Name, s.WorkloadKind, s.WorkloadName), nil
		}
	}
	return Decision{Allowed: true, Reason: v1alpha1.AgentVerifiedReason, Message: fmt.Sprintf("reported by the agent of node %s, where pod %s/%s runs", node, s.Namespace, s.Pod)}, nil
}

func (a *Authorizer) owners() client.Reader {
	if a.Owners != nil {
		return a.Owners
	}
	return a.Reader
}

// ownerReader looks owners up by their metadata through a client.
type ownerReader struct{ r client.Reader }

func (o ownerReader) Owner(ctx context.Context, namespace string, ref engine.OwnerReference) (enrich.Object, error) {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return enrich.Object{}, fmt.Errorf("owner %s %s: %w: bad apiVersion %q", ref.Kind, ref.Name, enrich.ErrUnknownKind, ref.APIVersion)
	}
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gv.WithKind(ref.Kind))
	switch err := o.r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, m); {
	case apierrors.IsNotFound(err):
		return enrich.Object{}, fmt.Errorf("owner %s %s/%s: %w", ref.Kind, namespace, ref.Name, enrich.ErrNotFound)
	case apimeta.IsNoMatchError(err):
		return enrich.Object{}, fmt.Errorf("owner %s %s/%s: %w", ref.Kind, namespace, ref.Name, enrich.ErrUnknownKind)
	case err != nil:
		return enrich.Object{}, fmt.Errorf("read owner %s %s/%s: %w", ref.Kind, namespace, ref.Name, err)
	}
	return enrich.ObjectOf(ref.Kind, m), nil
}

// rule reads the Incident's rule and checks it is a node rule that is live.
func (a *Authorizer) rule(ctx context.Context, inc *v1alpha1.Incident) (*v1alpha1.DetectionRuleSpec, string, Decision, error) {
	var spec *v1alpha1.DetectionRuleSpec
	var status *v1alpha1.DetectionRuleStatus
	var gen int64
	ns := ""
	var err error
	switch inc.Spec.RuleKind {
	case "ClusterDetectionRule":
		var r v1alpha1.ClusterDetectionRule
		err = a.Reader.Get(ctx, client.ObjectKey{Name: inc.Spec.Rule}, &r)
		spec, status, gen = &r.Spec, &r.Status, r.Generation
	case "DetectionRule":
		var name string
		var ok bool
		if ns, name, ok = strings.Cut(inc.Spec.Rule, "/"); !ok {
			return nil, "", deny(v1alpha1.UnverifiedReason, "DetectionRule %q is not namespace/name", inc.Spec.Rule), nil
		}
		var r v1alpha1.DetectionRule
		err = a.Reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &r)
		spec, status, gen = &r.Spec, &r.Status, r.Generation
	default:
		return nil, "", deny(v1alpha1.UnverifiedReason, "unknown rule kind %q", inc.Spec.RuleKind), nil
	}
	if apierrors.IsNotFound(err) {
		return nil, "", deny(v1alpha1.UnverifiedReason, "%s %s does not exist", inc.Spec.RuleKind, inc.Spec.Rule), nil
	}
	if err != nil {
		return nil, "", Decision{}, fmt.Errorf("read %s %s: %w", inc.Spec.RuleKind, inc.Spec.Rule, err)
	}
	switch engine.Source(spec.Source) {
	case engine.SourceProcess, engine.SourceFile, engine.SourceNetwork:
	default:
		return nil, "", deny(v1alpha1.UnverifiedReason, "%s %s has source %q, which agents do not evaluate", inc.Spec.RuleKind, inc.Spec.Rule, spec.Source), nil
	}
	if status.ObservedGeneration != gen || !apimeta.IsStatusConditionTrue(status.Conditions, v1alpha1.ReadyCondition) {
		return nil, "", deny(v1alpha1.UnverifiedReason, "%s %s is not Ready", inc.Spec.RuleKind, inc.Spec.Rule), nil
	}
	return spec, ns, Decision{Allowed: true}, nil
}

// PlaybookRefs resolves a rule's playbook names: ResponsePlaybooks of its
// namespace for a DetectionRule (namespace set), ClusterResponsePlaybooks
// otherwise.
func PlaybookRefs(namespace string, names []string) []v1alpha1.PlaybookRef {
	var out []v1alpha1.PlaybookRef
	for _, p := range names {
		ref := v1alpha1.PlaybookRef{Kind: "ClusterResponsePlaybook", Name: p}
		if namespace != "" {
			ref = v1alpha1.PlaybookRef{Kind: "ResponsePlaybook", Name: p, Namespace: namespace}
		}
		out = append(out, ref)
	}
	return out
}

func refNames(refs []v1alpha1.PlaybookRef) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.Name
		if r.Namespace != "" {
			out[i] = r.Namespace + "/" + r.Name
		}
	}
	return out
}

// hasContainer reports whether id (with or without its runtime prefix) is
// one of the pod's containers as the kubelet reported them.
func hasContainer(p *corev1.Pod, id string) bool {
	_, bare := host.SplitContainerID(id)
	for _, list := range [][]corev1.ContainerStatus{p.Status.ContainerStatuses, p.Status.InitContainerStatuses, p.Status.EphemeralContainerStatuses} {
		for _, c := range list {
			if _, have := host.SplitContainerID(c.ContainerID); have != "" && have == bare {
				return true
			}
		}
	}
	return false
}
