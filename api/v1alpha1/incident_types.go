package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// IncidentSpec says which rule matched what.
type IncidentSpec struct {
	// Rule is the rule that matched, as name or namespace/name.
	Rule string `json:"rule"`
	// RuleKind is DetectionRule or ClusterDetectionRule.
	RuleKind string `json:"ruleKind"`
	// +kubebuilder:validation:Enum=info;low;medium;high;critical
	Severity string `json:"severity"`
	// +optional
	Tags []string `json:"tags,omitempty"`
	// Output is the rule's output for the first match.
	// +optional
	Output string `json:"output,omitempty"`
	// Subject is what the incident is about.
	Subject Subject `json:"subject"`
	// Playbooks to run, resolved when the incident was created.
	// +optional
	Playbooks []PlaybookRef `json:"playbooks,omitempty"`
	// ThrottleKey identifies the subject for deduplication.
	// +optional
	ThrottleKey string `json:"throttleKey,omitempty"`
}

// PlaybookRef names a playbook.
type PlaybookRef struct {
	// Kind is ResponsePlaybook or ClusterResponsePlaybook.
	Kind string `json:"kind"`
	Name string `json:"name"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// Subject is the pod, workload, node, container, process or user an incident is about.
type Subject struct {
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// +optional
	Pod string `json:"pod,omitempty"`
	// +optional
	PodUID string `json:"podUID,omitempty"`
	// +optional
	Container string `json:"container,omitempty"`
	// +optional
	ContainerID string `json:"containerID,omitempty"`
	// +optional
	Image string `json:"image,omitempty"`
	// +optional
	ImageDigest string `json:"imageDigest,omitempty"`
	// +optional
	WorkloadKind string `json:"workloadKind,omitempty"`
	// +optional
	WorkloadName string `json:"workloadName,omitempty"`
	// +optional
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// +optional
	Node string `json:"node,omitempty"`
	// +optional
	PID int64 `json:"pid,omitempty"`
	// +optional
	Binary string `json:"binary,omitempty"`
	// User is the Kubernetes user of an audit event.
	// +optional
	User string `json:"user,omitempty"`
	// Verb, Resource and Subresource of an audit event.
	// +optional
	Verb string `json:"verb,omitempty"`
	// +optional
	Resource string `json:"resource,omitempty"`
	// +optional
	Subresource string `json:"subresource,omitempty"`
	// SourceIPs of an audit event.
	// +optional
	SourceIPs []string `json:"sourceIPs,omitempty"`
	// Origin is how the process's tree entered its container, as the
	// node's kernel saw it (process.origin): entrypoint, exec, or empty
	// when unknown.
	// +optional
	Origin string `json:"origin,omitempty"`
	// OriginPID is the process that entered the container and OriginTime
	// when it did: the exec'd command for origin exec.
	// +optional
	OriginPID int64 `json:"originPID,omitempty"`
	// +optional
	OriginTime *metav1.Time `json:"originTime,omitempty"`
	// OriginCommand is the argument list the process that entered the
	// container ran, when the agent knew it (bounded).
	// +optional
	OriginCommand []string `json:"originCommand,omitempty"`
}

// TimelineEntry is one event of a container's flight recorder.
type TimelineEntry struct {
	Time metav1.MicroTime `json:"time"`
	// Kind is the event kind: exec, open, connect, ...
	Kind string `json:"kind"`
	PID  int64  `json:"pid,omitempty"`
	PPID int64  `json:"ppid,omitempty"`
	// +optional
	Binary string `json:"binary,omitempty"`
	// +optional
	Args []string `json:"args,omitempty"`
	// +optional
	Origin string `json:"origin,omitempty"`
	// Path of an open.
	// +optional
	Path string `json:"path,omitempty"`
	// Peer of a connection, ip:port.
	// +optional
	Peer string `json:"peer,omitempty"`
}

// Session origins (Session.Origin).
const (
	SessionEntrypoint = "entrypoint"
	SessionExec       = "exec"
	SessionUnknown    = "unknown"
)

// Session says who is behind the process an Incident is about: for a
// process below a runtime exec, the API server's exec request that started
// it (from the authenticated audit webhook), or why there is none. The
// controller writes it; nothing a container does can set it.
type Session struct {
	// Origin is entrypoint, exec or unknown (Subject.Origin).
	Origin string `json:"origin"`
	// User is the user the API server authenticated for the exec (the
	// impersonated user when there was one; ImpersonatedBy is then who
	// impersonated). Empty when no API server exec is behind the process.
	// +optional
	User string `json:"user,omitempty"`
	// +optional
	UID string `json:"uid,omitempty"`
	// +optional
	Groups []string `json:"groups,omitempty"`
	// +optional
	ImpersonatedBy string `json:"impersonatedBy,omitempty"`
	// SourceIPs as the audit event lists them; only the last entry is the
	// connection's address, the others come from X-Forwarded-For.
	// +optional
	SourceIPs []string `json:"sourceIPs,omitempty"`
	// +optional
	UserAgent string `json:"userAgent,omitempty"`
	// +optional
	AuditID string `json:"auditID,omitempty"`
	// Verb and Subresource of the request: create or get (the WebSocket
	// form) of exec or attach.
	// +optional
	Verb string `json:"verb,omitempty"`
	// +optional
	Subresource string `json:"subresource,omitempty"`
	// Command is the request's command query parameters.
	// +optional
	Command []string `json:"command,omitempty"`
	// Container is the request's container query parameter.
	// +optional
	Container string `json:"container,omitempty"`
	// RequestReceived is when the API server received the request.
	// +optional
	RequestReceived *metav1.Time `json:"requestReceived,omitempty"`
	// Candidates is how many API server execs matched the process; more
	// than one from different users names nobody.
	// +optional
	Candidates int32 `json:"candidates,omitempty"`
	// Message explains a session without a user.
	// +optional
	Message string `json:"message,omitempty"`
}

// StepPhase is where a response step stands.
// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed;Skipped;DryRun;AwaitingApproval;Reverted
type StepPhase string

// Step phases.
const (
	StepPending          StepPhase = "Pending"
	StepRunning          StepPhase = "Running"
	StepSucceeded        StepPhase = "Succeeded"
	StepFailed           StepPhase = "Failed"
	StepSkipped          StepPhase = "Skipped"
	StepDryRun           StepPhase = "DryRun"
	StepAwaitingApproval StepPhase = "AwaitingApproval"
	StepReverted         StepPhase = "Reverted"
)

// StepStatus records one step of a playbook run.
type StepStatus struct {
	Playbook string    `json:"playbook"`
	Name     string    `json:"name"`
	Action   Action    `json:"action"`
	Phase    StepPhase `json:"phase"`
	// +optional
	Message string `json:"message,omitempty"`
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// +optional
	FinishedAt *metav1.Time `json:"finishedAt,omitempty"`
	// Undo holds what revert needs (for example previous replicas), as key/value pairs.
	// +optional
	Undo map[string]string `json:"undo,omitempty"`
}

// Evidence is a captured bundle.
type Evidence struct {
	// Location of the bundle (node:path or URL).
	Location string `json:"location"`
	// ManifestSHA256 is the SHA-256 of the bundle's manifest, which lists every file's hash.
	ManifestSHA256 string `json:"manifestSHA256"`
	// Files is how many files the bundle holds.
	// +optional
	Files int32 `json:"files,omitempty"`
	// +optional
	CapturedAt *metav1.Time `json:"capturedAt,omitempty"`
}

// IncidentStatus is what happened since the first match.
type IncidentStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Count of matches folded into this incident.
	// +optional
	Count int64 `json:"count,omitempty"`
	// +optional
	FirstSeen *metav1.Time `json:"firstSeen,omitempty"`
	// +optional
	LastSeen *metav1.Time `json:"lastSeen,omitempty"`
	// SampleEvents are the first matched events in their JSON form (bounded).
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	SampleEvents []runtime.RawExtension `json:"sampleEvents,omitempty"`
	// Steps records every response step.
	// +optional
	Steps []StepStatus `json:"steps,omitempty"`
	// Evidence lists captured bundles.
	// +optional
	Evidence []Evidence `json:"evidence,omitempty"`
	// Timeline is what the subject's container did before the first match,
	// oldest first, as the agent's flight recorder kept it (bounded).
	// +optional
	Timeline []TimelineEntry `json:"timeline,omitempty"`
	// Session is who is behind the subject's process (container Incidents
	// of an agent).
	// +optional
	Session *Session `json:"session,omitempty"`
	// Phase summarises the response: Open, Refused, Responding, Responded,
	// Failed or Reverted.
	// +optional
	Phase IncidentPhase `json:"phase,omitempty"`
	// AuthorizedGeneration is the metadata.generation whose spec the
	// Authorized condition was decided for.
	// +optional
	AuthorizedGeneration int64 `json:"authorizedGeneration,omitempty"`
	// AuthorizationSignature is the controller's signature of its decision
	// (the Incident's uid, the generation, the Authorized status and
	// reason): a restarted controller trusts a recorded decision only with
	// it, so whoever else may write status cannot authorize an Incident.
	// +optional
	AuthorizationSignature string `json:"authorizationSignature,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=inc,categories=riposte
// +kubebuilder:printcolumn:name="Severity",type=string,JSONPath=`.spec.severity`
// +kubebuilder:printcolumn:name="Rule",type=string,JSONPath=`.spec.rule`
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.spec.subject.pod`
// +kubebuilder:printcolumn:name="User",type=string,JSONPath=`.spec.subject.user`
// +kubebuilder:printcolumn:name="Session",type=string,JSONPath=`.status.session.user`
// +kubebuilder:printcolumn:name="Count",type=integer,JSONPath=`.status.count`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Last Seen",type=date,JSONPath=`.status.lastSeen`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// Incident is a rule match (or a run of deduplicated matches) and the response to it.
type Incident struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IncidentSpec   `json:"spec,omitempty"`
	Status IncidentStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (in *Incident) GetConditions() []metav1.Condition { return in.Status.Conditions }

// SetConditions replaces the status conditions.
func (in *Incident) SetConditions(c []metav1.Condition) { in.Status.Conditions = c }

// +kubebuilder:object:root=true

// IncidentList is a list of Incidents.
type IncidentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Incident `json:"items"`
}
