package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/bpf"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/ruleset"
	"github.com/riposte-dev/riposte/evidence"
	"github.com/riposte-dev/riposte/internal/agent"
	"github.com/riposte-dev/riposte/internal/incident"
	"github.com/riposte-dev/riposte/responders"
	rnode "github.com/riposte-dev/riposte/responders/node"
)

func init() {
	register(command{name: "run", summary: "watch this host with the eBPF sensors and the rules; print alerts, run host-local responses", run: runCmd})
}

func runCmd(args []string) int {
	fs := pflag.NewFlagSet("riposte run", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, `usage: riposte run --rules PATH [--rules PATH...] [flags]

Attaches the eBPF sensors on this Linux host (root, kernel BTF), writes the
in-kernel prefilter derived from the rules, and prints an alert for every
match. Playbook steps that can run on the host do, through the same
actions the cluster runs: kill (SIGKILL the process; in the kernel at exec
for steps with inKernel: true when the rule is exact) and capture (the
process's /proc facts, environment names, open files and executable into an
evidence bundle under --evidence DIR with a SHA-256 manifest). Processes
outside containers are acted on only when a ClusterResponsePlaybook sets
allowHostProcesses. Other steps need the cluster controller and are
reported.`)
		fs.PrintDefaults()
	}
	rules := fs.StringSlice("rules", nil, "rule file or folder (repeatable)")
	output := fs.String("output", "text", "alert format: text or json")
	evidenceDir := fs.String("evidence", "", "folder for captured evidence (capture steps are skipped without it)")
	duration := fs.Duration("duration", 0, "stop after this long (0: until interrupted)")
	command := fs.String("exec", "", "run this shell command once attached, report, and exit when it ends")
	respond := fs.Bool("respond", true, "run host-local playbook steps (false: alerts only)")
	node := fs.String("node", "", "node name put into events (default: the host name)")
	metrics := fs.String("metrics-addr", "", "serve Prometheus metrics on this address (e.g. :9464)")
	if err := fs.Parse(args); err != nil {
		return exitBadUsage
	}
	if len(*rules) == 0 || (*output != "text" && *output != "json") {
		fs.Usage()
		return exitBadUsage
	}
	set, loadErrs := ruleset.Load(*rules...)
	for _, err := range loadErrs {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
	}
	for _, r := range set.Rules {
		if r.Err != nil {
			fmt.Fprintf(os.Stderr, "error: %v\n", r.Err)
		}
	}
	compiled := set.Compiled()
	if len(loadErrs) > 0 || len(compiled) == 0 {
		fmt.Fprintln(os.Stderr, "riposte run: no usable rules")
		return exitBadUsage
	}
	if *node == "" {
		*node, _ = os.Hostname()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	reg := prometheus.NewRegistry()
	out := &alertWriter{w: os.Stdout, json: *output == "json"}
	rs := newResponder(set, *node, *evidenceDir, *respond, log, out)
	rs.start()
	a, err := agent.New(agent.Config{
		Node: *node, Log: log, Registry: reg,
		OnMatch: func(ev *engine.Event, ms []engine.Match) {
			for _, m := range ms {
				out.alert(ev, m)
				rs.enqueue(*ev, m.Rule)
			}
		},
		OnEnforce: func(ev *engine.Event) {
			rs.enforced.Store(ev.Process.PID, true)
			out.enforce(ev)
		},
	})
	if err != nil {
		if errors.Is(err, bpf.ErrMissing) {
			fmt.Fprintf(os.Stderr, "riposte run: cannot attach the eBPF sensors: %v\n", err)
			return exitBadUsage
		}
		fmt.Fprintf(os.Stderr, "riposte run: %v\n", err)
		return exitBadUsage
	}
	defer a.Close()
	skipped, err := a.SetRules(compiled, agent.InKernelRules(set))
	for _, s := range skipped {
		log.Warn("in-kernel kill not possible; the kill step runs after the match instead", "reason", s)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "riposte run: %v\n", err)
		return exitFailed
	}
	log.Info("attached", "rules", len(compiled), "node", *node)
	if *metrics != "" {
		go func() {
			mux := http.NewServeMux()
			mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			log.Error("metrics server", "err", http.ListenAndServe(*metrics, mux))
		}()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	runErr := make(chan error, 1)
	ctx, cancelRun := context.WithCancel(ctx)
	go func() { runErr <- a.Run(ctx) }()
	code := exitOK
	if *command != "" {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", *command)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			log.Info("command ended", "err", err)
		}
		time.Sleep(300 * time.Millisecond) // let the last records arrive
		cancelRun()
	}
	if err := <-runErr; err != nil {
		fmt.Fprintf(os.Stderr, "riposte run: %v\n", err)
		code = exitFailed
	}
	cancelRun()
	rs.stop()
	if c, err := a.Sensors().Counters(); err == nil {
		var seen, dropped, submitted, lost uint64
		for _, v := range c {
			seen, dropped, submitted, lost = seen+v[0], dropped+v[1], submitted+v[2], lost+v[3]
		}
		log.Info("sensor counters", "seen", seen, "dropped_in_kernel", dropped, "submitted", submitted, "lost", lost, "alerts", out.count())
	}
	return code
}

