package responders

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// Isolate cuts a pod off the network in two layers: a deny-all NetworkPolicy
// selected by v1alpha1.IsolateLabel, and (through Node, on the pod's node) cgroup_skb
// programs on the pod's cgroup, because many CNIs silently ignore NetworkPolicy.
type Isolate struct {
	Client client.Client
	// Reader reads the cluster DNS Service and its EndpointSlices for
	// allowDNS (a manager's API reader); default Client.
	Reader client.Reader
	// DNS is the cluster DNS Service; default DefaultClusterDNS.
	DNS types.NamespacedName
	// Node enforces the kernel layer; nil records that it was not enforced.
	Node Node
}

// clusterDNS resolves the cluster DNS when the step allows it.
func (a *Isolate) clusterDNS(ctx context.Context, params *v1alpha1.IsolateParams) (*ClusterDNS, error) {
	if params == nil || !params.AllowDNS {
		return nil, nil
	}
	r, svc := a.Reader, a.DNS
	if r == nil {
		r = a.Client
	}
	if svc.Name == "" {
		svc = DefaultClusterDNS
	}
	return resolveDNS(ctx, r, svc)
}

func policyName(pod string) string {
	n := "riposte-isolate-" + pod
	if len(n) > 253 {
		n = n[:253]
	}
	return n
}

// Peers converts the playbook's allow list for the kernel layer: port 53
// of the cluster DNS addresses when it allows DNS (dns nil: none), and its
// allowEgress entries.
func Peers(p *v1alpha1.IsolateParams, dns *ClusterDNS) ([]Peer, error) {
	if p == nil {
		return nil, nil
	}
	var peers []Peer
	if p.AllowDNS {
		peers = append(peers, dns.peers()...)
	}
	for _, a := range p.AllowEgress {
		_, n, err := net.ParseCIDR(a.CIDR)
		if err != nil {
			return nil, fmt.Errorf("allowEgress cidr %q: %w", a.CIDR, err)
		}
		peers = append(peers, Peer{Net: n, Port: uint16(a.Port)})
	}
	return peers, nil
}

// FormatPeers writes peers as "cidr:port" items ("any" for every address, port
// 0 for every port), the form recorded in the isolate step's undo data for
// the node agent.
func FormatPeers(peers []Peer) string {
	var s []string
	for _, p := range peers {
		d := "any"
		if p.Net != nil {
			d = p.Net.String()
		}
		s = append(s, fmt.Sprintf("%s:%d", d, p.Port))
	}
	return strings.Join(s, ",")
}

// ParsePeers reads FormatPeers' form.
func ParsePeers(s string) ([]Peer, error) {
	var peers []Peer
	for _, item := range strings.Split(s, ",") {
		if item == "" {
			continue
		}
		i := strings.LastIndex(item, ":")
		if i < 0 {
			return nil, fmt.Errorf("peer %q: want cidr:port", item)
		}
		port, err := strconv.ParseUint(item[i+1:], 10, 16)
		if err != nil {
			return nil, fmt.Errorf("peer %q: %w", item, err)
		}
		p := Peer{Port: uint16(port)}
		if item[:i] != "any" {
			if _, p.Net, err = net.ParseCIDR(item[:i]); err != nil {
				return nil, fmt.Errorf("peer %q: %w", item, err)
			}
		}
		peers = append(peers, p)
	}
	return peers, nil
}

// DescribePeers renders peers for messages: "10.0.0.0/8:443, any:53" or "nothing".
func DescribePeers(peers []Peer) string {
	if len(peers) == 0 {
		return "nothing"
	}
	var s []string
	for _, p := range peers {
		d := "any"
		if p.Net != nil {
			d = p.Net.String()
		}
		if p.Port != 0 {
			d += fmt.Sprintf(":%d", p.Port)
		}
		s = append(s, d)
	}
	return strings.Join(s, ", ")
}

