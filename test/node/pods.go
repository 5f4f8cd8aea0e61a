package node

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/test/proc"
)

// PrepareSpec makes a pod spec runnable on this node: bound to it (there is
// no scheduler), images never pulled (there is no registry), the host's DNS
// (there is no cluster DNS), and no ServiceAccount token unless asked for
// (its volume needs kube-root-ca.crt, which only kube-controller-manager
// publishes). Containers without an image get BusyboxImage. Use it for the
// pod templates of Deployments too.
func PrepareSpec(spec *corev1.PodSpec) {
	spec.NodeName = Name
	spec.DNSPolicy = corev1.DNSDefault
	if spec.AutomountServiceAccountToken == nil {
		spec.AutomountServiceAccountToken = new(bool)
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			if cs[i].Image == "" {
				cs[i].Image = BusyboxImage
			}
			cs[i].ImagePullPolicy = corev1.PullNever
		}
	}
}

// EnsureNamespace creates the namespace and its default ServiceAccount
// (pods are refused until it exists; without kube-controller-manager
// nothing else creates it).
func (n *Node) EnsureNamespace(ctx context.Context, namespace string) error {
	return n.Cluster.EnsureServiceAccount(ctx, namespace, "default")
}

// RunPod prepares the pod (PrepareSpec), creates it and its namespace, and
// waits until it is Running with every container started.
func (n *Node) RunPod(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	if pod.Namespace == "" {
		pod.Namespace = "default"
	}
	if err := n.EnsureNamespace(ctx, pod.Namespace); err != nil {
		return nil, err
	}
	PrepareSpec(&pod.Spec)
	if _, err := n.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return n.WaitRunning(ctx, pod.Namespace, pod.Name)
}

// WaitRunning waits until the pod is Running with every container started,
// and fails early when it cannot get there (it ended, or a container waits
// for a reason that retrying does not fix, e.g. ErrImageNeverPull).
func (n *Node) WaitRunning(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	last := "not found"
	for {
		pod, err := n.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			ok, why, fatal := running(pod)
			if ok {
				return pod, nil
			}
			if fatal {
				return nil, fmt.Errorf("pod %s/%s cannot run: %s\n%s", namespace, name, why, n.logTails())
			}
			last = why
		case !apierrors.IsNotFound(err):
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for pod %s/%s Running: %w (last: %s)\n%s", namespace, name, ctx.Err(), last, n.logTails())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// running says whether every container of the pod runs, else why not, and
// whether that is final.
func running(pod *corev1.Pod) (ok bool, why string, fatal bool) {
	switch pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return false, fmt.Sprintf("phase %s: %s %s", pod.Status.Phase, pod.Status.Reason, pod.Status.Message), true
	case corev1.PodRunning:
	default:
		why = "phase " + string(pod.Status.Phase)
	}
	if len(pod.Status.ContainerStatuses) < len(pod.Spec.Containers) {
		return false, why + ", containers not reported yet", false
	}
	var waiting []string
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			waiting = append(waiting, fmt.Sprintf("%s waiting: %s %s", cs.Name, w.Reason, w.Message))
			switch w.Reason {
			case "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff":
				fatal = true
			}
		} else if cs.State.Running == nil {
			waiting = append(waiting, cs.Name+" not running")
		}
	}
	if pod.Status.Phase == corev1.PodRunning && len(waiting) == 0 {
		return true, "", false
	}
	return false, strings.TrimPrefix(why+", "+strings.Join(waiting, ", "), ", "), fatal
}

// Exec runs a command in the pod's first container (or the one named by a
// "container/" prefix of pod, e.g. "app/web-1") with kubectl exec, through
// kube-apiserver and the kubelet as a user would, and returns its stdout.
// A failure carries stderr.
func (n *Node) Exec(ctx context.Context, namespace, pod string, command ...string) ([]byte, error) {
	args := []string{"exec", "-n", namespace}
	if c, p, ok := strings.Cut(pod, "/"); ok {
		args = append(args, "-c", c)
		pod = p
	}
	args = append(append(args, pod, "--"), command...)
	cmd := n.Cluster.Kubectl(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// logTails is the end of the kubelet's and containerd's logs, for errors.
func (n *Node) logTails() string {
	var parts []string
	for _, p := range []*proc.Process{n.kubelet, n.containerd} {
		if p != nil {
			parts = append(parts, p.Tail(15))
		}
	}
	return strings.Join(parts, "\n")
}
