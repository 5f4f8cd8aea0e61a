package responders

import (
	"context"
	"fmt"
	"net"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultClusterDNS is the Service of the cluster's resolver that isolate's
// allowDNS keeps reachable (CoreDNS keeps kube-dns's name).
var DefaultClusterDNS = types.NamespacedName{Namespace: "kube-system", Name: "kube-dns"}

// maxDNSAddresses bounds the addresses allowDNS opens: the kernel layer
// compiles each into the isolation program.
const maxDNSAddresses = 32

// ClusterDNS is where the pods' resolver answers: the DNS Service's cluster
// IPs, the addresses of its endpoints (which the pod's packets carry when
// the CNI translates the Service address at the socket), and the selector
// of its pods for the NetworkPolicy.
type ClusterDNS struct {
	Service  types.NamespacedName
	IPs      []net.IP
	Selector map[string]string
}

// resolveDNS reads the cluster DNS Service and its EndpointSlices. A
// missing Service is not an error: allowDNS then opens nothing, and the
// step says so.
func resolveDNS(ctx context.Context, r client.Reader, svc types.NamespacedName) (*ClusterDNS, error) {
	var s corev1.Service
	if err := r.Get(ctx, svc, &s); apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read the cluster DNS Service %s: %w", svc, err)
	}
	d := &ClusterDNS{Service: svc, Selector: s.Spec.Selector}
	add := func(a string) {
		if ip := net.ParseIP(a); ip != nil && len(d.IPs) < maxDNSAddresses && !slices.ContainsFunc(d.IPs, ip.Equal) {
			d.IPs = append(d.IPs, ip)
		}
	}
	for _, ip := range append(s.Spec.ClusterIPs, s.Spec.ClusterIP) {
		add(ip)
	}
	var eps discoveryv1.EndpointSliceList
	if err := r.List(ctx, &eps, client.InNamespace(svc.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
		return nil, fmt.Errorf("read the endpoints of the cluster DNS Service %s: %w", svc, err)
	}
	for _, es := range eps.Items {
		for _, ep := range es.Endpoints {
			for _, a := range ep.Addresses {
				add(a)
			}
		}
	}
	return d, nil
}

// peers are the kernel layer's allow-list entries for DNS: port 53 of each
// address.
func (d *ClusterDNS) peers() []Peer {
	if d == nil {
		return nil
	}
	var out []Peer
	for _, ip := range d.IPs {
		bits := 128
		if ip.To4() != nil {
			ip, bits = ip.To4(), 32
		}
		out = append(out, Peer{Net: &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, Port: 53})
	}
	return out
}
