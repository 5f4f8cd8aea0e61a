package controllermgr_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/go-logr/logr"
	"k8s.io/klog/v2/textlogger"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/internal/controllermgr"
	"github.com/riposte-dev/riposte/test/cluster"
	"github.com/riposte-dev/riposte/test/stack"
)

// The whole package shares one control plane whose kube-apiserver posts its
// audit events to the controller, authenticated with a client certificate,
// and one controller process (controllermgr.Run) running as its
// ServiceAccount with config/rbac: test/stack.
var (
	env         *stack.Stack
	shared      *cluster.Cluster
	k8s         client.Client
	evidenceDir string
	// hook receives notify steps: namespaced playbooks may post below its
	// /allowed path only (the controller's --notify-allow).
	hook     *httptest.Server
	notified = make(chan notification, 16)
)

type notification struct {
	path string
	body []byte
}

const controllerNS = stack.Namespace

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	log := logr.Discard()
	if os.Getenv("RIPOSTE_TEST_LOG") != "" {
		log = textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(1)))
	}
	hook = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case notified <- notification{r.URL.Path, b}:
		default:
		}
	}))
	defer hook.Close()
	s, err := stack.Start(context.Background(), stack.Options{
		Response: controllermgr.Response{Node: "e2e-node", NotifyAllow: []string{hook.URL + "/allowed"}},
		Log:      log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	env, shared, k8s, evidenceDir = s, s.Cluster, s.Client, s.EvidenceDir
	code := m.Run()
	if err := s.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: stop:", err)
		return 1
	}
	return code
}

// waitReady waits until obj is Ready, re-reading it into obj.
func waitReady(t *testing.T, ctx context.Context, obj interface {
	client.Object
	conditions.Getter
}) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%s Ready", obj.GetName()), func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		if !conditions.IsReady(obj) {
			return fmt.Errorf("conditions %+v", obj.GetConditions())
		}
		return nil
	})
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
