package incident

import (
	"strings"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// SubjectOf says what an event is about: its pod, container, process and
// node for node events, its user, verb, resource and source for audit
// events, its object for object events.
func SubjectOf(ev *engine.Event) v1alpha1.Subject {
	s := v1alpha1.Subject{
		Namespace:      ev.Pod.Namespace,
		Pod:            ev.Pod.Name,
		PodUID:         ev.Pod.UID,
		ServiceAccount: ev.Pod.ServiceAccount,
		Container:      ev.Container.Name,
		ContainerID:    ev.Container.ID,
		Image:          ev.Container.Image,
		ImageDigest:    ev.Container.ImageDigest,
		WorkloadKind:   ev.Workload.Kind,
		WorkloadName:   ev.Workload.Name,
		Node:           ev.Node,
		PID:            ev.Process.PID,
		Binary:         ev.Process.Binary,
	}
	switch ev.Kind {
	case engine.KindAudit:
		a := &ev.Audit
		s.User = a.User.Username
		s.Verb = a.Verb
		s.Resource = a.ObjectRef.Resource
		s.Subresource = a.ObjectRef.Subresource
		s.SourceIPs = append([]string(nil), a.SourceIPs...)
		if ns, name, ok := serviceAccount(a.User.Username); ok {
			s.Namespace, s.ServiceAccount = ns, name
		} else if s.Namespace == "" {
			s.Namespace = a.ObjectRef.Namespace
		}
		if a.SourcePod.Pod != "" {
			s.Pod, s.PodUID = a.SourcePod.Pod, a.SourcePod.PodUID
			if w := a.SourcePod.Workload; w.Name != "" {
				s.WorkloadKind, s.WorkloadName = w.Kind, w.Name
			}
			if s.Namespace == "" {
				s.Namespace = a.SourcePod.Namespace
			}
		}
	case engine.KindObject:
		if md, ok := ev.Object["metadata"].(map[string]any); ok {
			if s.Namespace == "" {
				s.Namespace, _ = md["namespace"].(string)
			}
			kind, _ := ev.Object["kind"].(string)
			name, _ := md["name"].(string)
			if kind == "Pod" {
				s.Pod = name
				if uid, ok := md["uid"].(string); ok {
					s.PodUID = uid
				}
			} else if s.WorkloadName == "" {
				s.WorkloadKind, s.WorkloadName = kind, name
			}
		}
	}
	return s
}

// serviceAccount splits a service account's username
// (system:serviceaccount:<namespace>:<name>).
func serviceAccount(user string) (namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	namespace, name, ok = strings.Cut(rest, ":")
	return namespace, name, ok && namespace != "" && name != ""
}
