package enrich

import (
	"context"
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/engine"
)

// Object is an owner as an OwnerLookup returns it: enough to climb further.
type Object struct {
	Kind, Name, Namespace, UID string
	Owners                     []engine.OwnerReference
}

// ObjectOf is the owner Object of kind for an object's metadata.
func ObjectOf(kind string, m metav1.Object) Object {
	out := Object{Kind: kind, Name: m.GetName(), Namespace: m.GetNamespace(), UID: string(m.GetUID())}
	for _, r := range m.GetOwnerReferences() {
		out.Owners = append(out.Owners, engine.OwnerReference{APIVersion: r.APIVersion, Kind: r.Kind, Name: r.Name,
			UID: string(r.UID), Controller: r.Controller != nil && *r.Controller})
	}
	return out
}

// OwnerLookup fetches an owner object by reference. It returns an error
// wrapping ErrNotFound when the owner no longer exists and one wrapping
// ErrUnknownKind for kinds it cannot fetch; TopOwner stops climbing at such
// an owner. internal/kube implements it with a cached metadata client.
type OwnerLookup interface {
	Owner(ctx context.Context, namespace string, ref engine.OwnerReference) (Object, error)
}

// ErrNotFound is wrapped by lookups of an owner that no longer exists.
var ErrNotFound = errors.New("not found")

// ErrUnknownKind is returned by an OwnerLookup for kinds it cannot fetch.
var ErrUnknownKind = errors.New("unknown owner kind")

// maxOwnerDepth bounds the climb: real chains are at most three deep
// (Pod → Job → CronJob), and a cycle must not loop forever.
const maxOwnerDepth = 8

// TopOwner returns the top-level workload of a pod: the end of its chain of
// controller owners (Pod → ReplicaSet → Deployment, Pod → Job → CronJob,
// StatefulSet, DaemonSet, any custom controller). A static pod's mirror is
// owned by its Node; a pod without owners is its own workload (kind Pod).
// Any other lookup error is returned and the workload must stay unknown
// rather than be reported one level too low.
func TopOwner(ctx context.Context, lookup OwnerLookup, p *engine.Pod) (engine.Workload, error) {
	ref, ok := controllerOf(p.OwnerReferences)
	if !ok {
		if p.Static {
			return engine.Workload{Kind: "Node", Name: p.Node}, nil
		}
		return engine.Workload{Kind: "Pod", Name: p.Name, Namespace: p.Namespace, UID: p.UID}, nil
	}
	top := workloadOf(ref, p.Namespace)
	for range maxOwnerDepth {
		if ref.Kind == "Node" {
			return top, nil
		}
		obj, err := lookup.Owner(ctx, p.Namespace, ref)
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnknownKind) {
			return top, nil
		}
		if err != nil {
			return engine.Workload{}, fmt.Errorf("resolve owner %s %s/%s of pod %s/%s: %w",
				ref.Kind, p.Namespace, ref.Name, p.Namespace, p.Name, err)
		}
		if obj.UID != "" && ref.UID != "" && obj.UID != ref.UID {
			// A newer object of the same name: the real owner is gone.
			return top, nil
		}
		next, ok := controllerOf(obj.Owners)
		if !ok {
			return top, nil
		}
		ref, top = next, workloadOf(next, p.Namespace)
	}
	return top, nil
}

// controllerOf picks the controlling owner, or the only owner when none is
// marked as controller.
func controllerOf(refs []engine.OwnerReference) (engine.OwnerReference, bool) {
	for _, r := range refs {
		if r.Controller {
			return r, true
		}
	}
	if len(refs) == 1 {
		return refs[0], true
	}
	return engine.OwnerReference{}, false
}

func workloadOf(ref engine.OwnerReference, namespace string) engine.Workload {
	w := engine.Workload{Kind: ref.Kind, Name: ref.Name, Namespace: namespace, UID: ref.UID}
	if ref.Kind == "Node" {
		w.Namespace = "" // nodes are cluster-scoped
	}
	return w
}
