package responders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// NodeResult is the agent's report of a delegated step.
type NodeResult struct {
	Message string `json:"message,omitempty"`
	// Error is set when the agent could not do the step.
	Error    string             `json:"error,omitempty"`
	Evidence *v1alpha1.Evidence `json:"evidence,omitempty"`
}

// Undo keys of a delegated step.
const (
	// UndoNode is "delegated" on a step whose node part the agent does.
	UndoNode = "node"
)

// StepKey names a step across an Incident's playbooks.
func StepKey(playbook, step string) string { return playbook + "#" + step }

// NodeResults decodes the annotation; a malformed one reads as empty, since
// the agent rewrites it whole.
func NodeResults(inc *v1alpha1.Incident) map[string]NodeResult {
	out := map[string]NodeResult{}
	if v := inc.Annotations[v1alpha1.NodeResultsAnnotation]; v != "" {
		_ = json.Unmarshal([]byte(v), &out)
	}
	return out
}

// nodeResult returns the agent's result for req's step, if any.
func nodeResult(req *Request) (NodeResult, bool) {
	r, ok := NodeResults(req.Incident)[StepKey(req.Playbook, req.StepName)]
	return r, ok
}

func waitingFor(req *Request) string {
	return fmt.Sprintf("waiting for the riposte agent on node %q", req.Subject().Node)
}

// NodeAction is implemented by actions whose work happens on the subject's
// node: the kill of a process or container, the node bundle of a capture.
// The controller delegates it to that node's agent (RunDelegated); `riposte
// run` calls it on its own host.
type NodeAction interface {
	DoOnNode(ctx context.Context, req *Request) (Result, error)
}

// NodeFacts is what a node agent itself knows about the subject of a
// delegated step, from its own view of the pods on its node, not from the
// Incident: whoever wrote the Incident chose its subject.
type NodeFacts struct {
	// Node is the agent's node.
	Node string
	// PodFound: a pod with the subject's uid runs on this node, in
	// PodNamespace.
	PodFound     bool
	PodNamespace string
	// ContainerInPod: the subject's container is one of that pod's.
	ContainerInPod bool
	// Protected: the pod's namespace is protected on this agent.
	Protected bool
	// PolicyMissing says why the admission policy that keeps Incidents'
	// status the controller's is not in force ("" when it is): without it,
	// anyone who may write status could mark an Incident authorized.
	PolicyMissing string
}

// ErrNotDelegable marks a delegated step the node agent refuses to do.
var ErrNotDelegable = errors.New("refused by the node agent")

// CheckDelegated decides whether the agent of facts.Node may do req's step
// for the controller: only for an Incident riposte authorized, only for the
// subject the controller recorded and only on this node, only within the
// subject's container (or pod), never in a protected namespace unless the
// playbook allows it, and never for a host process unless a
// ClusterResponsePlaybook allows host processes.
func CheckDelegated(req *Request, facts NodeFacts) error {
	inc, s := req.Incident, req.Subject()
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrNotDelegable, fmt.Sprintf(format, args...))
	}
	if !Authorized(inc) {
		return refuse("incident %s/%s is not authorized for a response", inc.Namespace, inc.Name)
	}
	if facts.PolicyMissing != "" {
		return refuse("the admission policy that guards Incidents is not in force (%s), so their Authorized condition may not be the controller's", facts.PolicyMissing)
	}
	if s.Node != facts.Node || inc.Labels[v1alpha1.NodeLabel] != facts.Node {
		return refuse("the step is for node %q (label %q), this agent runs on %q", s.Node, inc.Labels[v1alpha1.NodeLabel], facts.Node)
	}
	if req.Spec == nil {
		return refuse("playbook %s not found", req.Playbook)
	}
	switch {
	case s.PodUID != "":
		if !facts.PodFound {
			return refuse("pod %s (uid %s) does not run on node %s", s.Pod, s.PodUID, facts.Node)
		}
		if facts.PodNamespace != s.Namespace {
			return refuse("pod uid %s is in namespace %q here, the incident says %q", s.PodUID, facts.PodNamespace, s.Namespace)
		}
		if s.ContainerID != "" && !facts.ContainerInPod {
			return refuse("container %s is not a container of pod %s on this node", s.ContainerID, s.PodUID)
		}
		if facts.Protected && !req.Spec.AllowProtectedNamespaces {
			return refuse("namespace %q is protected; the playbook does not set allowProtectedNamespaces", facts.PodNamespace)
		}
	case s.ContainerID != "":
		return refuse("the subject names container %s but no pod", s.ContainerID)
	case s.Namespace != "" || s.Pod != "":
		return refuse("the subject names pod %s/%s without its uid; a node acts only on a pod it can check", s.Namespace, s.Pod)
	case !req.Target().Host:
		return refuse("the subject is a host process; only a ClusterResponsePlaybook with allowHostProcesses may act on one")
	}
	return nil
}

// RunDelegated checks a delegated step (CheckDelegated) and does its node
// part through the same action the controller would run with a Node. Every
// outcome, refusals included, is a result to report.
func RunDelegated(ctx context.Context, actions Actions, req *Request, facts NodeFacts) NodeResult {
	if err := CheckDelegated(req, facts); err != nil {
		return NodeResult{Error: err.Error()}
	}
	act, ok := actions[req.Step.Action].(NodeAction)
	if !ok {
		return NodeResult{Error: fmt.Sprintf("step %s (%s) has no node part", req.StepName, req.Step.Action)}
	}
	res, err := act.DoOnNode(ctx, req)
	if err != nil {
		return NodeResult{Error: err.Error()}
	}
	return NodeResult{Message: res.Message, Evidence: res.Evidence}
}

// Authorized reports whether riposte decided to run the Incident's
// playbooks for its current spec (the Authorized condition, written only by
// the controller).
func Authorized(inc *v1alpha1.Incident) bool {
	c := apimeta.FindStatusCondition(inc.Status.Conditions, v1alpha1.AuthorizedCondition)
	return c != nil && c.Status == metav1.ConditionTrue && inc.Status.AuthorizedGeneration == inc.Generation
}
