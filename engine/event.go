package engine

import (
	"time"
)

// Kind names what happened. Every event has exactly one kind; the kind decides
// which of the event's objects carry data.
type Kind string

// Event kinds, grouped by the rule source that sees them.
const (
	// Source "process".
	KindExec    Kind = "exec"    // a process replaced its image (execve)
	KindExit    Kind = "exit"    // a process ended
	KindFork    Kind = "fork"    // a process was created
	KindSetuid  Kind = "setuid"  // setuid/setgid family and setres*id
	KindCapset  Kind = "capset"  // capset(2)
	KindPtrace  Kind = "ptrace"  // ptrace(2) on another process
	KindUnshare Kind = "unshare" // unshare(2) into new namespaces
	KindSetns   Kind = "setns"   // setns(2) into existing namespaces
	KindMount   Kind = "mount"   // mount(2)
	KindModule  Kind = "module"  // init_module/finit_module
	KindBPF     Kind = "bpf"     // bpf(2)

	// Source "file".
	KindOpen Kind = "open" // a file was opened; file.write tells writes apart

	// Source "network".
	KindConnect Kind = "connect" // outbound connection
	KindAccept  Kind = "accept"  // inbound connection accepted
	KindListen  Kind = "listen"  // a socket started listening

	// Source "audit": one audit.k8s.io/v1 Event from the API server.
	KindAudit Kind = "audit"

	// Source "object": a Kubernetes object was created, updated or deleted.
	KindObject Kind = "object"

	// KindEnforce reports an in-kernel enforcement decision (the agent killed or
	// denied something on a rule's behalf). Rules never match it.
	KindEnforce Kind = "enforce"
)

// Source is the rule field that selects which family of events a rule sees.
type Source string

// Rule sources.
const (
	SourceProcess Source = "process"
	SourceFile    Source = "file"
	SourceNetwork Source = "network"
	SourceAudit   Source = "audit"
	SourceObject  Source = "object"
)

// Sources lists every source in a stable order.
var Sources = []Source{SourceProcess, SourceFile, SourceNetwork, SourceAudit, SourceObject}

// sourceKinds maps each source to the kinds it sees.
var sourceKinds = map[Source][]Kind{
	SourceProcess: {KindExec, KindExit, KindFork, KindSetuid, KindCapset, KindPtrace, KindUnshare, KindSetns, KindMount, KindModule, KindBPF},
	SourceFile:    {KindOpen},
	SourceNetwork: {KindConnect, KindAccept, KindListen},
	SourceAudit:   {KindAudit},
	SourceObject:  {KindObject},
}

// Kinds returns the event kinds a source sees, or nil for an unknown source.
func (s Source) Kinds() []Kind { return sourceKinds[s] }

// Source returns the rule source that sees events of this kind, or "" if no
// rule sees it.
func (k Kind) Source() Source {
	for s, kinds := range sourceKinds {
		for _, x := range kinds {
			if x == k {
				return s
			}
		}
	}
	return ""
}

// AllKinds lists every kind a rule can see, in a stable order.
func AllKinds() []Kind {
	var out []Kind
	for _, s := range Sources {
		out = append(out, sourceKinds[s]...)
	}
	return out
}

// Event is the one event model of riposte. The agent, the audit and object
// sources, recorded streams, `riposte replay` and the tests embedded in rules all
// use it and its JSON form (docs/events.md). Each object is also a CEL variable of
// the same name; an object an event does not carry is its zero value, so rules
// read empty strings rather than fail.
type Event struct {
	Kind Kind      `json:"kind"`
	Time time.Time `json:"time"`
	// Node is the name of the node the event happened on.
	Node string `json:"node,omitempty"`
	// Op is what happened to an object: create, update or delete (object events).
	Op string `json:"op,omitempty"`

	Process   Process   `json:"process,omitzero"`
	Container Container `json:"container,omitzero"`
	Pod       Pod       `json:"pod,omitzero"`
	Workload  Workload  `json:"workload,omitzero"`
	File      File      `json:"file,omitzero"`
	Net       Net       `json:"net,omitzero"`
	Syscall   Syscall   `json:"syscall,omitzero"`
	Audit     Audit     `json:"audit,omitzero"`
	// Object is the Kubernetes object of an object event, as the API server
	// returns it (apiVersion, kind, metadata, spec, status).
	Object map[string]any `json:"object,omitempty"`
	// Profile is the WorkloadProfile of the event's workload and container,
	// nil when it has none (the CEL variable profile then allows everything).
	Profile *Profile `json:"profile,omitempty"`
	// Enforcement describes an enforce event.
	Enforcement Enforcement `json:"enforcement,omitzero"`
	// Truncated is set when a field was longer than the evaluation bounds
	// (Bound) and was cut: a rule saw less than the source reported.
	Truncated bool `json:"truncated,omitempty"`
}

