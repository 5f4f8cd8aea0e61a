package controllermgr_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2/textlogger"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/internal/audit"
	"github.com/riposte-dev/riposte/internal/certs"
	"github.com/riposte-dev/riposte/internal/controllermgr"
	"github.com/riposte-dev/riposte/test/cluster"
)

// The whole package shares one control plane whose kube-apiserver posts its
// audit events to the controller started below, authenticated with a client
// certificate, and one controller process (controllermgr.Run).
var (
	shared      *cluster.Cluster
	k8s         client.Client
	webhookAddr string
	evidenceDir string
)

const (
	controllerNS  = "riposte-system"
	webhookConfig = "riposte-validating-webhook"
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "riposte-controller-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ports, err := freePorts(2)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: pick ports:", err)
		return 1
	}
	auditAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	webhookAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])

	// The audit endpoint's PKI: a serving certificate for 127.0.0.1 and a
	// client certificate kube-apiserver presents.
	ca, err := certs.NewCA("riposte-audit-ca")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	serving, _ := ca.Serving("127.0.0.1")
	apiClient, _ := ca.Client("kube-apiserver")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			panic(err)
		}
		return p
	}
	evidenceDir = filepath.Join(dir, "evidence")
	certFile, keyFile, caFile := write("audit.crt", serving.Cert), write("audit.key", serving.Key), write("ca.crt", ca.Cert)
	auditURL := "https://" + auditAddr + "/audit"
	kc := clientcmdapi.NewConfig()
	kc.Clusters["audit"] = &clientcmdapi.Cluster{Server: auditURL, CertificateAuthorityData: ca.Cert}
	kc.AuthInfos["apiserver"] = &clientcmdapi.AuthInfo{ClientCertificateData: apiClient.Cert, ClientKeyData: apiClient.Key}
	kc.Contexts["audit"] = &clientcmdapi.Context{Cluster: "audit", AuthInfo: "apiserver"}
	kc.CurrentContext = "audit"
	kubeconfig := filepath.Join(dir, "audit-webhook.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{
		AuditWebhook: &cluster.AuditWebhook{URL: auditURL, CAData: ca.Cert},
		// The harness's webhook kubeconfig carries no credentials; ours
		// authenticates kube-apiserver with its client certificate.
		APIServerArgs: []string{"--audit-webhook-config-file=" + kubeconfig},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: start test cluster:", err)
		return 1
	}
	defer c.Stop()
	shared = c
	if _, err := c.InstallCRDs(ctx, "../../config/crd/bases"); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: install CRDs:", err)
		return 1
	}
	k8s, err = client.New(c.AdminConfig(), client.Options{Scheme: controllermgr.Scheme()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controllerNS}}); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: create namespace:", err)
		return 1
	}

	// The controller runs as its ServiceAccount with exactly the RBAC of
	// config/rbac, so a missing permission fails these tests.
	if out, err := c.Kubectl(ctx, "apply", "-k", "../../config/rbac").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: apply config/rbac: %v\n%s", err, out)
		return 1
	}
	ctrlCfg, err := c.ServiceAccountConfig(ctx, controllerNS, "riposte-controller")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}

	log := logr.Discard()
	if os.Getenv("RIPOSTE_TEST_LOG") != "" {
		log = textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(1)))
	}
	done := make(chan error, 1)
	go func() {
		done <- controllermgr.Run(ctx, ctrlCfg, controllermgr.Options{
			Namespace:         controllerNS,
			CertSecret:        "riposte-controller-cert",
			CertHosts:         []string{"127.0.0.1"},
			WebhookAddr:       webhookAddr,
			WebhookConfig:     webhookConfig,
			AuditAddr:         auditAddr,
			AuditCertFile:     certFile,
			AuditKeyFile:      keyFile,
			AuditClientCAFile: caFile,
			Audit:             audit.Options{},
			Response:          controllermgr.Response{EvidenceDir: evidenceDir, Node: "e2e-node"},
			Log:               log,
		})
	}()
	select {
	case err := <-done:
		fmt.Fprintln(os.Stderr, "FAIL: controller stopped:", err)
		return 1
	case <-time.After(time.Second):
	}
	code := m.Run()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: controller:", err)
			return 1
		}
	case <-time.After(15 * time.Second):
		fmt.Fprintln(os.Stderr, "FAIL: controller did not stop")
		return 1
	}
	return code
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// eventually polls f until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not true after %s: %v", what, timeout, err)
}
