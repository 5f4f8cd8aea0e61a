package responders_test

import (
	"errors"
	"testing"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/responders"
)

// TestCheckDelegatedDecidesFromTheAgentsOwnFacts: the node agent does a
// delegated step only for an authorized Incident of its node, about a pod
// and container it sees there in the same namespace, outside protected
// namespaces unless the playbook allows them, and for a host process only
// under a ClusterResponsePlaybook that allows host processes.
func TestCheckDelegatedDecidesFromTheAgentsOwnFacts(t *testing.T) {
	req := func(s v1alpha1.Subject, cluster, allowHost, allowProtected, authorized bool) *responders.Request {
		inc := &v1alpha1.Incident{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "i", Generation: 1,
			Labels: map[string]string{v1alpha1.NodeLabel: s.Node}}, Spec: v1alpha1.IncidentSpec{Subject: s}}
		if authorized {
			apimeta.SetStatusCondition(&inc.Status.Conditions, metav1.Condition{Type: v1alpha1.AuthorizedCondition, Status: metav1.ConditionTrue, Reason: "Signed"})
			inc.Status.AuthorizedGeneration = 1
		}
		pb := "kill"
		if !cluster {
			pb = "shop/kill"
		}
		return &responders.Request{Incident: inc, Playbook: pb, StepName: "kill",
			Spec: &v1alpha1.ResponsePlaybookSpec{AllowHostProcesses: allowHost, AllowProtectedNamespaces: allowProtected},
			Step: v1alpha1.Step{Action: v1alpha1.ActionKill, Kill: &v1alpha1.KillParams{Target: "process"}}}
	}
	pod := v1alpha1.Subject{Node: "n1", Namespace: "shop", Pod: "web", PodUID: "u1", ContainerID: "containerd://c1", PID: 42}
	hostProc := v1alpha1.Subject{Node: "n1", PID: 42}
	here := responders.NodeFacts{Node: "n1", PodFound: true, PodNamespace: "shop", ContainerInPod: true}
	for _, tc := range []struct {
		name  string
		req   *responders.Request
		facts responders.NodeFacts
		ok    bool
	}{
		{"the subject's container on this node", req(pod, true, false, false, true), here, true},
		{"not authorized", req(pod, true, false, false, false), here, false},
		{"another node's Incident", req(pod, true, false, false, true), responders.NodeFacts{Node: "n2", PodFound: true, PodNamespace: "shop", ContainerInPod: true}, false},
		{"the pod is not on this node", req(pod, true, false, false, true), responders.NodeFacts{Node: "n1"}, false},
		{"the pod is in another namespace here", req(pod, true, false, false, true), responders.NodeFacts{Node: "n1", PodFound: true, PodNamespace: "kube-system", ContainerInPod: true}, false},
		{"the container is not the pod's", req(pod, true, false, false, true), responders.NodeFacts{Node: "n1", PodFound: true, PodNamespace: "shop"}, false},
		{"a protected namespace", req(pod, true, false, false, true), responders.NodeFacts{Node: "n1", PodFound: true, PodNamespace: "shop", ContainerInPod: true, Protected: true}, false},
		{"a protected namespace the playbook allows", req(pod, true, false, true, true), responders.NodeFacts{Node: "n1", PodFound: true, PodNamespace: "shop", ContainerInPod: true, Protected: true}, true},
		{"a host process", req(hostProc, true, false, false, true), responders.NodeFacts{Node: "n1"}, false},
		{"a host process a namespaced playbook allows", req(hostProc, false, true, false, true), responders.NodeFacts{Node: "n1"}, false},
		{"a host process a cluster playbook allows", req(hostProc, true, true, false, true), responders.NodeFacts{Node: "n1"}, true},
		{"a container without its pod", req(v1alpha1.Subject{Node: "n1", ContainerID: "containerd://c1", PID: 42}, true, true, true, true), responders.NodeFacts{Node: "n1"}, false},
		// A pod named without its uid would otherwise pass for a host process.
		{"a pod without its uid", req(v1alpha1.Subject{Node: "n1", Namespace: "shop", Pod: "web", PID: 42}, true, true, true, true), responders.NodeFacts{Node: "n1"}, false},
		{"the admission policy is not in force", req(pod, true, false, false, true), responders.NodeFacts{Node: "n1", PodFound: true, PodNamespace: "shop", ContainerInPod: true, PolicyMissing: "the policy binding does not exist"}, false},
	} {
		err := responders.CheckDelegated(tc.req, tc.facts)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, responders.ErrNotDelegable)) {
			t.Errorf("%s: %v, want allowed %v", tc.name, err, tc.ok)
		}
	}
}