// Process is the process that caused an event.
type Process struct {
	// PID is the thread-group id (what user space calls the pid).
	PID  int64 `json:"pid,omitempty"`
	TID  int64 `json:"tid,omitempty"`
	PPID int64 `json:"ppid,omitempty"`
	UID  int64 `json:"uid"`
	GID  int64 `json:"gid"`
	EUID int64 `json:"euid"`
	// Binary is the absolute path of the executable.
	Binary string `json:"binary,omitempty"`
	// Name is the base name of Binary.
	Name string `json:"name,omitempty"`
	// Comm is the kernel's task name (at most 15 bytes).
	Comm string `json:"comm,omitempty"`
	// Args is argv, argv[0] included, bounded by the agent.
	Args []string `json:"args,omitempty"`
	// Cmdline is Args joined by single spaces.
	Cmdline   string    `json:"cmdline,omitempty"`
	Cwd       string    `json:"cwd,omitempty"`
	StartTime time.Time `json:"startTime,omitzero"`
	CgroupID  uint64    `json:"cgroupId,omitempty"`
	MntNS     uint64    `json:"mntns,omitempty"`
	PidNS     uint64    `json:"pidns,omitempty"`
	Exe       Exe       `json:"exe,omitzero"`
	// Origin is how the process's tree entered its container, as the kernel
	// saw it (the agent sets it; nothing in the container can choose it):
	// OriginEntrypoint below the container's init (pid 1 of its pid
	// namespace), OriginExec below a process the runtime exec'd into the
	// container (kubectl exec, an exec probe, the kubelet API), empty when
	// unknown (a host process, or one older than the agent).
	Origin string `json:"origin,omitempty"`
	// OriginPID is the process that entered the container (the exec'd
	// command, or the container's init) and OriginTime when it did: what the
	// controller joins with the API server's exec audit events.
	OriginPID  int64     `json:"originPid,omitempty"`
	OriginTime time.Time `json:"originTime,omitzero"`
	// Parent is the parent process; zero when unknown.
	Parent Ancestor `json:"parent,omitzero"`
	// Ancestors are the parent, its parent and so on, nearest first, bounded.
	Ancestors []Ancestor `json:"ancestors,omitempty"`
}

// Process origins (Process.Origin).
const (
	OriginEntrypoint = "entrypoint"
	OriginExec       = "exec"
)

// Exe describes the executable file of a process: the basis of drift detection.
type Exe struct {
	Inode uint64 `json:"inode,omitempty"`
	// Upper is true when the executable lives in an overlay upper layer: it was
	// written or changed after the container started (not part of the image).
	Upper bool `json:"upper,omitempty"`
	// Memfd is true when the executable is an anonymous memory file.
	Memfd bool `json:"memfd,omitempty"`
}

// Ancestor is a process above the event's process in the process tree.
type Ancestor struct {
	PID     int64    `json:"pid,omitempty"`
	UID     int64    `json:"uid"`
	Binary  string   `json:"binary,omitempty"`
	Name    string   `json:"name,omitempty"`
	Args    []string `json:"args,omitempty"`
	Cmdline string   `json:"cmdline,omitempty"`
}

// Container is the container the process ran in; ID is empty on the host.
type Container struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
	// Image is the image reference the container was started from.
	Image string `json:"image,omitempty"`
	// ImageDigest is the digest of the image actually running (sha256:...),
	// recorded when the container started.
	ImageDigest string    `json:"imageDigest,omitempty"`
	Runtime     string    `json:"runtime,omitempty"`
	Privileged  bool      `json:"privileged,omitempty"`
	StartedAt   time.Time `json:"startedAt,omitzero"`
}

