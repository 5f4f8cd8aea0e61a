package v1alpha1

// Labels and annotations riposte reads and writes on Incidents, pods and
// Leases. They are shared vocabulary: the controller, the agent, the
// admission policies in config/admission and the tests all use these names.
const (
	// RuleLabel, RuleKindLabel and RuleNamespaceLabel select the Incidents of
	// one rule. spec.rule reads namespace/name for a DetectionRule, which is
	// not a valid label value, so the namespace has a label of its own.
	RuleLabel          = "riposte.dev/rule"
	RuleKindLabel      = "riposte.dev/rule-kind"
	RuleNamespaceLabel = "riposte.dev/rule-namespace"

	// NodeLabel names the node whose agent acts for an Incident: the node of
	// its subject. Each agent watches only the Incidents labelled with its
	// own node, and the admission policy lets an agent create and report on
	// those only.
	NodeLabel = "riposte.dev/node"

	// OriginLabel says who created an Incident (an Origin). The admission
	// policy riposte-incidents keeps anyone but riposte's own ServiceAccounts
	// from claiming a riposte origin.
	OriginLabel = "riposte.dev/origin"

	// SignatureAnnotation holds the controller's HMAC over the fields of an
	// Incident that aim a response (rule, playbooks, subject): an Incident
	// the controller wrote is recognised without trusting its labels.
	SignatureAnnotation = "riposte.dev/signature"

	// ApproveAnnotation set to "true" lets steps that require approval run,
	// and lets a manual Incident run at all. Setting it needs the custom
	// verb "approve" on incidents (admission policy riposte-incidents).
	ApproveAnnotation = "riposte.dev/approve"
	// RevertAnnotation set to "true" undoes the reversible steps already
	// done. Setting it needs the custom verb "revert" on incidents.
	RevertAnnotation = "riposte.dev/revert"

	// NodeResultsAnnotation holds, on an Incident, the node agent's results
	// for the steps delegated to it (JSON keyed by step). Only the agent of
	// the Incident's node may write it.
	NodeResultsAnnotation = "riposte.dev/node-results"
	// KernelIsolationAnnotation records, on an Incident, what the agent of
	// its node attached (or released) in the kernel for its isolate step.
	KernelIsolationAnnotation = "riposte.dev/kernel-isolation"
	// IsolationFinalizer keeps an Incident that isolates a pod from going
	// away until the isolation is reverted or the pod is gone: the agents
	// hold the kernel layer from the Incident, so deleting it would free
	// the pod. While it is being deleted the isolation holds.
	IsolationFinalizer = "riposte.dev/isolation"

	// IsolateLabel selects an isolated pod for its NetworkPolicy; its value
	// is the pod's UID so one pod's policy never selects another. Only
	// riposte may set or remove it (admission policy riposte-isolation).
	IsolateLabel = "riposte.dev/isolate"
	// IsolateAllowAnnotation lists, on an isolated pod, the peers it may
	// still reach (cidr:port items), mirroring the NetworkPolicy.
	IsolateAllowAnnotation = "riposte.dev/isolate-allow"
	// QuarantinedLabel marks a pod taken out of its workload for forensics.
	QuarantinedLabel = "riposte.dev/quarantined"

	// ManagedByLabel marks objects riposte created (NetworkPolicies).
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is ManagedByLabel's value on riposte's objects.
	ManagedByValue = "riposte"

	// AgentLabel marks the agents' rollout Leases, LoadedRulesAnnotation
	// lists the rule generations an agent runs (uid=generation pairs).
	AgentLabel            = "riposte.dev/agent"
	LoadedRulesAnnotation = "riposte.dev/loaded-rules"
)

// Origin is who created an Incident.
type Origin string

// Origins.
const (
	// OriginController: the controller, from an audit event or an object.
	OriginController Origin = "controller"
	// OriginAgent: the agent of the node named by NodeLabel, from a kernel event.
	OriginAgent Origin = "agent"
	// OriginManual: a person or another tool. Its playbooks run only after
	// someone allowed to approve annotates it riposte.dev/approve=true.
	OriginManual Origin = "manual"
)

// IncidentPhase summarises an Incident's response. The Incident reconciler
// is its only writer.
type IncidentPhase string

// Incident phases.
const (
	// PhaseOpen: the Incident has no response running (no playbooks, or
	// none started yet).
	PhaseOpen IncidentPhase = "Open"
	// PhaseRefused: riposte will not run the Incident's playbooks; the
	// Authorized condition says why.
	PhaseRefused IncidentPhase = "Refused"
	// PhaseResponding: some step has not reached a final phase.
	PhaseResponding IncidentPhase = "Responding"
	// PhaseResponded: every step reached a final phase and none failed.
	PhaseResponded IncidentPhase = "Responded"
	// PhaseFailed: a step failed.
	PhaseFailed IncidentPhase = "Failed"
	// PhaseReverted: the response was undone on request.
	PhaseReverted IncidentPhase = "Reverted"
)

// Condition types and reasons of an Incident.
const (
	// AuthorizedCondition is True when riposte verified who created the
	// Incident and will run its playbooks; False says why not.
	AuthorizedCondition = "Authorized"

	// SignedReason: the controller's own Incident, its signature verified.
	SignedReason = "Signed"
	// AgentVerifiedReason: an agent's Incident whose node, subject and rule
	// the controller checked against the API server.
	AgentVerifiedReason = "AgentVerified"
	// ApprovedReason: a manual Incident approved by someone allowed to.
	ApprovedReason = "Approved"
	// AwaitingApprovalReason: a manual Incident not approved yet.
	AwaitingApprovalReason = "AwaitingApproval"
	// UnverifiedReason: the Incident claims an origin riposte cannot verify.
	UnverifiedReason = "Unverified"
	// PolicyMissingReason: the admission policy that authenticates agents and
	// approvals is not in force, so such Incidents cannot be trusted.
	PolicyMissingReason = "AdmissionPolicyMissing"
)
