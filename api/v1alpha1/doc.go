// Package v1alpha1 holds the riposte.dev/v1alpha1 API: detection rules,
// response playbooks and the incidents they produce.
//
// Rules and playbooks are authored in Git and synced by Flux or Argo CD. Their
// status follows kstatus (Ready, Reconciling, Stalled and observedGeneration),
// so a rule that does not compile or fails its embedded tests turns the GitOps
// health red.
//
// +kubebuilder:object:generate=true
// +groupName=riposte.dev
package v1alpha1