// Policy returns the NetworkPolicy that isolates pod. With allowDNS it
// allows port 53 to the cluster DNS only: its pods (by the Service's
// selector) and its cluster IPs; with dns nil, no DNS at all.
func Policy(pod *corev1.Pod, params *v1alpha1.IsolateParams, dns *ClusterDNS) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{
			Name:      policyName(pod.Name),
			Namespace: pod.Namespace,
			Labels:    map[string]string{"app.kubernetes.io/managed-by": "riposte"},
			// Owned by the pod so the policy goes away with it.
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}},
		},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{v1alpha1.IsolateLabel: string(pod.UID)}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{},
			Egress:      []networkingv1.NetworkPolicyEgressRule{},
		},
	}
	if params == nil {
		return np
	}
	if params.AllowDNS && dns != nil {
		udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
		port := intstr.FromInt32(53)
		rule := networkingv1.NetworkPolicyEgressRule{
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &port}, {Protocol: &tcp, Port: &port}},
		}
		if len(dns.Selector) > 0 {
			rule.To = append(rule.To, networkingv1.NetworkPolicyPeer{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: dns.Service.Namespace}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: dns.Selector},
			})
		}
		for _, p := range dns.peers() {
			rule.To = append(rule.To, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: p.Net.String()}})
		}
		if len(rule.To) > 0 { // an empty To would allow port 53 to anywhere
			np.Spec.Egress = append(np.Spec.Egress, rule)
		}
	}
	for _, a := range params.AllowEgress {
		rule := networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: a.CIDR}}}}
		if a.Port != 0 {
			tcp := corev1.ProtocolTCP
			port := intstr.FromInt32(a.Port)
			rule.Ports = []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}
		}
		np.Spec.Egress = append(np.Spec.Egress, rule)
	}
	return np
}

// dnsNote says where allowDNS lets the pod resolve names, or that it
// cannot.
func (a *Isolate) dnsNote(params *v1alpha1.IsolateParams, dns *ClusterDNS) string {
	switch {
	case params == nil || !params.AllowDNS:
		return ""
	case dns == nil:
		svc := a.DNS
		if svc.Name == "" {
			svc = DefaultClusterDNS
		}
		return fmt.Sprintf(" (allowDNS: no cluster DNS Service %s, so no DNS either)", svc)
	default:
		return fmt.Sprintf(" (port 53 of the cluster DNS %s only)", dns.Service)
	}
}

// Plan implements Action.
func (a *Isolate) Plan(ctx context.Context, req *Request) (string, error) {
	s := req.Subject()
	dns, err := a.clusterDNS(ctx, req.Step.Isolate)
	if err != nil {
		return "", err
	}
	peers, err := Peers(req.Step.Isolate, dns)
	if err != nil {
		return "", err
	}
	kernel := "kernel layer delegated to the node agent"
	if a.Node != nil {
		kernel = "cgroup_skb ingress+egress on the pod's cgroup"
	}
	return fmt.Sprintf("isolate pod %s/%s: NetworkPolicy %s denying all ingress and egress except %s%s, label %s=%s; %s",
		s.Namespace, s.Pod, policyName(s.Pod), DescribePeers(peers), a.dnsNote(req.Step.Isolate, dns), v1alpha1.IsolateLabel, s.PodUID, kernel), nil
}

// Do implements Action.
func (a *Isolate) Do(ctx context.Context, req *Request) (Result, error) {
	dns, err := a.clusterDNS(ctx, req.Step.Isolate)
	if err != nil {
		return Result{}, err
	}
	peers, err := Peers(req.Step.Isolate, dns)
	if err != nil {
		return Result{}, err
	}
	p, err := pod(ctx, a.Client, req.Subject())
	if err != nil {
		return Result{}, err
	}
	want := Policy(p, req.Step.Isolate, dns)
	if _, err := a.apply(ctx, p, want, peers); err != nil {
		return Result{}, err
	}
	undo := map[string]string{"networkPolicy": want.Name, "podUID": string(p.UID), "allow": FormatPeers(peers)}
	msg := fmt.Sprintf("NetworkPolicy %s/%s denies all ingress and egress except %s%s; ", want.Namespace, want.Name, DescribePeers(peers), a.dnsNote(req.Step.Isolate, dns))
	if a.Node == nil {
		if p.Spec.NodeName == "" {
			return Result{Message: msg + "kernel: the pod is not on a node yet; the agent of the node it lands on isolates it (it follows the label)", Undo: undo}, nil
		}
		// The agent on the pod's node (node.Enforcer) attaches the kernel layer
		// while this step is Succeeded and detaches it once Reverted.
		undo["kernel"], undo["nodeName"] = "delegated", p.Spec.NodeName
		return Result{Message: msg + fmt.Sprintf("kernel: delegated to the riposte agent on node %q", p.Spec.NodeName), Undo: undo}, nil
	}
	desc, err := a.Node.IsolatePod(ctx, string(p.UID), peers)
	if err != nil {
		return Result{Undo: undo}, fmt.Errorf("%skernel: isolate pod %s/%s: %w", msg, p.Namespace, p.Name, err)
	}
	undo["kernel"] = "attached"
	return Result{Message: msg + "kernel: " + desc, Undo: undo}, nil
}