// Pod is the pod a container belonged to when the event happened.
type Pod struct {
	UID             string            `json:"uid,omitempty"`
	Name            string            `json:"name,omitempty"`
	Namespace       string            `json:"namespace,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	Annotations     map[string]string `json:"annotations,omitempty"`
	ServiceAccount  string            `json:"serviceAccount,omitempty"`
	OwnerReferences []OwnerReference  `json:"ownerReferences,omitempty"`
	// Static is true for a static pod's mirror (annotation kubernetes.io/config.mirror).
	Static bool `json:"static,omitempty"`
	// Ownerless is true for a pod with no metadata.ownerReferences: nothing
	// recreates it, which is how hand-made pods look.
	Ownerless   bool   `json:"ownerless,omitempty"`
	HostNetwork bool   `json:"hostNetwork,omitempty"`
	HostPID     bool   `json:"hostPID,omitempty"`
	HostIPC     bool   `json:"hostIPC,omitempty"`
	Privileged  bool   `json:"privileged,omitempty"` // some container is privileged
	HostPath    bool   `json:"hostPath,omitempty"`   // some volume is a hostPath
	IP          string `json:"ip,omitempty"`
	Node        string `json:"node,omitempty"`
	// HostPaths are the host paths of the pod's hostPath volumes.
	HostPaths []string `json:"hostPaths,omitempty"`
	// Capabilities are the capabilities some container (init and ephemeral
	// included) adds, sorted, each once.
	Capabilities []string `json:"capabilities,omitempty"`
	// AllowPrivilegeEscalation is true when some container sets
	// securityContext.allowPrivilegeEscalation: true.
	AllowPrivilegeEscalation bool `json:"allowPrivilegeEscalation,omitempty"`
	// Images are the images of the containers: init, regular, ephemeral.
	Images []string `json:"images,omitempty"`
}

// OwnerReference is one entry of metadata.ownerReferences.
type OwnerReference struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Name       string `json:"name,omitempty"`
	UID        string `json:"uid,omitempty"`
	Controller bool   `json:"controller,omitempty"`
}

// Workload is the top-level owner of a pod: Deployment, StatefulSet,
// DaemonSet, Job, CronJob, Node (static pod) or Pod (a bare pod owns itself).
type Workload struct {
	Kind      string `json:"kind,omitempty"`
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	UID       string `json:"uid,omitempty"`
}

// File is the file of a file event.
type File struct {
	Path  string `json:"path,omitempty"`
	Flags int64  `json:"flags,omitempty"` // open(2) flags
	Mode  int64  `json:"mode,omitempty"`
	// Write is true when the open can modify the file (write access, create or truncate).
	Write bool   `json:"write,omitempty"`
	Inode uint64 `json:"inode,omitempty"`
}

// Net is the connection of a network event.
type Net struct {
	Family   string   `json:"family,omitempty"`   // ipv4 | ipv6
	Protocol string   `json:"protocol,omitempty"` // tcp | udp
	Local    Endpoint `json:"local,omitzero"`
	// Peer is the other end, resolved to the pod that held its IP at the
	// event's time when it is a pod.
	Peer Peer `json:"peer,omitzero"`
}

// Endpoint is an address and port.
type Endpoint struct {
	IP   string `json:"ip,omitempty"`
	Port int64  `json:"port,omitempty"`
}

// Peer is the remote end of a connection and who it was.
type Peer struct {
	IP        string   `json:"ip,omitempty"`
	Port      int64    `json:"port,omitempty"`
	Pod       string   `json:"pod,omitempty"`
	Namespace string   `json:"namespace,omitempty"`
	PodUID    string   `json:"podUID,omitempty"`
	Workload  Workload `json:"workload,omitzero"`
	Service   string   `json:"service,omitempty"`
}

// Syscall carries the arguments of privilege and escape signals (setuid,
// capset, ptrace, unshare, setns, mount, module and bpf events).
type Syscall struct {
	// Name is the exact system call, for example "setresuid" or "finit_module".
	Name string `json:"name,omitempty"`
	Ret  int64  `json:"ret,omitempty"`
	// UID and GID are the ids asked for by the setuid family (-1: unchanged).
	UID int64 `json:"uid,omitempty"`
	GID int64 `json:"gid,omitempty"`
	// Capability sets asked for by capset.
	CapEffective   uint64 `json:"capEffective,omitempty"`
	CapPermitted   uint64 `json:"capPermitted,omitempty"`
	CapInheritable uint64 `json:"capInheritable,omitempty"`
	// TargetPID is the process acted on (ptrace) and Request the ptrace request.
	TargetPID int64 `json:"targetPid,omitempty"`
	Request   int64 `json:"request,omitempty"`
	// Flags are unshare/setns namespace flags or mount flags.
	Flags  uint64 `json:"flags,omitempty"`
	Source string `json:"source,omitempty"` // mount source
	Target string `json:"target,omitempty"` // mount target
	FSType string `json:"fstype,omitempty"` // mount file system type
	Module string `json:"module,omitempty"` // module name, when known
	BPFCmd int64  `json:"bpfCmd,omitempty"` // bpf(2) command
}

// Enforcement reports what the agent enforced in the kernel and why.
type Enforcement struct {
	Rule   string `json:"rule,omitempty"`
	Action string `json:"action,omitempty"` // kill | deny
	Layer  string `json:"layer,omitempty"`  // the mechanism, for example "bpf_send_signal" or "lsm"
}
