package responders

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Kill stops the subject: its process (SIGKILL by the node agent), its
// container (the container's cgroup killed by the node agent) or its pod
// (deleted with grace period 0). Killing is not revertible.
type Kill struct {
	Client client.Client
	// Node performs process and container kills; nil makes them fail with the reason.
	Node Node
}

func killTarget(req *Request) string {
	if req.Step.Kill != nil && req.Step.Kill.Target != "" {
		return req.Step.Kill.Target
	}
	return "pod"
}

// Plan implements Action.
func (a *Kill) Plan(ctx context.Context, req *Request) (string, error) {
	s := req.Subject()
	switch t := killTarget(req); t {
	case "process":
		return fmt.Sprintf("SIGKILL process %d (%s) in container %s of pod %s/%s", s.PID, s.Binary, s.ContainerID, s.Namespace, s.Pod), nil
	case "container":
		return fmt.Sprintf("kill container %s (%s) of pod %s/%s", s.Container, s.ContainerID, s.Namespace, s.Pod), nil
	default:
		return fmt.Sprintf("delete pod %s/%s with grace period 0", s.Namespace, s.Pod), nil
	}
}

// Prepare checks minHealthyReplicas before anything is killed, and marks a
// process or container kill for the node agent when this process has no Node.
func (a *Kill) Prepare(ctx context.Context, req *Request) (map[string]string, error) {
	var undo map[string]string
	if t := killTarget(req); a.Node == nil && (t == "process" || t == "container") {
		if req.Subject().Node == "" {
			return nil, refused("the incident's subject names no node to kill the %s on", t)
		}
		undo = map[string]string{UndoNode: "delegated", "target": t}
	}
	if req.Step.Kill == nil || req.Step.Kill.MinHealthyReplicas == nil {
		return undo, nil
	}
	p, err := pod(ctx, a.Client, req.Subject())
	if err != nil {
		return nil, err
	}
	ready, err := readyReplicas(ctx, a.Client, p)
	if err != nil {
		return nil, err
	}
	// Killing a pod that is not ready does not lower the healthy count.
	after := ready
	if podReady(p) {
		after--
	}
	if min := *req.Step.Kill.MinHealthyReplicas; after < min {
		return nil, refused("killing pod %s/%s would leave %d ready replicas, below minHealthyReplicas %d", p.Namespace, p.Name, after, min)
	}
	return undo, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readyReplicas counts the ready replicas of the pod's controller.
func readyReplicas(ctx context.Context, c client.Reader, p *corev1.Pod) (int32, error) {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		if podReady(p) {
			return 1, nil
		}
		return 0, nil
	}
	key := client.ObjectKey{Namespace: p.Namespace, Name: ref.Name}
	switch ref.Kind {
	case "ReplicaSet":
		var rs appsv1.ReplicaSet
		if err := c.Get(ctx, key, &rs); err != nil {
			return 0, fmt.Errorf("get ReplicaSet %s: %w", key, err)
		}
		return rs.Status.ReadyReplicas, nil
	case "StatefulSet":
		var ss appsv1.StatefulSet
		if err := c.Get(ctx, key, &ss); err != nil {
			return 0, fmt.Errorf("get StatefulSet %s: %w", key, err)
		}
		return ss.Status.ReadyReplicas, nil
	case "DaemonSet":
		var ds appsv1.DaemonSet
		if err := c.Get(ctx, key, &ds); err != nil {
			return 0, fmt.Errorf("get DaemonSet %s: %w", key, err)
		}
		return ds.Status.NumberReady, nil
	}
	return 0, fmt.Errorf("cannot count ready replicas of %s %s", ref.Kind, key)
}

// Do implements Action.
func (a *Kill) Do(ctx context.Context, req *Request) (Result, error) {
	s := req.Subject()
	switch t := killTarget(req); t {
	case "process", "container":
		if a.Node != nil {
			return a.DoOnNode(ctx, req)
		}
		if req.Undo[UndoNode] != "delegated" {
			return Result{}, fmt.Errorf("kill %s: no node agent in this process", t)
		}
		res, ok := nodeResult(req)
		switch {
		case !ok:
			return Result{Message: waitingFor(req)}, ErrWaiting
		case res.Error != "":
			return Result{}, fmt.Errorf("node %s: %s", s.Node, res.Error)
		}
		return Result{Message: fmt.Sprintf("node %s: %s", s.Node, res.Message)}, nil
	case "pod":
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Pod}}
		opts := []client.DeleteOption{client.GracePeriodSeconds(0)}
		if s.PodUID != "" {
			// Never delete a newer pod that took the same name.
			uid := types.UID(s.PodUID)
			opts = append(opts, client.Preconditions{UID: &uid})
		}
		err := a.Client.Delete(ctx, p, opts...)
		switch {
		case err == nil:
			return Result{Message: fmt.Sprintf("pod %s/%s deleted with grace period 0", s.Namespace, s.Pod)}, nil
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			return Result{Message: fmt.Sprintf("pod %s/%s (uid %s) is already gone", s.Namespace, s.Pod, s.PodUID)}, nil
		}
		return Result{}, fmt.Errorf("delete pod %s/%s: %w", s.Namespace, s.Pod, err)
	default:
		return Result{}, fmt.Errorf("unknown kill target %q", t)
	}
}

// DoOnNode implements NodeAction: the process or container kill itself,
// on the node the subject runs on. The controller delegates it to that
// node's agent; `riposte run` calls it on its own host.
func (a *Kill) DoOnNode(ctx context.Context, req *Request) (Result, error) {
	s := req.Subject()
	if a.Node == nil {
		return Result{}, errors.New("no node agent in this process")
	}
	switch t := killTarget(req); t {
	case "process":
		if s.PID <= 0 {
			return Result{}, refused("the incident's subject names no process")
		}
		if err := a.Node.KillProcess(ctx, req.Target()); errors.Is(err, ErrGone) {
			return Result{Message: fmt.Sprintf("process %d (%s) already gone: exited, or killed in the kernel at exec", s.PID, s.Binary)}, nil
		} else if err != nil {
			return Result{}, fmt.Errorf("kill process %d: %w", s.PID, err)
		}
		return Result{Message: fmt.Sprintf("process %d (%s) killed with SIGKILL", s.PID, s.Binary)}, nil
	case "container":
		if s.ContainerID == "" {
			return Result{}, refused("the incident's subject names no container")
		}
		if err := a.Node.KillContainer(ctx, s.PodUID, s.ContainerID); err != nil {
			return Result{}, fmt.Errorf("kill container %s: %w", s.ContainerID, err)
		}
		return Result{Message: fmt.Sprintf("container %s (%s) killed through cgroup.kill", s.Container, s.ContainerID)}, nil
	}
	return Result{}, fmt.Errorf("kill target %q is not a node's to kill", killTarget(req))
}
