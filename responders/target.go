package responders

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// pod fetches the subject's pod and checks it is the same pod the Incident is
// about: a StatefulSet or a static pod can bring back a pod with the same name.
func pod(ctx context.Context, c client.Reader, s *v1alpha1.Subject) (*corev1.Pod, error) {
	if s.Namespace == "" || s.Pod == "" {
		return nil, refused("the incident's subject names no pod")
	}
	var p corev1.Pod
	if err := c.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Pod}, &p); err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", s.Namespace, s.Pod, err)
	}
	if s.PodUID != "" && string(p.UID) != s.PodUID {
		return nil, refused("pod %s/%s is now a different pod (uid %s, incident is about %s)", s.Namespace, s.Pod, p.UID, s.PodUID)
	}
	return &p, nil
}

// mergePatch applies a JSON merge patch built from v (nil values delete keys).
func mergePatch(ctx context.Context, c client.Client, obj client.Object, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, data))
}

// labelPatch builds a merge patch of metadata.labels (or annotations).
func metaPatch(field string, values map[string]any) map[string]any {
	return map[string]any{"metadata": map[string]any{field: values}}
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
