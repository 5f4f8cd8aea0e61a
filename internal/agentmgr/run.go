package agentmgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/bpf"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enrich"
	"github.com/riposte-dev/riposte/evidence"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/internal/agent"
	"github.com/riposte-dev/riposte/internal/agent/recorder"
	"github.com/riposte-dev/riposte/internal/incident"
	"github.com/riposte-dev/riposte/internal/kube"
	"github.com/riposte-dev/riposte/internal/rollout"
	"github.com/riposte-dev/riposte/responders"
	rnode "github.com/riposte-dev/riposte/responders/node"
)

// Options configure the agent process.
type Options struct {
	// Node is this node's name; Namespace the controller's (Leases,
	// cluster-level Incidents).
	Node, Namespace string
	// MetricsAddr and HealthAddr serve /metrics and /healthz, /readyz; "0"
	// or empty turns them off.
	MetricsAddr, HealthAddr string
	// EvidenceDir is the node folder (or volume) for the node part of
	// capture steps; empty reports delegated captures as failed.
	EvidenceDir string
	// PinDir is a bpffs folder where kernel isolations are pinned to survive
	// restarts; empty keeps them in the process.
	PinDir string
	// ProtectedNamespaces are refused by delegated steps and by in-kernel
	// kill unless a playbook opts in; Namespace is always protected.
	ProtectedNamespaces []string
	// KubernetesOnly runs the Kubernetes half alone: watches, rule
	// compilation, the rollout Lease, no sensors and no node responders
	// (many agents against one API server in the scale benchmark).
	KubernetesOnly bool
	// Sensors tunes the eBPF sensors (tests report their own activity).
	Sensors bpf.Options
	// HostPID is a process in the host's mount namespace (default 1):
	// sandboxes where init is not the node's set another.
	HostPID int
	// Incident tunes the incident writer.
	Incident incident.Options
	// Recorder bounds the per-container flight recorder.
	Recorder recorder.Options
	// LeaseRenew and LeaseMinInterval tune the rollout Lease (defaults in
	// package rollout).
	LeaseRenew, LeaseMinInterval time.Duration
	// ProfileInterval is how often learnt behaviour is written to
	// WorkloadProfiles (DefaultProfileInterval when zero).
	ProfileInterval time.Duration
	// SkipNameValidation lets one process run several agents (benchmark).
	SkipNameValidation bool
	Log                logr.Logger
}

// DefaultProtectedNamespaces are refused unless a playbook opts in.
var DefaultProtectedNamespaces = []string{"kube-system"}

