package engine

import (
	"path"
	"sort"
	"strings"
)

// mirrorAnnotation marks the API server's mirror of a static pod: the
// kubelet runs the pod from a file on the node and only reports it.
const mirrorAnnotation = "kubernetes.io/config.mirror"

// lastApplied repeats the whole object it was applied from: it says nothing
// about identity and would multiply the size of every pod view.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// PodFromObject fills the pod view of a Pod object in its JSON form (as the
// API server returns it, decoded into maps): identity, labels and
// annotations (without kubectl's last-applied-configuration), ServiceAccount,
// owners, node and IP, and what rules judge a pod by: static, ownerless,
// host namespaces, hostPath volumes and their paths (CleanHostPath), and of
// every container (init and ephemeral included) privileged,
// allowPrivilegeEscalation, added capabilities (CapabilityName) and images. The
// object source and audit events fill pod with it, so both paths agree; the
// node agent's store (engine/enrich) reads typed pods the same way. Values
// of the wrong JSON type read as absent; every list and map is bounded by
// MaxListItems.
func PodFromObject(obj map[string]any) Pod {
	md := mapAt(obj, "metadata")
	spec := mapAt(obj, "spec")
	p := Pod{
		UID:            str(md, "uid"),
		Name:           str(md, "name"),
		Namespace:      str(md, "namespace"),
		Labels:         stringMap(mapAt(md, "labels"), ""),
		ServiceAccount: str(spec, "serviceAccountName"),
		HostNetwork:    spec["hostNetwork"] == true,
		HostPID:        spec["hostPID"] == true,
		HostIPC:        spec["hostIPC"] == true,
		IP:             str(mapAt(obj, "status"), "podIP"),
		Node:           str(spec, "nodeName"),
	}
	ann := mapAt(md, "annotations")
	_, p.Static = ann[mirrorAnnotation]
	p.Annotations = stringMap(ann, lastApplied)
	owners, _ := md["ownerReferences"].([]any)
	p.Ownerless = len(owners) == 0
	for _, o := range owners {
		if len(p.OwnerReferences) == MaxListItems {
			break
		}
		if m, ok := o.(map[string]any); ok {
			p.OwnerReferences = append(p.OwnerReferences, OwnerReference{
				APIVersion: str(m, "apiVersion"), Kind: str(m, "kind"), Name: str(m, "name"), UID: str(m, "uid"),
				Controller: m["controller"] == true,
			})
		}
	}
	vols, _ := spec["volumes"].([]any)
	for _, v := range vols {
		if m, ok := v.(map[string]any); ok {
			if hp, ok := m["hostPath"].(map[string]any); ok {
				p.HostPath = true
				if len(p.HostPaths) < MaxListItems {
					p.HostPaths = append(p.HostPaths, CleanHostPath(str(hp, "path")))
				}
			}
		}
	}
	caps := map[string]bool{}
	for _, key := range []string{"initContainers", "containers", "ephemeralContainers"} {
		cs, _ := spec[key].([]any)
		for _, c := range cs {
			m, ok := c.(map[string]any)
			if !ok {
				continue
			}
			if len(p.Images) < MaxListItems {
				p.Images = append(p.Images, str(m, "image"))
			}
			sc := mapAt(m, "securityContext")
			if sc["privileged"] == true {
				p.Privileged = true
			}
			if sc["allowPrivilegeEscalation"] == true {
				p.AllowPrivilegeEscalation = true
			}
			add, _ := mapAt(sc, "capabilities")["add"].([]any)
			for _, a := range add {
				if s, ok := a.(string); ok && len(caps) < MaxListItems {
					caps[CapabilityName(s)] = true
				}
			}
		}
	}
	for c := range caps {
		p.Capabilities = append(p.Capabilities, c)
	}
	sort.Strings(p.Capabilities)
	return p
}

func mapAt(m map[string]any, key string) map[string]any {
	v, _ := m[key].(map[string]any)
	return v
}

func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

// stringMap copies the string values of m without the key skip, nil when
// none; beyond MaxListItems entries it keeps the first ones in key order.
func stringMap(m map[string]any, skip string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if _, ok := v.(string); ok && k != skip {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if len(keys) > MaxListItems {
		sort.Strings(keys)
		keys = keys[:MaxListItems]
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		out[k] = m[k].(string)
	}
	return out
}

// CleanHostPath is a hostPath volume's path as the node resolves it: "/etc/",
// "//etc" and "/var/../etc" are all /etc. An empty path stays empty.
func CleanHostPath(p string) string {
	if p == "" {
		return ""
	}
	return path.Clean("/" + p)
}

// CapabilityName is a capability as container runtimes read it: upper case,
// without the CAP_ prefix ("cap_sys_admin" and "SYS_ADMIN" are the same).
func CapabilityName(c string) string {
	return strings.TrimPrefix(strings.ToUpper(c), "CAP_")
}
