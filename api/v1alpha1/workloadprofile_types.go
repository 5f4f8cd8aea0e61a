package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WorkloadProfileSpec is what one container of one workload does: the
// executables it runs, which process starts which, where it writes, whom it
// connects to and where it listens. Every list is sorted and holds each entry
// once, so two profiles diff line by line in a pull request.
type WorkloadProfileSpec struct {
	// Workload is the top-level owner of the pods (Deployment, StatefulSet,
	// DaemonSet, CronJob, Job, Pod) in the profile's namespace.
	Workload ProfileWorkloadRef `json:"workload"`

	// Container is the container's name in the pod template.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Container string `json:"container"`

	// Image is the image the behaviour was learnt on. Pods running another
	// image mark the profile Stale.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image,omitempty"`

	// Reviewed marks the profile as the reviewed truth, set by a person in Git:
	// learning stops for it and rules over profiles use it.
	// +optional
	Reviewed bool `json:"reviewed,omitempty"`

	ProfileBehaviour `json:",inline"`
}

// ProfileWorkloadRef names a workload in the profile's namespace.
type ProfileWorkloadRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// ProfileBehaviour is the behaviour part of a profile, learnt or reviewed.
type ProfileBehaviour struct {
	// Executables are the absolute paths of the programs the container runs.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=4096
	Executables []string `json:"executables,omitempty"`

	// ProcessPairs are the parent → child executable pairs seen at exec.
	// +optional
	// +kubebuilder:validation:MaxItems=512
	ProcessPairs []ProcessPair `json:"processPairs,omitempty"`

	// WriteDirectories are the directories the container opens files for
	// writing in (the file's directory, not the file).
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=4096
	WriteDirectories []string `json:"writeDirectories,omitempty"`

	// Outbound are the peers the container connects to.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	Outbound []ProfilePeer `json:"outbound,omitempty"`

	// Listening are the ports the container listens on.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Listening []ProfilePort `json:"listening,omitempty"`
}

// ProcessPair is one parent → child exec.
type ProcessPair struct {
	// +kubebuilder:validation:MaxLength=4096
	Parent string `json:"parent"`
	// +kubebuilder:validation:MaxLength=4096
	Child string `json:"child"`
}

// ProfilePeer is an outbound peer: a Service, a workload, or else a CIDR,
// each with the destination port. Exactly one of Service, Workload and CIDR
// is set.
type ProfilePeer struct {
	// Service is namespace/name of the Service the peer address belonged to.
	// +optional
	// +kubebuilder:validation:MaxLength=317
	Service string `json:"service,omitempty"`
	// Workload is Kind/namespace/name of the peer pod's top-level owner.
	// +optional
	// +kubebuilder:validation:MaxLength=381
	Workload string `json:"workload,omitempty"`
	// CIDR is the peer's network when it is neither a Service nor a pod.
	// +optional
	// +kubebuilder:validation:MaxLength=43
	CIDR string `json:"cidr,omitempty"`
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// +optional
	// +kubebuilder:validation:Enum=tcp;udp
	Protocol string `json:"protocol,omitempty"`
}

// ProfilePort is a listening port.
type ProfilePort struct {
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// +optional
	// +kubebuilder:validation:Enum=tcp;udp
	Protocol string `json:"protocol,omitempty"`
}

// WorkloadProfileStatus tells whether the profile is being learnt, is the
// reviewed truth for the running image, or is stale.
type WorkloadProfileStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Learning, Ready, Stale.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// RunningImage is the image the workload's pods run now.
	// +optional
	RunningImage string `json:"runningImage,omitempty"`

	// LearningSince is when learning started for the current image.
	// +optional
	LearningSince *metav1.Time `json:"learningSince,omitempty"`

	// Truncated counts behaviour entries that were not recorded because a
	// list reached its bound; a profile with truncations is incomplete.
	// +optional
	Truncated int64 `json:"truncated,omitempty"`
}

// Condition types and reasons of a WorkloadProfile.
const (
	// LearningCondition is True while the profile is learnt from the workload.
	LearningCondition = "Learning"
	// StaleCondition is True when the workload runs another image than the
	// profile's.
	StaleCondition = "Stale"

	// ReviewedReason: the profile is reviewed and matches the running image.
	ReviewedReason = "Reviewed"
	// NotReviewedReason: the profile is learnt and waits for review.
	NotReviewedReason = "NotReviewed"
	// ImageChangedReason: the workload runs a new image.
	ImageChangedReason = "ImageChanged"
)

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=wp;profile,categories=riposte
// +kubebuilder:printcolumn:name="Workload",type=string,JSONPath=`.spec.workload.name`
// +kubebuilder:printcolumn:name="Container",type=string,JSONPath=`.spec.container`
// +kubebuilder:printcolumn:name="Reviewed",type=boolean,JSONPath=`.spec.reviewed`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Stale",type=string,JSONPath=`.status.conditions[?(@.type=="Stale")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// WorkloadProfile is the learnt or reviewed behaviour of one container of one
// workload.
type WorkloadProfile struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   WorkloadProfileSpec   `json:"spec,omitempty"`
	Status WorkloadProfileStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// WorkloadProfileList is a list of WorkloadProfiles.
type WorkloadProfileList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WorkloadProfile `json:"items"`
}
