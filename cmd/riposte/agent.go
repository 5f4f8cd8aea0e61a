package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/bpf"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enrich"
	"github.com/riposte-dev/riposte/engine/ruleset"
	"github.com/riposte-dev/riposte/evidence"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/internal/agent"
	"github.com/riposte-dev/riposte/internal/incident"
	"github.com/riposte-dev/riposte/internal/kube"
	"github.com/riposte-dev/riposte/internal/rollout"
	rnode "github.com/riposte-dev/riposte/responders/node"
)

func init() {
	register(command{name: "agent", summary: "run the node agent (DaemonSet): eBPF sensors, live rules from the cluster, Incidents", run: agentCmd})
}

// agentCmd is the in-cluster node agent: the pipeline of `riposte run` with
// the rules the controller made Ready, pod identity from the API server,
// matches written as Incidents and the loaded rule set reported in the
// node's Lease.
func agentCmd(args []string) int {
	fs := pflag.NewFlagSet("riposte agent", pflag.ContinueOnError)
	node := fs.String("node", os.Getenv("NODE_NAME"), "this node's name")
	namespace := fs.String("namespace", envOr("RUNTIME_NAMESPACE", "riposte-system"), "the controller's namespace (Leases, cluster-level Incidents)")
	metricsAddr := fs.String("metrics-addr", ":9464", "serve Prometheus metrics on this address (\"0\" disables)")
	resync := fs.Duration("resync", 15*time.Second, "how often the live rule set is read from the API server")
	evidenceDir := fs.String("evidence-dir", "/var/lib/riposte/evidence", "node folder (or PVC) for the node part of capture steps")
	pinDir := fs.String("pin-dir", "/sys/fs/bpf/riposte", "bpffs folder where kernel isolations are pinned to survive restarts (\"\" keeps them in the process)")
	if err := fs.Parse(args); err != nil {
		return exitBadUsage
	}
	if *node == "" {
		fmt.Fprintln(os.Stderr, "riposte agent: --node (or NODE_NAME) is required")
		return exitBadUsage
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "riposte agent: API server config: %v\n", err)
		return exitBadUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runAgent(ctx, agentOptions{Config: cfg, Node: *node, Namespace: *namespace, MetricsAddr: *metricsAddr, Resync: *resync,
		EvidenceDir: *evidenceDir, PinDir: *pinDir,
		Log: slog.New(slog.NewJSONHandler(os.Stderr, nil))})
}

// agentOptions are the agent's settings, flags bound in agentCmd.
type agentOptions struct {
	Config      *rest.Config
	Node        string
	Namespace   string
	MetricsAddr string
	Resync      time.Duration
	// EvidenceDir and PinDir configure the node-side responders
	// (responders/node): evidence bundles and pinned isolation links.
	EvidenceDir string
	PinDir      string
	// Delegated is how often Incidents are checked for steps delegated to
	// this node (isolation, kills, captures); 2s when zero.
	Delegated time.Duration
	Log       *slog.Logger
}

