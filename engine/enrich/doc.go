// Package enrich ties events to Kubernetes identity: the container, image,
// pod and top-level workload a process belonged to, and the pod or service
// that held a network peer's IP, all at the time the event happened.
//
// A Store keeps containers, pods, workloads, IP leases and services in
// go-memdb (one writer, batched transactions) and publishes after every
// commit an immutable, map-based view that the per-event path reads without
// locks or allocations. Deleted pods and exited containers stay as
// tombstones for a retention window (15 minutes by default) so late events
// and evidence still resolve; GC removes them afterwards.
//
// The package knows no Kubernetes clients: sources (see internal/kube)
// convert objects with PodFromKube, resolve owner chains with TopOwner
// through an OwnerLookup they implement, and write through Store.Update.
// Container ids come from cgroup paths (ParsePath) found by walking the
// cgroup v2 hierarchy (Cgroups), where a cgroup's id is its directory inode.
package enrich
