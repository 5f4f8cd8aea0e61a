// Package kube feeds the identity store (engine/enrich) from the Kubernetes
// API: a Source runs client-go informers for pods (one node's for the agent,
// all for the controller) and Services, batches their changes into store
// transactions and resolves each pod's top-level workload through Owners, a
// lazily filled, cached metadata-only lookup of ReplicaSets, Jobs and other
// owners. Nothing here runs on the per-event path.
package kube
