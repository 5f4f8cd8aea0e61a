// Package stack runs riposte's controller the way a cluster runs it, on the
// real control plane of test/cluster: kube-apiserver posts its audit events
// to the controller's audit endpoint (authenticated by a client certificate),
// the controller runs as its ServiceAccount with exactly the RBAC of
// config/rbac, and the admission webhook can be registered with the API
// server. The controller's end-to-end tests and the cluster demo of
// `make run` use it.
package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/certs"
	"github.com/riposte-dev/riposte/internal/controllermgr"
	rwebhook "github.com/riposte-dev/riposte/internal/webhook"
	"github.com/riposte-dev/riposte/test/cluster"
	"github.com/riposte-dev/riposte/test/proc"
)

// Names the stack uses, as config/ does.
const (
	Namespace      = "riposte-system"
	ServiceAccount = "riposte-controller"
	CertSecret     = "riposte-controller-cert"
	WebhookConfig  = "riposte-validating-webhook"
)

// Options choose what to start.
type Options struct {
	// Root is the repository root (config/ is read from it); default: the
	// nearest parent of the working directory holding config/crd/bases.
	Root string
	// ControllerManager also starts kube-controller-manager.
	ControllerManager bool
	// AuditPolicy is the kube-apiserver audit policy; default: the shipped
	// config/audit/policy.yaml.
	AuditPolicy string
	// Response configures the controller's playbook runner; EvidenceDir
	// defaults to a folder in the stack's temp dir.
	Response controllermgr.Response
	// Log receives the controller's log (default: discarded).
	Log logr.Logger
}

// Stack is a running control plane with riposte's controller.
type Stack struct {
	// Root is the repository root config/ was read from.
	Root    string
	Cluster *cluster.Cluster
	// Client is an admin client with riposte's types.
	Client client.Client
	// WebhookAddr is the controller's admission webhook (host:port).
	WebhookAddr string
	// EvidenceDir holds the capture bundles.
	EvidenceDir string

	dir       string
	auditAddr string
	ctrlCfg   *rest.Config
	ctrlOpts  controllermgr.Options
	cancel    context.CancelFunc
	done      chan error
}

// Start brings everything up; on error nothing is left running.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	root := opts.Root
	if root == "" {
		if root, err = findRoot(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "riposte-stack-")
	if err != nil {
		return nil, err
	}
	s := &Stack{Root: root, dir: dir}
	defer func() {
		if err != nil {
			_ = s.Stop()
		}
	}()
	ports, err := proc.FreePorts(2)
	if err != nil {
		return nil, fmt.Errorf("pick ports: %w", err)
	}
	auditAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	s.WebhookAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])

	// The audit endpoint's PKI: a serving certificate for 127.0.0.1 and the
	// client certificate kube-apiserver presents.
	ca, err := certs.NewCA("riposte-audit-ca")
	if err != nil {
		return nil, err
	}
	serving, err := ca.Serving("127.0.0.1")
	if err != nil {
		return nil, err
	}
	apiClient, err := ca.Client("kube-apiserver")
	if err != nil {
		return nil, err
	}
	var files []string
	for _, f := range []struct {
		name string
		b    []byte
	}{{"audit.crt", serving.Cert}, {"audit.key", serving.Key}, {"ca.crt", ca.Cert}} {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.b, 0o600); err != nil {
			return nil, err
		}
		files = append(files, p)
	}
	auditURL := "https://" + auditAddr + "/audit"
	kc := clientcmdapi.NewConfig()
	kc.Clusters["audit"] = &clientcmdapi.Cluster{Server: auditURL, CertificateAuthorityData: ca.Cert}
	kc.AuthInfos["apiserver"] = &clientcmdapi.AuthInfo{ClientCertificateData: apiClient.Cert, ClientKeyData: apiClient.Key}
	kc.Contexts["audit"] = &clientcmdapi.Context{Cluster: "audit", AuthInfo: "apiserver"}
	kc.CurrentContext = "audit"
	kubeconfig := filepath.Join(dir, "audit-webhook.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		return nil, err
	}

	policy := opts.AuditPolicy
	if policy == "" {
		b, err := os.ReadFile(filepath.Join(root, "config/audit/policy.yaml"))
		if err != nil {
			return nil, err
		}
		policy = string(b)
	}
	c, err := cluster.Start(ctx, cluster.Options{
		ControllerManager: opts.ControllerManager,
		AuditPolicy:       policy,
		AuditWebhook:      &cluster.AuditWebhook{URL: auditURL, CAData: ca.Cert},
		// The harness's webhook kubeconfig carries no credentials; this one
		// authenticates kube-apiserver with its client certificate.
		APIServerArgs: []string{"--audit-webhook-config-file=" + kubeconfig},
	})
	if err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	s.Cluster = c
	if _, err := c.InstallCRDs(ctx, filepath.Join(root, "config/crd/bases")); err != nil {
		return nil, fmt.Errorf("install CRDs: %w", err)
	}
	if s.Client, err = client.New(c.AdminConfig(), client.Options{Scheme: controllermgr.Scheme()}); err != nil {
		return nil, err
	}
	if err := s.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	// The controller runs as its ServiceAccount with exactly config/rbac, so
	// a missing permission shows up here and not in a customer's cluster.
	if out, err := c.Kubectl(ctx, "apply", "-k", filepath.Join(root, "config/rbac")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("apply config/rbac: %w\n%s", err, out)
	}
	// The admission policies that guard Incidents and isolation, as shipped.
	if out, err := c.Kubectl(ctx, "apply", "-k", filepath.Join(root, "config/admission")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("apply config/admission: %w\n%s", err, out)
	}
	ctrlCfg, err := c.ServiceAccountConfig(ctx, Namespace, ServiceAccount)
	if err != nil {
		return nil, err
	}

	resp := opts.Response
	if resp.EvidenceDir == "" {
		resp.EvidenceDir = filepath.Join(dir, "evidence")
	}
	s.EvidenceDir = resp.EvidenceDir
	s.auditAddr, s.ctrlCfg = auditAddr, ctrlCfg
	s.ctrlOpts = controllermgr.Options{
		Namespace:         Namespace,
		CertSecret:        CertSecret,
		CertHosts:         []string{"127.0.0.1"},
		WebhookAddr:       s.WebhookAddr,
		WebhookConfig:     WebhookConfig,
		AuditAddr:         auditAddr,
		AuditCertFile:     files[0],
		AuditKeyFile:      files[1],
		AuditClientCAFile: files[2],
		Response:          resp,
		Log:               opts.Log,
		// A test binary may start one stack per test.
		SkipNameValidation: true,
	}
	if err = s.startController(); err != nil {
		return nil, err
	}
	return s, nil
}

