package controllermgr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/fluxcd/pkg/runtime/events"
	"github.com/fluxcd/pkg/runtime/leaderelection"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
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
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enrich"
	"github.com/riposte-dev/riposte/evidence"
	"github.com/riposte-dev/riposte/internal/audit"
	"github.com/riposte-dev/riposte/internal/controller"
	"github.com/riposte-dev/riposte/internal/incident"
	"github.com/riposte-dev/riposte/internal/kube"
	"github.com/riposte-dev/riposte/internal/objects"
	"github.com/riposte-dev/riposte/internal/rollout"
	"github.com/riposte-dev/riposte/internal/session"
	"github.com/riposte-dev/riposte/internal/trust"
	rwebhook "github.com/riposte-dev/riposte/internal/webhook"
	"github.com/riposte-dev/riposte/responders"
)

// Options configure the controller process.
type Options struct {
	// Namespace is the controller's own namespace: leader election lease,
	// certificate Secret, Incidents about cluster-level subjects.
	Namespace string

	MetricsAddr string // "0" disables
	HealthAddr  string // "0" disables

	LeaderElection leaderelection.Options

	// CertSecret holds the self-managed CA and serving certificate, used by
	// the webhook and, unless AuditCertFile is set, the audit endpoint.
	CertSecret string
	// CertHosts are the serving certificate's names (Service DNS names, IPs).
	CertHosts []string

	// WebhookAddr serves the admission webhook; empty disables it.
	WebhookAddr string
	// WebhookConfig is the ValidatingWebhookConfiguration whose caBundle is
	// kept current; empty leaves it to someone else (cert-manager).
	WebhookConfig string

	// AuditAddr serves the audit webhook source; empty disables it.
	AuditAddr string
	// AuditCertFile and AuditKeyFile, when set, serve the audit endpoint
	// with a certificate the operator provides (the API server's audit
	// kubeconfig must trust it).
	AuditCertFile, AuditKeyFile string
	// AuditClientCAFile lists the CAs whose client certificates authenticate.
	AuditClientCAFile string
	Audit             audit.Options
	// Session bounds the exec requests kept to name who is behind an
	// exec'd process; SessionWait is how long an exec Incident waits for
	// its request (controller.DefaultSessionWait when zero).
	Session     session.Options
	SessionWait time.Duration

	// DisableSourcePods turns off resolving audit source IPs to pods (it
	// watches every pod and Service with the enrichment store).
	DisableSourcePods bool

	// ObjectKinds are watched by the object source besides Pods. The object
	// source is off when DisableObjects is set.
	ObjectKinds    []schema.GroupVersionKind
	DisableObjects bool

	Incident incident.Options

	Response Response

	Log logr.Logger

	// SkipNameValidation lets one process run the controller more than once
	// (test/stack, once per test): controller-runtime otherwise refuses a
	// second controller of a name it has seen.
	SkipNameValidation bool
}

// Response configures how the controller runs playbooks for Incidents.
type Response struct {
	// Disable turns response off: Incidents are written, playbooks not run.
	Disable bool
	// DryRun turns every playbook into a dry run: each step records what it
	// would have done (phase DryRun) and changes nothing.
	DryRun bool
	// ProtectedNamespaces replaces responders.DefaultProtectedNamespaces when
	// not nil; the controller's own namespace is always protected.
	ProtectedNamespaces []string
	// EvidenceDir is where capture writes bundles (a mounted volume); empty
	// leaves capture out, and a playbook asking for it fails that step.
	EvidenceDir string
	// Node names this controller's node in evidence locations (node:path).
	Node string
	// NotifyAllow are the URL prefixes namespaced playbooks may notify.
	NotifyAllow []string
	// ClusterDNS is the Service isolate's allowDNS keeps reachable; default
	// responders.DefaultClusterDNS.
	ClusterDNS types.NamespacedName
}

// IncidentKeySecret is the Secret of the controller's namespace holding the
// key it signs its Incidents with.
const IncidentKeySecret = "riposte-incident-key"

// Scheme holds every type the controller reads or writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1alpha1.AddToScheme(s)
	return s
}