func runAgent(ctx context.Context, o agentOptions) int {
	cfg, log, node, namespace := o.Config, o.Log, &o.Node, &o.Namespace
	metricsAddr, resync := &o.MetricsAddr, &o.Resync
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintf(os.Stderr, "riposte agent: API client: %v\n", err)
		return exitBadUsage
	}
	lg := logr.FromSlogHandler(log.Handler())
	store, err := enrich.New(enrich.Options{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "riposte agent: enrichment store: %v\n", err)
		return exitFailed
	}
	src, err := kube.NewSource(cfg, store, *node)
	if err != nil {
		fmt.Fprintf(os.Stderr, "riposte agent: %v\n", err)
		return exitFailed
	}
	writer := incident.NewWriter(c, lg.WithName("incident"), incident.Options{Namespace: *namespace})
	reg := prometheus.NewRegistry()
	reg.MustRegister(writer.Collectors()...)
	reg.MustRegister(store.Collector())

	var sensors *bpf.Sensors
	cgroups := host.Cgroups{Root: host.DefaultCgroupRoot()}
	a, err := agent.New(agent.Config{
		Node: *node, Log: log, Registry: reg,
		Enrich: store.Enrich,
		OnMatch: func(ev *engine.Event, ms []engine.Match) {
			for _, m := range ms {
				log.Debug("match", "rule", m.Rule.Name(), "kind", ev.Kind, "pid", ev.Process.PID, "binary", ev.Process.Binary, "container", ev.Container.ID)
				writer.Record(m, ev)
			}
		},
		OnEnforce: func(ev *engine.Event) {
			log.Info("enforced in the kernel", "rule", ev.Enforcement.Rule, "action", ev.Enforcement.Action,
				"pid", ev.Process.PID, "binary", ev.Process.Binary, "container", ev.Container.ID)
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "riposte agent: cannot attach the eBPF sensors: %v\n", err)
		return exitBadUsage
	}
	defer a.Close()
	sensors = a.Sensors()

	go func() {
		if err := src.Start(ctx); err != nil {
			log.Error("pod identity source", "err", err)
		}
	}()
	go (&enrich.Scanner{Store: store, Cgroups: cgroups}).Run(ctx, func(err error) { log.Warn("cgroup scan", "err", err) })
	go func() { _ = writer.Run(ctx) }()
	reporter := &rollout.Reporter{Client: c, Namespace: *namespace, Node: *node, Log: lg.WithName("rollout")}
	go func() { _ = reporter.Run(ctx) }()
	if *metricsAddr != "0" && *metricsAddr != "" {
		go func() {
			mux := http.NewServeMux()
			mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			log.Error("metrics server", "err", http.ListenAndServe(*metricsAddr, mux))
		}()
	}

	// Container cgroups are registered with the kernel filter before their
	// events can be judged as a container's (docs/agent.md).
	syncCgroups := func() {
		found, err := cgroups.Scan()
		if err != nil {
			log.Warn("cgroup scan for the kernel filter", "err", err)
			return
		}
		for _, cg := range found {
			if cg.ContainerID != "" {
				if err := sensors.AddContainerCgroup(cg.ID); err != nil {
					log.Warn("register container cgroup", "err", err)
				}
			}
		}
	}
	last := ""
	syncRules := func() {
		set, loaded, key, err := liveRules(ctx, c)
		if err != nil {
			log.Warn("read live rules", "err", err)
			return
		}
		if key == last {
			return
		}
		skipped, err := a.SetRules(set.Compiled(), agent.InKernelRules(set))
		for _, s := range skipped {
			log.Info("in-kernel kill not possible; the kill step runs after the match", "reason", s.Error())
		}
		if err != nil {
			log.Error("set rules", "err", err)
			return
		}
		last = key
		reporter.Set(loaded)
		log.Info("rules loaded", "rules", len(loaded))
	}
	syncCgroups()
	syncRules()

	// The node part of playbook steps: kernel isolation of this node's pods,
	// process and container kills, node-side captures (responders/node).
	local := &rnode.Local{PinDir: o.PinDir}
	defer local.Close()
	enf := &rnode.Enforcer{Client: c, Local: local, NodeName: *node}
	if o.EvidenceDir != "" {
		enf.Store = &evidence.Dir{Root: o.EvidenceDir, Node: *node}
	}
	go func() {
		every := o.Delegated
		if every <= 0 {
			every = 2 * time.Second
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if res, err := enf.Sync(ctx); err != nil {
				log.Warn("node responders", "err", err)
			} else if len(res.Attached)+len(res.Released)+len(res.Delegated) > 0 {
				log.Info("node responders", "attached", res.Attached, "released", res.Released, "delegated", res.Delegated)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()

	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	tick := time.NewTicker(*resync)
	defer tick.Stop()
	for {
		select {
		case err := <-runErr:
			if err != nil && !errors.Is(err, context.Canceled) {
				fmt.Fprintf(os.Stderr, "riposte agent: %v\n", err)
				return exitFailed
			}
			return exitOK
		case <-tick.C:
			syncCgroups()
			syncRules()
		}
	}
}

// liveRules reads the rules the controller made Ready for their current
// generation (the live set), compiles those the agent sees (process, file
// and network sources) and the playbooks they name.
func liveRules(ctx context.Context, c client.Client) (set *ruleset.Set, loaded map[types.UID]int64, key string, err error) {
	set = &ruleset.Set{}
	loaded = map[types.UID]int64{}
	versions := map[types.UID]int64{} // rules and playbooks: what a change is
	ready := func(gen, observed int64, conds []metav1.Condition) bool {
		return observed == gen && apimeta.IsStatusConditionTrue(conds, v1alpha1.ReadyCondition)
	}
	add := func(kind, name, ns string, uid types.UID, gen int64, spec *v1alpha1.DetectionRuleSpec) {
		switch engine.Source(spec.Source) {
		case engine.SourceProcess, engine.SourceFile, engine.SourceNetwork:
		default:
			return // audit and object rules run in the controller
		}
		r, err := engine.Compile(name, ns, spec)
		if err != nil {
			return // the controller would not have made it Ready; a skew is not ours to report
		}
		set.Rules = append(set.Rules, &ruleset.Rule{Kind: kind, Name: name, Namespace: ns, Spec: *spec, Compiled: r})
		loaded[uid] = gen
		versions[uid] = gen
	}
	var crs v1alpha1.ClusterDetectionRuleList
	if err := c.List(ctx, &crs); err != nil {
		return nil, nil, "", fmt.Errorf("list ClusterDetectionRules: %w", err)
	}
	for i := range crs.Items {
		r := &crs.Items[i]
		if ready(r.Generation, r.Status.ObservedGeneration, r.Status.Conditions) {
			add("ClusterDetectionRule", r.Name, "", r.UID, r.Generation, &r.Spec)
		}
	}
	var rs v1alpha1.DetectionRuleList
	if err := c.List(ctx, &rs); err != nil {
		return nil, nil, "", fmt.Errorf("list DetectionRules: %w", err)
	}
	for i := range rs.Items {
		r := &rs.Items[i]
		if ready(r.Generation, r.Status.ObservedGeneration, r.Status.Conditions) {
			add("DetectionRule", r.Name, r.Namespace, r.UID, r.Generation, &r.Spec)
		}
	}
	var cps v1alpha1.ClusterResponsePlaybookList
	if err := c.List(ctx, &cps); err != nil {
		return nil, nil, "", fmt.Errorf("list ClusterResponsePlaybooks: %w", err)
	}
	for _, p := range cps.Items {
		set.Playbooks = append(set.Playbooks, &ruleset.Playbook{Kind: "ClusterResponsePlaybook", Name: p.Name, Spec: p.Spec})
		versions[p.UID] = p.Generation
	}
	var ps v1alpha1.ResponsePlaybookList
	if err := c.List(ctx, &ps); err != nil {
		return nil, nil, "", fmt.Errorf("list ResponsePlaybooks: %w", err)
	}
	for _, p := range ps.Items {
		set.Playbooks = append(set.Playbooks, &ruleset.Playbook{Kind: "ResponsePlaybook", Name: p.Name, Namespace: p.Namespace, Spec: p.Spec})
		versions[p.UID] = p.Generation
	}
	return set, loaded, ruleSetKey(versions), nil
}

// ruleSetKey identifies rules and playbooks at their generations, so an
// unchanged set is not rewritten.
func ruleSetKey(loaded map[types.UID]int64) string {
	parts := make([]string, 0, len(loaded))
	for uid, gen := range loaded {
		parts = append(parts, fmt.Sprintf("%s=%d", uid, gen))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