// Run runs the agent until ctx ends: the controller-runtime manager whose
// cache watches the rules, the playbooks and this node's Incidents; the
// identity source (this node's pods, every pod's identity and IP, Services);
// and, unless KubernetesOnly, the eBPF sensors and the node responders.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	if o.Node == "" || o.Namespace == "" {
		return errors.New("the agent needs its node name and the controller's namespace")
	}
	log := o.Log
	if log.GetSink() == nil {
		log = funcr.New(func(string, string) {}, funcr.Options{})
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme(),
		Logger:                 log,
		Metrics:                metricsserver.Options{BindAddress: orOff(o.MetricsAddr)},
		HealthProbeBindAddress: orOff(o.HealthAddr),
		Controller:             config.Controller{SkipNameValidation: ptr.To(o.SkipNameValidation)},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			// Only the Incidents this node's agent acts for.
			&v1alpha1.Incident{}: {Label: labels.SelectorFromSet(labels.Set{v1alpha1.NodeLabel: o.Node})},
		}},
		// The Lease is written by this agent alone and read back on renewal;
		// pods come from the identity source's own watch.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&coordinationv1.Lease{}, &corev1.Pod{}}}},
	})
	if err != nil {
		return fmt.Errorf("create agent manager: %w", err)
	}
	a := &agentState{opts: o, log: log, client: mgr.GetClient(), reader: mgr.GetAPIReader()}
	a.protected = slices.Concat(DefaultProtectedNamespaces, []string{o.Namespace})
	if o.ProtectedNamespaces != nil {
		a.protected = append(slices.Clone(o.ProtectedNamespaces), o.Namespace)
	}

	a.store, err = enrich.New(enrich.Options{})
	if err != nil {
		return fmt.Errorf("create identity store: %w", err)
	}
	src, err := kube.NewSource(cfg, a.store, o.Node)
	if err != nil {
		return err
	}
	src.OnError = func(err error) { log.V(1).Info("resolve pods", "error", err.Error()) }
	a.isolated = newLabelled()
	src.OnNodePod = a.isolated.observe
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if err := src.Start(ctx); err != nil {
			return fmt.Errorf("start pod identity source: %w", err)
		}
		// Tombstones of exited containers and deleted pods go after their
		// retention; without this the store grows with every pod ever seen.
		a.store.Run(ctx, time.Minute)
		return nil
	})); err != nil {
		return err
	}

	iopts := o.Incident
	iopts.Namespace, iopts.Origin = o.Namespace, v1alpha1.OriginAgent
	// The flight recorder: each Incident carries what its container did
	// before the first match (docs/agent.md).
	a.recorder = recorder.New(o.Recorder)
	ctrlmetrics.Registry.MustRegister(a.recorder.Collectors()...)
	iopts.Timeline = func(ev *engine.Event) []v1alpha1.TimelineEntry {
		return a.recorder.Timeline(ev.Container.ID, ev.Time)
	}
	a.writer = incident.NewWriter(mgr.GetClient(), log.WithName("incident"), iopts)
	if err := mgr.Add(manager.RunnableFunc(a.writer.Run)); err != nil {
		return err
	}
	a.reporter = &rollout.Reporter{Client: mgr.GetClient(), Namespace: o.Namespace, Node: o.Node,
		Renew: o.LeaseRenew, MinInterval: o.LeaseMinInterval, Log: log.WithName("rollout")}
	if err := mgr.Add(manager.RunnableFunc(a.reporter.Run)); err != nil {
		return err
	}
	if !o.SkipNameValidation {
		registerMetrics(a.writer.Collectors()...)
		registerMetrics(a.store.Collector())
	}

	if !o.KubernetesOnly {
		if err := a.setupProfiles(mgr); err != nil {
			return fmt.Errorf("set up profiles: %w", err)
		}
		if err := a.startKernel(mgr); err != nil {
			return err
		}
		defer a.kernel.Close()
		defer a.local.Close()
	}
	if err := (&ruleSetReconciler{agentState: a}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up rule watch: %w", err)
	}
	if err := (&incidentReconciler{agentState: a}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up incident watch: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("caches", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return errors.New("caches not synced")
		}
		return nil
	}); err != nil {
		return err
	}
	log.Info("starting agent", "node", o.Node, "kernel", !o.KubernetesOnly)
	return mgr.Start(ctx)
}

// scheme holds every type the agent reads or writes.
func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1alpha1.AddToScheme(s)
	return s
}

// agentState is what the agent's parts share.
type agentState struct {
	opts   Options
	log    logr.Logger
	client client.Client
	// reader reads around the cache: delegated steps are done once, so the
	// agent checks the freshest Incident before doing and reporting one.
	reader    client.Reader
	store     *enrich.Store
	writer    *incident.Writer
	recorder  *recorder.Recorder
	reporter  *rollout.Reporter
	protected []string
	isolated  *labelled
	profiles  *profiles

	// The kernel half; nil with KubernetesOnly.
	kernel  *agent.Agent
	local   *rnode.Local
	actions responders.Actions
	iso     *rnode.Isolation
	// kick wakes the isolation convergence (pod label changes).
	kick chan struct{}
}

