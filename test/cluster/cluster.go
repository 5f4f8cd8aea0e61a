package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/riposte-dev/riposte/test/proc"
)

// TempDirPrefix starts the name of every cluster's temp dir (under
// os.TempDir()), so leftovers can be found by name.
const TempDirPrefix = "riposte-cluster-"

// ServiceAccountIssuer is the iss claim of minted tokens; it is the in-cluster
// name a real cluster would use, so tokens look like production ones.
const ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// Options says which parts to start and how to configure them; the zero value
// starts etcd and kube-apiserver with DefaultAuditPolicy and no webhook.
type Options struct {
	// ControllerManager also starts kube-controller-manager, so that
	// Deployments get ReplicaSets and Pods, scaling works, namespaces get their
	// "default" ServiceAccount and kube-root-ca.crt. Adds ~1-2 s to Start.
	ControllerManager bool
	// AuditWebhook, when set, makes kube-apiserver send its audit events there
	// (batch mode). See AuditSink for a ready-made receiver.
	AuditWebhook *AuditWebhook
	// AuditPolicy replaces DefaultAuditPolicy (an audit.k8s.io/v1 Policy).
	AuditPolicy string
	// APIServerArgs are appended to the harness's kube-apiserver flags; a
	// repeated flag overrides the earlier one.
	APIServerArgs []string
	// StartTimeout bounds Start when ctx has no deadline; default 2 min, far
	// above the ~10 s it takes, for CI machines busy compiling other packages.
	StartTimeout time.Duration
	// BinDir overrides where the binaries are taken from (see BinDir).
	BinDir string
}

// AuditWebhook is where kube-apiserver posts audit.k8s.io/v1 EventLists.
type AuditWebhook struct {
	URL    string // https://127.0.0.1:port/...
	CAData []byte // PEM of the CA that signed the webhook's serving certificate
	// BatchMaxWait is how long events are buffered before a batch is sent;
	// default 100ms so a test sees its event within a fraction of a second.
	BatchMaxWait time.Duration
}

// Cluster is a running control plane. All methods are safe for concurrent use.
type Cluster struct {
	dir, binDir string
	host        string
	caPEM       []byte
	authority   *ca
	admin       keyPair
	kubeconfig  string
	ports       []int
	started     time.Duration
	phases      []string // "etcd 0.4s", … for StartPhases

	// mu guards the processes: Restart* replaces them while other
	// goroutines may call PIDs or Stop.
	mu                                 sync.Mutex
	etcd, apiserver, controllerManager *proc.Process
	etcdArgs, apiserverArgs            []string
	etcdURL                            string

	stopOnce sync.Once
	stopErr  error
}

// Start brings up the control plane and returns once kube-apiserver is ready
// (and, with Options.ControllerManager, once controllers are running). On
// error nothing is left running and the temp dir is gone.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	begin := time.Now()
	binDir := opts.BinDir
	if binDir == "" {
		var err error
		if binDir, err = BinDir(); err != nil {
			return nil, err
		}
	} else if err := checkBinaries(binDir); err != nil {
		return nil, err
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.StartTimeout)
		defer cancel()
	}
	sweepStaleDirs()

	c, err := start(ctx, binDir, opts)
	if isPortClash(err) {
		// A port reserved by freePorts was taken before the program bound it;
		// new ports almost surely do not clash again.
		c, err = start(ctx, binDir, opts)
	}
	if err != nil {
		return nil, err
	}
	c.started = time.Since(begin)
	return c, nil
}

