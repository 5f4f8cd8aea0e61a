package v1alpha1

import (
	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ResponsePlaybookSpec is an ordered list of response steps and the guardrails
// that keep a response from becoming the outage.
type ResponsePlaybookSpec struct {
	// Steps run in order for each Incident the playbook is attached to.
	// +kubebuilder:validation:MinItems=1
	Steps []Step `json:"steps"`

	// DryRun records what each step would do and changes nothing.
	// +optional
	DryRun bool `json:"dryRun,omitempty"`

	// AllowProtectedNamespaces lets the playbook act in protected namespaces
	// (kube-system and the controller's own by default).
	// +optional
	AllowProtectedNamespaces bool `json:"allowProtectedNamespaces,omitempty"`

	// AllowHostProcesses lets kill steps act on processes outside any
	// container (in the kernel at exec, or delegated to the node agent).
	// Only a ClusterResponsePlaybook may set it; off, riposte acts on
	// containers only.
	// +optional
	AllowHostProcesses bool `json:"allowHostProcesses,omitempty"`

	// RateLimit bounds how many incidents per period the playbook acts on;
	// the rest are Skipped with the reason.
	// +optional
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// RateLimit allows Actions per Period.
type RateLimit struct {
	// +kubebuilder:validation:Minimum=1
	Actions int32           `json:"actions"`
	Period  metav1.Duration `json:"period"`
}

// Action names what a step does.
// +kubebuilder:validation:Enum=capture;isolate;quarantine;kill;scale;label;annotate;cordon;notify
type Action string

// Response actions.
const (
	ActionCapture    Action = "capture"
	ActionIsolate    Action = "isolate"
	ActionQuarantine Action = "quarantine"
	ActionKill       Action = "kill"
	ActionScale      Action = "scale"
	ActionLabel      Action = "label"
	ActionAnnotate   Action = "annotate"
	ActionCordon     Action = "cordon"
	ActionNotify     Action = "notify"
)

// Step is one response action with its parameters.
type Step struct {
	// Name identifies the step in the Incident status; defaults to the action.
	// +optional
	Name string `json:"name,omitempty"`

	Action Action `json:"action"`

	// RequireApproval holds the step until the Incident is annotated
	// riposte.dev/approve=true.
	// +optional
	RequireApproval bool `json:"requireApproval,omitempty"`

	// InKernel asks the node agent to enforce the step in the kernel at the
	// event itself (kill at exec), for rules the kernel can check exactly.
	// +optional
	InKernel bool `json:"inKernel,omitempty"`

	// ContinueOnError lets later steps run when this one fails.
	// +optional
	ContinueOnError bool `json:"continueOnError,omitempty"`

	// Capture parameters.
	// +optional
	Capture *CaptureParams `json:"capture,omitempty"`
	// Isolate parameters.
	// +optional
	Isolate *IsolateParams `json:"isolate,omitempty"`
	// Kill parameters.
	// +optional
	Kill *KillParams `json:"kill,omitempty"`
	// Scale parameters.
	// +optional
	Scale *ScaleParams `json:"scale,omitempty"`
	// Labels to set (label step) or annotations to set (annotate step).
	// +optional
	Values map[string]string `json:"values,omitempty"`
	// Notify parameters.
	// +optional
	Notify *NotifyParams `json:"notify,omitempty"`
}

// CaptureParams tune evidence capture.
type CaptureParams struct {
	// FlightRecorderEvents is how many of the pod's recent events to include.
	// +optional
	FlightRecorderEvents int32 `json:"flightRecorderEvents,omitempty"`
	// IncludeSecrets keeps Secret values and environment values unredacted.
	// +optional
	IncludeSecrets bool `json:"includeSecrets,omitempty"`
	// LogLines bounds the container log lines captured (default 1000).
	// +optional
	LogLines int64 `json:"logLines,omitempty"`
}

// IsolateParams list what an isolated pod may still reach.
type IsolateParams struct {
	// AllowDNS keeps UDP and TCP port 53 of the cluster DNS open: its pods,
	// cluster IPs and endpoints (the controller's --cluster-dns Service,
	// kube-system/kube-dns by default). Port 53 of other addresses stays
	// closed; without that Service the pod resolves no names.
	// +optional
	AllowDNS bool `json:"allowDNS,omitempty"`
	// AllowEgress lists CIDRs (and optional ports) still reachable, for
	// example an evidence store.
	// +optional
	AllowEgress []AllowedPeer `json:"allowEgress,omitempty"`
}

// AllowedPeer is a CIDR and optional port.
type AllowedPeer struct {
	CIDR string `json:"cidr"`
	// +optional
	Port int32 `json:"port,omitempty"`
}

// KillParams choose what to kill.
type KillParams struct {
	// Target is process (SIGKILL by the node agent), container or pod.
	// +kubebuilder:validation:Enum=process;container;pod
	Target string `json:"target"`
	// MinHealthyReplicas refuses to kill a pod when its workload would fall below it.
	// +optional
	MinHealthyReplicas *int32 `json:"minHealthyReplicas,omitempty"`
}

// ScaleParams scale the top-level workload.
type ScaleParams struct {
	// Replicas to scale to (default 0).
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// MinHealthyReplicas refuses to scale below it.
	// +optional
	MinHealthyReplicas *int32 `json:"minHealthyReplicas,omitempty"`
}

// NotifyParams send the Incident to an HTTP endpoint.
type NotifyParams struct {
	URL string `json:"url"`
	// Format is riposte (default) or falcosidekick.
	// +kubebuilder:validation:Enum=riposte;falcosidekick
	// +optional
	Format string `json:"format,omitempty"`
}

// ResponsePlaybookStatus is the observed state of a playbook.
type ResponsePlaybookStatus struct {
	meta.ReconcileRequestStatus `json:",inline"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=rp;playbook,categories=riposte
// +kubebuilder:printcolumn:name="Steps",type=string,JSONPath=`.spec.steps[*].action`
// +kubebuilder:printcolumn:name="DryRun",type=boolean,JSONPath=`.spec.dryRun`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ResponsePlaybook is a playbook that acts only in its own namespace.
type ResponsePlaybook struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ResponsePlaybookSpec   `json:"spec,omitempty"`
	Status ResponsePlaybookStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (in *ResponsePlaybook) GetConditions() []metav1.Condition { return in.Status.Conditions }

// SetConditions replaces the status conditions.
func (in *ResponsePlaybook) SetConditions(c []metav1.Condition) { in.Status.Conditions = c }

// +kubebuilder:object:root=true

// ResponsePlaybookList is a list of ResponsePlaybooks.
type ResponsePlaybookList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ResponsePlaybook `json:"items"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=crp;cplaybook,categories=riposte
// +kubebuilder:printcolumn:name="Steps",type=string,JSONPath=`.spec.steps[*].action`
// +kubebuilder:printcolumn:name="DryRun",type=boolean,JSONPath=`.spec.dryRun`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ClusterResponsePlaybook is a playbook that may act in any namespace.
type ClusterResponsePlaybook struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ResponsePlaybookSpec   `json:"spec,omitempty"`
	Status ResponsePlaybookStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (in *ClusterResponsePlaybook) GetConditions() []metav1.Condition { return in.Status.Conditions }

// SetConditions replaces the status conditions.
func (in *ClusterResponsePlaybook) SetConditions(c []metav1.Condition) { in.Status.Conditions = c }

// +kubebuilder:object:root=true

// ClusterResponsePlaybookList is a list of ClusterResponsePlaybooks.
type ClusterResponsePlaybookList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterResponsePlaybook `json:"items"`
}
