package engine

import (
	"sync/atomic"
	"unicode/utf8"
)

// maxDepth bounds the nesting of JSON-valued fields (objects of audit and
// object events); deeper values are dropped.
const maxDepth = 32

// truncatedEvents counts events Bound had to cut, for every source's metrics.
var truncatedEvents atomic.Uint64

// TruncatedEvents is how many events were cut to the evaluation bounds
// since the process started.
func TruncatedEvents() uint64 { return truncatedEvents.Load() }

// Bound cuts an event to the sizes the cost estimator assumes (MaxArgs,
// MaxAncestors, MaxString for any string, MaxListItems for any other list
// or map, maxDepth for JSON values), so a rule's estimated cost stays a true
// bound whatever a process, a pod or an API client put into the event. A cut
// event has Truncated set and is counted (TruncatedEvents). Normalize calls
// it, so every source does; it reports whether it cut anything and
// allocates nothing when it did not.
func Bound(e *Event) bool {
	b := bounder{}
	b.process(&e.Process)
	for _, s := range []*string{&e.Node, &e.Op, &e.Container.ID, &e.Container.Name, &e.Container.Image, &e.Container.ImageDigest, &e.Container.Runtime,
		&e.Pod.UID, &e.Pod.Name, &e.Pod.Namespace, &e.Pod.ServiceAccount, &e.Pod.IP, &e.Pod.Node,
		&e.Workload.Kind, &e.Workload.Name, &e.Workload.Namespace, &e.Workload.UID,
		&e.File.Path, &e.Net.Family, &e.Net.Protocol, &e.Net.Local.IP, &e.Net.Peer.IP, &e.Net.Peer.Pod, &e.Net.Peer.Namespace,
		&e.Net.Peer.PodUID, &e.Net.Peer.Service, &e.Net.Peer.Workload.Kind, &e.Net.Peer.Workload.Name,
		&e.Syscall.Name, &e.Syscall.Source, &e.Syscall.Target, &e.Syscall.FSType, &e.Syscall.Module} {
		b.str(s)
	}
	b.strMap(&e.Pod.Labels)
	b.strMap(&e.Pod.Annotations)
	if len(e.Pod.OwnerReferences) > MaxListItems {
		e.Pod.OwnerReferences, b.cut = e.Pod.OwnerReferences[:MaxListItems], true
	}
	for i := range e.Pod.OwnerReferences {
		o := &e.Pod.OwnerReferences[i]
		for _, s := range []*string{&o.APIVersion, &o.Kind, &o.Name, &o.UID} {
			b.str(s)
		}
	}
	b.audit(&e.Audit)
	e.Object = b.object(e.Object)
	if b.cut {
		e.Truncated = true
		truncatedEvents.Add(1)
	}
	return b.cut
}

type bounder struct{ cut bool }

func (b *bounder) str(s *string) {
	if len(*s) <= MaxString {
		return
	}
	i := MaxString
	for i > MaxString-utf8.UTFMax && !utf8.RuneStart((*s)[i]) {
		i-- // never leave half a character
	}
	*s, b.cut = (*s)[:i], true
}

func (b *bounder) strs(l *[]string, max int) {
	if len(*l) > max {
		*l, b.cut = (*l)[:max], true
	}
	for i := range *l {
		b.str(&(*l)[i])
	}
}

func (b *bounder) strMap(m *map[string]string) {
	n := 0
	for k, v := range *m {
		n++
		if n > MaxListItems || len(k) > MaxString {
			delete(*m, k)
			b.cut = true
			continue
		}
		if len(v) > MaxString {
			b.str(&v)
			(*m)[k] = v
		}
	}
}

func (b *bounder) process(p *Process) {
	for _, s := range []*string{&p.Binary, &p.Name, &p.Comm, &p.Cmdline, &p.Cwd} {
		b.str(s)
	}
	b.strs(&p.Args, MaxArgs)
	b.ancestor(&p.Parent)
	if len(p.Ancestors) > MaxAncestors {
		p.Ancestors, b.cut = p.Ancestors[:MaxAncestors], true
	}
	for i := range p.Ancestors {
		b.ancestor(&p.Ancestors[i])
	}
}