// apply makes the isolation of p what want and peers say: the NetworkPolicy
// (created, or put back as it should be) and the pod's isolate label and
// allow-list annotation. It returns what it had to change.
func (a *Isolate) apply(ctx context.Context, p *corev1.Pod, want *networkingv1.NetworkPolicy, peers []Peer) ([]string, error) {
	var changed []string
	// Policy first: the label alone would select nothing, the policy alone nothing either.
	var have networkingv1.NetworkPolicy
	switch err := a.Client.Get(ctx, client.ObjectKeyFromObject(want), &have); {
	case apierrors.IsNotFound(err):
		if err := a.Client.Create(ctx, want); err != nil {
			return changed, fmt.Errorf("create NetworkPolicy %s/%s: %w", want.Namespace, want.Name, err)
		}
		changed = append(changed, "NetworkPolicy "+want.Name+" created")
	case err != nil:
		return changed, fmt.Errorf("get NetworkPolicy %s/%s: %w", want.Namespace, want.Name, err)
	case !equality.Semantic.DeepEqual(have.Spec, want.Spec):
		have.Spec = want.Spec
		if err := a.Client.Update(ctx, &have); err != nil {
			return changed, fmt.Errorf("update NetworkPolicy %s/%s: %w", want.Namespace, want.Name, err)
		}
		changed = append(changed, "NetworkPolicy "+want.Name+" spec restored")
	}
	// The allow list goes on the pod too, beside the label the policy selects.
	uid, allow := string(p.UID), FormatPeers(peers)
	if p.Labels[v1alpha1.IsolateLabel] != uid || p.Annotations[v1alpha1.IsolateAllowAnnotation] != allow {
		patch := map[string]any{"metadata": map[string]any{
			"labels":      map[string]any{v1alpha1.IsolateLabel: uid},
			"annotations": map[string]any{v1alpha1.IsolateAllowAnnotation: allow},
		}}
		if err := mergePatch(ctx, a.Client, p, patch); err != nil {
			return changed, fmt.Errorf("label pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		changed = append(changed, fmt.Sprintf("label %s and annotation %s of pod %s restored", v1alpha1.IsolateLabel, v1alpha1.IsolateAllowAnnotation, p.Name))
	}
	return changed, nil
}

// Reassert puts back the isolation an isolate step set up (Succeeded, not
// reverted) when someone else changed it: the NetworkPolicy, the pod's
// label and its allow list, from what the step recorded. It returns what it
// restored; nothing when the pod is gone.
func (a *Isolate) Reassert(ctx context.Context, req *Request) ([]string, error) {
	p, err := pod(ctx, a.Client, req.Subject())
	if apierrors.IsNotFound(err) || errors.Is(err, ErrRefused) {
		return nil, nil // the pod is gone, or a new pod took its name
	}
	if err != nil {
		return nil, err
	}
	peers, err := ParsePeers(req.Undo["allow"])
	if err != nil {
		return nil, fmt.Errorf("isolate step of %s/%s: recorded allow list: %w", req.Incident.Namespace, req.Incident.Name, err)
	}
	dns, err := a.clusterDNS(ctx, req.Step.Isolate)
	if err != nil {
		return nil, err
	}
	want := Policy(p, req.Step.Isolate, dns)
	if name := req.Undo["networkPolicy"]; name != "" {
		want.Name = name
	}
	return a.apply(ctx, p, want, peers)
}

// Revert implements Reverter: policy, label and kernel programs are removed.
func (a *Isolate) Revert(ctx context.Context, req *Request) (string, error) {
	s := req.Subject()
	name := req.Undo["networkPolicy"]
	if name == "" {
		name = policyName(s.Pod)
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: name}}
	if err := ignoreNotFound(a.Client.Delete(ctx, np)); err != nil {
		return "", fmt.Errorf("delete NetworkPolicy %s/%s: %w", s.Namespace, name, err)
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Pod}}
	unpatch := map[string]any{"metadata": map[string]any{
		"labels":      map[string]any{v1alpha1.IsolateLabel: nil},
		"annotations": map[string]any{v1alpha1.IsolateAllowAnnotation: nil},
	}}
	if err := ignoreNotFound(mergePatch(ctx, a.Client, p, unpatch)); err != nil {
		return "", fmt.Errorf("unlabel pod %s/%s: %w", s.Namespace, s.Pod, err)
	}
	msg := fmt.Sprintf("deleted NetworkPolicy %s/%s and label %s", s.Namespace, name, v1alpha1.IsolateLabel)
	if req.Undo["kernel"] == "delegated" {
		msg += "; the node agent detaches the kernel programs"
	} else if req.Undo["kernel"] != "" {
		if a.Node == nil {
			return "", fmt.Errorf("%s; kernel programs are attached but no node agent in this process can remove them", msg)
		}
		uid := req.Undo["podUID"]
		if err := a.Node.ReleasePod(ctx, uid); err != nil {
			return "", fmt.Errorf("%s; kernel: release pod %s: %w", msg, uid, err)
		}
		msg += "; kernel programs detached"
	}
	return msg, nil
}