// Run runs the controller until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, opts Options) error {
	log := opts.Log
	if log.GetSink() == nil {
		// logr.Discard() has no sink, and some libraries call
		// GetSink().Enabled(): give them a sink that drops everything.
		log = funcr.New(func(string, string) {}, funcr.Options{})
	}
	ctrl.SetLogger(log)
	if opts.Namespace == "" {
		return errors.New("the controller namespace is required")
	}
	le := opts.LeaderElection
	mgrOpts := ctrl.Options{
		Scheme:                        Scheme(),
		Metrics:                       metricsserver.Options{BindAddress: orOff(opts.MetricsAddr)},
		HealthProbeBindAddress:        orOff(opts.HealthAddr),
		LeaderElection:                le.Enable,
		LeaderElectionID:              "riposte-controller-leader",
		LeaderElectionNamespace:       opts.Namespace,
		LeaderElectionReleaseOnCancel: le.ReleaseOnCancel,
		Logger:                        log,
		Controller:                    config.Controller{SkipNameValidation: ptr.To(opts.SkipNameValidation)},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			// Only the agents' Leases, not every node heartbeat in the cluster.
			&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{opts.Namespace: {}}},
			// Only riposte's own NetworkPolicies, which isolation re-asserts.
			&networkingv1.NetworkPolicy{}: {Label: labels.SelectorFromSet(labels.Set{v1alpha1.ManagedByLabel: v1alpha1.ManagedByValue})},
		}},
		// config/rbac grants only get on these: a cached read would start an
		// informer that can never list them and fail after its sync timeout
		// (found on the real node: a second isolate of a pod read its
		// existing NetworkPolicy through the cache).
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{
			&corev1.Node{}, &corev1.ReplicationController{},
			&appsv1.ReplicaSet{}, &appsv1.Deployment{}, &appsv1.StatefulSet{}, &appsv1.DaemonSet{},
			&batchv1.Job{}, &batchv1.CronJob{},
		}}},
	}
	if le.Enable {
		mgrOpts.LeaseDuration, mgrOpts.RenewDeadline, mgrOpts.RetryPeriod = &le.LeaseDuration, &le.RenewDeadline, &le.RetryPeriod
	}
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	// Ready once the informer caches have synced and, when it is enabled,
	// the admission webhook answers: before that a Service would route
	// admission requests to a replica that cannot answer them.
	if err := mgr.AddReadyzCheck("informers", cacheSynced(mgr.GetCache())); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	webhookServing := &servingCheck{}
	if opts.WebhookAddr != "" {
		if err := mgr.AddReadyzCheck("webhook", webhookServing.Check); err != nil {
			return fmt.Errorf("add ready check: %w", err)
		}
	}
	recorder, err := events.NewRecorder(log.WithName("events"), "", "riposte-controller", events.WithManager(mgr))
	if err != nil {
		return fmt.Errorf("create event recorder: %w", err)
	}

	registry := controller.NewRegistry()
	nodes := &rollout.Tracker{Reader: mgr.GetClient(), Namespace: opts.Namespace}
	reconcilers := []interface{ SetupWithManager(ctrl.Manager) error }{
		&controller.DetectionRuleReconciler{Client: mgr.GetClient(), Registry: registry, Recorder: recorder, Rollout: nodes},
		&controller.ClusterDetectionRuleReconciler{Client: mgr.GetClient(), Registry: registry, Recorder: recorder, Rollout: nodes},
		&controller.ResponsePlaybookReconciler{Client: mgr.GetClient(), Recorder: recorder},
		&controller.ClusterResponsePlaybookReconciler{Client: mgr.GetClient(), Recorder: recorder},
	}
	for _, r := range reconcilers {
		if err := r.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up %T: %w", r, err)
		}
	}

	// The certificate manager and the signing key read Secrets of one
	// namespace, also before the manager's cache runs: a direct client
	// avoids caching every Secret of the namespace.
	direct, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	key, err := trust.EnsureKey(ctx, direct, opts.Namespace, IncidentKeySecret)
	if err != nil {
		return err
	}
	signer, err := trust.NewSigner(key)
	if err != nil {
		return err
	}

	incOpts := opts.Incident
	incOpts.Namespace, incOpts.Origin, incOpts.Signer = opts.Namespace, v1alpha1.OriginController, signer
	writer := incident.NewWriter(mgr.GetClient(), log.WithName("incident"), incOpts)
	registerMetrics(writer.Collectors()...)
	// Incident writes happen on the leader only, so replicas never fold
	// the same matches twice.
	if err := mgr.Add(manager.RunnableFunc(writer.Run)); err != nil {
		return err
	}
	// Sequence rules' partial chains, shared by the audit and object
	// sources: a privileged pod seen by the watch, then an exec in the
	// audit log, is one chain.
	seqs := engine.NewSequences()

	if !opts.Response.Disable {
		auth := &trust.Authorizer{Signer: signer, Reader: mgr.GetClient(), Owners: mgr.GetAPIReader(), Namespace: opts.Namespace}
		if err := setupResponse(mgr, cfg, opts, auth, recorder); err != nil {
			return err
		}
	}

	certs := &rwebhook.CertManager{
		Client: direct, Namespace: opts.Namespace, SecretName: opts.CertSecret,
		Hosts: opts.CertHosts, WebhookConfig: opts.WebhookConfig, Log: log.WithName("certs"),
	}
	needCerts := opts.WebhookAddr != "" || (opts.AuditAddr != "" && opts.AuditCertFile == "")
	if needCerts {
		if opts.CertSecret == "" || len(opts.CertHosts) == 0 {
			return errors.New("a certificate secret and hosts are required to serve the webhook or the audit endpoint")
		}
		if err := certs.Ensure(ctx); err != nil {
			return err
		}
		if err := mgr.Add(nonLeader(func(ctx context.Context) error { return certs.Run(ctx, time.Hour) })); err != nil {
			return err
		}
	}

	if opts.WebhookAddr != "" {
		v := &rwebhook.Validator{Playbooks: controller.PlaybookLookup(mgr.GetAPIReader())}
		mux := http.NewServeMux()
		mux.Handle(rwebhook.Path, v.Handler())
		tlsCfg := &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}
		if err := mgr.Add(nonLeader(serveTLS(opts.WebhookAddr, mux, tlsCfg, log.WithName("webhook"), webhookServing.bound))); err != nil {
			return err
		}
		if opts.WebhookConfig != "" {
			if err := (&rwebhook.CABundleReconciler{Certs: certs}).SetupWithManager(mgr); err != nil {
				return fmt.Errorf("set up caBundle reconciler: %w", err)
			}
		}
	}

	if opts.AuditAddr != "" {
		auditOpts := opts.Audit
		if !opts.DisableSourcePods {
			store, err := enrich.New(enrich.Options{})
			if err != nil {
				return fmt.Errorf("create enrichment store: %w", err)
			}
			ks, err := kube.NewSource(cfg, store, "")
			if err != nil {
				return err
			}
			klog := log.WithName("source-pods")
			ks.OnError = func(err error) { klog.V(1).Info("resolve pods", "error", err.Error()) }
			if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
				if err := ks.Start(ctx); err != nil {
					return fmt.Errorf("start pod identity source: %w", err)
				}
				store.Run(ctx, time.Minute) // tombstones go after their retention
				return nil
			})); err != nil {
				return err
			}
			auditOpts.SourcePods = store
		}
		auditOpts.Sequences = seqs
		// Who is behind an exec'd process: the audit source keeps the
		// exec requests, the leader's reconciler joins them with agents'
		// Incidents (docs/agent.md, "Who is behind the shell").
		sr := &controller.SessionReconciler{Client: mgr.GetClient(), Wait: opts.SessionWait}
		sessions := session.NewStore(opts.Session, sr.Waker())
		sr.Store = sessions
		registerMetrics(sessions.Collectors()...)
		if err := sr.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up session reconciler: %w", err)
		}
		observe := auditOpts.Observe
		auditOpts.Observe = func(ev *engine.Event) {
			sessions.Observe(ev)
			if observe != nil {
				observe(ev)
			}
		}
		src := audit.New(registry, writer, log.WithName("audit"), auditOpts)
		registerMetrics(src.Collectors()...)
		tlsCfg := &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}
		if opts.AuditCertFile != "" {
			pair, err := tls.LoadX509KeyPair(opts.AuditCertFile, opts.AuditKeyFile)
			if err != nil {
				return fmt.Errorf("load audit serving certificate: %w", err)
			}
			tlsCfg = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
		}
		if opts.AuditClientCAFile != "" {
			pem, err := os.ReadFile(opts.AuditClientCAFile)
			if err != nil {
				return fmt.Errorf("read audit client CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("audit client CA %s holds no certificate", opts.AuditClientCAFile)
			}
			tlsCfg.ClientCAs, tlsCfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
		}
		if len(opts.Audit.Tokens) == 0 && tlsCfg.ClientCAs == nil {
			return errors.New("the audit endpoint needs a bearer token or a client CA: it never accepts unauthenticated requests")
		}
		if err := mgr.Add(manager.RunnableFunc(src.Run)); err != nil {
			return err
		}
		if err := mgr.Add(manager.RunnableFunc(serveTLS(opts.AuditAddr, src, tlsCfg, log.WithName("audit"), nil))); err != nil {
			return err
		}
	}

	if !opts.DisableObjects {
		src := objects.New(registry, writer, log.WithName("objects"), 0)
		src.ShareSequences(seqs)
		registerMetrics(src.Collectors()...)
		kinds := append([]schema.GroupVersionKind{objects.PodKind}, opts.ObjectKinds...)
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			if err := src.Watch(ctx, mgr.GetCache(), kinds); err != nil {
				return err
			}
			return src.Run(ctx)
		})); err != nil {
			return err
		}
	}

	log.Info("starting controller", "namespace", opts.Namespace, "webhook", opts.WebhookAddr, "audit", opts.AuditAddr)
	return mgr.Start(ctx)
}