func start(ctx context.Context, binDir string, opts Options) (c *Cluster, err error) {
	dir, err := os.MkdirTemp("", TempDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("create cluster temp dir: %w", err)
	}
	c = &Cluster{dir: dir, binDir: binDir}
	phase := time.Now()
	done := func(name string) {
		c.phases = append(c.phases, fmt.Sprintf("%s %s", name, time.Since(phase).Round(time.Millisecond)))
		phase = time.Now()
	}
	defer func() {
		if err != nil {
			c.Stop()
			c = nil
		}
	}()
	// Lets a later Start remove this dir if our process dies without cleanup.
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return c, fmt.Errorf("write owner pid: %w", err)
	}
	if c.ports, err = proc.FreePorts(3); err != nil {
		return c, err
	}
	etcdPort, peerPort, apiPort := c.ports[0], c.ports[1], c.ports[2]
	c.host = fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	f, err := c.writePKI()
	if err != nil {
		return c, err
	}
	done("certificates")

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	c.etcdURL = etcdURL
	c.etcdArgs = []string{
		"--name=default",
		"--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		// Explicit peer URL: the default :2380 would clash between clusters.
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
		// Throw-away data: fsync only costs time.
		"--unsafe-no-fsync=true",
	}
	if err := c.startEtcd(ctx); err != nil {
		return c, err
	}
	done("etcd")

	policy := opts.AuditPolicy
	if policy == "" {
		policy = DefaultAuditPolicy
	}
	if err := os.WriteFile(f.auditPolicy, []byte(policy), 0o600); err != nil {
		return c, fmt.Errorf("write audit policy: %w", err)
	}
	args := []string{
		"--advertise-address=127.0.0.1",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + f.servingCert,
		"--tls-private-key-file=" + f.servingKey,
		"--client-ca-file=" + f.caCert,
		"--etcd-servers=" + etcdURL,
		"--service-cluster-ip-range=10.96.0.0/24",
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--service-account-key-file=" + f.saPub,
		"--service-account-signing-key-file=" + f.saKey,
		"--authorization-mode=Node,RBAC",
		// No kubelets and no kube-proxy here: the kubernetes Service endpoints
		// would point at an address nothing serves.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--kubelet-preferred-address-types=Hostname",
		"--audit-policy-file=" + f.auditPolicy,
		"--audit-log-path=" + filepath.Join(dir, "audit.log"),
		"--profiling=false",
	}
	if w := opts.AuditWebhook; w != nil {
		if err := writeWebhookKubeconfig(f.auditWebhook, w); err != nil {
			return c, err
		}
		wait := w.BatchMaxWait
		if wait == 0 {
			wait = 100 * time.Millisecond
		}
		args = append(args,
			"--audit-webhook-config-file="+f.auditWebhook,
			"--audit-webhook-mode=batch",
			"--audit-webhook-batch-max-wait="+wait.String(),
			// A webhook that is briefly down is retried soon, not after 10 s.
			"--audit-webhook-initial-backoff=100ms",
			// Batches never exceed what riposte's endpoint accepts (8 MiB):
			// a 413 is not retried (docs/controller.md).
			"--audit-webhook-truncate-enabled=true",
			"--audit-webhook-truncate-max-batch-size=8388608",
		)
	}
	c.apiserverArgs = append(args, opts.APIServerArgs...)
	if err := c.startAPIServer(ctx); err != nil {
		return c, err
	}
	done("kube-apiserver")
	admin := c.AdminConfig()

	if opts.ControllerManager {
		if c.controllerManager, err = spawn(binDir, dir, "kube-controller-manager", []string{
			"--kubeconfig=" + f.controllerManagerKubeconfig,
			// Without these it looks for in-cluster config and logs warnings.
			"--authentication-kubeconfig=" + f.controllerManagerKubeconfig,
			"--authorization-kubeconfig=" + f.controllerManagerKubeconfig,
			"--bind-address=127.0.0.1",
			// Serving its metrics needs no port here: 0 turns the server off.
			"--secure-port=0",
			"--leader-elect=false",
			// Each controller acts as its own ServiceAccount, as in a real
			// cluster, so audit events name e.g. system:serviceaccount:kube-system:deployment-controller.
			"--use-service-account-credentials=true",
			"--root-ca-file=" + f.caCert,
			"--service-account-private-key-file=" + f.saKey,
		}); err != nil {
			return c, err
		}
		cs, err := kubernetes.NewForConfig(admin)
		if err != nil {
			return c, fmt.Errorf("build admin clientset: %w", err)
		}
		// The "default" ServiceAccount only appears once the controllers run.
		if err := c.waitFor(ctx, c.controllerManager, "wait for kube-controller-manager to create default/default ServiceAccount", func(ctx context.Context) error {
			_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
			return err
		}); err != nil {
			return c, err
		}
		done("kube-controller-manager")
	}
	if err := c.writeAdminKubeconfig(); err != nil {
		return c, err
	}
	return c, nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	p, err := spawn(c.binDir, c.dir, "etcd", c.etcdArgs)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.etcd = p
	c.mu.Unlock()
	return c.waitFor(ctx, p, "wait for etcd health", func(ctx context.Context) error {
		return httpGetOK(ctx, http.DefaultClient, c.etcdURL+"/health")
	})
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	p, err := spawn(c.binDir, c.dir, "kube-apiserver", c.apiserverArgs)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.apiserver = p
	c.mu.Unlock()
	httpClient, err := rest.HTTPClientFor(c.AdminConfig())
	if err != nil {
		return fmt.Errorf("build admin HTTP client: %w", err)
	}
	return c.waitFor(ctx, p, "wait for kube-apiserver /readyz", func(ctx context.Context) error {
		return httpGetOK(ctx, httpClient, c.host+"/readyz")
	})
}

