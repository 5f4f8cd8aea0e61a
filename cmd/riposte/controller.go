package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/fluxcd/pkg/runtime/leaderelection"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2/textlogger"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/riposte-dev/riposte/internal/controllermgr"
	"github.com/riposte-dev/riposte/internal/objects"
	"github.com/riposte-dev/riposte/responders"
)

func init() {
	register(command{name: "controller", summary: "run the in-cluster controller (rules, playbooks, audit and object sources, incidents, admission webhook)", run: runController})
}

func runController(args []string) int {
	fs := pflag.NewFlagSet("controller", pflag.ContinueOnError)
	var (
		opts        controllermgr.Options
		le          leaderelection.Options
		tokenFile   string
		objectKinds []string
		verbosity   int
	)
	le.BindFlags(fs)
	fs.StringVar(&opts.Namespace, "namespace", envOr("RUNTIME_NAMESPACE", "riposte-system"), "The controller's namespace (leader lease, certificate Secret, cluster-level Incidents).")
	fs.StringVar(&opts.MetricsAddr, "metrics-addr", ":8080", "The address the metric endpoint binds to; 0 disables it.")
	fs.StringVar(&opts.HealthAddr, "health-addr", ":9440", "The address the health endpoint binds to; 0 disables it.")
	fs.StringVar(&opts.CertSecret, "cert-secret", "riposte-controller-cert", "Secret holding the self-managed CA and serving certificate.")
	fs.StringSliceVar(&opts.CertHosts, "cert-hosts", []string{"riposte-controller.riposte-system.svc"}, "DNS names and IPs of the serving certificate, the Service name first.")
	fs.StringVar(&opts.WebhookAddr, "webhook-addr", ":9443", "The address the admission webhook binds to; empty disables it.")
	fs.StringVar(&opts.WebhookConfig, "webhook-config", "riposte-validating-webhook", "ValidatingWebhookConfiguration whose caBundle is kept current; empty leaves it to cert-manager.")
	fs.StringVar(&opts.AuditAddr, "audit-addr", ":8443", "The address the audit webhook source binds to; empty disables it.")
	fs.StringVar(&opts.AuditCertFile, "audit-tls-cert-file", "", "Serving certificate for the audit endpoint (default: the self-managed one).")
	fs.StringVar(&opts.AuditKeyFile, "audit-tls-key-file", "", "Key of --audit-tls-cert-file.")
	fs.StringVar(&opts.AuditClientCAFile, "audit-client-ca-file", "", "CA bundle whose client certificates may post audit events.")
	fs.StringVar(&tokenFile, "audit-token-file", "", "File with the bearer tokens (one a line) that may post audit events.")
	fs.Int64Var(&opts.Audit.MaxBodyBytes, "audit-max-body-bytes", 8<<20, "Largest audit request body; bigger ones get 413.")
	fs.IntVar(&opts.Audit.QueueBatches, "audit-queue-batches", 256, "Audit batches waiting for matching; when full, requests get 429.")
	fs.Int64Var(&opts.Audit.MaxQueueBytes, "audit-queue-bytes", 64<<20, "Request body bytes of the audit batches waiting for matching; a batch that does not fit gets 429.")
	fs.IntVar(&opts.Audit.Workers, "audit-workers", 0, "Audit matching goroutines (default GOMAXPROCS).")
	fs.StringSliceVar(&objectKinds, "object-kinds", nil, "Kinds watched by the object source besides Pods, as group/version/Kind (apps/v1/Deployment).")
	fs.BoolVar(&opts.DisableObjects, "disable-object-source", false, "Do not watch objects.")
	fs.BoolVar(&opts.DisableSourcePods, "disable-source-pods", false, "Do not resolve audit source IPs to pods (saves watching every pod and Service).")
	fs.Float64Var(&opts.Incident.WriteQPS, "incident-write-qps", 20, "Incident API writes per second.")
	fs.IntVar(&opts.Incident.WriteBurst, "incident-write-burst", 40, "Incident API write burst.")
	fs.BoolVar(&opts.Response.Disable, "disable-response", false, "Write Incidents but run no playbooks.")
	fs.BoolVar(&opts.Response.DryRun, "dry-run", false, "Run every playbook as a dry run: steps record what they would do and change nothing.")
	fs.StringSliceVar(&opts.Response.ProtectedNamespaces, "protected-namespaces", responders.DefaultProtectedNamespaces, "Namespaces playbooks may act in only when they opt in (the controller's own is always protected).")
	fs.StringVar(&opts.Response.EvidenceDir, "evidence-dir", "", "Folder (a mounted volume) for capture bundles; empty disables the capture action.")
	fs.StringVar(&opts.Response.Node, "node-name", os.Getenv("NODE_NAME"), "This pod's node, named in evidence locations.")
	fs.StringSliceVar(&opts.Response.NotifyAllow, "notify-allow", nil, "URL prefixes (scheme://host[:port][/path]) that namespaced ResponsePlaybooks may notify; none by default. ClusterResponsePlaybooks may notify any URL.")
	clusterDNS := fs.String("cluster-dns", responders.DefaultClusterDNS.String(), "The cluster DNS Service (namespace/name): isolate's allowDNS keeps port 53 of its addresses and pods open, nothing else.")
	fs.IntVar(&verbosity, "v", 0, "Log verbosity.")
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return exitOK
		}
		return exitBadUsage
	}
	opts.LeaderElection = le
	ns, name, ok := strings.Cut(*clusterDNS, "/")
	if !ok || ns == "" || name == "" {
		fmt.Fprintf(os.Stderr, "riposte controller: --cluster-dns %q: want namespace/name\n", *clusterDNS)
		return exitBadUsage
	}
	opts.Response.ClusterDNS = types.NamespacedName{Namespace: ns, Name: name}
	kinds, err := objects.ParseKinds(objectKinds)
	if err != nil {
		fmt.Fprintln(os.Stderr, "riposte controller:", err)
		return exitBadUsage
	}
	opts.ObjectKinds = kinds
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "riposte controller: read audit token file:", err)
			return exitBadUsage
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				opts.Audit.Tokens = append(opts.Audit.Tokens, l)
			}
		}
	}
	opts.Log = textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(verbosity)))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "riposte controller: load kubeconfig:", err)
		return exitBadUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := controllermgr.Run(ctx, cfg, opts); err != nil {
		fmt.Fprintln(os.Stderr, "riposte controller:", err)
		return exitFailed
	}
	return exitOK
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
