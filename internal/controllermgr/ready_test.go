package controllermgr_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2/textlogger"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/internal/controllermgr"
	"github.com/riposte-dev/riposte/test/proc"
)

// The controller's /readyz reflects its informer caches and its admission
// webhook, not just that the process runs. A controller whose
// ServiceAccount may read its certificate and signing key but list nothing it watches stays
// unready, naming the informers check (and the webhook, which the manager
// starts only after the caches), while /healthz passes; once it may list,
// its caches sync, the webhook serves and /readyz passes with both checks.
func TestReadyzReflectsCacheSyncAndWebhook(t *testing.T) {
	ctx := context.Background()
	const sa, secret = "readyz-late-rbac", "riposte-readyz-cert"
	if err := shared.EnsureServiceAccount(ctx, controllerNS, sa); err != nil {
		t.Fatal(err)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: controllerNS}}
	for _, obj := range []client.Object{
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: controllerNS}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secret, controllermgr.IncidentKeySecret}, Verbs: []string{"get", "update"}},
		}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: controllerNS}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: sa}},
	} {
		if err := k8s.Create(ctx, obj); err != nil && !isAlreadyExists(err) {
			t.Fatalf("create %s: %v", obj.GetName(), err)
		}
	}
	cfg, err := shared.ServiceAccountConfig(ctx, controllerNS, sa)
	if err != nil {
		t.Fatal(err)
	}
	ports, err := proc.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	health := fmt.Sprintf("127.0.0.1:%d", ports[0])
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + health + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	stop := startController(t, cfg, controllermgr.Options{HealthAddr: health, WebhookAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		CertSecret: secret, CertHosts: []string{"127.0.0.1"}})
	defer stop()
	eventually(t, 30*time.Second, "/healthz ok, /readyz failing on the informers and the webhook", func() error {
		if code, body := get("/healthz"); code != http.StatusOK {
			return fmt.Errorf("/healthz %d: %s", code, body)
		}
		code, body := get("/readyz?verbose")
		if code == http.StatusOK || !strings.Contains(body, "[-]informers failed") || !strings.Contains(body, "[-]webhook failed") {
			return fmt.Errorf("/readyz %d: %s", code, body)
		}
		return nil
	})

	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"}}
	if err := k8s.Create(ctx, crb); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), crb) })
	eventually(t, 60*time.Second, "/readyz ok with both checks", func() error {
		code, body := get("/readyz?verbose")
		if code != http.StatusOK || !strings.Contains(body, "[+]informers ok") || !strings.Contains(body, "[+]webhook ok") {
			return fmt.Errorf("/readyz %d: %s", code, body)
		}
		return nil
	})
}

// startController runs a second controller beside the package's one, with
// no audit endpoint, object source or response, until the returned stop.
func startController(t *testing.T, cfg *rest.Config, opts controllermgr.Options) (stop func()) {
	t.Helper()
	opts.Namespace = controllerNS
	opts.MetricsAddr = "0"
	opts.DisableObjects = true
	opts.Response.Disable = true
	opts.SkipNameValidation = true
	opts.Log = logr.Discard()
	if os.Getenv("RIPOSTE_TEST_LOG") != "" {
		opts.Log = textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(1)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- controllermgr.Run(ctx, cfg, opts) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("controller: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("the controller did not stop within 30 s")
		}
	}
	t.Cleanup(stop)
	return stop
}