// RestartEtcd kills etcd (no clean shutdown, as a crash), runs down while it
// is down when down is not nil, and starts it again on the same data and
// ports; it returns once etcd is healthy. kube-apiserver keeps running and
// reconnects by itself.
func (c *Cluster) RestartEtcd(ctx context.Context, down func()) error {
	c.mu.Lock()
	p := c.etcd
	c.mu.Unlock()
	p.Stop(0)
	if down != nil {
		down()
	}
	return c.startEtcd(ctx)
}

// RestartAPIServer stops kube-apiserver (etcd keeps running), runs down
// while it is down when down is not nil, and starts it again with the same
// flags and port; it returns once /readyz passes. Clients see connection
// refused meanwhile, as during an API server outage.
func (c *Cluster) RestartAPIServer(ctx context.Context, down func()) error {
	c.mu.Lock()
	p := c.apiserver
	c.mu.Unlock()
	p.Stop(10 * time.Second)
	if down != nil {
		down()
	}
	return c.startAPIServer(ctx)
}

// files are the paths writePKI produced.
type files struct {
	caCert, servingCert, servingKey, saKey, saPub string
	auditPolicy, auditWebhook                     string
	controllerManagerKubeconfig                   string
}

func (c *Cluster) writePKI() (files, error) {
	f := files{
		caCert:                      filepath.Join(c.dir, "ca.crt"),
		saKey:                       filepath.Join(c.dir, "sa.key"),
		saPub:                       filepath.Join(c.dir, "sa.pub"),
		auditPolicy:                 filepath.Join(c.dir, "audit-policy.yaml"),
		auditWebhook:                filepath.Join(c.dir, "audit-webhook.kubeconfig"),
		controllerManagerKubeconfig: filepath.Join(c.dir, "kube-controller-manager.kubeconfig"),
	}
	authority, err := newCA()
	if err != nil {
		return f, err
	}
	c.authority, c.caPEM = authority, authority.certPEM
	if err := os.WriteFile(f.caCert, c.caPEM, 0o600); err != nil {
		return f, fmt.Errorf("write CA: %w", err)
	}
	serving, err := authority.issue("kube-apiserver", nil, []string{
		"127.0.0.1", "localhost", "10.96.0.1",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
	}, true)
	if err != nil {
		return f, err
	}
	if f.servingCert, f.servingKey, err = serving.writeFiles(filepath.Join(c.dir, "apiserver")); err != nil {
		return f, err
	}
	// system:masters bypasses RBAC: the admin must work before any role exists.
	if c.admin, err = authority.issue("riposte-test-admin", []string{"system:masters"}, nil, false); err != nil {
		return f, err
	}
	// The bootstrap RBAC policy grants this user exactly what the controller
	// manager needs, so it is tested under RBAC like in a real cluster.
	kcm, err := authority.issue("system:kube-controller-manager", nil, nil, false)
	if err != nil {
		return f, err
	}
	if err := writeKubeconfig(f.controllerManagerKubeconfig, c.host, c.caPEM, kcm); err != nil {
		return f, err
	}
	priv, pub, err := newSigningKey()
	if err != nil {
		return f, err
	}
	if err := os.WriteFile(f.saKey, priv, 0o600); err != nil {
		return f, fmt.Errorf("write service-account key: %w", err)
	}
	if err := os.WriteFile(f.saPub, pub, 0o600); err != nil {
		return f, fmt.Errorf("write service-account public key: %w", err)
	}
	return f, nil
}

