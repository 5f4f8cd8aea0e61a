package responders

import (
	"context"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// Scale scales the subject's top-level workload through the scale subresource
// and records the previous replicas for revert.
type Scale struct {
	Client client.Client
}

// workload resolves the top-level scalable workload: the Incident's
// WorkloadKind/Name when set, else the pod's owner chain (Pod → ReplicaSet →
// Deployment).
func workload(ctx context.Context, c client.Reader, req *Request) (client.Object, error) {
	s := req.Subject()
	kind, name := s.WorkloadKind, s.WorkloadName
	if kind == "" || name == "" {
		p, err := pod(ctx, c, s)
		if err != nil {
			return nil, err
		}
		ref := metav1.GetControllerOf(p)
		if ref == nil {
			return nil, refused("pod %s/%s has no controller to scale", s.Namespace, s.Pod)
		}
		kind, name = ref.Kind, ref.Name
		if kind == "ReplicaSet" {
			var rs appsv1.ReplicaSet
			if err := c.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: name}, &rs); err != nil {
				return nil, fmt.Errorf("get ReplicaSet %s/%s: %w", s.Namespace, name, err)
			}
			if d := metav1.GetControllerOf(&rs); d != nil && d.Kind == "Deployment" {
				kind, name = d.Kind, d.Name
			}
		}
	}
	meta := metav1.ObjectMeta{Namespace: s.Namespace, Name: name}
	switch kind {
	case "Deployment":
		return &appsv1.Deployment{ObjectMeta: meta}, nil
	case "StatefulSet":
		return &appsv1.StatefulSet{ObjectMeta: meta}, nil
	case "ReplicaSet":
		return &appsv1.ReplicaSet{ObjectMeta: meta}, nil
	case "ReplicationController":
		return &corev1.ReplicationController{ObjectMeta: meta}, nil
	}
	return nil, refused("%s %s/%s cannot be scaled", kind, s.Namespace, name)
}

func kindOf(obj client.Object) string {
	switch obj.(type) {
	case *appsv1.Deployment:
		return "Deployment"
	case *appsv1.StatefulSet:
		return "StatefulSet"
	case *appsv1.ReplicaSet:
		return "ReplicaSet"
	default:
		return "ReplicationController"
	}
}

func (a *Scale) target(req *Request) int32 {
	if req.Step.Scale != nil {
		return req.Step.Scale.Replicas
	}
	return 0
}

// Plan implements Action.
func (a *Scale) Plan(ctx context.Context, req *Request) (string, error) {
	w, err := workload(ctx, a.Client, req)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("scale %s %s/%s to %d replicas", kindOf(w), w.GetNamespace(), w.GetName(), a.target(req)), nil
}

// Prepare records the workload and its current replicas.
func (a *Scale) Prepare(ctx context.Context, req *Request) (map[string]string, error) {
	to := a.target(req)
	if p := req.Step.Scale; p != nil && p.MinHealthyReplicas != nil && to < *p.MinHealthyReplicas {
		return nil, refused("scaling to %d would go below minHealthyReplicas %d", to, *p.MinHealthyReplicas)
	}
	w, err := workload(ctx, a.Client, req)
	if err != nil {
		return nil, err
	}
	var sc autoscalingv1.Scale
	if err := a.Client.SubResource("scale").Get(ctx, w, &sc); err != nil {
		return nil, fmt.Errorf("get scale of %s %s/%s: %w", kindOf(w), w.GetNamespace(), w.GetName(), err)
	}
	return map[string]string{"kind": kindOf(w), "name": w.GetName(), "previousReplicas": strconv.Itoa(int(sc.Spec.Replicas))}, nil
}

func (a *Scale) setReplicas(ctx context.Context, req *Request, n int32) (client.Object, error) {
	w, err := workload(ctx, a.Client, &Request{Incident: withWorkload(req)})
	if err != nil {
		return nil, err
	}
	// The scale carries the workload's resourceVersion, which its controller
	// bumps with every status update: re-read and retry on conflict.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var sc autoscalingv1.Scale
		if err := a.Client.SubResource("scale").Get(ctx, w, &sc); err != nil {
			return fmt.Errorf("get scale of %s %s/%s: %w", kindOf(w), w.GetNamespace(), w.GetName(), err)
		}
		if sc.Spec.Replicas == n {
			return nil
		}
		sc.Spec.Replicas = n
		if err := a.Client.SubResource("scale").Update(ctx, w, client.WithSubResourceBody(&sc)); err != nil {
			return fmt.Errorf("scale %s %s/%s to %d: %w", kindOf(w), w.GetNamespace(), w.GetName(), n, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return w, nil
}

// withWorkload pins the workload Prepare chose, so Do and Revert act on it even
// after the pod is gone.
func withWorkload(req *Request) *v1alpha1.Incident {
	inc := req.Incident.DeepCopy()
	if req.Undo["kind"] != "" {
		inc.Spec.Subject.WorkloadKind, inc.Spec.Subject.WorkloadName = req.Undo["kind"], req.Undo["name"]
	}
	return inc
}

// Do implements Action.
func (a *Scale) Do(ctx context.Context, req *Request) (Result, error) {
	to := a.target(req)
	w, err := a.setReplicas(ctx, req, to)
	if err != nil {
		return Result{}, err
	}
	return Result{Message: fmt.Sprintf("scaled %s %s/%s from %s to %d replicas", kindOf(w), w.GetNamespace(), w.GetName(), req.Undo["previousReplicas"], to)}, nil
}

// Revert implements Reverter.
func (a *Scale) Revert(ctx context.Context, req *Request) (string, error) {
	prev, err := strconv.Atoi(req.Undo["previousReplicas"])
	if err != nil {
		return "", fmt.Errorf("no previous replicas recorded: %w", err)
	}
	w, err := a.setReplicas(ctx, req, int32(prev))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("scaled %s %s/%s back to %d replicas", kindOf(w), w.GetNamespace(), w.GetName(), prev), nil
}
