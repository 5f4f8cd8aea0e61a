package responders

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Cordon marks the subject's node unschedulable so nothing new lands next to
// the suspect workload.
type Cordon struct {
	Client client.Client
}

func (a *Cordon) node(ctx context.Context, req *Request) (string, error) {
	s := req.Subject()
	if s.Node != "" {
		return s.Node, nil
	}
	p, err := pod(ctx, a.Client, s)
	if err != nil {
		return "", err
	}
	if p.Spec.NodeName == "" {
		return "", refused("pod %s/%s is not bound to a node", p.Namespace, p.Name)
	}
	return p.Spec.NodeName, nil
}

// Plan implements Action.
func (a *Cordon) Plan(ctx context.Context, req *Request) (string, error) {
	n, err := a.node(ctx, req)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("cordon node %s", n), nil
}

// Prepare records the node and whether it was already unschedulable.
func (a *Cordon) Prepare(ctx context.Context, req *Request) (map[string]string, error) {
	name, err := a.node(ctx, req)
	if err != nil {
		return nil, err
	}
	var n corev1.Node
	if err := a.Client.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
		return nil, fmt.Errorf("get node %s: %w", name, err)
	}
	return map[string]string{"node": name, "wasUnschedulable": strconv.FormatBool(n.Spec.Unschedulable)}, nil
}

func (a *Cordon) set(ctx context.Context, name string, unschedulable bool) error {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := mergePatch(ctx, a.Client, n, map[string]any{"spec": map[string]any{"unschedulable": unschedulable}}); err != nil {
		return fmt.Errorf("set node %s unschedulable=%t: %w", name, unschedulable, err)
	}
	return nil
}

// Do implements Action.
func (a *Cordon) Do(ctx context.Context, req *Request) (Result, error) {
	if err := a.set(ctx, req.Undo["node"], true); err != nil {
		return Result{}, err
	}
	return Result{Message: fmt.Sprintf("node %s is unschedulable", req.Undo["node"])}, nil
}

// Revert implements Reverter; a node that was cordoned before stays cordoned.
func (a *Cordon) Revert(ctx context.Context, req *Request) (string, error) {
	if req.Undo["wasUnschedulable"] == "true" {
		return fmt.Sprintf("node %s was already unschedulable; left as it was", req.Undo["node"]), nil
	}
	if err := a.set(ctx, req.Undo["node"], false); err != nil {
		return "", err
	}
	return fmt.Sprintf("node %s is schedulable again", req.Undo["node"]), nil
}
