package responders

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Quarantine relabels a pod out of its ReplicaSet's selector: the ReplicaSet
// controller releases it and starts a fresh replica for traffic, while the
// suspect pod keeps running for forensics (and no Service selects it any more
// when the Service shares the selector labels).
type Quarantine struct {
	Client client.Client
}

const undoLabelPrefix = "label."

// ownerReplicaSet returns the ReplicaSet controlling p.
func ownerReplicaSet(ctx context.Context, c client.Reader, p *corev1.Pod) (*appsv1.ReplicaSet, error) {
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.Kind != "ReplicaSet" {
		return nil, refused("pod %s/%s is not controlled by a ReplicaSet; nothing to relabel it out of", p.Namespace, p.Name)
	}
	var rs appsv1.ReplicaSet
	if err := c.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: ref.Name}, &rs); err != nil {
		return nil, fmt.Errorf("get ReplicaSet %s/%s: %w", p.Namespace, ref.Name, err)
	}
	return &rs, nil
}

// Plan implements Action.
func (a *Quarantine) Plan(ctx context.Context, req *Request) (string, error) {
	s := req.Subject()
	return fmt.Sprintf("remove pod %s/%s's ReplicaSet selector labels and add %s=true, so the ReplicaSet starts a replacement", s.Namespace, s.Pod, v1alpha1.QuarantinedLabel), nil
}

// Prepare records the selector labels the pod carries, to restore them on revert.
func (a *Quarantine) Prepare(ctx context.Context, req *Request) (map[string]string, error) {
	p, err := pod(ctx, a.Client, req.Subject())
	if err != nil {
		return nil, err
	}
	rs, err := ownerReplicaSet(ctx, a.Client, p)
	if err != nil {
		return nil, err
	}
	if rs.Spec.Selector == nil || len(rs.Spec.Selector.MatchLabels) == 0 {
		return nil, refused("ReplicaSet %s/%s selects only by expressions; relabelling is not supported", rs.Namespace, rs.Name)
	}
	undo := map[string]string{"replicaSet": rs.Name}
	for k := range rs.Spec.Selector.MatchLabels {
		if v, ok := p.Labels[k]; ok {
			undo[undoLabelPrefix+k] = v
		}
	}
	return undo, nil
}

func undoLabels(undo map[string]string) []string {
	var keys []string
	for k := range undo {
		if strings.HasPrefix(k, undoLabelPrefix) {
			keys = append(keys, strings.TrimPrefix(k, undoLabelPrefix))
		}
	}
	slices.Sort(keys)
	return keys
}

// Do implements Action.
func (a *Quarantine) Do(ctx context.Context, req *Request) (Result, error) {
	s := req.Subject()
	labels := map[string]any{v1alpha1.QuarantinedLabel: "true"}
	keys := undoLabels(req.Undo)
	for _, k := range keys {
		labels[k] = nil
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Pod}}
	if err := mergePatch(ctx, a.Client, p, metaPatch("labels", labels)); err != nil {
		return Result{}, fmt.Errorf("relabel pod %s/%s: %w", s.Namespace, s.Pod, err)
	}
	return Result{Message: fmt.Sprintf("removed labels %s (selector of ReplicaSet %s) and set %s=true; the ReplicaSet controller starts a replacement",
		strings.Join(keys, ","), req.Undo["replicaSet"], v1alpha1.QuarantinedLabel)}, nil
}

// Revert implements Reverter. The ReplicaSet adopts the pod again and may then
// delete one surplus replica, possibly this one.
func (a *Quarantine) Revert(ctx context.Context, req *Request) (string, error) {
	s := req.Subject()
	labels := map[string]any{v1alpha1.QuarantinedLabel: nil}
	keys := undoLabels(req.Undo)
	for _, k := range keys {
		labels[k] = req.Undo[undoLabelPrefix+k]
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Pod}}
	if err := ignoreNotFound(mergePatch(ctx, a.Client, p, metaPatch("labels", labels))); err != nil {
		return "", fmt.Errorf("restore labels of pod %s/%s: %w", s.Namespace, s.Pod, err)
	}
	return fmt.Sprintf("restored labels %s", strings.Join(keys, ",")), nil
}