func (b *bounder) ancestor(a *Ancestor) {
	for _, s := range []*string{&a.Binary, &a.Name, &a.Cmdline} {
		b.str(s)
	}
	b.strs(&a.Args, MaxArgs)
}

func (b *bounder) user(u *UserInfo) {
	b.str(&u.Username)
	b.str(&u.UID)
	b.strs(&u.Groups, MaxListItems)
	n := 0
	for k, v := range u.Extra {
		n++
		if n > MaxListItems || len(k) > MaxString {
			delete(u.Extra, k)
			b.cut = true
			continue
		}
		if len(v) > MaxListItems {
			b.cut = true
			v = v[:MaxListItems]
			u.Extra[k] = v
		}
		for i := range v {
			b.str(&v[i])
		}
	}
}

func (b *bounder) audit(a *Audit) {
	for _, s := range []*string{&a.Kind, &a.APIVersion, &a.Level, &a.AuditID, &a.Stage, &a.RequestURI, &a.Verb, &a.UserAgent,
		&a.ObjectRef.Resource, &a.ObjectRef.Namespace, &a.ObjectRef.Name, &a.ObjectRef.UID, &a.ObjectRef.APIGroup,
		&a.ObjectRef.APIVersion, &a.ObjectRef.ResourceVersion, &a.ObjectRef.Subresource,
		&a.ResponseStatus.Kind, &a.ResponseStatus.APIVersion, &a.ResponseStatus.Status, &a.ResponseStatus.Message, &a.ResponseStatus.Reason,
		&a.SourcePod.IP, &a.SourcePod.Pod, &a.SourcePod.Namespace, &a.SourcePod.PodUID, &a.SourcePod.Service,
		&a.SourcePod.Workload.Kind, &a.SourcePod.Workload.Name} {
		b.str(s)
	}
	b.user(&a.User)
	b.user(&a.ImpersonatedUser)
	b.strs(&a.SourceIPs, MaxListItems)
	b.strMap(&a.Annotations)
	a.RequestObject = b.object(a.RequestObject)
	a.ResponseObject = b.object(a.ResponseObject)
	a.ResponseStatus.Metadata = b.object(a.ResponseStatus.Metadata)
	a.ResponseStatus.Details = b.object(a.ResponseStatus.Details)
}

// object bounds a JSON object in place: maps are changed where they are,
// lists re-sliced in their parent. Nothing is written unless it is cut.
func (b *bounder) object(m map[string]any) map[string]any {
	if m != nil {
		b.jsonMap(m, 1)
	}
	return m
}

func (b *bounder) jsonMap(m map[string]any, depth int) {
	n := 0
	for k, child := range m {
		n++
		if n > MaxListItems || len(k) > MaxString {
			delete(m, k)
			b.cut = true
			continue
		}
		switch c := child.(type) {
		case string:
			if len(c) > MaxString {
				b.str(&c)
				m[k] = c
			}
		case map[string]any:
			if depth >= maxDepth {
				delete(m, k)
				b.cut = true
				continue
			}
			b.jsonMap(c, depth+1)
		case []any:
			if depth >= maxDepth {
				delete(m, k)
				b.cut = true
				continue
			}
			if l := b.jsonList(c, depth+1); len(l) != len(c) {
				m[k] = l
			}
		}
	}
}

func (b *bounder) jsonList(l []any, depth int) []any {
	if len(l) > MaxListItems {
		l, b.cut = l[:MaxListItems], true
	}
	for i, child := range l {
		switch c := child.(type) {
		case string:
			if len(c) > MaxString {
				b.str(&c)
				l[i] = c
			}
		case map[string]any:
			if depth >= maxDepth {
				l[i], b.cut = nil, true
				continue
			}
			b.jsonMap(c, depth+1)
		case []any:
			if depth >= maxDepth {
				l[i], b.cut = nil, true
				continue
			}
			if nl := b.jsonList(c, depth+1); len(nl) != len(c) {
				l[i] = nl
			}
		}
	}
	return l
}