// setupResponse registers the Incident reconciler, which runs the playbooks
// named by each Incident through the responders.
func setupResponse(mgr ctrl.Manager, cfg *rest.Config, opts Options, auth *trust.Authorizer, recorder controller.EventRecorder) error {
	ro := opts.Response
	deps := responders.Deps{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), NotifyAllowed: ro.NotifyAllow, ClusterDNS: ro.ClusterDNS}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("create clientset: %w", err)
	}
	deps.Logs = responders.ClientsetLogs{Clientset: cs}
	if ro.EvidenceDir != "" {
		deps.Store = &evidence.Dir{Root: ro.EvidenceDir, Node: ro.Node}
	}
	runner := &responders.Runner{
		Client:              mgr.GetClient(),
		Actions:             responders.Defaults(deps),
		DryRun:              ro.DryRun,
		ProtectedNamespaces: ro.ProtectedNamespaces,
		OwnNamespace:        opts.Namespace,
	}
	if err := (&controller.IncidentReconciler{Client: mgr.GetClient(), Runner: runner, Authorizer: auth, Recorder: recorder}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up incident reconciler: %w", err)
	}
	iso, _ := runner.Actions[v1alpha1.ActionIsolate].(*responders.Isolate)
	if err := (&controller.IsolationReconciler{Client: mgr.GetClient(), Isolate: iso, Recorder: recorder, Signer: auth.Signer}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up isolation reconciler: %w", err)
	}
	return nil
}

