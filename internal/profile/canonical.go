package profile

import (
	"cmp"
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// Canonical sorts every list of a behaviour and keeps each entry once, so
// the same behaviour always has the same bytes.
func Canonical(b *v1alpha1.ProfileBehaviour) {
	b.Executables = sortedUnique(b.Executables, cmp.Compare[string])
	b.WriteDirectories = sortedUnique(b.WriteDirectories, cmp.Compare[string])
	b.ProcessPairs = sortedUnique(b.ProcessPairs, comparePair)
	b.Outbound = sortedUnique(b.Outbound, comparePeer)
	b.Listening = sortedUnique(b.Listening, comparePort)
}

func sortedUnique[T comparable](s []T, f func(a, b T) int) []T {
	if len(s) == 0 {
		return nil
	}
	slices.SortFunc(s, f)
	return slices.Compact(s)
}

func comparePair(a, b v1alpha1.ProcessPair) int {
	return cmp.Or(cmp.Compare(a.Parent, b.Parent), cmp.Compare(a.Child, b.Child))
}

// comparePeer orders Services first, then workloads, then networks.
func comparePeer(a, b v1alpha1.ProfilePeer) int {
	return cmp.Or(cmp.Compare(peerClass(a), peerClass(b)),
		cmp.Compare(a.Service, b.Service), cmp.Compare(a.Workload, b.Workload), cmp.Compare(a.CIDR, b.CIDR),
		cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
}

func peerClass(p v1alpha1.ProfilePeer) int {
	switch {
	case p.Service != "":
		return 0
	case p.Workload != "":
		return 1
	}
	return 2
}

func comparePort(a, b v1alpha1.ProfilePort) int {
	return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
}

// Export writes a WorkloadProfile as the plain YAML to commit beside the
// workload's manifests: apiVersion, kind, name, namespace, the labels and
// annotations a person set, and the canonical spec; no status and no
// server-set metadata.
func Export(wp *v1alpha1.WorkloadProfile) ([]byte, error) {
	spec := *wp.Spec.DeepCopy()
	Canonical(&spec.ProfileBehaviour)
	out := v1alpha1.WorkloadProfile{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "WorkloadProfile"},
		ObjectMeta: metav1.ObjectMeta{
			Name: wp.Name, Namespace: wp.Namespace,
			Labels: wp.Labels, Annotations: exportedAnnotations(wp.Annotations),
		},
		Spec: spec,
	}
	b, err := yaml.Marshal(exportForm{TypeMeta: out.TypeMeta, Metadata: exportMeta(out.ObjectMeta), Spec: out.Spec})
	if err != nil {
		return nil, fmt.Errorf("export WorkloadProfile %s/%s: %w", wp.Namespace, wp.Name, err)
	}
	return b, nil
}

// exportForm leaves out status and the empty metadata fields
// (creationTimestamp: null) that a WorkloadProfile would write.
type exportForm struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        exportMetadata               `json:"metadata"`
	Spec            v1alpha1.WorkloadProfileSpec `json:"spec"`
}

type exportMetadata struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func exportMeta(m metav1.ObjectMeta) exportMetadata {
	return exportMetadata{Name: m.Name, Namespace: m.Namespace, Labels: m.Labels, Annotations: m.Annotations}
}

// exportedAnnotations drops what kubectl and controllers write.
func exportedAnnotations(a map[string]string) map[string]string {
	var out map[string]string
	for k, v := range a {
		if k == "kubectl.kubernetes.io/last-applied-configuration" {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

// Import reads an exported profile, refusing unknown fields (a typo in a
// reviewed file must not silently drop an entry).
func Import(b []byte) (*v1alpha1.WorkloadProfile, error) {
	var wp v1alpha1.WorkloadProfile
	if err := yamlUnmarshalStrict(b, &wp); err != nil {
		return nil, fmt.Errorf("read WorkloadProfile: %w", err)
	}
	if wp.Kind != "WorkloadProfile" || wp.APIVersion != v1alpha1.GroupVersion.String() {
		return nil, fmt.Errorf("read WorkloadProfile: apiVersion %q kind %q, want %s WorkloadProfile", wp.APIVersion, wp.Kind, v1alpha1.GroupVersion)
	}
	return &wp, nil
}

func yamlUnmarshalStrict(b []byte, v any) error { return yaml.UnmarshalStrict(b, v) }