// alertWriter prints alerts and enforcement reports, one per line.
type alertWriter struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
	n    int
}

func (o *alertWriter) alert(ev *engine.Event, m engine.Match) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n++
	if o.json {
		json.NewEncoder(o.w).Encode(map[string]any{"rule": m.Rule.Name(), "severity": m.Rule.Severity(), "output": m.Output, "event": ev})
		return
	}
	fmt.Fprintf(o.w, "%s %-8s %s: %s [%s pid=%d %s]\n", ev.Time.UTC().Format(time.RFC3339Nano), m.Rule.Severity(), m.Rule.Name(), m.Output, ev.Kind, ev.Process.PID, ev.Process.Binary)
}

func (o *alertWriter) enforce(ev *engine.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.json {
		json.NewEncoder(o.w).Encode(map[string]any{"event": ev})
		return
	}
	e := ev.Enforcement
	fmt.Fprintf(o.w, "%s ENFORCED %s: %s by %s [pid=%d %s]\n", ev.Time.UTC().Format(time.RFC3339Nano), e.Rule, e.Action, e.Layer, ev.Process.PID, ev.Process.Binary)
}

func (o *alertWriter) note(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.json {
		json.NewEncoder(o.w).Encode(map[string]any{"response": fmt.Sprintf(format, args...)})
		return
	}
	fmt.Fprintf(o.w, "    -> "+format+"\n", args...)
}

func (o *alertWriter) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

// responder runs host-local playbook steps off the reading goroutine (a
// slow capture must not make the ring buffer overflow), through the same
// responders actions the cluster runs, with this host as their node.
type responder struct {
	set      *ruleset.Set
	node     string
	actions  responders.Actions
	local    *rnode.Local
	enabled  bool
	log      *slog.Logger
	out      *alertWriter
	queue    chan job
	wg       sync.WaitGroup
	done     map[string]bool // rule|pid already handled
	enforced sync.Map        // pid -> killed in the kernel at exec
}

type job struct {
	ev   engine.Event
	rule *engine.Rule
}

func newResponder(set *ruleset.Set, node, evidenceDir string, enabled bool, log *slog.Logger, out *alertWriter) *responder {
	r := &responder{set: set, node: node, local: &rnode.Local{}, enabled: enabled, log: log, out: out, done: map[string]bool{}}
	deps := responders.Deps{Node: r.local}
	if evidenceDir != "" {
		deps.Store = &evidence.Dir{Root: evidenceDir, Node: node}
		if spool, err := rnode.SpoolIn(evidenceDir); err == nil {
			r.local.SpoolDir = spool
		} else {
			log.Warn("captures spool in the system's temporary folder", "error", err)
		}
	}
	r.actions = responders.Defaults(deps)
	return r
}