// startKernel attaches the sensors and wires the node responders.
func (a *agentState) startKernel(mgr manager.Manager) error {
	o := a.opts
	sensors := o.Sensors
	sensors.HostPID = o.HostPID
	k, err := agent.New(agent.Config{
		Node: o.Node, Log: slog.New(logr.ToSlogHandler(a.log.WithName("sensors"))), Registry: ctrlmetrics.Registry,
		Enrich: a.enrich, OnMatch: a.onMatch, OnEnforce: a.onEnforce, Sensors: sensors,
		OnEvent: a.recorder.Add,
	})
	if err != nil {
		return fmt.Errorf("cannot attach the eBPF sensors: %w", err)
	}
	a.kernel = k
	if o.PinDir != "" {
		// The bpffs mount is the host's; riposte's folder in it may not exist yet.
		if err := os.MkdirAll(o.PinDir, 0o700); err != nil {
			return fmt.Errorf("create the pin folder %s (bpffs mounted there?): %w", o.PinDir, err)
		}
	}
	a.local = &rnode.Local{PinDir: o.PinDir, HostPID: o.HostPID}
	deps := responders.Deps{Client: a.client, Node: a.local}
	if o.EvidenceDir != "" {
		deps.Store = &evidence.Dir{Root: o.EvidenceDir, Node: o.Node}
		// The root file system is read-only: captures stream large files
		// beside the bundles. Without the spool, captures still run and say
		// what they could not copy; detection does not depend on it.
		if spool, err := rnode.SpoolIn(o.EvidenceDir); err == nil {
			a.local.SpoolDir = spool
		} else {
			a.log.Error(err, "captures will not copy executables or changed files")
		}
	}
	a.actions = responders.Defaults(deps)
	a.iso = &rnode.Isolation{Local: a.local, Client: a.client, Node: o.Node}
	a.kick = make(chan struct{}, 1)
	a.isolated.onChange = func() {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
	scanner := &enrich.Scanner{Store: a.store, Cgroups: host.Cgroups{Root: host.DefaultCgroupRoot()}, OnScan: a.registerCgroups}
	for _, r := range []manager.RunnableFunc{
		func(ctx context.Context) error {
			scanner.Run(ctx, func(err error) { a.log.Info("cgroup scan", "error", err.Error()) })
			return nil
		},
		func(ctx context.Context) error { return k.Run(ctx) },
		a.convergeLoop,
	} {
		if err := mgr.Add(r); err != nil {
			return err
		}
	}
	return nil
}

// onMatch is the agent → Incident hop: every match of a kernel event becomes
// (or folds into) an Incident of origin agent, labelled with this node.
func (a *agentState) onMatch(ev *engine.Event, ms []engine.Match) {
	for _, m := range ms {
		a.log.V(1).Info("match", "rule", m.Rule.Name(), "kind", ev.Kind, "pid", ev.Process.PID, "binary", ev.Process.Binary, "container", ev.Container.ID)
		a.writer.Record(m, ev)
	}
}

func (a *agentState) onEnforce(ev *engine.Event) {
	a.log.Info("enforced in the kernel", "rule", ev.Enforcement.Rule, "action", ev.Enforcement.Action,
		"pid", ev.Process.PID, "binary", ev.Process.Binary, "container", ev.Container.ID)
}

// registerCgroups tells the kernel which cgroups are containers and whether
// an in-kernel kill may act there: only in containers of known pods outside
// the protected namespaces, by default.
func (a *agentState) registerCgroups(found []host.Cgroup) {
	for _, cg := range found {
		if cg.ContainerID == "" {
			continue
		}
		class := bpf.CgroupUnknown
		if id, ok := a.store.Cgroup(cg.ID); ok && id.Pod.Namespace != "" {
			class = bpf.CgroupContainer
			if slices.Contains(a.protected, id.Pod.Namespace) {
				class = bpf.CgroupProtected
			}
		}
		if err := a.kernel.Sensors().SetContainerCgroup(cg.ID, class); err != nil {
			a.log.Info("register container cgroup", "error", err.Error())
		}
	}
}

// labelled follows which pods of this node carry riposte's isolate label
// (pod uid → allowed peers), from the identity source's watch.
type labelled struct {
	mu       sync.Mutex
	pods     map[string]string
	onChange func()
}

func newLabelled() *labelled { return &labelled{pods: map[string]string{}} }

func (l *labelled) observe(p *corev1.Pod, deleted bool) {
	uid := string(p.UID)
	want := !deleted && p.Labels[v1alpha1.IsolateLabel] == uid
	allow := p.Annotations[v1alpha1.IsolateAllowAnnotation]
	l.mu.Lock()
	old, had := l.pods[uid]
	if want {
		l.pods[uid] = allow
	} else {
		delete(l.pods, uid)
	}
	changed := had != want || old != allow
	fn := l.onChange
	l.mu.Unlock()
	if changed && fn != nil {
		fn()
	}
}

func (l *labelled) snapshot() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]string, len(l.pods))
	for k, v := range l.pods {
		out[k] = v
	}
	return out
}

func orOff(addr string) string {
	if addr == "" {
		return "0"
	}
	return addr
}

// registerMetrics registers collectors with controller-runtime's registry,
// replacing those of an earlier Run in the same process.
func registerMetrics(cs ...prometheus.Collector) {
	for _, c := range cs {
		ctrlmetrics.Registry.Unregister(c)
		ctrlmetrics.Registry.MustRegister(c)
	}
}