func (c *Cluster) writeAdminKubeconfig() error {
	c.kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	return writeKubeconfig(c.kubeconfig, c.host, c.caPEM, c.admin)
}

func writeKubeconfig(path, server string, caPEM []byte, user keyPair) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: user.cert, ClientKeyData: user.key}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "user"}
	cfg.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// writeWebhookKubeconfig writes the kubeconfig kube-apiserver reads to reach
// the audit webhook: the "cluster" is the webhook, with its CA.
func writeWebhookKubeconfig(path string, w *AuditWebhook) error {
	if w.URL == "" {
		return errors.New("audit webhook: URL is empty")
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["audit"] = &clientcmdapi.Cluster{Server: w.URL, CertificateAuthorityData: w.CAData}
	cfg.AuthInfos["apiserver"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["audit"] = &clientcmdapi.Context{Cluster: "audit", AuthInfo: "apiserver"}
	cfg.CurrentContext = "audit"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write audit webhook kubeconfig: %w", err)
	}
	return nil
}

// waitFor polls check until it succeeds, the process dies or ctx ends; the
// error then carries the last check error and the tail of the process's log.
func (c *Cluster) waitFor(ctx context.Context, p *proc.Process, what string, check func(context.Context) error) error {
	last := errors.New("not checked yet")
	for {
		if done, _ := p.Exited(); done {
			return p.Failure(what, fmt.Errorf("%w (last check: %v)", errExited, last))
		}
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = check(attempt)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return p.Failure(what, fmt.Errorf("%w (last check: %v)", ctx.Err(), last))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func httpGetOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// spawn starts one of the control-plane binaries.
func spawn(binDir, dir, name string, args []string) (*proc.Process, error) {
	return proc.Start(dir, name, filepath.Join(binDir, name), args, nil)
}

// Stop kills the processes (whole process groups) and removes the temp dir.
// It is idempotent and returns the first error of the first call.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		c.mu.Lock()
		procs := []*proc.Process{c.controllerManager, c.apiserver, c.etcd}
		c.mu.Unlock()
		// Reverse start order: clients before the servers they talk to, so
		// nothing logs a storm of connection errors while going down.
		for _, p := range procs {
			if p != nil {
				p.Stop(10 * time.Second)
			}
		}
		if err := os.RemoveAll(c.dir); err != nil {
			c.stopErr = fmt.Errorf("remove cluster dir %s: %w", c.dir, err)
		}
	})
	return c.stopErr
}

// AdminConfig returns a fresh config for a system:masters client-certificate
// user: it bypasses RBAC, for setting up fixtures.
func (c *Cluster) AdminConfig() *rest.Config {
	return &rest.Config{
		Host: c.host,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.caPEM,
			CertData: c.admin.cert,
			KeyData:  c.admin.key,
		},
		// Tests create fixtures in bursts; client-go's default 5 QPS throttles them.
		QPS:   100,
		Burst: 200,
	}
}

// UserConfig returns a config that authenticates with a fresh client
// certificate for user name in groups, e.g. ("system:node:worker-1",
// "system:nodes") to act as a kubelet under the Node authorizer, or any user a
// test binds roles to.
func (c *Cluster) UserConfig(name string, groups ...string) (*rest.Config, error) {
	pair, err := c.authority.issue(name, groups, nil, false)
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host:            c.host,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM, CertData: pair.cert, KeyData: pair.key},
		QPS:             100,
		Burst:           200,
	}, nil
}

