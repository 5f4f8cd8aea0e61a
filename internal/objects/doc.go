// Package objects is the Kubernetes object source: informers for Pods and the
// other kinds the operator lists turn every create, update and delete into an
// engine event of kind "object" (the object as a map, and `pod` filled for
// Pods) for rules with source object: a Pod without ownerReferences, a static
// pod's mirror appearing, a privileged or hostPath pod.
package objects
