package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "riposte.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this API with a scheme. It uses
	// apimachinery only, so importing the API stays cheap.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&DetectionRule{}, &DetectionRuleList{},
		&ClusterDetectionRule{}, &ClusterDetectionRuleList{},
		&ResponsePlaybook{}, &ResponsePlaybookList{},
		&ClusterResponsePlaybook{}, &ClusterResponsePlaybookList{},
		&Incident{}, &IncidentList{},
		&WorkloadProfile{}, &WorkloadProfileList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
