package engine

import (
	"strings"

	"github.com/google/cel-go/interpreter"
)

// activation resolves the CEL variables of one event without copying it:
// each variable is a pointer into the event.
type activation struct{ ev *Event }

func (a *activation) ResolveName(name string) (any, bool) {
	ev := a.ev
	switch name {
	case "event":
		return ev, true
	case "process":
		return &ev.Process, true
	case "container":
		return &ev.Container, true
	case "pod":
		return &ev.Pod, true
	case "workload":
		return &ev.Workload, true
	case "node":
		return ev.Node, true
	case "file":
		return &ev.File, true
	case "net":
		return &ev.Net, true
	case "syscall":
		return &ev.Syscall, true
	case "audit":
		return &ev.Audit, true
	case "object":
		if ev.Object == nil {
			return emptyObject, true
		}
		return ev.Object, true
	case "profile":
		if ev.Profile == nil {
			return noProfile, true
		}
		return ev.Profile, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

var emptyObject = map[string]any{}

// kinds indexes AllKinds for bit sets.
var kinds = AllKinds()

// kindIndex returns the position of k in AllKinds, or -1.
func kindIndex(k Kind) int {
	for i, x := range kinds {
		if x == k {
			return i
		}
	}
	return -1
}

// Namespace is the Kubernetes namespace an event belongs to: the pod's for
// node events, the object's for audit and object events.
func (e *Event) Namespace() string {
	switch e.Kind {
	case KindAudit:
		return e.Audit.ObjectRef.Namespace
	case KindObject:
		if md, ok := e.Object["metadata"].(map[string]any); ok {
			ns, _ := md["namespace"].(string)
			return ns
		}
		return ""
	}
	return e.Pod.Namespace
}

// Normalize fills the fields derived from others so every producer agrees:
// process.name (and the ancestors' names) from the binary, cmdline from args,
// and file.write from the open flags; and it bounds the event (Bound) to the
// sizes the rules' cost estimates assume. Sources call it once per event,
// before matching.
func Normalize(e *Event) {
	defer Bound(e) // after the derived fields, which can be long too
	normalizeProc(&e.Process.Binary, &e.Process.Name, e.Process.Args, &e.Process.Cmdline)
	normalizeProc(&e.Process.Parent.Binary, &e.Process.Parent.Name, e.Process.Parent.Args, &e.Process.Parent.Cmdline)
	for i := range e.Process.Ancestors {
		a := &e.Process.Ancestors[i]
		normalizeProc(&a.Binary, &a.Name, a.Args, &a.Cmdline)
	}
	if e.Process.Parent.PID == 0 && e.Process.Parent.Binary == "" && len(e.Process.Ancestors) > 0 {
		e.Process.Parent = e.Process.Ancestors[0]
	}
	if e.Kind == KindOpen && e.File.Flags&openWriteFlags != 0 {
		e.File.Write = true
	}
	if e.Kind == KindAudit && e.Time.IsZero() {
		e.Time = e.Audit.StageTimestamp
		if e.Time.IsZero() {
			e.Time = e.Audit.RequestReceivedTimestamp
		}
	}
}

// O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND on Linux.
const openWriteFlags = 0x1 | 0x2 | 0x40 | 0x200 | 0x400

func normalizeProc(binary, name *string, args []string, cmdline *string) {
	if *binary != "" {
		*name = basename(*binary)
	}
	if *cmdline == "" && len(args) > 0 {
		*cmdline = strings.Join(args, " ")
	}
}
