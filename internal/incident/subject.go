package incident

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// SubjectOf says what an event is about: its pod, container, process and
// node for node events, its user, verb, resource and source for audit
// events, its object for object events (and, when the object came from an
// audit event, who changed it: user, verb, resource, source).
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
	originOf(ev, &s)
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
		// From an audit event (engine.ObjectFromAudit): who did it.
		if a := &ev.Audit; a.Verb != "" {
			s.User = a.User.Username
			s.Verb = a.Verb
			s.Resource = a.ObjectRef.Resource
			s.Subresource = a.ObjectRef.Subresource
			s.SourceIPs = append([]string(nil), a.SourceIPs...)
		}
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

// originOf copies the kernel's origin of a container process: the
// controller joins it with the API server's exec requests (status.session).
// The command is the one the process that entered the container ran, when
// the event carries it whole.
func originOf(ev *engine.Event, s *v1alpha1.Subject) {
	p := &ev.Process
	if ev.Container.ID == "" || p.Origin == "" {
		return
	}
	s.Origin, s.OriginPID = p.Origin, p.OriginPID
	if !p.OriginTime.IsZero() {
		t := metav1.NewTime(p.OriginTime)
		s.OriginTime = &t
	}
	if ev.Truncated || p.OriginPID == 0 {
		return
	}
	if p.PID == p.OriginPID {
		s.OriginCommand = append([]string(nil), p.Args...)
		return
	}
	for _, a := range p.Ancestors {
		if a.PID == p.OriginPID {
			s.OriginCommand = append([]string(nil), a.Args...)
			return
		}
	}
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

// objectIdentity names an object event's object across both of its paths,
// the live watch and audit: API group, kind, namespace and name (the version
// may differ, and a request body logged at Request level has no uid yet).
// Empty when the object has no name.
func objectIdentity(obj map[string]any) string {
	md, _ := obj["metadata"].(map[string]any)
	name, _ := md["name"].(string)
	if name == "" {
		return ""
	}
	ns, _ := md["namespace"].(string)
	kind, _ := obj["kind"].(string)
	av, _ := obj["apiVersion"].(string)
	group := ""
	if i := strings.LastIndexByte(av, '/'); i >= 0 {
		group = av[:i]
	}
	return group + "/" + kind + "/" + ns + "/" + name
}

// changeKey names one change of an object across its two paths: the object,
// the operation and the resourceVersion the change produced (the live
// watch's object and an audit event's response body carry the same one).
// Empty when unknown: a request body logged at Request level has none.
func changeKey(ev *engine.Event) string {
	if ev.Kind != engine.KindObject {
		return ""
	}
	md, _ := ev.Object["metadata"].(map[string]any)
	rv, _ := md["resourceVersion"].(string)
	oid := objectIdentity(ev.Object)
	if rv == "" || oid == "" {
		return ""
	}
	return oid + "\x00" + ev.Op + "\x00" + rv
}

// maxChanges bounds the changes a window remembers; past it every match counts.
const maxChanges = 64

// sawChange records a change and reports whether the window had it already.
func (w *window) sawChange(key string) bool {
	if key == "" {
		return false
	}
	if w.changes[key] {
		return true
	}
	if len(w.changes) < maxChanges {
		if w.changes == nil {
			w.changes = map[string]bool{}
		}
		w.changes[key] = true
	}
	return false
}