// startController runs a controller process (controllermgr.Run) and returns
// once its audit endpoint answers.
func (s *Stack) startController() error {
	run, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan error, 1)
	go func() { s.done <- controllermgr.Run(run, s.ctrlCfg, s.ctrlOpts) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("controller stopped: %v", err)
		default:
		}
		if conn, err := net.DialTimeout("tcp", s.auditAddr, time.Second); err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the controller's audit endpoint did not come up within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RegisterWebhook points a ValidatingWebhookConfiguration for the rule and
// playbook kinds at the controller, without a caBundle: the controller's
// certificate manager fills it in. The returned object is for deleting it.
func (s *Stack) RegisterWebhook(ctx context.Context) (*admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	url := "https://" + s.WebhookAddr + rwebhook.Path
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: WebhookConfig},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "rules.riposte.dev",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{"riposte.dev"}, APIVersions: []string{"v1alpha1"},
					Resources: []string{"detectionrules", "clusterdetectionrules", "responseplaybooks", "clusterresponseplaybooks"},
				},
			}},
		}},
	}
	if err := s.Client.Create(ctx, cfg); err != nil {
		return nil, fmt.Errorf("create webhook configuration: %w", err)
	}
	// Ready when the API server calls the webhook with the caBundle the
	// controller filled in: a server-side dry run of a rule that does not
	// compile is denied by the webhook itself. (An admitted dry run proves
	// nothing: the API server may not have seen the configuration yet.)
	probe := &v1alpha1.ClusterDetectionRule{
		ObjectMeta: metav1.ObjectMeta{Name: "riposte-webhook-probe"},
		Spec:       v1alpha1.DetectionRuleSpec{Source: "audit", Severity: "low", Condition: `audit.verb ==`},
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.Client.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if err != nil && strings.Contains(err.Error(), `admission webhook "rules.riposte.dev" denied the request`) {
			return cfg, nil
		}
		if time.Now().After(deadline) {
			return cfg, fmt.Errorf("the API server does not call the admission webhook after 30 s (a dry run of a broken rule got %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RestartController stops the controller process, as a crash or a rollout
// would (its context is cancelled mid-work: a playbook step in flight is
// left where it was), and starts a new one with the same configuration
// against the same API server.
func (s *Stack) RestartController() error {
	if err := s.stopController(); err != nil {
		return err
	}
	return s.startController()
}

func (s *Stack) stopController() error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			return fmt.Errorf("controller: %w", err)
		}
		return nil
	case <-time.After(15 * time.Second):
		return errors.New("the controller did not stop within 15 s")
	}
}

// Stop stops the controller, then the control plane, and removes the files.
func (s *Stack) Stop() error {
	var errs []error
	errs = append(errs, s.stopController())
	if s.Cluster != nil {
		errs = append(errs, s.Cluster.Stop())
		s.Cluster = nil
	}
	errs = append(errs, os.RemoveAll(s.dir))
	return errors.Join(errs...)
}

func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "config/crd/bases")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no parent of the working directory holds config/crd/bases; set stack.Options.Root")
		}
		dir = parent
	}
}
