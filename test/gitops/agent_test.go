package gitops

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/internal/rollout"
	"github.com/riposte-dev/riposte/test/proc"
	"github.com/riposte-dev/riposte/test/stack"
)

// agentNode is the node name the agent reports its Lease under.
const agentNode = "gitops-node"

// startAgent builds cmd/riposte and runs `riposte agent` on this host (root
// and eBPF: it attaches the real sensors) with a kubeconfig holding a token
// of the riposte-agent ServiceAccount bound to the Node object agentNode,
// i.e. exactly config/rbac/agent.yaml and a node identity. It watches the
// live rules and reports what it loaded in its Lease, which the controller
// sums into each node rule's status.nodes. It is stopped at cleanup.
// Everything about how the agent is started is here.
func startAgent(ctx context.Context, t *testing.T, s *stack.Stack) {
	t.Helper()
	dir := t.TempDir()
	bin := buildRiposte(ctx, t, s.Root)
	if err := s.Client.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: agentNode}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cfg, err := s.Cluster.NodeServiceAccountConfig(ctx, stack.Namespace, "riposte-agent", agentNode)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "agent.kubeconfig")
	if err := writeKubeconfig(kubeconfig, cfg, "riposte-agent"); err != nil {
		t.Fatal(err)
	}
	p, err := proc.Start(dir, "riposte-agent", bin, []string{"agent", "--node", agentNode, "--namespace", stack.Namespace,
		"--metrics-addr", "0", "--health-addr", "0", "--evidence-dir", filepath.Join(dir, "evidence"), "--pin-dir", ""},
		[]string{"KUBECONFIG=" + kubeconfig})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(15 * time.Second)
		if t.Failed() {
			t.Logf("%s", p.Tail(30))
		}
	})
	// Up once its Lease exists: the reporter writes it right after the
	// sensors are attached and the first rule read.
	waitFor(ctx, t, "the agent's Lease", func() (bool, string) {
		if done, err := p.Exited(); done {
			t.Fatal(p.Failure("start riposte agent", err))
		}
		var lease coordinationv1.Lease
		err := s.Client.Get(ctx, client.ObjectKey{Namespace: stack.Namespace, Name: rollout.LeaseName(agentNode)}, &lease)
		return err == nil, fmt.Sprint(err)
	})
}
