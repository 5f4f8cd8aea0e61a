package kube

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enrich"
)

// wellKnown are the owner kinds of built-in controllers; anything else needs
// the RESTMapper.
var wellKnown = map[schema.GroupKind]string{
	{Group: "apps", Kind: "ReplicaSet"}:        "replicasets",
	{Group: "apps", Kind: "Deployment"}:        "deployments",
	{Group: "apps", Kind: "StatefulSet"}:       "statefulsets",
	{Group: "apps", Kind: "DaemonSet"}:         "daemonsets",
	{Group: "batch", Kind: "Job"}:              "jobs",
	{Group: "batch", Kind: "CronJob"}:          "cronjobs",
	{Group: "", Kind: "ReplicationController"}: "replicationcontrollers",
}

// Owners looks owner objects up by reference through the metadata API (only
// metadata crosses the wire) and caches the answers: owners change their
// own owners almost never, and one ReplicaSet serves all its pods.
// It implements enrich.OwnerLookup.
type Owners struct {
	Client metadata.Interface
	// Mapper resolves kinds outside the built-in controllers (custom
	// controllers' resources); without it those stop the climb.
	Mapper meta.RESTMapper
	// TTL is how long a found owner is cached; 10 minutes when zero.
	// Misses are cached for a tenth of it.
	TTL time.Duration
	// MaxEntries bounds the cache; 10,000 when zero.
	MaxEntries int

	mu    sync.Mutex
	cache map[string]ownerEntry
}

type ownerEntry struct {
	obj     enrich.Object
	err     error
	expires time.Time
}

// Owner implements enrich.OwnerLookup.
func (o *Owners) Owner(ctx context.Context, namespace string, ref engine.OwnerReference) (enrich.Object, error) {
	key := namespace + "/" + ref.APIVersion + "/" + ref.Kind + "/" + ref.Name
	now := time.Now()
	o.mu.Lock()
	e, ok := o.cache[key]
	o.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.obj, e.err
	}
	obj, err := o.fetch(ctx, namespace, ref)
	ttl := o.TTL
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	switch {
	case err == nil:
	case isFinal(err):
		ttl /= 10
	default:
		return obj, err // transient: do not cache
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	limit := o.MaxEntries
	if limit <= 0 {
		limit = 10_000
	}
	if o.cache == nil || len(o.cache) >= limit {
		o.cache = map[string]ownerEntry{} // crude but bounded; refills lazily
	}
	o.cache[key] = ownerEntry{obj: obj, err: err, expires: now.Add(ttl)}
	return obj, err
}

func isFinal(err error) bool {
	return errors.Is(err, enrich.ErrNotFound) || errors.Is(err, enrich.ErrUnknownKind)
}

func (o *Owners) fetch(ctx context.Context, namespace string, ref engine.OwnerReference) (enrich.Object, error) {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return enrich.Object{}, fmt.Errorf("owner %s %s: %w: bad apiVersion %q", ref.Kind, ref.Name, enrich.ErrUnknownKind, ref.APIVersion)
	}
	gk := schema.GroupKind{Group: gv.Group, Kind: ref.Kind}
	gvr := gv.WithResource(wellKnown[gk])
	namespaced := true
	if gvr.Resource == "" {
		if o.Mapper == nil {
			return enrich.Object{}, fmt.Errorf("owner %s %s: %w", ref.Kind, ref.Name, enrich.ErrUnknownKind)
		}
		m, err := o.Mapper.RESTMapping(gk, gv.Version)
		if err != nil {
			return enrich.Object{}, fmt.Errorf("owner %s %s: %w: %v", ref.Kind, ref.Name, enrich.ErrUnknownKind, err)
		}
		gvr = m.Resource
		namespaced = m.Scope.Name() == meta.RESTScopeNameNamespace
	}
	var pom *metav1.PartialObjectMetadata
	if namespaced {
		pom, err = o.Client.Resource(gvr).Namespace(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	} else {
		pom, err = o.Client.Resource(gvr).Get(ctx, ref.Name, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		return enrich.Object{}, fmt.Errorf("get %s %s/%s: %w", gvr.Resource, namespace, ref.Name, enrich.ErrNotFound)
	}
	if err != nil {
		return enrich.Object{}, fmt.Errorf("get %s %s/%s: %w", gvr.Resource, namespace, ref.Name, err)
	}
	return enrich.ObjectOf(ref.Kind, pom), nil
}
