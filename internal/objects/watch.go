package objects

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// PodKind is always watched: most object rules are about pods.
var PodKind = schema.GroupVersionKind{Version: "v1", Kind: "Pod"}

// Watch attaches the source's handler to an informer per kind. Pods use the
// typed informer (shared with anything else that caches pods); other kinds
// are watched as unstructured objects.
func (s *Source) Watch(ctx context.Context, informers cache.Informers, kinds []schema.GroupVersionKind) error {
	for _, gvk := range kinds {
		var obj client.Object
		if gvk == PodKind {
			obj = &corev1.Pod{}
		} else {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(gvk)
			obj = u
		}
		inf, err := informers.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer for %s: %w", gvk, err)
		}
		if _, err := inf.AddEventHandler(s.Handler()); err != nil {
			return fmt.Errorf("watch %s: %w", gvk, err)
		}
	}
	return nil
}
