package responders

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/bpf"
	"github.com/riposte-dev/riposte/evidence"
)

// Request is one step to run for one Incident.
type Request struct {
	Incident *v1alpha1.Incident
	// Playbook is the key recorded in StepStatus.Playbook.
	Playbook string
	Spec     *v1alpha1.ResponsePlaybookSpec
	Step     v1alpha1.Step
	// StepName is the step's unique name inside the playbook.
	StepName string
	// Undo is what Prepare recorded (and the Runner persisted) before Do runs.
	Undo map[string]string
}

// Subject returns the Incident's subject.
func (r *Request) Subject() *v1alpha1.Subject { return &r.Incident.Spec.Subject }

// ClusterPlaybook reports whether the step's playbook is a
// ClusterResponsePlaybook (its key has no namespace).
func (r *Request) ClusterPlaybook() bool { return !strings.Contains(r.Playbook, "/") }

// Target is what a node action acts on: the subject's process, container and
// pod. A subject outside any container is a host process, which only a
// ClusterResponsePlaybook with allowHostProcesses may act on.
func (r *Request) Target() ProcessTarget {
	s := r.Subject()
	t := ProcessTarget{PID: int(s.PID), PodUID: s.PodUID, ContainerID: s.ContainerID}
	t.Host = s.ContainerID == "" && s.PodUID == "" && r.ClusterPlaybook() && r.Spec != nil && r.Spec.AllowHostProcesses
	return t
}

// Result is what an action did, for the Incident status.
type Result struct {
	Message string
	// Undo is merged into the undo data recorded by Prepare.
	Undo map[string]string
	// Evidence is appended to the Incident's evidence list.
	Evidence *v1alpha1.Evidence
}

// Action performs one kind of response step.
type Action interface {
	// Plan says what Do would change, for dry-run; it must not change anything.
	Plan(ctx context.Context, req *Request) (string, error)
	// Do performs the step. It is called again with the same Undo data after a
	// restart that interrupted it, so it must be idempotent.
	Do(ctx context.Context, req *Request) (Result, error)
}

// Preparer is implemented by actions that must record state before changing it
// (previous replicas, previous labels); the Runner persists the returned undo
// data in the Incident status before calling Do, so a crash in between loses
// nothing.
type Preparer interface {
	Prepare(ctx context.Context, req *Request) (map[string]string, error)
}

// Reverter is implemented by actions that can be undone (riposte.dev/revert=true).
type Reverter interface {
	Revert(ctx context.Context, req *Request) (string, error)
}

// Node does what only the agent on the subject's node can do. The controller has
// no Node unless it runs on the node itself; the agent implements it
// (package responders/node), and so does `riposte run` on a host.
type Node interface {
	// IsolatePod enforces deny-all (except allow) on the pod's cgroup in the
	// kernel and returns a description of what was attached.
	IsolatePod(ctx context.Context, podUID string, allow []Peer) (string, error)
	// ReleasePod removes what IsolatePod attached; it succeeds when nothing is attached.
	ReleasePod(ctx context.Context, podUID string) error
	// KillProcess sends SIGKILL to the target's process after checking it
	// still runs in the target's container (pids are reused). A target
	// without a container is a host process, killed only when Host is set.
	KillProcess(ctx context.Context, t ProcessTarget) error
	// KillContainer kills every process of the container's cgroup.
	KillContainer(ctx context.Context, podUID, containerID string) error
	// Evidence collects what only the node sees about the target's
	// container (or pod, or host process): processes, command lines, open
	// files and sockets, executables, changed files, the flight recorder.
	// Environment values are left out unless includeSecrets.
	Evidence(ctx context.Context, t ProcessTarget, includeSecrets bool) (NodeEvidence, error)
}

// NodeEvidence is what a node adds to a capture.
type NodeEvidence struct {
	// Files may be spooled on disk (evidence.File.Path): whoever receives
	// them writes them into a bundle or discards them.
	Files []evidence.File
	// Cut says, one line each, what the capture's bounds left out
	// ("executables: 3 of 7 copied, byte budget 256 MiB reached"); the
	// bundle holds the details, the step's message these lines.
	Cut []string
}

// ProcessTarget names what a node action acts on, from the Incident's
// subject as riposte recorded it.
type ProcessTarget struct {
	PID         int
	PodUID      string
	ContainerID string
	// Host allows acting on a process outside any container (a
	// ClusterResponsePlaybook with allowHostProcesses).
	Host bool
	// StartTicks is the process's start time in clock ticks after boot
	// (/proc/<pid>/stat) as recorded when it was seen, or 0 when unknown;
	// a kill refuses a process holding PID that started at another time.
	StartTicks uint64
}

// Peer is a destination an isolated pod may still reach; a nil Net means any
// address and a zero Port any port.
type Peer = bpf.Peer

// ErrWaiting is returned by an action whose node part the agent does: the
// step stays Running (with the Result's message, undo data and evidence
// recorded) until the agent's result appears in v1alpha1.NodeResultsAnnotation.
var ErrWaiting = errors.New("waiting for the node agent")

// ErrGone is returned by Node.KillProcess when the process no longer exists:
// it exited, or the agent already killed it in the kernel at exec (inKernel).
var ErrGone = errors.New("process already gone")

// ErrRefused marks a guardrail refusal: the step is Skipped, not Failed, and the
// message says why.
var ErrRefused = errors.New("refused")

func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// Actions is the set of actions a Runner knows, by name.
type Actions map[v1alpha1.Action]Action

// Deps are what the actions need. Only Client is required.
type Deps struct {
	Client client.Client
	// APIReader reads around the cache (a manager's GetAPIReader) for capture;
	// default Client.
	APIReader client.Reader
	// Node does the node-local work; nil delegates the kernel layer of isolate
	// and process/container kills to the agent of the subject's node.
	Node Node
	// Logs reads container logs for capture; nil records them as not captured.
	Logs LogReader
	// Store keeps evidence; nil leaves capture out of the actions.
	Store EvidenceStore
	// HTTP is notify's client (default: 10 s timeout).
	HTTP *http.Client
	// NotifyAllowed are the URL prefixes namespaced playbooks may notify.
	NotifyAllowed []string
	// ClusterDNS is the Service isolate's allowDNS keeps reachable; default
	// DefaultClusterDNS.
	ClusterDNS types.NamespacedName
}

// Defaults returns every action wired to d.
func Defaults(d Deps) Actions {
	c := d.Client
	reader := d.APIReader
	if reader == nil {
		reader = c
	}
	a := Actions{
		v1alpha1.ActionIsolate:    &Isolate{Client: c, Reader: reader, DNS: d.ClusterDNS, Node: d.Node},
		v1alpha1.ActionQuarantine: &Quarantine{Client: c},
		v1alpha1.ActionKill:       &Kill{Client: c, Node: d.Node},
		v1alpha1.ActionScale:      &Scale{Client: c},
		v1alpha1.ActionLabel:      &Label{Client: c},
		v1alpha1.ActionAnnotate:   &Label{Client: c, Annotations: true},
		v1alpha1.ActionCordon:     &Cordon{Client: c},
		v1alpha1.ActionNotify:     &Notify{HTTP: d.HTTP, AllowedURLs: d.NotifyAllowed},
	}
	if d.Store != nil {
		a[v1alpha1.ActionCapture] = &Capture{Reader: reader, Logs: d.Logs, Store: d.Store, Node: d.Node}
	}
	return a
}