// EnsureServiceAccount creates the namespace and the ServiceAccount unless
// they already exist.
func (c *Cluster) EnsureServiceAccount(ctx context.Context, namespace, name string) error {
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return fmt.Errorf("build admin clientset: %w", err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create serviceaccount %s/%s: %w", namespace, name, err)
	}
	return nil
}

// ServiceAccountConfig mints a one-hour token for an existing ServiceAccount
// through the TokenRequest API and returns a config that authenticates with it,
// so requests are made, authorized and audited as
// system:serviceaccount:<namespace>:<name>. Call EnsureServiceAccount first to
// create the account.
func (c *Cluster) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	return c.serviceAccountConfig(ctx, namespace, name, nil)
}

// NodeServiceAccountConfig is ServiceAccountConfig with the token bound to
// the Node object node, as the kubelet binds a DaemonSet pod's token to its
// node: the API server then authenticates the requests with the node's
// name in user.extra["authentication.kubernetes.io/node-name"], which is
// what the admission policies check an agent against. The Node must exist.
func (c *Cluster) NodeServiceAccountConfig(ctx context.Context, namespace, name, node string) (*rest.Config, error) {
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return nil, fmt.Errorf("build admin clientset: %w", err)
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("bind a token to node %s: %w", node, err)
	}
	return c.serviceAccountConfig(ctx, namespace, name, &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: n.Name, UID: n.UID})
}

func (c *Cluster) serviceAccountConfig(ctx context.Context, namespace, name string, bound *authenticationv1.BoundObjectReference) (*rest.Config, error) {
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return nil, fmt.Errorf("build admin clientset: %w", err)
	}
	expiry := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry, BoundObjectRef: bound},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("mint token for serviceaccount %s/%s: %w", namespace, name, err)
	}
	return &rest.Config{
		Host:            c.host,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		BearerToken:     tr.Status.Token,
		QPS:             100,
		Burst:           200,
	}, nil
}

// Kubectl returns a kubectl command for the admin user of this cluster.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "kubectl"), append([]string{"--kubeconfig=" + c.kubeconfig}, args...)...)
	cmd.Env = []string{"HOME=" + c.dir, "PATH=/usr/bin:/bin"}
	return cmd
}

// Host is the https URL of kube-apiserver.
func (c *Cluster) Host() string { return c.host }

// CAData is the PEM of the cluster CA (serving and client certificates).
func (c *Cluster) CAData() []byte { return c.caPEM }

// KubeconfigPath is an admin kubeconfig file, for tools that want one.
func (c *Cluster) KubeconfigPath() string { return c.kubeconfig }

// Dir is the cluster's temp dir: logs (<program>.log), audit.log, certificates.
// Stop removes it.
func (c *Cluster) Dir() string { return c.dir }

// StartDuration is how long Start took, for logging.
func (c *Cluster) StartDuration() time.Duration { return c.started }

// StartPhases says how long each step of Start took, e.g.
// "certificates 3ms, etcd 412ms, kube-apiserver 3.1s", for logging.
func (c *Cluster) StartPhases() string { return strings.Join(c.phases, ", ") }

// PIDs are the process ids of the running programs (also the ids of their
// process groups), for leftover checks.
func (c *Cluster) PIDs() []int {
	var pids []int
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range []*proc.Process{c.etcd, c.apiserver, c.controllerManager} {
		if p != nil {
			pids = append(pids, p.PID())
		}
	}
	return pids
}

// Ports are the loopback ports the cluster listens on (etcd client and peer,
// kube-apiserver).
func (c *Cluster) Ports() []int { return append([]int(nil), c.ports...) }

// sweepStaleDirs removes the temp dirs of clusters whose test process died
// without cleaning up (its processes died with it through Pdeathsig).
func sweepStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), TempDirPrefix+"*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue // being created right now, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(dir)
		}
	}
}
