package enrich

import (
	"time"

	"github.com/riposte-dev/riposte/engine"
)

// Records are stored by pointer and never changed after they are written:
// readers of older snapshots may still hold them. Writers copy, then put.

// Container is a container as the store keeps it.
type Container struct {
	// ID is the runtime's id without the "<runtime>://" scheme.
	ID       string
	Runtime  string
	CgroupID uint64
	PodUID   string
	Name     string
	Image    string
	// ImageDigest is "sha256:…" taken from status.containerStatuses[].imageID.
	ImageDigest string
	Privileged  bool
	StartedAt   time.Time
	// ExitedAt is zero while the container runs; afterwards the record is a
	// tombstone until ExitedAt + retention.
	ExitedAt time.Time
	// Listed is true when the pod's status named this container; records
	// known only from a cgroup path are not, and are retired when the cgroup
	// disappears rather than when a pod update leaves them out.
	Listed bool
}

// Pod is a pod as the store keeps it: the engine's view of it plus what the
// store needs to keep history.
type Pod struct {
	engine.Pod
	// Workload is the top-level owner, resolved by the source with TopOwner;
	// empty when it could not be resolved (never a guess).
	Workload engine.Workload
	// IPs are the pod's IPs (status.podIPs) while it holds them; empty for
	// host-network pods and once the pod has finished.
	IPs []string
	// DeletedAt is zero while the pod exists; afterwards the record is a
	// tombstone until DeletedAt + retention.
	DeletedAt time.Time
}

// Lease records that a pod held an IP from From until To (zero: still holds).
type Lease struct {
	// Key is IP + " " + PodUID: a pod holds an IP at most once.
	Key    string
	IP     string
	PodUID string
	From   time.Time
	To     time.Time
}

// Service is a Service's cluster IPs.
type Service struct {
	// Key is Namespace + "/" + Name.
	Key       string
	Namespace string
	Name      string
	IPs       []string
}

// WorkloadRecord is a top-level workload some pod belongs to.
type WorkloadRecord struct {
	engine.Workload
}

// Identity is everything the per-event path copies into an event for one
// container. It is immutable and shared by every event of the container.
type Identity struct {
	Container engine.Container
	Pod       engine.Pod
	Workload  engine.Workload
	// Gone is when the container exited or its pod was deleted, whichever
	// came first; zero while both live.
	Gone time.Time

	cgroupID uint64 // to unmap the cgroup when the container changes
}

// holder is a pod as seen through one of its IP leases.
type holder struct {
	from, to time.Time
	pod      *Pod
}