func (r *responder) start() {
	r.queue = make(chan job, 256)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for j := range r.queue {
			r.handle(j)
		}
	}()
}

func (r *responder) stop() { close(r.queue); r.wg.Wait(); r.local.Close() }

func (r *responder) enqueue(ev engine.Event, rule *engine.Rule) {
	if !r.enabled || len(rule.Spec().Playbooks) == 0 {
		return
	}
	select {
	case r.queue <- job{ev, rule}:
	default:
		r.log.Warn("response queue full: responses skipped", "rule", rule.Name(), "pid", ev.Process.PID)
	}
}

func (r *responder) playbook(ns, name string) *v1alpha1.ResponsePlaybookSpec {
	for _, p := range r.set.Playbooks {
		if p.Name == name && p.Namespace == ns {
			return &p.Spec
		}
	}
	return nil
}

// incident is the Incident a host match would be in a cluster: the steps
// run against it as they would there.
func (r *responder) incident(j job) *v1alpha1.Incident {
	ev := &j.ev
	sample, _ := json.Marshal(ev)
	name := fmt.Sprintf("%s-%d-%d", j.rule.Name(), ev.Process.PID, ev.Time.Unix())
	return &v1alpha1.Incident{
		ObjectMeta: metav1.ObjectMeta{Name: strings.ReplaceAll(name, "/", "-"), Namespace: "host"},
		Spec: v1alpha1.IncidentSpec{Rule: j.rule.Name(), Severity: j.rule.Severity(), Output: j.rule.Output(ev),
			Subject: incident.SubjectOf(ev)},
		Status: v1alpha1.IncidentStatus{Count: 1, SampleEvents: []runtime.RawExtension{{Raw: evidence.RedactJSON(sample)}}},
	}
}

func (r *responder) handle(j job) {
	key := fmt.Sprintf("%s|%d", j.rule.Name(), j.ev.Process.PID)
	if r.done[key] {
		return
	}
	r.done[key] = true
	inc := r.incident(j)
	for _, name := range j.rule.Spec().Playbooks {
		pb := r.playbook(j.rule.Namespace(), name)
		if pb == nil {
			r.out.note("playbook %s: not found", name)
			continue
		}
		for _, ns := range responders.NamedSteps(pb.Steps) {
			st := ns.Step
			req := &responders.Request{Incident: inc, Playbook: responders.PlaybookKey(v1alpha1.PlaybookRef{Kind: "ClusterResponsePlaybook", Name: name}), Spec: pb, Step: st, StepName: ns.Name}
			if j.rule.Namespace() != "" {
				req.Playbook = j.rule.Namespace() + "/" + name
			}
			switch {
			case pb.DryRun:
				r.out.note("%s/%s: dry run", name, ns.Name)
				continue
			case st.Action == v1alpha1.ActionKill && st.InKernel:
				if _, done := r.enforced.Load(j.ev.Process.PID); done {
					r.out.note("%s/%s: done in the kernel at exec", name, ns.Name)
					continue
				}
			case st.Action == v1alpha1.ActionCapture && r.actions[v1alpha1.ActionCapture] == nil:
				r.out.note("%s/%s: skipped (no --evidence folder)", name, ns.Name)
				continue
			}
			act, ok := r.actions[st.Action].(responders.NodeAction)
			if !ok || (st.Action == v1alpha1.ActionKill && st.Kill != nil && st.Kill.Target == "pod") {
				r.out.note("%s/%s: needs the cluster controller; not run on a host", name, ns.Name)
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			var res responders.Result
			var err error
			if c, isCapture := r.actions[st.Action].(*responders.Capture); isCapture {
				res, err = c.Do(ctx, req)
			} else {
				res, err = act.DoOnNode(ctx, req)
			}
			cancel()
			if err != nil {
				r.out.note("%s/%s: %v", name, ns.Name, err)
				continue
			}
			r.out.note("%s/%s: %s", name, ns.Name, res.Message)
		}
	}
}
