package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"log/slog"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/riposte-dev/riposte/internal/agentmgr"
	"github.com/riposte-dev/riposte/internal/incident"
)

func init() {
	register(command{name: "agent", summary: "run the node agent (DaemonSet): eBPF sensors, live rules from the cluster, Incidents", run: agentCmd})
}

// agentCmd binds the agent's flags; internal/agentmgr runs it.
func agentCmd(args []string) int {
	fs := pflag.NewFlagSet("riposte agent", pflag.ContinueOnError)
	o := agentmgr.Options{}
	fs.StringVar(&o.Node, "node", os.Getenv("NODE_NAME"), "this node's name")
	fs.StringVar(&o.Namespace, "namespace", envOr("RUNTIME_NAMESPACE", "riposte-system"), "the controller's namespace (Leases, cluster-level Incidents)")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", ":9464", "serve Prometheus metrics on this address (\"0\" disables)")
	fs.StringVar(&o.HealthAddr, "health-addr", ":9465", "serve /healthz and /readyz on this address (\"0\" disables)")
	fs.StringVar(&o.EvidenceDir, "evidence-dir", "/var/lib/riposte/evidence", "node folder (or volume) for the node part of capture steps")
	fs.StringVar(&o.PinDir, "pin-dir", "/sys/fs/bpf/riposte", "bpffs folder where kernel isolations are pinned to survive restarts (\"\" keeps them in the process)")
	fs.StringVar(&o.Incident.SpoolDir, "incident-spool", "", "node folder keeping the Incidents the API server cannot take during an outage until they are written, also across restarts (\"\" keeps them in memory, given up after 10 failed writes)")
	fs.IntVar(&o.Incident.SpoolMax, "incident-spool-max", incident.DefaultSpoolMax, "Incidents the spool holds; beyond it they are lost, counted (riposte_incident_spool_lost_total) and logged")
	fs.IntVar(&o.HostPID, "host-pid", 1, "a process in the host's mount namespace (its mount table and root locate containers' files; another mount namespace is a container's)")
	fs.StringSliceVar(&o.ProtectedNamespaces, "protected-namespaces", agentmgr.DefaultProtectedNamespaces, "namespaces delegated steps and in-kernel kills refuse unless a playbook allows them (the controller's namespace always)")
	if err := fs.Parse(args); err != nil {
		return exitBadUsage
	}
	if o.Node == "" {
		fmt.Fprintln(os.Stderr, "riposte agent: --node (or NODE_NAME) is required")
		return exitBadUsage
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "riposte agent: API server config: %v\n", err)
		return exitBadUsage
	}
	o.Log = logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := agentmgr.Run(ctx, cfg, o); err != nil {
		fmt.Fprintf(os.Stderr, "riposte agent: %v\n", err)
		return exitFailed
	}
	return exitOK
}
