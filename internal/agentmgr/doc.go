// Package agentmgr runs riposte's node agent in a cluster, as
// internal/controllermgr runs the controller: a controller-runtime manager
// whose cache watches the rules, the playbooks and the Incidents labelled
// with this node, the pod identity source, and, unless only its Kubernetes
// half runs, the eBPF sensors (internal/agent) and the node responders
// (responders/node).
//
// Nothing is polled. A rule is compiled once per generation and the kernel
// filter, kill sets and matcher change only when the live set does; the
// steps the controller delegates to this node arrive with the Incident
// watch; kernel isolation follows the Incidents and riposte's pod labels as
// they change. At steady state the agent's only requests are its Lease
// renewals and the watches' reconnections.
package agentmgr
