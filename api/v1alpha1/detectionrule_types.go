package v1alpha1

import (
	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// DetectionRuleSpec is a detection rule: a CEL condition over riposte events
// (or a sequence of them), with exceptions, an output line, throttling, the
// playbooks to run on a match and the tests that must pass before the rule
// goes live.
// +kubebuilder:validation:XValidation:rule="has(self.condition) != has(self.sequence)",message="set exactly one of condition and sequence"
type DetectionRuleSpec struct {
	// Source selects the events the rule sees.
	// +kubebuilder:validation:Enum=process;file;network;audit;object
	Source string `json:"source"`

	// Severity of a match.
	// +kubebuilder:validation:Enum=info;low;medium;high;critical
	Severity string `json:"severity"`

	// Description explains to an analyst what a match means and what to check.
	// +optional
	Description string `json:"description,omitempty"`

	// Tags classify the rule, for example mitre:T1059.004.
	// +optional
	Tags []string `json:"tags,omitempty"`

	// Condition is a CEL expression over the event variables (event, process,
	// container, pod, workload, node, file, net, syscall, audit, object) that
	// is true when the rule matches. A rule has a condition or a sequence.
	// +kubebuilder:validation:MinLength=1
	// +optional
	Condition string `json:"condition,omitempty"`

	// Sequence makes the rule match an ordered chain of events that share a
	// correlation key within a window, instead of one event. Exceptions and
	// the output apply to the event that completes the chain.
	// +optional
	Sequence *Sequence `json:"sequence,omitempty"`

	// Exceptions are named CEL conditions; a match that satisfies any of them
	// is dropped.
	// +optional
	Exceptions []Exception `json:"exceptions,omitempty"`

	// Output is a CEL expression of type string describing a match. Empty
	// means the rule name.
	// +optional
	Output string `json:"output,omitempty"`

	// Throttle limits how often the rule reports the same subject.
	// +optional
	Throttle *Throttle `json:"throttle,omitempty"`

	// Playbooks names the response playbooks to run on a match: in the rule's
	// namespace for a DetectionRule, ClusterResponsePlaybooks for a
	// ClusterDetectionRule.
	// +optional
	Playbooks []string `json:"playbooks,omitempty"`

	// Suspend keeps the rule out of the live rule set.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// Tests run before the rule goes live; a failing test stalls the rule.
	// +optional
	Tests []RuleTest `json:"tests,omitempty"`
}

// Exception drops matches for which its condition is true.
type Exception struct {
	// Name says why the exception exists.
	Name string `json:"name"`
	// Condition is a CEL expression over the same variables as the rule.
	Condition string `json:"condition"`
}

// Sequence is an ordered chain of steps: the rule matches when events
// satisfying each step, in order and with the same key, all happen within
// Window of the first.
type Sequence struct {
	// Key lists CEL expressions whose values together correlate the steps'
	// events, for example container.id, pod.uid or audit.user.username.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=4
	Key []string `json:"key"`
	// Window is how long after the first step's event the last step may
	// happen.
	Window metav1.Duration `json:"window"`
	// Steps are matched in this order.
	// +kubebuilder:validation:MinItems=2
	// +kubebuilder:validation:MaxItems=8
	Steps []SequenceStep `json:"steps"`
	// MaxKeys bounds how many keys may have a chain in progress at once;
	// when full, the key seen least recently is evicted (and counted).
	// Zero means 1024.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65536
	// +optional
	MaxKeys int32 `json:"maxKeys,omitempty"`
}

// SequenceStep is one step of a sequence.
type SequenceStep struct {
	// Name says what the step is, for example download or chmod.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Source selects the events the step sees; empty means the rule's.
	// +kubebuilder:validation:Enum=process;file;network;audit;object
	// +optional
	Source string `json:"source,omitempty"`
	// Condition is a CEL expression over the event variables that is true
	// for an event of this step.
	// +kubebuilder:validation:MinLength=1
	Condition string `json:"condition"`
	// Key, when set, replaces the sequence's key for this step's events: as
	// many expressions, whose values must equal the other steps' keys (for
	// example file.path for a download, process.binary for its exec).
	// +kubebuilder:validation:MaxItems=4
	// +optional
	Key []string `json:"key,omitempty"`
}

// Throttle reports the first match per key and counts the rest for Window.
type Throttle struct {
	// Window is how long matches with the same key are folded into one.
	Window metav1.Duration `json:"window"`
	// Key lists CEL expressions whose values together identify a subject,
	// for example pod.uid and process.binary. Empty means one key per rule.
	// +optional
	Key []string `json:"key,omitempty"`
}

// RuleTest is one embedded test: an event (a list of events for a sequence
// rule) and whether the rule must match it.
type RuleTest struct {
	// Name describes the case.
	Name string `json:"name"`
	// Event is a riposte event in its JSON form (docs/events.md).
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	Event runtime.RawExtension `json:"event,omitzero"`
	// Events are the events a sequence rule is given, in order; the test
	// expects a match when the sequence completes on any of them.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Events []runtime.RawExtension `json:"events,omitempty"`
	// Expect is match or noMatch.
	// +kubebuilder:validation:Enum=match;noMatch
	Expect string `json:"expect"`
	// Output, when set, must equal the rule's output for the event.
	// +optional
	Output string `json:"output,omitempty"`
}

// Test expectations.
const (
	ExpectMatch   = "match"
	ExpectNoMatch = "noMatch"
)

// DetectionRuleStatus is the observed state of a rule.
type DetectionRuleStatus struct {
	meta.ReconcileRequestStatus `json:",inline"`

	// ObservedGeneration is the last generation reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready, Reconciling, Stalled.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// EstimatedCost is the CEL cost estimate of the condition (worst case).
	// +optional
	EstimatedCost uint64 `json:"estimatedCost,omitempty"`

	// Prefilter describes the necessary condition checked in the kernel.
	// +optional
	Prefilter string `json:"prefilter,omitempty"`

	// Nodes is how many agents run this generation of the rule, as loaded/total.
	// +optional
	Nodes string `json:"nodes,omitempty"`

	// Matches is the sum of the counts of the rule's Incidents (those not
	// deleted): how often it fired, folded matches included.
	// +optional
	Matches int64 `json:"matches,omitempty"`
}

// GetConditions returns the status conditions.
func (in *DetectionRuleStatus) GetConditions() []metav1.Condition { return in.Conditions }

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=dr;rule,categories=riposte
// +kubebuilder:printcolumn:name="Severity",type=string,JSONPath=`.spec.severity`
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.spec.source`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Nodes",type=string,JSONPath=`.status.nodes`
// +kubebuilder:printcolumn:name="Matches",type=integer,JSONPath=`.status.matches`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// DetectionRule is a rule that sees only the events of its own namespace and
// may only use playbooks of its own namespace.
type DetectionRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   DetectionRuleSpec   `json:"spec,omitempty"`
	Status DetectionRuleStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (in *DetectionRule) GetConditions() []metav1.Condition { return in.Status.Conditions }

// SetConditions replaces the status conditions.
func (in *DetectionRule) SetConditions(c []metav1.Condition) { in.Status.Conditions = c }

// +kubebuilder:object:root=true

// DetectionRuleList is a list of DetectionRules.
type DetectionRuleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DetectionRule `json:"items"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cdr;crule,categories=riposte
// +kubebuilder:printcolumn:name="Severity",type=string,JSONPath=`.spec.severity`
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.spec.source`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Nodes",type=string,JSONPath=`.status.nodes`
// +kubebuilder:printcolumn:name="Matches",type=integer,JSONPath=`.status.matches`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ClusterDetectionRule is a rule that sees the events of every namespace and
// of the hosts.
type ClusterDetectionRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   DetectionRuleSpec   `json:"spec,omitempty"`
	Status DetectionRuleStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (in *ClusterDetectionRule) GetConditions() []metav1.Condition { return in.Status.Conditions }

// SetConditions replaces the status conditions.
func (in *ClusterDetectionRule) SetConditions(c []metav1.Condition) { in.Status.Conditions = c }

// +kubebuilder:object:root=true

// ClusterDetectionRuleList is a list of ClusterDetectionRules.
type ClusterDetectionRuleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterDetectionRule `json:"items"`
}
