package responders

import (
	"encoding/json"
	"fmt"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// NodeResultsAnnotation holds, on an Incident, the node agent's results for
// the steps delegated to it, as a JSON object keyed by StepKey. The agent only
// writes this annotation and the Runner only writes the status, so the two
// never overwrite each other; the annotation change also wakes the
// controller's reconcile.
const NodeResultsAnnotation = "riposte.dev/node-results"

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
	if v := inc.Annotations[NodeResultsAnnotation]; v != "" {
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