func orOff(addr string) string {
	if addr == "" {
		return "0"
	}
	return addr
}

// serveTLS returns a runnable serving h on addr until ctx ends; onListen,
// when set, learns the bound address.
func serveTLS(addr string, h http.Handler, cfg *tls.Config, log logr.Logger, onListen func(net.Addr)) func(context.Context) error {
	return func(ctx context.Context) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		if onListen != nil {
			onListen(ln.Addr())
		}
		srv := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
			// TLS handshake failures (probes, scanners) go to the log at V(1)
			// instead of the process's stderr.
			ErrorLog: stdlog.New(logWriter{log.V(1)}, "", 0)}
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		log.Info("serving", "addr", ln.Addr().String())
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve %s: %w", addr, err)
		}
		return nil
	}
}

// logWriter adapts the standard library's server error log to logr.
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Info(strings.TrimSpace(string(p)))
	return len(p), nil
}

// nonLeader runs on every replica, leader or not: admission must answer
// wherever the Service sends a request.
type nonLeader func(context.Context) error

func (f nonLeader) Start(ctx context.Context) error { return f(ctx) }
func (nonLeader) NeedLeaderElection() bool          { return false }

// registerMetrics registers collectors with controller-runtime's registry,
// replacing those of an earlier Run in the same process (test/stack starts
// the controller once per test; the registry is global).
func registerMetrics(cs ...prometheus.Collector) {
	for _, c := range cs {
		ctrlmetrics.Registry.Unregister(c)
		ctrlmetrics.Registry.MustRegister(c)
	}
}
